"""TensorRT plan files without TensorRT: names, engine keys, which plans to build, how, and what to say when one
cannot be used. Pure functions (standard library only), so every decision is tested on machines without a GPU;
``device.tensorrt`` does the TensorRT calls.

Plans of a bundle (``<bundle>/tensorrt/``)::

    encoder_<variant>.plan                GPU engine, dynamic batch (the manifest's ``tensorrt_profile``, 1/32/64)
    encoder_<variant>.dla<C>.b<B>.plan    Jetson DLA core C, one static batch B (fp16 / int8_trt only)
    <plan>.key.json                       engine key: TensorRT version, GPU name, compute capability, profile, ...

DLA INT8 plans of int8_trt build from its DLA graphs (manifest ``variants.int8_trt.dla``, ``export.dla_int8``):
on TensorRT 10 the Q/DQ-free graph with its calibration cache, on TensorRT >= 11.4.1 the graph with Q/DQ on every
DLA tensor (:func:`resolve_dla_graph`); what TensorRT then placed where is summarized from the engine inspector
(:func:`summarize_engine_layers`). Unverified on an Orin.

Why DLA plans are static: TensorRT's "DLA Supported Layers and Restrictions" — "DLA does not support dynamic
dimensions, so the profile's min, max, and opt values must be equal for wildcard dimensions", the maximum batch is
4096, and DLA runs FP16 and INT8 only ("DLA support is currently limited to networks running in FP16 and INT8
mode", "Building and Launching the Loadable").
https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/dla-layer-restrictions.html
https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/dla-build-and-run.html
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
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
    # The TensorRT 10 DLA INT8 build (implicit quantization): the calibration cache its calibrator returns, and which
    # graph ``onnx_file`` is ("variant", or one of int8_trt's DLA graphs: see :func:`resolve_dla_graph`).
    calibration_cache: str | None = None
    calibration_cache_sha256: str | None = None
    graph: str = "variant"

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
    if "int8_trt" in dla and not (known["int8_trt"] or {}).get("dla") and \
            ((known["int8_trt"] or {}).get("quantization") or {}).get("float_input_convs"):
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


# ------------------------------------------------------------------------------------------ DLA INT8 graphs


def dla_generation(tensorrt_version: str) -> str:
    """Which DLA build a TensorRT version makes: ``"tensorrt10"`` (weakly typed with precision flags; INT8 from a
    calibration cache) or ``"tensorrt11"`` (strongly typed; INT8 from Q/DQ). A one-line ``ValueError`` for a version
    without DLA: "TensorRT 10.7 was the last 10.x release that supported DLA", "DLA was unavailable in TensorRT 11.0
    through 11.3 ... TensorRT 11.4.0 supported DLA only on Windows on ARM", and 11.4.1 "supports DLA on NVIDIA Jetson
    AGX Orin when using NVIDIA JetPack 7.2.2 or later" (TensorRT 11.4.1 "Working with DLA" and release notes)."""
    try:
        parts = [int(p) for p in str(tensorrt_version).split(".")[:3]]
    except ValueError:
        raise ValueError(f"cannot read the TensorRT version {tensorrt_version!r}") from None
    major, minor, patch = (parts + [0, 0, 0])[:3]
    if major == 10 and minor <= 7:
        return "tensorrt10"
    if (major, minor, patch) >= (11, 4, 1):
        return "tensorrt11"
    raise ValueError(f"TensorRT {tensorrt_version} has no DLA support: DLA builds need TensorRT 10.x up to 10.7 "
                     "(JetPack 6.1 / 6.2 ship 10.3) or TensorRT 11.4.1 or newer on JetPack 7.2.2+ (Jetson AGX Orin)")


def resolve_dla_graph(manifest: dict[str, Any], spec: PlanSpec, tensorrt_version: str) -> tuple[PlanSpec, list[str]]:
    """The ONNX graph (and calibration cache) a DLA plan of ``spec`` is built from on ``tensorrt_version``, and notes.

    fp16 builds from its variant graph on both generations. int8_trt builds from its DLA graphs
    (``variants.int8_trt.dla``, written by ``export.dla_int8``): on TensorRT 10 the Q/DQ-free graph with the
    calibration cache (DLA takes INT8 from implicit quantization; Q/DQ are "Reconstruction" in NVIDIA's Orin DLA
    operator table), on TensorRT >= 11.4.1 the graph with Q/DQ on every DLA tensor (strongly typed). A bundle without
    them (exported before, or without ``export.dla_batch``) builds from the int8_trt graph itself, with a note: its
    convolution outputs have no INT8 scale, so those layers run FP16 (TensorRT 10) or not on the DLA (TensorRT 11).
    A GPU spec is returned unchanged. Unverified on an Orin.

    Raises:
        ValueError: a TensorRT version without DLA (:func:`dla_generation`), a malformed ``dla`` entry.
    """
    if spec.dla_core is None:
        return spec, []
    generation = dla_generation(tensorrt_version)
    if spec.variant != "int8_trt":
        return spec, []
    graphs = (manifest["variants"].get("int8_trt") or {}).get("dla")
    chosen = (graphs or {}).get(generation)
    if not isinstance(chosen, dict):
        return spec, [f"int8_trt has no {generation} DLA graph in the manifest (export with export.dla_batch set): "
                      f"building {spec.onnx_file}, whose convolution outputs carry no INT8 scale, so TensorRT "
                      f"{tensorrt_version} runs those layers " + ("in FP16 on the DLA" if generation == "tensorrt10"
                                                                   else "off the DLA (on the GPU)")]
    where = f"variants.int8_trt.dla.{generation}"
    if not isinstance(chosen.get("file"), str) or not isinstance(chosen.get("sha256"), str):
        raise ValueError(f"manifest key {where!r} needs 'file' and 'sha256'")
    cache = chosen.get("calibration_cache") if generation == "tensorrt10" else None
    if generation == "tensorrt10" and not (isinstance(cache, dict) and isinstance(cache.get("file"), str)
                                           and isinstance(cache.get("sha256"), str)):
        raise ValueError(f"manifest key {where!r} has no 'calibration_cache' with 'file' and 'sha256'")
    return replace(spec, onnx_file=chosen["file"], onnx_sha256=chosen["sha256"],
                   calibration_cache=cache["file"] if cache else None,
                   calibration_cache_sha256=cache["sha256"] if cache else None, graph=f"dla_{generation}"), []


