"""TensorRT plan files without TensorRT: names, engine keys, which plans to build, how, and what to say when one
cannot be used. Pure functions (standard library only), so every decision is tested on machines without a GPU;
``device.tensorrt`` does the TensorRT calls.

Plans of a bundle (``<bundle>/tensorrt/``)::

    encoder_<variant>.plan                GPU engine, dynamic batch (the manifest's ``tensorrt_profile``, 1/32/64)
    encoder_<variant>.dla<C>.b<B>.plan    Jetson DLA core C, one static batch B (fp16 / int8_trt only)
    <plan>.key.json                       engine key: TensorRT version, GPU name, compute capability, profile, ...

Why DLA plans are static: TensorRT's "DLA Supported Layers and Restrictions" — "DLA does not support dynamic
dimensions, so the profile's min, max, and opt values must be equal for wildcard dimensions", the maximum batch is
4096, and DLA runs FP16 and INT8 only ("DLA support is currently limited to networks running in FP16 and INT8
mode", "Building and Launching the Loadable").
https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/dla-layer-restrictions.html
https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/dla-build-and-run.html
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

DEFAULT_PROFILE = {"min": 1, "opt": 32, "max": 64}
# The variants TensorRT builds: int8_cpu is ONNX Runtime's CPU graph (INT32 bias DequantizeLinear, non-zero UINT8
# zero-points), which TensorRT's ONNX parser refuses (onnx/onnx-tensorrt#850), so no TensorRT artefact names it:
# trtexec.txt, the builder's and verify's defaults and the Triton TensorRT models all come from this one list.
TENSORRT_VARIANTS = ("fp32", "fp16", "int8_trt")
DLA_VARIANTS = ("fp16", "int8_trt")  # DLA computes in FP16 or INT8; fp32 and the CPU flavour are not for DLA
DLA_MAX_BATCH = 4096  # "The maximum supported batch size is 4096" (DLA Supported Layers and Restrictions)
_DLA_PLAN = re.compile(r"^encoder_(?P<variant>.+)\.dla(?P<core>\d+)\.b(?P<batch>\d+)\.plan$")


class EngineKeyMismatch(RuntimeError):
    """The engine was built for another TensorRT version or GPU."""


class EngineLoadError(RuntimeError):
    """TensorRT could not deserialize a plan here (another TensorRT version or GPU, or a damaged file)."""


@dataclass(frozen=True)
class EngineKey:
    tensorrt: str
    gpu_name: str
    compute_capability: str


# ------------------------------------------------------------------------------------------------ plan names


def plan_relpath(variant: str, dla_core: int | None = None, dla_batch: int | None = None) -> str:
    """``tensorrt/encoder_<variant>.plan``, or ``tensorrt/encoder_<variant>.dla<core>.b<batch>.plan`` for DLA."""
    if dla_core is None:
        return f"tensorrt/encoder_{variant}.plan"
    if dla_batch is None:
        raise ValueError("a DLA plan name needs its static batch")
    return f"tensorrt/encoder_{variant}.dla{int(dla_core)}.b{int(dla_batch)}.plan"


def parse_plan_name(plan_path: Path | str) -> tuple[str, int | None, int | None]:
    """``(variant, dla_core, dla_batch)`` of a plan file name (the DLA fields are None for a GPU plan)."""
    name = Path(plan_path).name
    match = _DLA_PLAN.match(name)
    if match:
        return match["variant"], int(match["core"]), int(match["batch"])
    return Path(name).stem.removeprefix("encoder_"), None, None


def key_path(plan_path: Path | str) -> Path:
    """The engine key beside a plan: ``<plan>.key.json``."""
    return Path(str(plan_path) + ".key.json")


def rebuild_command(plan_path: Path | str) -> str:
    """The builder command that rebuilds ``<bundle>/tensorrt/<plan>`` on this device."""
    plan_path = Path(plan_path)
    variant, core, batch = parse_plan_name(plan_path)
    dla = "" if core is None else f" --dla-core {core} --dla-batch {batch}"
    return f"edge-encoder build {plan_path.parent.parent} --variant {variant}{dla}"


def key_command(plan_relative: str, onnx_file: str, dla_core: int | None = None) -> str:
    """The command that writes the engine key of a plan built by ``trtexec`` (run from the bundle directory)."""
    dla = "" if dla_core is None else f" --dla-core {dla_core}"
    return f"edge-encoder key {plan_relative} --onnx {onnx_file}{dla}"


def trtexec_rebuild_line(plan_path: Path | str) -> str | None:
    """The ``trtexec`` line of the bundle's ``trtexec.txt`` that saves this plan, or None (no file, no such line)."""
    plan_path = Path(plan_path)
    listing = plan_path.parent.parent / "trtexec.txt"
    try:
        lines = listing.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    wanted = f"--saveEngine=tensorrt/{plan_path.name}"
    return next((line.strip() for line in lines if line.lstrip().startswith("trtexec ")
                 and wanted in line.split()), None)


