"""TensorRT engines from bundle variants (TensorRT >= 10; ``tensorrt`` is imported lazily).

GPU networks are built *strongly typed*: FP16 and INT8 come from the ONNX graph (Casts, Q/DQ), never from
builder flags, so the same code works on TensorRT 10 (JetPack 6) and 11 (where the flags are gone and strong
typing is always on). DLA plans (Jetson) use one static batch and fp16 / int8_trt only; how each is built is
decided in ``device.trt_plans`` (pure functions, tested without TensorRT). Each plan gets an engine key beside it
(``<plan>.key.json``: TensorRT version, GPU name, compute capability, profile, hashes); loading compares it with
this device first and refuses a mismatch with the commands that rebuild it. A plan without a key (built by
``trtexec``) still loads: TensorRT itself refuses a plan of another version or GPU, and that refusal is turned into
the same rebuild message. ``key`` writes the key of a trtexec-built plan::

    edge-encoder build BUNDLE_DIR [--variant fp16] [--dla-core 0 [--dla-batch 8]]
    edge-encoder key tensorrt/encoder_fp16.plan --onnx encoder_fp16.onnx

The device key does not need torch: the GPU name and compute capability come from the CUDA driver API
(``libcuda``, part of every NVIDIA driver and of JetPack) through ``ctypes``, the same ``cuDeviceGetName`` /
compute-capability attributes that ``torch.cuda.get_device_name`` reports. ``TensorRTEngine`` runs on device buffers
and a stream from the CUDA runtime through ``ctypes`` (``device.cuda``, as Polygraphy does): no torch on the device.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from edge_encoder.core.contract import InputSpec, Preprocess, normalization_of, normalize_images
from edge_encoder.core.files import atomic_write_bytes, file_sha256
from edge_encoder.device.engines import EngineBase
from edge_encoder.device.calibration_cache import retag
from edge_encoder.device.trt_plans import (  # noqa: F401 - re-exported (tests, bundle_files)
    DEFAULT_PROFILE,
    BuildMode,
    EngineKey,
    EngineKeyMismatch,
    EngineLoadError,
    PlanSpec,
    batch_chunks,
    build_mode,
    check_engine_key,
    key_path,
    load_failure,
    parse_plan_name,
    rebuild_command,
    rebuild_hint,
    resolve_dla_graph,
    summarize_engine_layers,
)

logger = logging.getLogger(__name__)

# What a device without TensorRT 10+ is told. JetPack 6.0 ships TensorRT 8.6.2 (no strongly typed networks, and its
# parser needs an explicit-batch flag this project does not set); JetPack 6.1 and 6.2 ship TensorRT 10.3; JetPack 7
# (Jetson Thor) ships TensorRT 10.13. See README "Deployment", the JetPack table.
TENSORRT_HINT = ("on a Jetson: JetPack 6.1 or 6.2 (TensorRT 10.3) or JetPack 7 (TensorRT 10.13) with JetPack's "
                 "python3-libnvinfer, in a venv made with --system-site-packages; on a server: "
                 "pip install 'edge-encoder[tensorrt]'")
MIN_TENSORRT_MAJOR = 10


class BuildFailure(RuntimeError):
    """TensorRT refused to parse or build one variant: one line naming the variant and TensorRT's first error."""