def variant_graph_hashes(entry: dict[str, Any]) -> dict[str, str]:
    """``{sha256: file}`` of every ONNX graph a plan of this variant may be built from: the variant's file and, for
    int8_trt, its DLA graphs (an engine key's ``onnx_sha256`` must be one of them)."""
    found = {entry["sha256"]: entry["file"]} if isinstance(entry.get("sha256"), str) else {}
    for graph in (entry.get("dla") or {}).values():
        if isinstance(graph, dict) and isinstance(graph.get("sha256"), str) and isinstance(graph.get("file"), str):
            found[graph["sha256"]] = graph["file"]
    return found


# ------------------------------------------------------------------------------------------------ build mode


@dataclass(frozen=True)
class BuildMode:
    """How a network is created and which ``trt.BuilderFlag`` names the builder config sets."""

    strongly_typed: bool
    flags: tuple[str, ...] = ()
    # TensorRT 10 DLA INT8 from a calibration cache: the builder gets an IInt8EntropyCalibrator2 that returns the cache
    # and no batches (device.tensorrt; TensorRT 10 Python API, IBuilderConfig.int8_calibrator, deprecated since 10.1
    # and removed in 11.x, where INT8 comes from Q/DQ).
    calibrator: bool = False
    # Flags cleared on the builder config. TF32 is "Enabled by default" (TensorRT Python API, IBuilderConfig /
    # BuilderFlag.TF32: inner products with inputs rounded to 10-bit mantissas) and applies to FP32 tensors even in a
    # strongly typed network: cleared, so that an FP32 layer (the whole fp32 variant, the preprocessing and the L2 tail
    # of every variant) computes in FP32 as the manifest says and meets the fp32 parity gate (cosine >= 0.9999).
    cleared: tuple[str, ...] = ("TF32",)