def rebuild_hint(plan_path: Path | str) -> str:
    """Both ways to rebuild a plan here: the Python builder, or trtexec followed by the key step."""
    plan_path = Path(plan_path)
    line = trtexec_rebuild_line(plan_path)
    trtexec = (f"or, from {plan_path.parent.parent}: {line}" if line else
               f"or the trtexec line for tensorrt/{plan_path.name} in {plan_path.parent.parent / 'trtexec.txt'}")
    return f"rebuild it on this device: {rebuild_command(plan_path)} ({trtexec}, then its key step)"


# ------------------------------------------------------------------------------------------------ engine keys


def check_engine_key(stored: EngineKey | dict[str, Any], current: EngineKey, plan_path: Path | str) -> None:
    """Raise ``EngineKeyMismatch`` (with both rebuild commands) unless ``stored`` equals ``current``."""
    stored = stored if isinstance(stored, EngineKey) else EngineKey(
        **{k: stored.get(k) for k in ("tensorrt", "gpu_name", "compute_capability")})
    diffs = [f"{k}: engine {v!r} vs device {getattr(current, k)!r}" for k, v in asdict(stored).items()
             if v != getattr(current, k)]
    if diffs:
        hint = rebuild_hint(plan_path)
        raise EngineKeyMismatch(f"TensorRT engine {plan_path} was built elsewhere ({'; '.join(diffs)}). "
                                f"{hint[0].upper()}{hint[1:]}")


def load_failure(plan_path: Path | str, *, has_key: bool, detail: str | None = None) -> EngineLoadError:
    """The error for a plan TensorRT refused to deserialize.

    ``IRuntime.deserialize_cuda_engine`` returns None "if it could not be deserialized" (TensorRT 10.3 Python API,
    NVIDIA/TensorRT python/docstrings/infer/pyCoreDoc.h) and logs the reason, e.g. "Serialization assertion
    stdVersionRead == kSERIALIZATION_VERSION failed. Version tag does not match" for a plan of another version
    (triton-inference-server/tensorrtllm_backend#531); plans are tied to the TensorRT version and GPU.
    """
    why = ("" if has_key else "it has no engine key (built by trtexec?), and ") + \
          "TensorRT could not deserialize it here: it was built by another TensorRT version or for another GPU, or it is damaged"
    extra = f" ({detail})" if detail else ""
    return EngineLoadError(f"TensorRT plan {plan_path}: {why}{extra}; {rebuild_hint(plan_path)}")


# --------------------------------------------------------------------------------------------- plan selection


@dataclass(frozen=True)
class PlanSpec:
    """One plan to build: the variant, its ONNX file (as the manifest records it), where the plan goes, the profile."""

    variant: str
    onnx_file: str
    onnx_sha256: str
    plan: str  # relative to the bundle directory
    profile: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PROFILE))
    dla_core: int | None = None

    @property
    def dla_batch(self) -> int | None:
        return None if self.dla_core is None else self.profile["max"]


def dla_profile(batch: int) -> dict[str, int]:
    """min = opt = max = ``batch``: the only profile DLA accepts."""
    return {"min": batch, "opt": batch, "max": batch}


