"""TensorRT engines from bundle variants (TensorRT >= 10; ``tensorrt`` is imported lazily).

Networks are built *strongly typed*: FP16 and INT8 come from the ONNX graph (Casts, Q/DQ), never from
builder flags, so the same code works on TensorRT 10 (JetPack 6) and 11 (where the flags are gone and
strong typing is always on). Each plan gets an engine key beside it (``<plan>.key.json``: TensorRT version,
GPU name, compute capability); loading compares it with this device first and refuses a mismatch with the
exact rebuild command.

    python -m edge_encoder.export.tensorrt BUNDLE_DIR [--variant fp16] [--dla-core 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from edge_encoder.core.contract import InputSpec, normalize_images
from edge_encoder.core.files import atomic_write_bytes
from edge_encoder.export.engines import _Engine

logger = logging.getLogger(__name__)

DEFAULT_PROFILE = {"min": 1, "opt": 32, "max": 64}


class EngineKeyMismatch(RuntimeError):
    """The engine was built for another TensorRT version or GPU."""


@dataclass(frozen=True)
class EngineKey:
    tensorrt: str
    gpu_name: str
    compute_capability: str


def current_engine_key() -> EngineKey:
    """Key of this machine (needs tensorrt and a CUDA device visible to torch)."""
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability(0)
    return EngineKey(tensorrt=trt.__version__, gpu_name=torch.cuda.get_device_name(0), compute_capability=f"{major}.{minor}")


def rebuild_command(plan_path: Path) -> str:
    """The command that rebuilds ``bundle/tensorrt/encoder_<variant>.plan`` on this device."""
    plan_path = Path(plan_path)
    variant = plan_path.stem.removeprefix("encoder_")
    return f"python -m edge_encoder.export.tensorrt {plan_path.parent.parent} --variant {variant}"


def check_engine_key(stored: EngineKey | dict[str, Any], current: EngineKey, plan_path: Path) -> None:
    """Raise ``EngineKeyMismatch`` (with the rebuild command) unless ``stored`` equals ``current``."""
    stored = stored if isinstance(stored, EngineKey) else EngineKey(**stored)
    diffs = [f"{k}: engine {v!r} vs device {getattr(current, k)!r}" for k, v in asdict(stored).items()
             if v != getattr(current, k)]
    if diffs:
        raise EngineKeyMismatch(f"TensorRT engine {plan_path} was built elsewhere ({'; '.join(diffs)}). "
                                f"Rebuild it on this device: {rebuild_command(plan_path)}")


def key_path(plan_path: Path) -> Path:
    return Path(str(plan_path) + ".key.json")


def build_engine(onnx_path: Path, plan_path: Path, *, profile: dict[str, int] | None = None,
                 workspace_mib: int = 1024, timing_cache: Path | None = None, dla_core: int | None = None) -> Path:
    """Build a serialized strongly typed engine from an encoder ONNX file; writes the plan and its key.

    Args:
        onnx_path: a bundle variant (input ``images`` uint8 ``(N, H, W, 3)`` or float32 ``(N, 3, H, W)``).
        plan_path: output ``.plan`` file.
        profile: batch sizes ``{"min", "opt", "max"}`` for the optimization profile.
        workspace_mib: workspace memory pool limit.
        timing_cache: file read before and updated after the build (speeds up rebuilds).
        dla_core: run on this DLA core (Jetson) with GPU fallback for unsupported layers.
    """
    import tensorrt as trt

    profile = profile or DEFAULT_PROFILE
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:  # deprecated (always on) in TensorRT 11
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    opt_profile = builder.create_optimization_profile()
    inp = network.get_input(0)
    rest = tuple(inp.shape)[1:]
    opt_profile.set_shape(inp.name, (profile["min"], *rest), (profile["opt"], *rest), (profile["max"], *rest))
    config.add_optimization_profile(opt_profile)
    cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    atomic_write_bytes(Path(plan_path), bytes(serialized))
    if timing_cache:
        atomic_write_bytes(Path(timing_cache), bytes(config.get_timing_cache().serialize()))
    key = asdict(current_engine_key()) | {"profile": profile, "onnx": Path(onnx_path).name, "dla_core": dla_core}
    atomic_write_bytes(key_path(plan_path), (json.dumps(key, indent=2) + "\n").encode())
    return Path(plan_path)


class TensorRTEngine(_Engine):
    """Native TensorRT engine (TensorRT 10+ tensor API) with torch CUDA tensors as device buffers.

    ``embed`` takes uint8 NHWC; for an engine built from a ``float_nchw`` export the mean/std come from
    ``preprocess`` or, by default, the bundle's ``manifest.json`` (``<bundle>/tensorrt/<plan>``), and are
    applied before the engine runs.
    """

    def __init__(self, plan_path: Path | str, *, name: str = "tensorrt", preprocess: dict[str, Any] | None = None) -> None:
        import tensorrt as trt
        import torch

        self.source_path = Path(plan_path)
        self.name = name
        if not key_path(self.source_path).is_file():
            raise ValueError(f"{self.source_path} has no engine key ({key_path(self.source_path).name}); "
                             f"rebuild it: {rebuild_command(self.source_path)}")
        stored = json.loads(key_path(self.source_path).read_text())
        check_engine_key({k: stored[k] for k in ("tensorrt", "gpu_name", "compute_capability")},
                         current_engine_key(), self.source_path)
        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._trt_logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.source_path.read_bytes())
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._input = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self._output = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        shape = tuple(self._engine.get_tensor_shape(self._input))
        self._normalize = None
        if self._engine.get_tensor_dtype(self._input) == trt.DataType.UINT8:
            self.input_spec = InputSpec(height=int(shape[1]), width=int(shape[2]), channels=int(shape[3]))
        else:  # float_nchw export: normalise here, as OnnxRuntimeEngine does
            if preprocess is None:
                manifest = self.source_path.parent.parent / "manifest.json"
                if not manifest.is_file():
                    raise ValueError(f"{self.source_path} takes normalised float NCHW input; pass preprocess= "
                                     f"{{'mean', 'std'}} (no manifest.json at {manifest})")
                preprocess = json.loads(manifest.read_text())["preprocessing"]
            self._normalize = (tuple(preprocess["mean"]), tuple(preprocess["std"]))
            self.input_spec = InputSpec(height=int(shape[2]), width=int(shape[3]))
        self._max_batch = int(stored.get("profile", DEFAULT_PROFILE)["max"])
        self._stream = torch.cuda.Stream()

    def _run(self, images: np.ndarray) -> np.ndarray:
        import torch

        outs = []
        if self._normalize is not None:
            images = normalize_images(images, *self._normalize)
        for start in range(0, len(images), self._max_batch):  # stay inside the optimization profile
            chunk = torch.from_numpy(images[start:start + self._max_batch]).cuda()
            self._context.set_input_shape(self._input, tuple(chunk.shape))
            out = torch.empty(tuple(self._context.get_tensor_shape(self._output)), dtype=torch.float32, device="cuda")
            self._context.set_tensor_address(self._input, chunk.data_ptr())
            self._context.set_tensor_address(self._output, out.data_ptr())
            torch.cuda.current_stream().synchronize()
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError(f"TensorRT execution failed for {self.source_path}")
            self._stream.synchronize()
            outs.append(out.cpu().numpy())
        return np.concatenate(outs)

    def close(self) -> None:
        self._context = None


def build_bundle(bundle_dir: Path, variants: Sequence[str] | None = None, *, dla_core: int | None = None,
                 workspace_mib: int = 1024) -> list[Path]:
    """Build ``tensorrt/encoder_<variant>.plan`` for the bundle's variants, using only the bundle."""
    bundle = Path(bundle_dir)
    manifest = json.loads((bundle / "manifest.json").read_text())
    profile = manifest.get("tensorrt_profile", DEFAULT_PROFILE)
    chosen = list(variants or manifest["variants"])
    plans = []
    for variant in chosen:
        if variant not in manifest["variants"]:
            raise ValueError(f"variant {variant!r} is not in {bundle / 'manifest.json'}")
        plan = bundle / "tensorrt" / f"encoder_{variant}.plan"
        plan.parent.mkdir(exist_ok=True)
        build_engine(bundle / manifest["variants"][variant]["file"], plan, profile=profile, workspace_mib=workspace_mib,
                     timing_cache=bundle / "tensorrt" / "timing.cache", dla_core=dla_core)
        triton_plan = bundle / "triton" / f"encoder_trt_{variant}" / "1" / "model.plan"
        if triton_plan.parent.is_dir():
            atomic_write_bytes(triton_plan, plan.read_bytes())
        plans.append(plan)
    return plans


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_encoder.export.tensorrt", description="Build TensorRT engines from a deploy bundle.")
    parser.add_argument("bundle", type=Path, help="deploy bundle directory (with manifest.json)")
    parser.add_argument("--variant", action="append", help="variant to build (repeatable; default: all)")
    parser.add_argument("--dla-core", type=int, default=None, help="Jetson DLA core, with GPU fallback")
    parser.add_argument("--workspace-mib", type=int, default=1024)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (args.bundle / "manifest.json").is_file():
        parser.error(f"no manifest.json in {args.bundle}")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        print("tensorrt is not installed: pip install tensorrt (or use JetPack's python3-libnvinfer)", file=sys.stderr)
        return 2
    for plan in build_bundle(args.bundle, args.variant, dla_core=args.dla_core, workspace_mib=args.workspace_mib):
        print(f"built {plan}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