def build_mode(tensorrt_version: str, variant: str, dla: bool, *, calibration_cache: bool = False) -> BuildMode:
    """Strongly typed everywhere except DLA on TensorRT 10.

    - GPU, TensorRT 10 and 11: strongly typed; precision comes from the ONNX graph (Casts, Q/DQ).
    - DLA, TensorRT 11: strongly typed (TensorRT 11.4.1 "Strongly Typed Networks for DLA": DLA builds use strongly
      typed networks and the kFP16/kINT8 flags are gone), plus ``GPU_FALLBACK``.
    - DLA, TensorRT 10 (JetPack 6): weakly typed with the flags TensorRT 10's own trtexec sets for every DLA build
      (NVIDIA/TensorRT release/10.3 samples/common/sampleEngines.cpp: ``kPREFER_PRECISION_CONSTRAINTS``, ``kFP16``
      unless INT8, ``kGPU_FALLBACK``), with ``INT8`` added for the Q/DQ variant. trtexec 10.x itself calls precision
      flags "not allowed if graph is strongly typed" (sampleOptions.cpp), and no NVIDIA page for 10.x says strongly
      typed DLA builds work, so the 10.x DLA path follows trtexec. Not verified on a Jetson from here.
      With ``calibration_cache`` (int8_trt's Q/DQ-free DLA graph, :func:`resolve_dla_graph`) the builder also gets a
      calibrator that returns the cache (``calibrator``): INT8 + FP16 from implicit quantization, as
      ``trtexec --int8 --fp16 --calib=<cache>`` (NVIDIA qdq-translator README) does.

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
    return BuildMode(strongly_typed=False, flags=("GPU_FALLBACK", "PREFER_PRECISION_CONSTRAINTS", *precision),
                     calibrator=bool(calibration_cache) and variant.startswith("int8"))


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


# --------------------------------------------------------------------------------------- engine layer information

# Precision names in IEngineInspector's tensor descriptions. TensorRT 10.x writes one "Format/Datatype" string per
# layer input/output (e.g. "Row major linear FP32", "Channel major INT8 format where channel % 16 == 0",
# "Sixteen wide channel vectorized row major FP16 format"); TensorRT 11.x splits it into "Format" and "DataType"
# ("Float", "Half", "Int8", ...) (TensorRT 11 "Migrating IEngineInspector Usage from TensorRT 10.x to 11.x"). The
# tokens are those NVIDIA's own parser maps (NVIDIA/TensorRT tools/experimental/trt-engine-explorer/trex/
# activations.py, ``parse_tensor_info``).
# Checked in this order (``uint8`` before ``int8``, ``bfloat16`` before ``float``).
_PRECISION_TOKENS = (("UINT8", ("uint8",)), ("INT8", ("int8",)), ("BF16", ("bfloat16", "bf16")),
                     ("FP16", ("fp16", "half")), ("FP8", ("fp8",)), ("INT32", ("int32",)), ("INT64", ("int64",)),
                     ("FP32", ("fp32", "float")), ("BOOL", ("bool",)))
_FOREIGN_NODE = "{ForeignNode["  # a subgraph TensorRT hands to another compiler: DLA (or Myelin on the GPU)


def tensor_precision(desc: dict[str, Any]) -> str:
    """``"INT8"``, ``"FP16"``, ``"FP32"``... of one ``Inputs`` / ``Outputs`` entry of the inspector JSON, or
    ``"unknown"``."""
    text = str(desc.get("DataType") or desc.get("Format/Datatype") or "").lower()
    return next((name for name, tokens in _PRECISION_TOKENS if any(t in text for t in tokens)), "unknown")


def is_dla_layer(layer: dict[str, Any], *, dla_build: bool) -> bool:
    """Whether an inspector layer runs on the DLA. TensorRT hands each DLA subgraph to the DLA compiler as one engine
    layer named ``{ForeignNode[first...last]}`` (its profile lists e.g. "{ForeignNode[Conv_0...Concat_198]}" between
    "images to nvm" / "head_3 from nvm" copies, NVIDIA/TensorRT#3143); on the GPU the same name marks a Myelin
    subgraph, so a ForeignNode counts as DLA only in a DLA build and when its type does not say Myelin. A layer whose
    ``LayerType`` / ``ParameterType`` names the DLA counts too. Heuristic: not checked against a real Orin engine."""
    kinds = f"{layer.get('LayerType', '')} {layer.get('ParameterType', '')}".lower()
    if "dla" in kinds:
        return True
    return dla_build and str(layer.get("Name", "")).startswith(_FOREIGN_NODE) and "myelin" not in kinds


def summarize_engine_layers(info: str | dict[str, Any], *, dla_build: bool, limit: int = 40) -> dict[str, Any]:
    """What an engine runs where and in which precision, from ``IEngineInspector.get_engine_information(
    LayerInformationFormat.JSON)`` (TensorRT Python API, EngineInspector): ``{"detailed", "layers", "by_device":
    {"DLA"|"GPU": {precision: count}}, "dla_layers": [...], "gpu_layers": [...]}``. A layer's precision is that of
    its first output (else first input). Per-layer detail needs ``ProfilingVerbosity.DETAILED`` at build time; with
    the default (layer names only) ``Layers`` is a list of names and ``detailed`` is False.

    Raises:
        ValueError: not JSON, or no ``Layers`` list.
    """
    data = json.loads(info) if isinstance(info, (str, bytes)) else info
    layers = data.get("Layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        raise ValueError("engine information has no 'Layers' list (not IEngineInspector JSON)")
    if not all(isinstance(layer, dict) for layer in layers):
        names = [str(layer) for layer in layers]
        dla = [n for n in names if dla_build and n.startswith(_FOREIGN_NODE)]
        return {"detailed": False, "layers": len(names), "dla_layers": dla[:limit],
                "note": "built without ProfilingVerbosity.DETAILED: layer names only, no precision"}
    by_device: dict[str, dict[str, int]] = {"DLA": {}, "GPU": {}}
    listed: dict[str, list[dict[str, str]]] = {"DLA": [], "GPU": []}
    for layer in layers:
        device = "DLA" if is_dla_layer(layer, dla_build=dla_build) else "GPU"
        tensors = [t for t in (layer.get("Outputs") or []) + (layer.get("Inputs") or []) if isinstance(t, dict)]
        precision = tensor_precision(tensors[0]) if tensors else "unknown"
        by_device[device][precision] = by_device[device].get(precision, 0) + 1
        listed[device].append({"name": str(layer.get("Name", "")),
                               "type": str(layer.get("ParameterType") or layer.get("LayerType") or ""),
                               "precision": precision})
    return {"detailed": True, "layers": len(layers), "by_device": {k: v for k, v in by_device.items() if v},
            "dla_layers": listed["DLA"][:limit], "gpu_layers": listed["GPU"][:limit],
            "source": "IEngineInspector (ProfilingVerbosity.DETAILED); DLA = ForeignNode layers of a DLA build "
                      "(heuristic, unverified on an Orin)"}