def check_tensorrt_version(version: str) -> None:
    """A one-line ``ValueError`` for a TensorRT older than 10 (naming the JetPack releases that have 10)."""
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        raise ValueError(f"cannot read the TensorRT version {version!r}") from None
    if major < MIN_TENSORRT_MAJOR:
        raise ValueError(f"TensorRT {version} is too old: this project builds and runs engines with TensorRT 10 or "
                         f"11 (JetPack 6.0 ships TensorRT 8.6; JetPack 6.1 and 6.2 ship TensorRT 10.3, JetPack 7 "
                         f"TensorRT 10.13): upgrade JetPack, or on a server pip install 'edge-encoder[tensorrt]'")


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, version 10 or newer; a one-line ``ValueError`` when it is missing or older."""
    try:
        import tensorrt as trt
    except ImportError:
        raise ValueError(f"tensorrt is not installed here: {TENSORRT_HINT}") from None
    check_tensorrt_version(trt.__version__)
    return trt


def cuda_device_properties(index: int = 0) -> tuple[str, str]:
    """``(name, "major.minor")`` of CUDA device ``index`` (``device.cuda.device_properties``: the driver API)."""
    from edge_encoder.device.cuda import device_properties

    return device_properties(index)


def current_engine_key() -> EngineKey:
    """Key of this machine: the TensorRT version and CUDA device 0 (needs tensorrt and the NVIDIA driver)."""
    import tensorrt as trt

    gpu_name, capability = cuda_device_properties(0)
    return EngineKey(tensorrt=trt.__version__, gpu_name=gpu_name, compute_capability=capability)


def read_engine_key(plan_path: Path) -> dict[str, Any] | None:
    """The engine key beside ``plan_path``, or None when there is none; a damaged key is a ``ValueError``."""
    path = key_path(plan_path)
    if not path.is_file():
        return None
    try:
        key = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"engine key {path} cannot be read ({exc}); {rebuild_hint(plan_path)}") from None
    if not isinstance(key, dict):
        raise ValueError(f"engine key {path} is not a JSON object; {rebuild_hint(plan_path)}")
    return key


def write_engine_key(plan_path: Path, onnx_path: Path, *, profile: dict[str, int], dla_core: int | None,
                     extra: dict[str, Any] | None = None) -> Path:
    """``<plan>.key.json``: this device's key, the profile, the DLA core, and the plan's and ONNX file's SHA-256
    (``device.bundle_files.open_engine`` refuses a changed or stale plan with them)."""
    key = asdict(current_engine_key()) | {"profile": dict(profile), "onnx": Path(onnx_path).name, "dla_core": dla_core,
                                          "sha256": file_sha256(plan_path), "onnx_sha256": file_sha256(onnx_path)}
    return atomic_write_bytes(key_path(plan_path), (json.dumps(key | (extra or {}), indent=2) + "\n").encode())


# ------------------------------------------------------------------------------------------------------ build


def build_engine(onnx_path: Path, plan_path: Path, *, profile: dict[str, int] | None = None,
                 workspace_mib: int = 1024, timing_cache: Path | None = None, dla_core: int | None = None,
                 variant: str | None = None, calibration_cache: bytes | None = None) -> Path:
    """Build a serialized engine from an encoder ONNX file; writes the plan and its key.

    Args:
        onnx_path: a bundle variant (input ``images`` uint8 ``(N, H, W, 3)`` or float32 ``(N, 3, H, W)``).
        plan_path: output ``.plan`` file.
        profile: batch sizes ``{"min", "opt", "max"}`` for the optimization profile (DLA: all equal).
        workspace_mib: workspace memory pool limit.
        timing_cache: file read before and updated after the build (speeds up rebuilds).
        dla_core: build for this Jetson DLA core, with GPU fallback (see ``trt_plans.build_mode``).
        variant: the bundle variant (decides the DLA precision flags on TensorRT 10); default: from ``plan_path``.
        calibration_cache: the TensorRT calibration cache of int8_trt's Q/DQ-free DLA graph (TensorRT 10 DLA INT8,
            implicit quantization; ``trt_plans.resolve_dla_graph``): handed to the builder by a calibrator that only
            returns it (:func:`_cache_calibrator`). Unverified on an Orin.

    Every build sets ``ProfilingVerbosity.DETAILED`` so that the engine key records, from the engine inspector, what
    TensorRT placed on the DLA / GPU in which precision (``layers``, ``trt_plans.summarize_engine_layers``).
    """
    trt = require_tensorrt()
    profile = profile or DEFAULT_PROFILE
    if dla_core is not None and not profile["min"] == profile["opt"] == profile["max"]:
        raise ValueError(f"a DLA build needs a static profile (min = opt = max), got {profile}")
    mode = build_mode(trt.__version__, variant or parse_plan_name(plan_path)[0], dla_core is not None,
                      calibration_cache=calibration_cache is not None and dla_core is not None)
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network, parser = _parse_onnx(trt, builder, trt_logger, Path(onnx_path), mode)
    config = _builder_config(trt, builder, network, profile, workspace_mib, mode, dla_core)
    calibrator = None
    if mode.calibrator:
        calibrator = _cache_calibrator(trt, retag(calibration_cache, trt.__version__), profile["max"])
        config.int8_calibrator = calibrator  # kept referenced (``calibrator``) until the build returns
        if hasattr(config, "set_calibration_profile"):  # the shapes calibration runs at: the static DLA shape
            config.set_calibration_profile(_calibration_profile(builder, network, profile))
    cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cache_bytes), ignore_mismatch=False)
    dla = _dla_layers(config, network, dla_core, profile) if dla_core is not None else None
    serialized = builder.build_serialized_network(network, config)
    del parser  # the parser owns the weights the network references: release it only after the build
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    atomic_write_bytes(Path(plan_path), bytes(serialized))
    if timing_cache:
        atomic_write_bytes(Path(timing_cache), bytes(config.get_timing_cache().serialize()))
    del calibrator
    build = {"strongly_typed": mode.strongly_typed, "flags": list(mode.flags), "built_by": "device.tensorrt",
             **({"calibration_cache_sha256": hashlib.sha256(calibration_cache).hexdigest()} if mode.calibrator else {})}
    layers = _layer_summary(trt, bytes(serialized), dla_core)
    write_engine_key(Path(plan_path), Path(onnx_path), profile=profile, dla_core=dla_core,
                     extra={"build": build, "layers": layers} | ({"dla": dla} if dla else {}))
    return Path(plan_path)


def _cache_calibrator(trt: Any, cache: bytes, batch: int) -> Any:
    """An ``IInt8EntropyCalibrator2`` that hands TensorRT ``cache`` and no calibration data: ``get_batch`` returns
    None ("we return either [] or None. This signals to TensorRT that there is no calibration data remaining"),
    ``read_calibration_cache`` the cache ("If there is a cache, use it instead of calibrating again"), TensorRT 10
    Python API docstrings (NVIDIA/TensorRT python/docstrings/infer/pyInt8Doc.h); IInt8EntropyCalibrator2 is "the
    required calibrator for DLA" (same file). The base class is instantiated explicitly in ``__init__``, as those
    docstrings require. Deprecated since TensorRT 10.1, removed in 11 (INT8 from Q/DQ there). Unverified on an Orin."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._cache = bytes(cache)

        def get_batch_size(self) -> int:
            return int(batch)

        def get_batch(self, names: Any) -> None:
            return None

        def read_calibration_cache(self) -> bytes:
            return self._cache

        def write_calibration_cache(self, cache: Any) -> None:
            return None  # the bundle's cache is hash-checked: never rewritten on the device

    return CacheCalibrator()


