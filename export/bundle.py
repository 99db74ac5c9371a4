"""The deploy bundle (``runs/<name>/deploy/``): every ONNX variant, its parity report and the contract.

Layout::

    deploy/
      encoder_fp32.onnx  encoder_fp16.onnx  encoder_int8_trt.onnx  encoder_int8_cpu.onnx
      manifest.json        preprocessing + embedding contract, variants (file, sha256, parity, passed), provenance
      calibration.json     which images calibrated the INT8 variants and how they were chosen
      trtexec.txt          equivalent trtexec command lines (strongly typed, same profile)
      triton/<model>/config.pbtxt (+ 1/model.onnx)   onnxruntime_onnx and tensorrt_plan models
      README.md            build, verify, run on the device

One input layout per bundle (``input_layout``): ``uint8_nhwc`` (default, preprocessing in every graph)
or ``float_nchw`` (float32 ``(N, 3, H, W)`` normalised upstream, e.g. by DeepStream/Triton); the manifest,
Triton configs and trtexec lines follow it. File names are ``encoder_<variant>.onnx`` either way.

The bundle is built in a temporary directory beside ``out_dir`` and swapped in at the end, so an
interrupted export leaves the previous bundle as it was.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from edge_encoder.core.files import atomic_write_bytes, file_sha256
from edge_encoder.export.engines import OnnxRuntimeEngine, TorchEngine
from edge_encoder.export.onnx_export import (
    INPUT_NAME,
    OUTPUT_NAME,
    Preprocess,
    build_fp32_encoder,
    check_input_layout,
    input_contract,
    save_model,
)
from edge_encoder.export.parity import (
    DEFAULT_THRESHOLDS,
    ParityThresholds,
    compare_embeddings,
)
from edge_encoder.export.precision import (
    INT8_FLAVOURS,
    VARIANTS,
    QuantConfig,
    make_variant,
)

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = "edge-encoder/deploy-bundle/1"
PROFILE = {"min": 1, "opt": 32, "max": 64}  # TensorRT batch profile; Triton's max_batch_size follows "max"


class ParityGateError(RuntimeError):
    """A variant failed its parity gate; the bundle was written with it marked ``passed: false``."""

    def __init__(self, failed: dict[str, list[str]], manifest_path: Path) -> None:
        self.failed = failed
        self.manifest_path = manifest_path
        lines = "; ".join(f"{v}: {', '.join(f)}" for v, f in failed.items())
        super().__init__(f"parity gate failed for {sorted(failed)} ({lines}); bundle kept at {manifest_path.parent}")


@dataclass(frozen=True)
class VariantResult:
    path: Path
    engine_name: str
    precision: str
    parity: dict[str, Any]
    passed: bool


@dataclass(frozen=True)
class BundleResult:
    manifest_path: Path
    variants: dict[str, VariantResult]


def _resolve_source(source: Any) -> tuple[Any, dict[str, Any], dict[str, Any], str | None]:
    """``(backbone, preprocess, backbone_config, checkpoint_sha256)`` from a checkpoint path or a triple."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"checkpoint not found: {path}")
        from edge_encoder.train.checkpoint import (
            load_backbone,  # lazy: export/ works from an in-memory backbone too
        )

        backbone, preprocess, backbone_config = load_backbone(path)
        return backbone, preprocess, backbone_config, file_sha256(path)
    if isinstance(source, tuple) and len(source) == 3:
        backbone, preprocess, backbone_config = source
        return backbone, dict(preprocess), dict(backbone_config), None
    raise TypeError(f"source must be a checkpoint path or a (backbone, preprocess, backbone_config) tuple, got {type(source).__name__}")