def check_dla_batch(value: Any, what: str) -> int:
    """``value`` as a DLA batch (an int in [1, 4096]); a one-line ``ValueError`` naming ``what`` otherwise."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= DLA_MAX_BATCH:
        raise ValueError(f"{what} must be an integer from 1 to {DLA_MAX_BATCH} (DLA runs one static batch; "
                         f"TensorRT's DLA restrictions cap it at {DLA_MAX_BATCH}), got {value!r}")
    return value


def select_plans(manifest: dict[str, Any], variants: Sequence[str] | None = None, *, dla_core: int | None = None,
                 dla_batch: int | None = None, source: str = "manifest.json") -> tuple[list[PlanSpec], list[str]]:
    """Which plans ``edge-encoder build`` builds, and notes for the user (variants skipped).

    GPU (no ``dla_core``): every requested variant (default: the bundle's ``TENSORRT_VARIANTS``) with the
    manifest's dynamic profile; int8_cpu is refused by name.
    DLA: fp16 / int8_trt only, one static batch — ``dla_batch`` or else the manifest's ``dla_batch``. An explicit
    fp32 (or other non-DLA) variant is refused; when variants are implicit, the others are skipped with a note.

    Raises:
        ValueError: one line — unknown variant, fp32 (or int8_cpu) on DLA, no static batch, a batch out of range.
    """
    known = manifest["variants"]
    chosen = list(variants) if variants else tensorrt_variants(manifest)
    unknown = [v for v in chosen if v not in known]
    if unknown:
        raise ValueError(f"variant {unknown[0]!r} is not in {source}; available: {sorted(known)}")
    not_trt = [v for v in chosen if v not in TENSORRT_VARIANTS]
    if not_trt:
        raise ValueError(f"variant {not_trt[0]!r} is not built with TensorRT (it is ONNX Runtime's CPU graph, which "
                         f"TensorRT's parser refuses); TensorRT variants: {', '.join(TENSORRT_VARIANTS)}")
    if not chosen:
        raise ValueError(f"{source} has no TensorRT variant ({', '.join(TENSORRT_VARIANTS)}); export one "
                         "(export.variants)")
    if dla_core is None:
        if dla_batch is not None:
            raise ValueError("--dla-batch needs --dla-core (the batch is for a DLA build; GPU plans use the "
                             "manifest's dynamic profile)")
        profile = dict(manifest.get("tensorrt_profile") or DEFAULT_PROFILE)
        return [_spec(known, v, plan_relpath(v), profile) for v in chosen], []
    if not isinstance(dla_core, int) or isinstance(dla_core, bool) or dla_core < 0:
        raise ValueError(f"--dla-core must be a DLA core index >= 0, got {dla_core!r}")
    refused = [v for v in chosen if v not in DLA_VARIANTS]
    if variants and refused:
        raise ValueError(f"--dla-core with --variant {refused[0]}: {_not_for_dla(refused[0])}; use --variant fp16 "
                         "or --variant int8_trt")
    batch = _dla_batch(manifest, dla_batch, source)
    dla = [v for v in chosen if v in DLA_VARIANTS]
    if not dla:
        raise ValueError(f"--dla-core: {source} has no DLA-capable variant ({' or '.join(DLA_VARIANTS)}); "
                         "export one (export.variants)")
    notes = [f"skipped {v} for DLA: {_not_for_dla(v)}; building {', '.join(dla)}" for v in refused]
    if "int8_trt" in dla and ((known["int8_trt"] or {}).get("quantization") or {}).get("float_input_convs"):
        notes.append("int8_trt keeps its stem convolution float (export.int8_stem): TensorRT 10 runs it in FP16 on "
                     "the DLA, TensorRT 11 (strongly typed) on the GPU; export with export.dla_batch set (or "
                     "export.int8_stem = 'int8') to put it on the DLA in INT8")
    return [_spec(known, v, plan_relpath(v, dla_core, batch), dla_profile(batch), dla_core) for v in dla], notes


def tensorrt_variants(manifest: dict[str, Any]) -> list[str]:
    """The bundle's variants that TensorRT builds (``TENSORRT_VARIANTS``), in the manifest's order."""
    return [v for v in manifest["variants"] if v in TENSORRT_VARIANTS]


def _not_for_dla(variant: str) -> str:
    if variant == "fp32":
        return "DLA has no FP32 (it runs FP16 and INT8 only)"
    return f"{variant} is not a DLA variant (DLA runs the fp16 and int8_trt graphs only)"


def _dla_batch(manifest: dict[str, Any], dla_batch: int | None, source: str) -> int:
    if dla_batch is not None:
        return check_dla_batch(dla_batch, "--dla-batch")
    recorded = manifest.get("dla_batch", 0)
    if recorded in (0, None):
        raise ValueError(f"--dla-core needs a static batch: pass --dla-batch B, or export with export.dla_batch = B "
                         f"({source} records none); DLA does not run a dynamic batch")
    return check_dla_batch(recorded, f"{source}: key 'dla_batch'")


def _spec(known: dict[str, Any], variant: str, plan: str, profile: dict[str, int],
          dla_core: int | None = None) -> PlanSpec:
    entry = known[variant]
    return PlanSpec(variant, entry["file"], entry["sha256"], plan, profile, dla_core)


# ------------------------------------------------------------------------------------------------ build mode


@dataclass(frozen=True)
class BuildMode:
    """How a network is created and which ``trt.BuilderFlag`` names the builder config sets."""

    strongly_typed: bool
    flags: tuple[str, ...] = ()
    # Flags cleared on the builder config. TF32 is "Enabled by default" (TensorRT Python API, IBuilderConfig /
    # BuilderFlag.TF32: inner products with inputs rounded to 10-bit mantissas) and applies to FP32 tensors even in a
    # strongly typed network: cleared, so that an FP32 layer (the whole fp32 variant, the preprocessing and the L2 tail
    # of every variant) computes in FP32 as the manifest says and meets the fp32 parity gate (cosine >= 0.9999).
    cleared: tuple[str, ...] = ("TF32",)


def build_mode(tensorrt_version: str, variant: str, dla: bool) -> BuildMode:
    """Strongly typed everywhere except DLA on TensorRT 10.

    - GPU, TensorRT 10 and 11: strongly typed; precision comes from the ONNX graph (Casts, Q/DQ).
    - DLA, TensorRT 11: strongly typed (TensorRT 11.4.1 "Strongly Typed Networks for DLA": DLA builds use strongly
      typed networks and the kFP16/kINT8 flags are gone), plus ``GPU_FALLBACK``.
    - DLA, TensorRT 10 (JetPack 6): weakly typed with the flags TensorRT 10's own trtexec sets for every DLA build
      (NVIDIA/TensorRT release/10.3 samples/common/sampleEngines.cpp: ``kPREFER_PRECISION_CONSTRAINTS``, ``kFP16``
      unless INT8, ``kGPU_FALLBACK``), with ``INT8`` added for the Q/DQ variant. trtexec 10.x itself calls precision
      flags "not allowed if graph is strongly typed" (sampleOptions.cpp), and no NVIDIA page for 10.x says strongly
      typed DLA builds work, so the 10.x DLA path follows trtexec. Not verified on a Jetson from here.

    ``GPU_FALLBACK`` is kept on DLA: the graph's uint8 Cast, the L2-normalise tail and Reshape/Flatten are not DLA
    layers, and without fallback the build fails; with it "layers that cannot run on DLA silently fall back to GPU",
    so the builder records, from ``IBuilderConfig.can_run_on_DLA``, how many layers can run there (DLA Runtime
    Configuration, "GPU Fallback Mode").
    """
    major = int(str(tensorrt_version).split(".")[0])
    if not dla:
        return BuildMode(strongly_typed=True)
    if major >= 11:
        return BuildMode(strongly_typed=True, flags=("GPU_FALLBACK",))
    precision = ("INT8", "FP16") if variant.startswith("int8") else ("FP16",)
    return BuildMode(strongly_typed=False, flags=("GPU_FALLBACK", "PREFER_PRECISION_CONSTRAINTS", *precision))


# ------------------------------------------------------------------------------------------------------ runtime


def batch_chunks(count: int, min_batch: int, max_batch: int) -> list[tuple[int, int, int]]:
    """``(start, stop, run_size)`` covering ``count`` images in engine-sized chunks.

    Chunks hold at most ``max_batch`` images; a chunk smaller than ``min_batch`` (the last one, or every one of a
    static DLA plan where min = max) is run at ``min_batch`` with padding, and only ``stop - start`` rows are kept.
    """
    if min_batch < 1 or max_batch < min_batch:
        raise ValueError(f"engine batch range must satisfy 1 <= min <= max, got min={min_batch}, max={max_batch}")
    return [(start, min(start + max_batch, count), max(min(max_batch, count - start), min_batch))
            for start in range(0, count, max_batch)]