def _calibration_profile(builder: Any, network: Any, profile: dict[str, int]) -> Any:
    """An optimization profile of the static DLA shape, for ``IBuilderConfig.set_calibration_profile`` (TensorRT 10
    C++ ``IBuilderConfig::setCalibrationProfile``, deprecated in 10.1, removed in 11: the input shapes INT8
    calibration uses; trtexec likewise calibrates at its build profile, ``shapesCalib = optProfiles[calibProfile]``
    with ``--int8 --calib``, samples/common/sampleOptions.cpp)."""
    calib = builder.create_optimization_profile()
    inp = network.get_input(0)
    shape = (profile["max"], *tuple(inp.shape)[1:])
    calib.set_shape(inp.name, shape, shape, shape)
    return calib


def _layer_summary(trt: Any, plan: bytes, dla_core: int | None) -> dict[str, Any]:
    """What the engine runs where, in which precision: ``ICudaEngine.create_engine_inspector()`` and
    ``EngineInspector.get_engine_information(LayerInformationFormat.JSON)`` (TensorRT Python API, EngineInspector:
    "The amount of printed information depends on the profiling verbosity setting of the builder config"), parsed by
    ``trt_plans.summarize_engine_layers``. Informational: a failure is recorded, never raised."""
    try:
        trt_logger = trt.Logger(trt.Logger.ERROR)  # kept alive as long as the runtime
        runtime = trt.Runtime(trt_logger)
        if dla_core is not None:
            runtime.DLA_core = int(dla_core)
        engine = runtime.deserialize_cuda_engine(plan)
        inspector = engine.create_engine_inspector()
        info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
        return summarize_engine_layers(info, dla_build=dla_core is not None)
    except Exception as exc:  # noqa: BLE001 - a summary for the key, never a reason to fail the build
        return {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}