def _check_images(name: str, images: np.ndarray, size: int) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
            or images.shape[1:] != (size, size, 3) or len(images) == 0:
        shape = getattr(images, "shape", None)
        raise ValueError(f"{name} must be a non-empty uint8 (N, {size}, {size}, 3) array, got "
                         f"{getattr(images, 'dtype', type(images).__name__)} {shape}")


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxslim", "tensorrt", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _git_commit() -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def export_bundle(source: Any, out_dir: Path, *, calibration_images: np.ndarray, parity_images: np.ndarray,
                  parity_labels: np.ndarray | None = None, variants: Sequence[str] = VARIANTS, opset: int = 17,
                  exporter: str = "auto", calibration_indices: np.ndarray | None = None,
                  thresholds: dict[str, ParityThresholds] | None = None,
                  quant_configs: dict[str, QuantConfig] | None = None, allow_failed: bool = False,
                  progress: bool = False, input_layout: str = "uint8_nhwc") -> BundleResult:
    """Export every variant, gate it on parity with the FP32 PyTorch reference, write the bundle atomically.

    Args:
        source: checkpoint path (read with ``train.checkpoint.load_backbone``) or an in-memory
            ``(backbone, preprocess, backbone_config)`` triple.
        out_dir: the bundle directory (replaced as a whole at the end).
        calibration_images: uint8 ``(N, H, W, 3)`` training images for INT8 calibration.
        parity_images: uint8 ``(M, H, W, 3)`` fixed evaluation subset; ``parity_labels`` int ``(M,)`` adds
            the kNN accuracy change.
        calibration_indices: where ``calibration_images`` came from in the training split (recorded).
        thresholds / quant_configs: per-variant overrides of ``DEFAULT_THRESHOLDS`` / ``INT8_FLAVOURS``.
        allow_failed: do not raise ``ParityGateError`` when a variant fails its gate.
        input_layout: ``"uint8_nhwc"`` (default) or ``"float_nchw"`` (see ``export.onnx_export.export_onnx``);
            every variant of the bundle gets it. Calibration and parity images stay uint8 NHWC either way
            (float variants are calibrated and checked on them normalised with the recorded mean/std).

    Raises:
        ParityGateError: after the bundle is written, when a variant failed and ``allow_failed`` is False.
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or "fp32" not in variants:
        raise ValueError(f"variants must include 'fp32' and come from {VARIANTS}, got {list(variants)}")
    check_input_layout(input_layout)
    backbone, preprocess, backbone_config, ckpt_sha = _resolve_source(source)
    pre = Preprocess.from_dict(preprocess)
    _check_images("calibration_images", calibration_images, pre.image_size)
    _check_images("parity_images", parity_images, pre.image_size)
    if parity_labels is not None and np.shape(parity_labels) != (len(parity_images),):
        raise ValueError(f"parity_labels must have shape ({len(parity_images)},), got {np.shape(parity_labels)}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-{os.getpid()}-", dir=out_dir.parent))
    try:
        fp32, exporter_used, notes = build_fp32_encoder(backbone, pre.to_dict(), opset=opset, exporter=exporter,
                                                        input_layout=input_layout)
        with TorchEngine(backbone, pre.to_dict()) as ref_engine:
            reference = ref_engine.embed(parity_images)
        thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
        results: dict[str, VariantResult] = {}
        entries: dict[str, Any] = {}
        iterator = list(variants)
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc="export variants", unit="variant")
        for variant in iterator:
            model = make_variant(fp32, variant, calibration_images, (quant_configs or {}).get(variant))
            file = f"encoder_{variant}.onnx"
            sha = save_model(model, tmp / file)
            with OnnxRuntimeEngine(tmp / file, name=f"onnx_{variant}", preprocess=pre.to_dict()) as engine:
                candidate = engine.embed(parity_images)
            report = compare_embeddings(reference, candidate, parity_labels, thresholds[variant])
            logger.info("%s: cosine min %.6f, top-1 agreement %.3f, %s", variant, report.cosine_min,
                        report.top1_agreement, "passed" if report.passed else f"FAILED {report.failures}")
            entries[variant] = {"file": file, "engine_name": f"onnx_{variant}", "precision": variant,
                                "sha256": sha, "bytes": (tmp / file).stat().st_size,
                                "quantization": _quant_desc(variant, quant_configs), "parity": report.to_dict(),
                                "passed": report.passed}
            results[variant] = VariantResult(out_dir / file, f"onnx_{variant}", variant, report.to_dict(), report.passed)
        out_dim = int(reference.shape[1])
        manifest = _manifest(pre, out_dim, backbone_config, entries, ckpt_sha, opset, exporter_used, notes,
                             len(calibration_images), len(parity_images), input_layout)
        _write_json(tmp / "manifest.json", manifest)
        _write_json(tmp / "calibration.json", _calibration_record(calibration_images, calibration_indices))
        _write_text(tmp / "trtexec.txt", trtexec_commands(list(variants), pre.image_size, input_layout=input_layout))
        write_triton_repository(tmp, list(variants), pre.image_size, out_dim, input_layout=input_layout)
        _write_text(tmp / "README.md", device_readme(manifest))
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    failed = {v: r.parity["failures"] for v, r in results.items() if not r.passed}
    if failed and not allow_failed:
        raise ParityGateError(failed, out_dir / "manifest.json")
    return BundleResult(out_dir / "manifest.json", results)


def _quant_desc(variant: str, overrides: dict[str, QuantConfig] | None) -> dict[str, Any] | None:
    if variant not in INT8_FLAVOURS:
        return None
    cfg = (overrides or {}).get(variant) or INT8_FLAVOURS[variant]
    return {"format": "QDQ", "tool": "onnxruntime.quantization.quantize_static", **cfg.__dict__,
            "excluded": "preprocess/*, input/* and tail/* nodes (kept FP32)"}


def _manifest(pre: Preprocess, out_dim: int, backbone_config: dict[str, Any], entries: dict[str, Any],
              ckpt_sha: str | None, opset: int, exporter: str, notes: list[str], n_calib: int, n_parity: int,
              input_layout: str = "uint8_nhwc") -> dict[str, Any]:
    spec = input_contract(input_layout, pre.image_size)
    return {
        "format": MANIFEST_FORMAT,
        "input_layout": input_layout,
        "input": {"name": INPUT_NAME, "shape": spec["shape"], "layout": spec["layout"],
                  "dtype": spec["dtype"], "color": "RGB", "image_size": pre.image_size},
        "preprocessing": {"in_graph": spec["normalization_in_graph"], "scale": 1 / 255, "mean": list(pre.mean),
                          "std": list(pre.std), "formula": "((x / 255) - mean) / std, per RGB channel",
                          **({} if spec["normalization_in_graph"] else {
                              "applied_by": "the caller (upstream, e.g. DeepStream/Triton), before the graph input; "
                                            "export.engines applies it itself when given uint8 NHWC images"})},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", out_dim], "dtype": "float32", "embedding_dim": out_dim,
                   "l2_normalized": True, "tail_precision": "fp32"},
        "backbone_config": backbone_config,
        "tensorrt_profile": dict(PROFILE),
        "variants": entries,
        "parity_subset_size": n_parity,
        "calibration_size": n_calib,
        "provenance": {"checkpoint_sha256": ckpt_sha, "versions": _versions(), "opset": opset, "exporter": exporter,
                       "exporter_notes": notes, "git_commit": _git_commit()},
    }


def _calibration_record(images: np.ndarray, indices: np.ndarray | None) -> dict[str, Any]:
    import hashlib

    return {
        "count": int(len(images)),
        "indices": None if indices is None else [int(i) for i in np.asarray(indices).ravel()],
        "selection": "indices into the training split chosen by the caller (export.precision.select_calibration_indices: "
                     "seeded sample without replacement, sorted)" if indices is not None
                     else "images passed in by the caller; indices not provided",
        "images_sha256": hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(),
        "shape": list(images.shape),
    }


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _dead_owner(path: Path, kind: str) -> bool:
    """True for ``.<bundle>.<kind>-<pid>-*`` folders whose process has exited (older names: no pid, never)."""
    pid = path.name.split(f".{kind}-", 1)[1].split("-", 1)[0]
    return pid.isdigit() and not _pid_alive(int(pid))


def recover_interrupted(out_dir: Path) -> None:
    """Undo what an export killed mid-way left beside ``out_dir``.

    A kill during the build leaves ``.<name>.building-<pid>-*``: deleted. A kill between the two renames of
    the swap leaves the previous bundle as ``.<name>.old-<pid>-*`` with ``out_dir`` missing: put back.
    Folders of exports still running (their pid is alive) are left alone.
    """
    for path in out_dir.parent.glob(f".{out_dir.name}.building-*"):
        if _dead_owner(path, "building"):
            logger.warning("removing %s, left by an interrupted export", path)
            shutil.rmtree(path, ignore_errors=True)
    olds = sorted((p for p in out_dir.parent.glob(f".{out_dir.name}.old-*") if _dead_owner(p, "old")),
                  key=lambda p: p.stat().st_mtime)
    if olds and not out_dir.exists():
        logger.warning("restoring the previous bundle %s from %s (an export was interrupted mid-swap)", out_dir, olds[-1])
        os.replace(olds.pop(), out_dir)
    for path in olds:
        shutil.rmtree(path, ignore_errors=True)


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by ``tmp``: two renames on one filesystem; the old bundle is deleted last."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-{os.getpid()}-", dir=out_dir.parent))
        os.rmdir(old)
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_manifest(bundle_dir: Path | str) -> dict[str, Any]:
    """Read and validate ``manifest.json`` of a bundle; raises ``ValueError`` naming the missing key."""
    path = Path(bundle_dir) / "manifest.json"
    if not path.is_file():
        raise ValueError(f"no manifest.json in {bundle_dir}")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: format is {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    for key in ("input", "preprocessing", "output", "variants", "provenance"):
        if key not in manifest:
            raise ValueError(f"{path}: missing key {key!r}")
    return manifest


def trtexec_commands(variants: list[str], image_size: int, profile: dict[str, int] = PROFILE, *,
                     input_layout: str = "uint8_nhwc") -> str:
    """``trtexec`` lines equivalent to ``python -m edge_encoder.export.tensorrt`` (strongly typed, same profile)."""
    rest = "x".join(str(d) for d in input_contract(input_layout, image_size)["shape"][1:])
    shape = lambda n: f"{INPUT_NAME}:{n}x{rest}"  # noqa: E731
    lines = ["# Build on the target device (engines are specific to the GPU and TensorRT version).",
             "# Strongly typed: precision comes from the ONNX graph (works on TensorRT 10 and 11).",
             f"# Input {INPUT_NAME}: " + ("uint8 NHWC camera pixels (normalisation inside the graph)."
                                          if input_layout == "uint8_nhwc" else
                                          "float32 NCHW, already ((x / 255) - mean) / std (see manifest.json)."),
             "mkdir -p tensorrt"]
    for v in variants:
        lines.append(f"trtexec --onnx=encoder_{v}.onnx --stronglyTyped --minShapes={shape(profile['min'])} "
                     f"--optShapes={shape(profile['opt'])} --maxShapes={shape(profile['max'])} "
                     f"--memPoolSize=workspace:1024M --timingCacheFile=tensorrt/timing.cache "
                     f"--saveEngine=tensorrt/encoder_{v}.plan")
    lines.append("# Jetson DLA (optional): add --useDLACore=0 --allowGPUFallback")
    return "\n".join(lines) + "\n"


def _config_pbtxt(name: str, platform: str, image_size: int, out_dim: int, max_batch: int,
                  input_layout: str = "uint8_nhwc") -> str:
    spec = input_contract(input_layout, image_size)
    dtype = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32"}[spec["dtype"]]
    dims = ", ".join(str(d) for d in spec["shape"][1:])
    return (f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: {max_batch}\n'
            f'input [\n  {{\n    name: "{INPUT_NAME}"\n    data_type: {dtype}\n    format: FORMAT_{spec["layout"]}\n'
            f'    dims: [ {dims} ]\n  }}\n]\n'
            f'output [\n  {{\n    name: "{OUTPUT_NAME}"\n    data_type: TYPE_FP32\n    dims: [ {out_dim} ]\n  }}\n]\n'
            f'dynamic_batching {{\n  max_queue_delay_microseconds: 500\n}}\n')


def write_triton_repository(bundle: Path, variants: list[str], image_size: int, out_dim: int,
                            profile: dict[str, int] = PROFILE, *, input_layout: str = "uint8_nhwc") -> None:
    """``triton/`` model repository: ``encoder_onnx_<v>`` (with ``1/model.onnx``) and ``encoder_trt_<v>``
    (``1/model.plan`` is written by ``python -m edge_encoder.export.tensorrt``); max_batch_size = the TRT profile max."""
    for v in variants:
        onnx_dir = bundle / "triton" / f"encoder_onnx_{v}"
        (onnx_dir / "1").mkdir(parents=True, exist_ok=True)
        _write_text(onnx_dir / "config.pbtxt", _config_pbtxt(onnx_dir.name, "onnxruntime_onnx", image_size, out_dim, profile["max"],
                                                              input_layout))
        try:  # a hard link costs no space; fall back to a copy across filesystems
            os.link(bundle / f"encoder_{v}.onnx", onnx_dir / "1" / "model.onnx")
        except OSError:
            shutil.copy2(bundle / f"encoder_{v}.onnx", onnx_dir / "1" / "model.onnx")
        trt_dir = bundle / "triton" / f"encoder_trt_{v}"
        (trt_dir / "1").mkdir(parents=True, exist_ok=True)
        _write_text(trt_dir / "config.pbtxt", _config_pbtxt(trt_dir.name, "tensorrt_plan", image_size, out_dim, profile["max"],
                                                             input_layout))


def device_readme(manifest: dict[str, Any]) -> str:
    """README.md for the device: contract, build, verify, run."""
    inp, out = manifest["input"], manifest["output"]
    rows = "\n".join(f"| {v} | `{e['file']}` | {e['engine_name']} | {'yes' if e['passed'] else '**FAILED**'} | "
                     f"{e['parity']['cosine_min']:.5f} | {e['parity']['top1_agreement']:.3f} |"
                     for v, e in manifest["variants"].items())
    pre = manifest["preprocessing"]
    if pre["in_graph"]:
        input_text = (f"Input `{inp['name']}`: uint8, NHWC, RGB, shape (N, {inp['image_size']}, {inp['image_size']}, 3), "
                      f"N dynamic.\nPreprocessing ({pre['formula']}) is inside every graph: feed camera pixels as they are.")
    else:
        input_text = (f"Input `{inp['name']}`: float32, NCHW, RGB, shape (N, 3, {inp['image_size']}, {inp['image_size']}), "
                      f"N dynamic.\nNormalisation is NOT inside the graphs: feed {pre['formula']} with mean = {pre['mean']}, "
                      f"std = {pre['std']}\n(upstream, e.g. in a DeepStream/Triton preprocessing step). "
                      f"`export.engines` engines still take uint8 NHWC\nand apply it themselves.")
    return f"""# Edge encoder deploy bundle

