"""TensorRT INT8 calibration cache files: written at export for the TensorRT 10 DLA INT8 build (implicit
quantization), read back on the device by the calibrator ``device.tensorrt`` hands to the builder and by
``trtexec --calib``. Standard library only, so the device reads it without onnx or torch.

The format, as NVIDIA's qdq-translator writes it for exactly this use (Q/DQ graph -> Q/DQ-free graph + cache for
Orin DLA; NVIDIA/Deep-Learning-Accelerator-SW tools/qdq-translator/utils.py ``export_to_trt_calib``)::

    TRT-<version>-EntropyCalibration2
    <tensor name>: <hex of the float32 scale>

- ``<version>``: the TensorRT version the cache is for (qdq-translator's ``--trt_calib_version``, "The TensorRT version
  used for exporting a trtexec-compatible calib cache", default 8600 for 8.6.0). TensorRT 10 numbers versions
  ``major * 10000 + minor * 100 + patch`` (``NV_TENSORRT_VERSION``, include/NvInferRuntimeBase.h of NVIDIA/TensorRT
  10.x), e.g. 100300 for 10.3.0; 8.x used ``major * 1000 + minor * 100 + patch`` (8203 in a cache TensorRT 8.2.3
  wrote, NVIDIA/TensorRT#2036). A TensorRT maintainer: TensorRT "will skip the file if it is incompatible"
  (NVIDIA/TensorRT#1378), so ``device.tensorrt`` rewrites the header for the TensorRT it runs (:func:`retag`).
- ``EntropyCalibration2``: the algorithm name of ``IInt8EntropyCalibrator2``, "the required calibrator for DLA"
  (TensorRT Python API docstrings, NVIDIA/TensorRT python/docstrings/infer/pyInt8Doc.h).
- the value: the tensor's per-tensor scale (dynamic range / 127: what a symmetric INT8 QuantizeLinear carries),
  written as the 8 hex digits of its IEEE-754 float32 bit pattern, most significant first (qdq-translator:
  ``hex(struct.unpack('<I', struct.pack('<f', scale))[0])``, the value of ``precision_config[tensor]`` being the Q/DQ
  scale itself). qdq-translator drops leading zeros; they only matter below 2**-95 and both forms read the same here.
- the name: the ONNX tensor name. TensorRT's ONNX parser names every ITensor after its ONNX tensor
  (onnx/onnx-tensorrt ImporterContext.cpp ``registerTensor``: ``tensor.setName(uniqueName)``, the ONNX name made
  unique), and qdq-translator keys the cache by ONNX tensor names.

Unverified on an Orin: that TensorRT 10.3 on JetPack 6 accepts this cache for a DLA build and places the INT8 layers
on the DLA has not been run here (no Jetson); the format follows the NVIDIA sources above.
"""

from __future__ import annotations

import math
import re
import struct
from typing import Mapping

CALIBRATOR = "EntropyCalibration2"
# The TensorRT the bundle's cache header names: JetPack 6.1 / 6.2 ship TensorRT 10.3.0 (README "Deployment").
DEFAULT_TENSORRT_VERSION = "10.3.0"
_HEADER = re.compile(r"^TRT-(?P<version>\d+)-(?P<algorithm>[A-Za-z0-9]+)$")


class CalibrationCacheError(ValueError):
    """A calibration cache that is not in TensorRT's text format (one line naming what is wrong)."""


def tensorrt_version_number(version: str) -> int:
    """The number a cache header carries for TensorRT ``version`` ("10.3.0" -> 100300; "8.6.1" -> 8601)."""
    try:
        parts = [int(p) for p in str(version).split(".")[:3]]
    except ValueError:
        raise CalibrationCacheError(f"cannot read the TensorRT version {version!r}") from None
    major, minor, patch = (parts + [0, 0, 0])[:3]
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def encode_scale(scale: float) -> str:
    """The 8 hex digits of ``scale`` as an IEEE-754 float32, most significant byte first."""
    return struct.pack(">f", scale).hex()


def decode_scale(text: str) -> float:
    """The float32 a cache value denotes (up to 8 hex digits; leading zeros may be left out, as qdq-translator does)."""
    if not re.fullmatch(r"[0-9a-fA-F]{1,8}", text):
        raise CalibrationCacheError(f"calibration cache value {text!r} is not up to 8 hexadecimal digits")
    return struct.unpack(">f", bytes.fromhex(text.rjust(8, "0")))[0]


def write_cache(scales: Mapping[str, float], tensorrt_version: str = DEFAULT_TENSORRT_VERSION) -> bytes:
    """The cache text for ``scales`` ({ONNX tensor name: scale}), in the given order, header for ``tensorrt_version``.

    Raises:
        CalibrationCacheError: an empty mapping, a name with a line break or that is empty, a scale that is not a
            positive finite float32.
    """
    if not scales:
        raise CalibrationCacheError("a calibration cache needs at least one tensor scale")
    lines = [f"TRT-{tensorrt_version_number(tensorrt_version)}-{CALIBRATOR}"]
    for name, scale in scales.items():
        if not isinstance(name, str) or not name or "\n" in name or "\r" in name:
            raise CalibrationCacheError(f"tensor name {name!r} cannot go in a calibration cache (one line per tensor)")
        value = float(scale)
        try:
            as_float32 = struct.unpack(">f", struct.pack(">f", value))[0]
        except OverflowError:  # beyond the float32 range
            as_float32 = math.inf
        if not (math.isfinite(value) and value > 0 and math.isfinite(as_float32) and as_float32 > 0):
            raise CalibrationCacheError(f"tensor {name!r}: scale {scale!r} is not a positive finite float32")
        lines.append(f"{name}: {encode_scale(value)}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def read_cache(data: bytes) -> tuple[int, str, dict[str, float]]:
    """``(version number, algorithm, {tensor name: scale})`` of a cache; the inverse of :func:`write_cache`.

    Raises:
        CalibrationCacheError: not UTF-8, no ``TRT-<version>-<algorithm>`` header, a line without ``name: hex``, a
            tensor listed twice, a scale that is not positive and finite.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CalibrationCacheError(f"calibration cache is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    lines = text.splitlines()
    match = _HEADER.match(lines[0].strip()) if lines else None
    if match is None:
        raise CalibrationCacheError(f"calibration cache header {lines[0][:60] if lines else ''!r} is not "
                                    f"'TRT-<version>-<calibrator>'")
    scales: dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, value = line.rpartition(": ")  # the value never holds ": "; a tensor name might
        if not sep or not name:
            raise CalibrationCacheError(f"calibration cache line {number} {line[:60]!r} is not '<tensor>: <hex>'")
        if name in scales:
            raise CalibrationCacheError(f"calibration cache line {number}: tensor {name!r} is listed twice")
        scale = decode_scale(value.strip())
        if not (math.isfinite(scale) and scale > 0):
            raise CalibrationCacheError(f"calibration cache line {number}: tensor {name!r} has scale {scale!r}, not "
                                        "positive and finite")
        scales[name] = scale
    return int(match["version"]), match["algorithm"], scales


def retag(data: bytes, tensorrt_version: str) -> bytes:
    """``data`` with its header naming ``tensorrt_version`` (the scales do not depend on the TensorRT version; the
    header does, see the module docstring). The body is kept byte for byte."""
    _, algorithm, _ = read_cache(data)
    _, sep, rest = data.partition(b"\n")
    return f"TRT-{tensorrt_version_number(tensorrt_version)}-{algorithm}".encode() + sep + rest