def _parse_onnx(trt: Any, builder: Any, trt_logger: Any, onnx_path: Path, mode: BuildMode) -> tuple[Any, Any]:
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if mode.strongly_typed and strongly_typed is not None:  # deprecated (always on) in TensorRT 11
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    return network, parser


def _builder_config(trt: Any, builder: Any, network: Any, profile: dict[str, int], workspace_mib: int,
                    mode: BuildMode, dla_core: int | None) -> Any:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    opt_profile = builder.create_optimization_profile()
    inp = network.get_input(0)
    rest = tuple(inp.shape)[1:]
    opt_profile.set_shape(inp.name, (profile["min"], *rest), (profile["opt"], *rest), (profile["max"], *rest))
    config.add_optimization_profile(opt_profile)
    if dla_core is not None:
        if not 0 <= dla_core < builder.num_DLA_cores:
            raise ValueError(f"--dla-core {dla_core}: this device has {builder.num_DLA_cores} DLA core(s)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
    for flag in mode.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in mode.cleared:
        config.clear_flag(getattr(trt.BuilderFlag, flag))
    # Per-layer detail for the engine inspector (layer types, tensor formats and precisions): "the level of detail in
    # the engine/layer information depends on the ProfilingVerbosity builder config setting", default
    # kLAYER_NAMES_ONLY (TensorRT "Engine Inspector"; Python IBuilderConfig.profiling_verbosity).
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    return config


def _dla_layers(config: Any, network: Any, dla_core: int, profile: dict[str, int]) -> dict[str, Any]:
    """What ``IBuilderConfig.can_run_on_DLA`` says of each layer, logged and recorded in the engine key."""
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    gpu = [layer.name for layer in layers if not config.can_run_on_DLA(layer)]
    logger.warning("DLA core %d, batch %d: %d of %d layers can run on DLA; the other %d fall back to the GPU "
                   "(GPU_FALLBACK), e.g. %s", dla_core, profile["max"], len(layers) - len(gpu), len(layers), len(gpu),
                   ", ".join(gpu[:5]) or "none")
    return {"core": dla_core, "batch": profile["max"], "gpu_fallback": True, "layers": len(layers),
            "dla_capable_layers": len(layers) - len(gpu), "gpu_layers": gpu[:50],
            "source": "IBuilderConfig.can_run_on_DLA before the build (TensorRT may still partition differently)"}


# ------------------------------------------------------------------------------------------------------ runtime


def _deserialize(runtime: Any, plan_path: Path, *, has_key: bool) -> Any:
    """``runtime.deserialize_cuda_engine`` or :class:`EngineLoadError` with the rebuild commands (None or raise)."""
    try:
        engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
    except Exception as exc:  # some TensorRT builds raise instead of returning None
        raise load_failure(plan_path, has_key=has_key, detail=str(exc).strip().splitlines()[0][:200]) from exc
    if engine is None:
        raise load_failure(plan_path, has_key=has_key)
    return engine


def _engine_profile(engine: Any, name: str) -> dict[str, int]:
    """``{"min", "opt", "max"}`` batch of input ``name``: its static batch, or optimization profile 0."""
    batch = int(engine.get_tensor_shape(name)[0])  # trt.Dims index like a tuple; -1 marks a dynamic dimension
    if batch > 0:
        return {"min": batch, "opt": batch, "max": batch}
    low, opt, high = (int(shape[0]) for shape in engine.get_tensor_profile_shape(name, 0))
    return {"min": low, "opt": opt, "max": high}


class TensorRTEngine(EngineBase):
    """Native TensorRT engine (TensorRT 10+ tensor API) with CUDA buffers from ``device.cuda`` (no torch).

    ``embed`` takes uint8 NHWC; for an engine built from a ``float_nchw`` export the mean/std come from
    ``preprocess`` or, by default, the bundle's ``manifest.json`` (``<bundle>/tensorrt/<plan>``), and are
    applied before the engine runs. Batches are cut to the engine's profile; a static (DLA) engine gets its
    last chunk padded to the static batch. The DLA core is the key's, else the one in the plan's name.
    """

    def __init__(self, plan_path: Path | str, *, name: str = "tensorrt",
                 preprocess: Preprocess | dict[str, Any] | None = None, dla_core: int | None = None) -> None:
        import tensorrt as trt

        self.source_path = Path(plan_path)
        self.name = name
        if not self.source_path.is_file():
            raise ValueError(f"TensorRT plan {self.source_path} does not exist; build it: {rebuild_command(self.source_path)}")
        stored = read_engine_key(self.source_path)
        if stored is None:
            logger.warning("%s has no engine key (built by trtexec?); TensorRT checks its version and GPU when it "
                           "loads the plan. Write one with: edge-encoder key ...",
                           self.source_path)
        else:
            check_engine_key(stored, current_engine_key(), self.source_path)
        core = dla_core if dla_core is not None else (stored or {}).get("dla_core", parse_plan_name(self.source_path)[1])
        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._trt_logger)
        if core is not None:  # the runtime picks the DLA core at deserialization (default 0)
            self._runtime.DLA_core = int(core)
        self._engine = _deserialize(self._runtime, self.source_path, has_key=stored is not None)
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._input = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self._output = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        profile = _engine_profile(self._engine, self._input)
        self._min_batch, self._max_batch = profile["min"], profile["max"]
        self._set_input_spec(trt, tuple(self._engine.get_tensor_shape(self._input)), preprocess)
        from edge_encoder.device.cuda import DeviceBuffer, Stream

        self._stream, self._in_buffer, self._out_buffer = Stream(), DeviceBuffer(), DeviceBuffer()

    def _set_input_spec(self, trt: Any, shape: tuple[int, ...], preprocess: Preprocess | dict[str, Any] | None) -> None:
        self._normalize = None
        if self._engine.get_tensor_dtype(self._input) == trt.DataType.UINT8:
            self.input_spec = InputSpec(height=int(shape[1]), width=int(shape[2]), channels=int(shape[3]))
            return
        if preprocess is None:  # float_nchw export: normalise here, as OnnxRuntimeEngine does
            manifest = self.source_path.parent.parent / "manifest.json"
            if not manifest.is_file():
                raise ValueError(f"{self.source_path} takes normalised float NCHW input; pass preprocess= "
                                 f"{{'mean', 'std'}} (no manifest.json at {manifest})")
            from edge_encoder.device.manifest import manifest_preprocess

            preprocess = manifest_preprocess(json.loads(manifest.read_text()), manifest)
        self._normalize = normalization_of(preprocess, source=f"{self.source_path}: preprocess")
        self.input_spec = InputSpec(height=int(shape[2]), width=int(shape[3]))

    def _run(self, images: np.ndarray) -> np.ndarray:
        if self._context is None:
            raise RuntimeError(f"engine {self.name!r} is closed")
        if self._normalize is not None:
            images = normalize_images(images, *self._normalize)
        outs = []
        for start, stop, size in batch_chunks(len(images), self._min_batch, self._max_batch):
            chunk = images[start:stop]
            if size > len(chunk):  # a static (DLA) engine: pad, run, keep the real rows
                chunk = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            outs.append(self._execute(chunk)[: stop - start])
        return np.concatenate(outs)

    def _execute(self, batch: np.ndarray) -> np.ndarray:
        """One engine call on a batch inside the profile: copy in, enqueue, copy out on the engine's stream."""
        batch = np.ascontiguousarray(batch)
        self._context.set_input_shape(self._input, tuple(batch.shape))
        out = np.empty(tuple(self._context.get_tensor_shape(self._output)), dtype=np.float32)
        self._context.set_tensor_address(self._input, self._in_buffer.upload(batch, self._stream))
        self._context.set_tensor_address(self._output, self._out_buffer.reserve(out.nbytes))
        if not self._context.execute_async_v3(self._stream.handle):
            raise RuntimeError(f"TensorRT execution failed for {self.source_path}")
        return self._out_buffer.download(out, self._stream)  # synchronises the stream: batch may go now

    def close(self) -> None:
        if self._context is None:
            return
        self._context = None
        self._in_buffer.free()
        self._out_buffer.free()
        self._stream.close()