{input_text}
Output `{out['name']}`: float32 (N, {out['embedding_dim']}), rows L2-normalised (computed in FP32 in every variant).

| variant | file | engine | parity passed | min cosine | kNN top-1 agreement |
|---|---|---|---|---|---|
{rows}

## Build TensorRT engines on this device (TensorRT >= 10; no training code or dataset needed)

    python -m edge_encoder.export.tensorrt .            # all variants -> tensorrt/encoder_<variant>.plan (+ engine key)
    python -m edge_encoder.export.tensorrt . --variant int8_trt --dla-core 0   # Jetson DLA with GPU fallback

or the equivalent `trtexec` lines in `trtexec.txt`. Engines are tied to the GPU and TensorRT version; a
mismatching engine is refused with the rebuild command.

## Verify

    python -c "from edge_encoder.export.engines import open_engine; import numpy as np; e = open_engine('.', 'fp32'); print(e.embed(np.zeros((2, {inp['image_size']}, {inp['image_size']}, 3), np.uint8)).shape)"

and compare each file's SHA-256 with `manifest.json`.

## Serve with Triton

`triton/` is a model repository: `encoder_onnx_<variant>` (onnxruntime_onnx) and `encoder_trt_<variant>`
(tensorrt_plan; copy `tensorrt/encoder_<variant>.plan` to `triton/encoder_trt_<variant>/1/model.plan`).
max_batch_size = {manifest['tensorrt_profile']['max']} (the TensorRT profile's max batch).
"""
