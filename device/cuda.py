"""The few CUDA calls a TensorRT engine needs, through ``ctypes`` — no torch, no cuda-python.

TensorRT's Python API takes device pointers as integers (``IExecutionContext.set_tensor_address``) and a stream
handle (``execute_async_v3``); these come from the CUDA runtime library, ``libcudart``, loaded with ``ctypes`` exactly
as NVIDIA's Polygraphy does (``tools/Polygraphy/polygraphy/cuda/cuda.py``: ``cudaMalloc``, ``cudaFree``,
``cudaMemcpyAsync`` with ``cudaMemcpyKind`` 1 = host to device and 2 = device to host, ``cudaStreamCreate``,
``cudaStreamSynchronize``, ``cudaStreamDestroy``). The runtime API works on the device's primary context, the one
TensorRT itself uses. Where the library lives:

- JetPack: ``/usr/local/cuda/lib64/libcudart.so.12`` (CUDA is part of JetPack);
- pip's TensorRT (``tensorrt-cu12``): the ``nvidia-cuda-runtime-cu12`` wheel it depends on,
  ``site-packages/nvidia/cuda_runtime/lib/libcudart.so.12``;
- a CUDA toolkit: ``/usr/local/cuda/lib64`` or the loader path (``LD_LIBRARY_PATH``).

The GPU's name and compute capability for the engine key come from the driver library (``libcuda.so.1``, part of
every NVIDIA driver and of JetPack): ``cuDeviceGetName`` and ``cuDeviceGetAttribute`` with
``CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR`` (75) / ``_MINOR`` (76) from ``cuda.h``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys

import numpy as np

# cudaMemcpyKind (cuda_runtime_api.h; Polygraphy's MemcpyKind).
HOST_TO_DEVICE, DEVICE_TO_HOST = 1, 2
# CUdevice_attribute values from cuda.h (CUDA driver API).
_CC_MAJOR, _CC_MINOR = 75, 76


class CudaError(RuntimeError):
    """A CUDA library is missing or a CUDA call failed (the message names the call and its status)."""


def _runtime_candidates() -> list[str]:
    """Where ``libcudart`` may be, most specific first (see the module docstring)."""
    names = [n for n in (ctypes.util.find_library("cudart"),) if n]
    for entry in sys.path:  # pip's nvidia-cuda-runtime-cu12 / -cu13 wheels
        names += sorted(glob.glob(os.path.join(entry, "nvidia", "cuda_runtime", "lib", "libcudart.so*")))
        names += sorted(glob.glob(os.path.join(entry, "nvidia", "cu13", "lib", "libcudart.so*")))
    for folder in (*os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep), "/usr/local/cuda/lib64",
                   "/usr/local/cuda/targets/aarch64-linux/lib", "/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu"):
        if folder:
            names += sorted(glob.glob(os.path.join(folder, "libcudart.so*")))
    return names + ["libcudart.so", "libcudart.so.12", "libcudart.so.13", "libcudart.so.11.0"]


_RUNTIME: ctypes.CDLL | None = None


def runtime() -> ctypes.CDLL:
    """The CUDA runtime library (loaded once)."""
    global _RUNTIME
    if _RUNTIME is None:
        for name in dict.fromkeys(_runtime_candidates()):
            try:
                _RUNTIME = ctypes.CDLL(name)
                break
            except OSError:
                continue
        else:
            raise CudaError("the CUDA runtime library (libcudart.so) was not found: on a Jetson it is in "
                            "/usr/local/cuda/lib64 (JetPack); elsewhere pip install nvidia-cuda-runtime-cu12 "
                            "(tensorrt-cu12 brings it) or add the CUDA toolkit's lib64 to LD_LIBRARY_PATH")
    return _RUNTIME


def check(what: str, status: int) -> None:
    """Raise :class:`CudaError` naming ``what`` unless ``status`` is cudaSuccess (0)."""
    if status != 0:
        raise CudaError(f"CUDA call {what} failed with cudaError {status} (see cuda_runtime_api.h's cudaError_t)")


class Stream:
    """A CUDA stream (``cudaStreamCreate``); ``handle`` is what ``execute_async_v3`` takes."""

    def __init__(self) -> None:
        ptr = ctypes.c_void_p()
        check("cudaStreamCreate", runtime().cudaStreamCreate(ctypes.byref(ptr)))
        self.handle = int(ptr.value or 0)

    def synchronize(self) -> None:
        check("cudaStreamSynchronize", runtime().cudaStreamSynchronize(ctypes.c_void_p(self.handle)))

    def close(self) -> None:
        if self.handle:
            check("cudaStreamDestroy", runtime().cudaStreamDestroy(ctypes.c_void_p(self.handle)))
            self.handle = 0


class DeviceBuffer:
    """GPU memory that grows on demand (``cudaMalloc``/``cudaFree``) and copies to and from NumPy on a stream."""

    def __init__(self) -> None:
        self.ptr, self.nbytes = 0, 0

    def reserve(self, nbytes: int) -> int:
        """At least ``nbytes`` allocated; returns the device pointer."""
        if nbytes > self.nbytes:
            self.free()
            ptr = ctypes.c_void_p()
            check(f"cudaMalloc({nbytes})", runtime().cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(nbytes)))
            self.ptr, self.nbytes = int(ptr.value or 0), nbytes
        return self.ptr

    def upload(self, array: np.ndarray, stream: Stream) -> int:
        """Copy C-contiguous ``array`` in (asynchronously on ``stream``; keep ``array`` alive until it syncs)."""
        self.reserve(array.nbytes)
        check("cudaMemcpyAsync (host to device)",
              runtime().cudaMemcpyAsync(ctypes.c_void_p(self.ptr), ctypes.c_void_p(array.ctypes.data),
                                        ctypes.c_size_t(array.nbytes), HOST_TO_DEVICE, ctypes.c_void_p(stream.handle)))
        return self.ptr

    def download(self, out: np.ndarray, stream: Stream) -> np.ndarray:
        """Copy ``out.nbytes`` bytes into C-contiguous ``out`` and wait for ``stream``."""
        check("cudaMemcpyAsync (device to host)",
              runtime().cudaMemcpyAsync(ctypes.c_void_p(out.ctypes.data), ctypes.c_void_p(self.ptr),
                                        ctypes.c_size_t(out.nbytes), DEVICE_TO_HOST, ctypes.c_void_p(stream.handle)))
        stream.synchronize()
        return out

    def free(self) -> None:
        if self.ptr:
            check("cudaFree", runtime().cudaFree(ctypes.c_void_p(self.ptr)))
            self.ptr, self.nbytes = 0, 0


def device_properties(index: int = 0) -> tuple[str, str]:
    """``(name, "major.minor")`` of CUDA device ``index`` (after ``CUDA_VISIBLE_DEVICES``), from the driver API."""
    lib = None
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        raise CudaError("the CUDA driver library (libcuda.so.1) was not found: no NVIDIA driver on this machine")

    def call(what: str, rc: int) -> None:
        if rc != 0:
            raise CudaError(f"CUDA driver call {what} failed with CUresult {rc} (is a GPU visible here?)")

    device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    buf = ctypes.create_string_buffer(256)
    call("cuInit", lib.cuInit(0))
    call("cuDeviceGet", lib.cuDeviceGet(ctypes.byref(device), int(index)))
    call("cuDeviceGetName", lib.cuDeviceGetName(buf, len(buf), device))
    call("cuDeviceGetAttribute", lib.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, device))
    call("cuDeviceGetAttribute", lib.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, device))
    return buf.value.decode(errors="replace"), f"{major.value}.{minor.value}"