def write_key_for_plan(plan_path: Path, onnx_path: Path, *, dla_core: int | None = None) -> Path:
    """Key of this device for an existing plan (one ``trtexec`` built): the plan must load here first."""
    import tensorrt as trt

    plan_path, onnx_path = Path(plan_path), Path(onnx_path)
    for path, what in ((plan_path, "plan"), (onnx_path, "ONNX file")):
        if not path.is_file():
            raise ValueError(f"{what} {path} does not exist")
    core = dla_core if dla_core is not None else parse_plan_name(plan_path)[1]
    trt_logger = trt.Logger(trt.Logger.WARNING)  # kept alive as long as the runtime
    runtime = trt.Runtime(trt_logger)
    if core is not None:
        runtime.DLA_core = int(core)
    engine = _deserialize(runtime, plan_path, has_key=False)
    name = next(n for n in (engine.get_tensor_name(i) for i in range(engine.num_io_tensors))
                if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
    return write_engine_key(plan_path, onnx_path, profile=_engine_profile(engine, name), dla_core=core,
                            extra={"build": {"built_by": "trtexec (key written by `edge-encoder key`)"},
                                   "layers": _layer_summary(trt, plan_path.read_bytes(), core)})


# --------------------------------------------------------------------------------- plans (edge-encoder build)


def build_plans(bundle: Path, manifest: dict[str, Any], specs: Sequence[PlanSpec], *,
                workspace_mib: int = 1024) -> list[Path]:
    """Build each of ``specs`` (from :func:`trt_plans.select_plans`) from its hash-checked ONNX file, and after each
    plan its Triton model (:func:`write_triton_model`), so a later failure keeps the models already served."""
    from edge_encoder.device.manifest import read_bundle_file, resolve_bundle_file

    plans = []
    for spec in specs:
        if spec.dla_core is not None:  # which graph the DLA plan builds from depends on the TensorRT major
            spec, notes = resolve_dla_graph(manifest, spec, require_tensorrt().__version__)
            for note in notes:
                logger.warning(note)
        key = f"variants.{spec.variant}" + (f".dla.{spec.graph[4:]}" if spec.graph.startswith("dla_") else "") + ".file"
        onnx_path = resolve_bundle_file(bundle, spec.onnx_file, spec.onnx_sha256, key=key)
        calibration = None if spec.calibration_cache is None else read_bundle_file(
            bundle, spec.calibration_cache, spec.calibration_cache_sha256,
            key=f"variants.{spec.variant}.dla.tensorrt10.calibration_cache.file")
        plan = bundle / spec.plan
        plan.parent.mkdir(exist_ok=True)
        try:
            build_engine(onnx_path, plan, profile=spec.profile, workspace_mib=workspace_mib,
                         timing_cache=bundle / "tensorrt" / "timing.cache", dla_core=spec.dla_core,
                         variant=spec.variant, calibration_cache=calibration)
        except ValueError:
            raise
        except Exception as exc:  # TensorRT's own errors: one line naming the variant, the plans built so far kept
            first = (" ".join(str(exc).split()) or type(exc).__name__)[:300]
            raise BuildFailure(f"{spec.variant}: TensorRT could not build {spec.plan} from {spec.onnx_file}: {first}"
                               + (f" (built before it: {', '.join(str(p) for p in plans)})" if plans else "")) from exc
        plans.append(plan)
        try:
            write_triton_model(bundle, manifest, spec)
        except OSError as exc:  # the plan is built and kept; its Triton model could not be written
            raise BuildFailure(f"{spec.variant}: built {spec.plan} but could not write its Triton model: {exc}") from exc
    return plans


def write_triton_model(bundle: Path, manifest: dict[str, Any], spec: PlanSpec) -> Path | None:
    """The Triton model of a built plan, next to the bundle's other models: ``triton/encoder_trt_<v>`` (GPU plan,
    ``max_batch_size`` its profile's max) or ``triton/encoder_trt_<v>_dla`` (fixed batch, the plan's DLA core as the
    instance's ``KIND_NVDLA`` secondary device), written whole by ``device.triton.write_tensorrt_model``. Needs no
    TensorRT. A bundle without ``triton/`` gets none (logged); returns the model folder or None."""
    from edge_encoder.device.triton import write_tensorrt_model

    model = write_tensorrt_model(bundle, manifest, spec.variant, Path(bundle) / spec.plan,
                                 max_batch_size=spec.profile["max"], dla_core=spec.dla_core, dla_batch=spec.dla_batch)
    if model is None:
        logger.info("no Triton model for %s: %s has no triton/ folder", spec.plan, bundle)
    else:
        logger.info("Triton model %s (%s)", model, spec.plan)
    return model
