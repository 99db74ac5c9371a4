"""The deploy bundle (``runs/<name>/deploy/``): every ONNX variant, its parity report and the contract.

Layout::

    deploy/
      encoder_fp32.onnx  encoder_fp16.onnx  encoder_int8_trt.onnx  encoder_int8_cpu.onnx
      encoder_int8_trt_dla.onnx  calibration_dla.cache  encoder_int8_trt_dla_qdq.onnx   with export.dla_batch > 0:
                           int8_trt's DLA INT8 graphs (TensorRT 10 / >= 11.4.1; export.dla_int8, manifest
                           variants.int8_trt.dla; unverified on an Orin)
      manifest.json        preprocessing + embedding contract, variants (file, sha256, parity, passed), provenance,
                           files (every other file of the bundle: sha256), device_files (what the device may add)
      calibration.json     which images calibrated the INT8 variants and how they were chosen
      trtexec.txt          equivalent trtexec command lines (strongly typed, same profile)
      triton/encoder_onnx_<variant>/config.pbtxt + 1/model.onnx   ONNX Runtime models, ready to serve
                           (edge-encoder build adds triton/encoder_trt_<variant>[_dla]/ with each plan)
      README.md            build, verify, run on the device

One input layout per bundle (``input_layout``): ``uint8_nhwc`` (default, preprocessing in every graph)
or ``float_nchw`` (float32 ``(N, 3, H, W)`` normalised upstream, e.g. by DeepStream/Triton); the manifest,
Triton configs and trtexec lines follow it. File names are ``encoder_<variant>.onnx`` either way.

The bundle is built in a temporary directory beside ``out_dir`` and swapped in at the end, so an
interrupted export leaves the previous bundle as it was. Only a bundle is ever replaced: an existing ``out_dir`` that
is not empty and holds no ``manifest.json`` of this project's format (a user's folder of documents and photos) is
refused up front and left as it was (:func:`check_bundle_target`). The bundle folder and everything in it get the
ordinary modes (``0777`` / ``0666`` less the umask), so another user or Triton's service account can read it.
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
from typing import Any, Mapping

import numpy as np
from edge_encoder.core.contract import Preprocess, as_preprocess, check_uint8_nhwc
from edge_encoder.core.files import atomic_write_bytes, file_sha256, make_temp_dir, pid_alive
from edge_encoder.device.manifest import (  # noqa: F401 - load_manifest re-exported
    DEVICE_FILES,
    MANIFEST_FORMAT,
    load_manifest,
    preprocessing_section,
    record_bundle_files,
)
from edge_encoder.export.config import ExportConfig
from edge_encoder.device.engines import OnnxRuntimeEngine
from edge_encoder.export.engines import TorchEngine
from edge_encoder.export.onnx_export import (
    INPUT_NAME,
    OUTPUT_NAME,
    build_fp32_encoder,
    input_contract,
    save_model,
)
from edge_encoder.device.parity import (
    DEFAULT_THRESHOLDS,
    ParityThresholds,
    compare_embeddings,
)
from edge_encoder.export.precision import (
    INT8_FLAVOURS,
    QuantConfig,
    make_variant,
)
from edge_encoder.device.reference import write_reference_set
from edge_encoder.export.trt_conformance import bundle_conformance
from edge_encoder.device.trt_plans import DLA_VARIANTS, TENSORRT_VARIANTS, key_command, plan_relpath
from edge_encoder.device.triton import write_onnx_models

logger = logging.getLogger(__name__)

PROFILE = {"min": 1, "opt": 32, "max": 64}  # TensorRT batch profile; Triton's max_batch_size follows "max"


class BundleTargetError(ValueError):
    """The bundle folder given exists and is not a bundle this project wrote: replacing it would delete a user's
    files (nothing is written; the message names the folder and why)."""


# The manifest "format" of every bundle version this project writes: "edge-encoder/deploy-bundle/<version>".
_FORMAT_FAMILY = MANIFEST_FORMAT.rsplit("/", 1)[0] + "/"


def check_bundle_target(out_dir: Path | str) -> None:
    """Refuse ``out_dir`` as the folder an export replaces whole unless it is missing, empty, or a deploy bundle
    (a ``manifest.json`` whose ``format`` is this project's), so that an export never deletes a user's files.
    Reads only; call it before any work (the export commands do, then :func:`export_bundle` again).

    Raises:
        BundleTargetError: one line naming ``out_dir`` and why (a file, a folder of other files, unreadable).
    """
    out_dir = Path(out_dir)
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    why = _not_a_bundle(out_dir)
    if why is not None:
        raise BundleTargetError(f"bundle folder {out_dir} {why}: not replaced (an export replaces its folder whole, "
                                "and only a deploy bundle's); choose a new or empty folder")


def _not_a_bundle(out_dir: Path) -> str | None:
    """Why ``out_dir`` (which exists) may not be replaced, or None."""
    if out_dir.is_symlink():
        return "is a symbolic link"
    if not out_dir.is_dir():
        return "exists and is not a folder"
    try:
        if next(os.scandir(out_dir), None) is None:
            return None  # empty: nothing to lose
    except OSError as exc:
        return f"cannot be listed ({exc.strerror})"
    manifest = out_dir / "manifest.json"
    try:
        record = json.loads(manifest.read_bytes().decode("utf-8")) if manifest.is_file() else None
    except (OSError, ValueError):
        record = None
    fmt = record.get("format") if isinstance(record, dict) else None
    if isinstance(fmt, str) and fmt.startswith(_FORMAT_FAMILY):
        return None
    return (f"exists, is not empty and is not a deploy bundle (no manifest.json with format "
            f"{MANIFEST_FORMAT!r})")


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

    @property
    def manifest_sha256(self) -> str:
        """The SHA-256 of ``manifest.json``: what ``edge-encoder verify --manifest-sha256`` pins."""
        return file_sha256(self.manifest_path)

    def pin_line(self) -> str:
        """The line the export prints so that a user can pin the manifest on the device."""
        sha = self.manifest_sha256
        return (f"manifest sha256: {sha} (pin it: edge-encoder verify {self.manifest_path.parent} "
                f"--manifest-sha256 {sha})")

    def summary(self) -> dict[str, Any]:
        """The report's ``export`` entry: the bundle location, the manifest's SHA-256 and, per variant, file,
        precision and parity."""
        manifest = json.loads(self.manifest_path.read_text())
        return {
            "bundle": str(self.manifest_path.parent),
            "manifest_sha256": self.manifest_sha256,
            "opset": manifest.get("opset"),
            "exporter": manifest.get("exporter"),
            "variants": {
                name: {"file": str(v.path.name), "engine": v.engine_name, "precision": v.precision, "passed": v.passed,
                       "parity": v.parity}
                for name, v in self.variants.items()
            },
        }


@dataclass(frozen=True)
class BundleImages:
    """The images a bundle is built from: uint8 NHWC RGB at the model's input size, whatever ``input_layout``
    (float variants are calibrated and checked on them normalised with the recorded mean/std).

    Attributes:
        calibration: uint8 ``(N, H, W, 3)`` training images that calibrate the INT8 variants.
        parity: uint8 ``(M, H, W, 3)`` fixed evaluation subset every variant is compared on.
        parity_labels: int ``(M,)`` labels of ``parity`` (adds the kNN accuracy change), or None.
        calibration_indices: where ``calibration`` came from in the training split (recorded), or None.
    """

    calibration: np.ndarray
    parity: np.ndarray
    parity_labels: np.ndarray | None = None
    calibration_indices: np.ndarray | None = None

    def check(self, image_size: int) -> None:
        """``ValueError`` naming the array unless both sets are non-empty uint8 ``(N, image_size, image_size, 3)``."""
        check_uint8_nhwc("calibration_images", self.calibration, image_size)
        check_uint8_nhwc("parity_images", self.parity, image_size)
        if self.parity_labels is not None and np.shape(self.parity_labels) != (len(self.parity),):
            raise ValueError(f"parity_labels must have shape ({len(self.parity)},), got {np.shape(self.parity_labels)}")


@dataclass(frozen=True)
class BuiltVariant:
    """One variant written to the build folder: its file, its manifest entry (sha256, parity...) and the gate."""

    name: str
    file: str
    entry: dict[str, Any]
    passed: bool


@dataclass(frozen=True)
class BuiltVariants:
    """What :func:`build_variants` made: the FP32 reference embeddings of the parity images ``float32 (M, D)``,
    the exporter used (and its notes) and every variant, in the requested order."""

    reference: np.ndarray
    exporter: str
    notes: list[str]
    variants: list[BuiltVariant]


def _resolve_source(source: Any) -> tuple[Any, Preprocess, dict[str, Any], str | None]:
    """``(backbone, preprocess, backbone_config, checkpoint_sha256)`` from a checkpoint path or a triple (whose
    preprocess may still be the stored dict form)."""
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
        return backbone, as_preprocess(preprocess), dict(backbone_config), None
    raise TypeError(f"source must be a checkpoint path or a (backbone, preprocess, backbone_config) tuple, got {type(source).__name__}")


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


def export_bundle(source: Any, out_dir: Path | str, images: BundleImages, config: ExportConfig = ExportConfig(), *,
                  progress: bool = False) -> BundleResult:
    """Export every variant, gate it on parity with the FP32 PyTorch reference, write the bundle atomically.

    Args:
        source: checkpoint path (read with ``train.checkpoint.load_backbone``) or an in-memory
            ``(backbone, preprocess, backbone_config)`` triple (``preprocess``: a ``core.contract.Preprocess``,
            or its dict form).
        out_dir: the bundle directory (built beside it, swapped in as a whole at the end).
        images: calibration and parity images (:class:`BundleImages`).
        config: variants, exporter, input layout, gates (:class:`export.config.ExportConfig`).
        progress: a progress bar over the variants.

    Raises:
        ValueError / TypeError: a bad source or images (nothing written).
        BundleTargetError: ``out_dir`` exists and is not a bundle (:func:`check_bundle_target`; nothing written).
        ParityGateError: after the bundle is written, when a variant failed and ``config.allow_failed`` is False.
    """
    out_dir = Path(out_dir)
    check_bundle_target(out_dir)
    backbone, pre, backbone_config, ckpt_sha = _resolve_source(source)
    images.check(pre.image_size)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted(out_dir)
    # mkdtemp's 0700 would become the bundle's mode once swapped in: make_temp_dir gives the ordinary one
    tmp = make_temp_dir(f".{out_dir.name}.building-{os.getpid()}-", out_dir.parent)
    try:
        built = build_variants(backbone, pre, images, config, tmp, progress=progress)
        write_bundle(tmp, built, pre, backbone_config, ckpt_sha, images, config)
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    results = {b.name: VariantResult(out_dir / b.file, b.entry["engine_name"], b.name, b.entry["parity"], b.passed)
               for b in built.variants}
    failed = {v: r.parity["failures"] for v, r in results.items() if not r.passed}
    if failed and not config.allow_failed:
        raise ParityGateError(failed, out_dir / "manifest.json")
    return BundleResult(out_dir / "manifest.json", results)


def build_variants(backbone: Any, pre: Preprocess, images: BundleImages, config: ExportConfig, folder: Path, *,
                   progress: bool = False) -> BuiltVariants:
    """Export the verified FP32 graph, derive each variant of ``config.variants`` into
    ``folder/encoder_<variant>.onnx`` and gate it on the parity images against the PyTorch reference."""
    fp32, exporter_used, notes = build_fp32_encoder(backbone, pre, opset=config.opset, exporter=config.exporter,
                                                    input_layout=config.input_layout)
    with TorchEngine(backbone, pre) as ref_engine:
        reference = ref_engine.embed(images.parity)
    thresholds = {**DEFAULT_THRESHOLDS, **config.thresholds}
    iterator: Any = list(config.variants)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="export variants", unit="variant")
    built = [_build_variant(fp32, variant, pre, images, reference, thresholds[variant], config, folder)
             for variant in iterator]
    return BuiltVariants(reference, exporter_used, notes, built)


def _build_variant(fp32: Any, variant: str, pre: Preprocess, images: BundleImages, reference: np.ndarray,
                   thresholds: ParityThresholds, config: ExportConfig, folder: Path) -> BuiltVariant:
    """Make, write and gate one variant (parity, plus the TensorRT conformance of TensorRT-bound variants)."""
    model = make_variant(fp32, variant, images.calibration, config.quant_configs.get(variant))
    file = f"encoder_{variant}.onnx"
    sha = save_model(model, folder / file)
    with OnnxRuntimeEngine(folder / file, name=f"onnx_{variant}", preprocess=pre) as engine:
        candidate = engine.embed(images.parity)
    report = compare_embeddings(reference, candidate, images.parity_labels, thresholds)
    # A DLA bundle's int8_trt also gets the graphs its DLA plans build from (export.dla_int8), written now so that
    # the manifest records them and their conformance counts for the variant.
    dla_entry, dla_graphs = (_build_dla_int8(fp32, model, pre, images, reference, thresholds, config, folder)
                             if variant == "int8_trt" and config.dla_batch else (None, None))
    # TensorRT-bound variants: a documented parser/DLA rule broken fails the variant like parity does
    conformance, trt_failures = bundle_conformance(model, variant, profile=PROFILE, dla_batch=config.dla_batch,
                                                   dla_graphs=dla_graphs)
    report.failures.extend(trt_failures)
    logger.info("%s: cosine min %.6f, top-1 agreement %.3f, %s", variant, report.cosine_min,
                report.top1_agreement, "passed" if report.passed else f"FAILED {report.failures}")
    entry = {"file": file, "engine_name": f"onnx_{variant}", "precision": variant,
             "sha256": sha, "bytes": (folder / file).stat().st_size,
             "quantization": _quant_desc(variant, config.quant_configs), "parity": report.to_dict(),
             "passed": report.passed,
             **({"tensorrt_conformance": conformance} if conformance else {}),
             **({"dla": dla_entry} if dla_entry else {})}
    return BuiltVariant(variant, file, entry, report.passed)


def _build_dla_int8(fp32: Any, int8_model: Any, pre: Preprocess, images: BundleImages, reference: np.ndarray,
                    thresholds: ParityThresholds, config: ExportConfig,
                    folder: Path) -> tuple[dict[str, Any], dict[str, tuple[str, Any, Any]]]:
    """int8_trt's DLA graphs and calibration cache (``export.dla_int8``) written into ``folder``: the manifest entry
    ``variants.int8_trt.dla`` and the graphs for ``bundle_conformance``. The strongly typed graph (INT8 on every DLA
    tensor) also runs on ONNX Runtime against the FP32 reference: an estimate of what INT8 on every DLA tensor
    costs, recorded (``onnxruntime_parity``), not gated. Unverified on an Orin."""
    from edge_encoder.export.dla_int8 import EXPLICIT_FILE, IMPLICIT_FILE, build_dla_int8, write_dla_int8

    graphs = build_dla_int8(fp32, int8_model, images.calibration, config.quant_configs.get("int8_trt"))
    entry = write_dla_int8(graphs, folder)
    with OnnxRuntimeEngine(folder / EXPLICIT_FILE, name="onnx_int8_trt_dla_qdq", preprocess=pre) as engine:
        emulated = compare_embeddings(reference, engine.embed(images.parity), images.parity_labels, thresholds)
    entry["tensorrt11"]["onnxruntime_parity"] = {**emulated.to_dict(), "gated": False,
                                                 "note": "ONNX Runtime running the Q/DQ graph (every DLA tensor INT8) "
                                                         "against the FP32 reference; not the DLA itself"}
    logger.info("int8_trt DLA graphs: %d tensor scales (%d from int8_trt's Q/DQ); all-INT8 emulation cosine min %.6f",
                graphs.stats["tensors"], graphs.stats["from_int8_trt_qdq"], emulated.cosine_min)
    return entry, {"tensorrt10": (IMPLICIT_FILE, graphs.implicit, set(graphs.scales)),
                   "tensorrt11": (EXPLICIT_FILE, graphs.explicit, None)}


def write_bundle(folder: Path, built: BuiltVariants, pre: Preprocess, backbone_config: dict[str, Any],
                 ckpt_sha: str | None, images: BundleImages, config: ExportConfig) -> dict[str, Any]:
    """Write what accompanies the variants in ``folder``: ``calibration.json``, the reference set, ``trtexec.txt``,
    ``triton/``, the device ``README.md`` and, last, ``manifest.json`` recording every other file of ``folder`` in
    ``files`` (path: SHA-256). Returns the manifest."""
    variants = [b.name for b in built.variants]
    manifest = _manifest(pre, built, backbone_config, ckpt_sha, images, config)
    thresholds = {**DEFAULT_THRESHOLDS, **config.thresholds}
    manifest["reference"] = write_reference_set(folder, images.parity, images.parity_labels, built.reference,
                                                {v: thresholds[v] for v in variants})
    manifest["dla_batch"] = int(config.dla_batch)  # static batch of the DLA plans (device.tensorrt --dla-core); 0 = none
    manifest["device_files"] = list(DEVICE_FILES)  # what the device may add (plans, keys, reports): verify checks them
    _write_json(folder / "calibration.json", _calibration_record(images.calibration, images.calibration_indices))
    _write_text(folder / "trtexec.txt", trtexec_commands(variants, pre.image_size, input_layout=config.input_layout,
                                                         dla_batch=config.dla_batch))
    write_triton_repository(folder, manifest)
    _write_text(folder / "README.md", device_readme(manifest))
    # Last: every file written above (and any a later step adds before this line) is recorded with its SHA-256, so
    # verify refuses a changed, missing or unexpected one. The manifest is the one file it cannot record; the export
    # prints its own SHA-256 for `edge-encoder verify --manifest-sha256`.
    manifest["files"] = record_bundle_files(folder)
    _write_json(folder / "manifest.json", manifest)
    return manifest


def _quant_desc(variant: str, overrides: Mapping[str, QuantConfig] | None) -> dict[str, Any] | None:
    if variant not in INT8_FLAVOURS:
        return None
    cfg = (overrides or {}).get(variant) or INT8_FLAVOURS[variant]
    return {"format": "QDQ", "tool": "onnxruntime.quantization.quantize_static", **cfg.__dict__,
            "excluded": "preprocess/*, input/* and tail/* nodes"
                        + (", and the convolutions reading the image" if cfg.float_input_convs else "") + " (kept FP32)"}


def _manifest(pre: Preprocess, built: BuiltVariants, backbone_config: dict[str, Any], ckpt_sha: str | None,
              images: BundleImages, config: ExportConfig) -> dict[str, Any]:
    input_layout, out_dim = config.input_layout, int(built.reference.shape[1])
    entries = {b.name: b.entry for b in built.variants}
    n_calib, n_parity, opset, exporter, notes = (len(images.calibration), len(images.parity), config.opset,
                                                 built.exporter, built.notes)
    spec = input_contract(input_layout, pre.image_size)
    return {
        "format": MANIFEST_FORMAT,
        "input_layout": input_layout,
        "input": {"name": INPUT_NAME, "shape": spec["shape"], "layout": spec["layout"],
                  "dtype": spec["dtype"], "color": "RGB", "image_size": pre.image_size},
        "preprocessing": preprocessing_section(pre, spec["normalization_in_graph"]),
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


def _dead_owner(path: Path, kind: str) -> bool:
    """True for ``.<bundle>.<kind>-<pid>-*`` folders whose process has exited (older names: no pid, never)."""
    pid = path.name.split(f".{kind}-", 1)[1].split("-", 1)[0]
    return pid.isdigit() and not pid_alive(int(pid))


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
    check_bundle_target(out_dir)  # once more, just before: never swap a user's folder away
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-{os.getpid()}-", dir=out_dir.parent))
        os.rmdir(old)
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def trtexec_commands(variants: list[str], image_size: int, profile: dict[str, int] = PROFILE, *,
                     input_layout: str = "uint8_nhwc", dla_batch: int = 0) -> str:
    """``trtexec`` lines equivalent to ``edge-encoder build``, each followed by its key step.

    GPU lines: strongly typed, the dynamic ``profile``. DLA lines (fp16 / int8_trt; commented examples at batch 1
    when ``dla_batch`` is 0): one static shape, min = opt = max = ``--shapes`` (TensorRT's DLA restrictions), one
    line per TensorRT major (:func:`_trtexec_dla_lines`; see ``trt_plans.build_mode``).
    Flags: NVIDIA/TensorRT samples/trtexec/README.md and ``trtexec --help`` (``--useDLACore``, ``--allowGPUFallback``,
    ``--shapes``, ``--saveEngine``, ``--stronglyTyped``).
    """
    variants = [v for v in variants if v in TENSORRT_VARIANTS]  # never int8_cpu: TensorRT's parser refuses it
    rest = "x".join(str(d) for d in input_contract(input_layout, image_size)["shape"][1:])
    shape = lambda n: f"{INPUT_NAME}:{n}x{rest}"  # noqa: E731
    lines = ["# Build on the target device (engines are specific to the GPU and TensorRT version).",
             "# GPU engines: strongly typed (precision comes from the ONNX graph; TensorRT 10 and 11), FP32 layers without "
             "TF32 (--noTF32), batch "
             f"{profile['min']}..{profile['max']}.",
             f"# Input {INPUT_NAME}: " + ("uint8 NHWC camera pixels (normalisation inside the graph)."
                                          if input_layout == "uint8_nhwc" else
                                          "float32 NCHW, already ((x / 255) - mean) / std (see manifest.json)."),
             "# The `edge-encoder key` line after each build writes the plan's engine key.",
             "mkdir -p tensorrt"]
    for v in variants:
        lines += [f"trtexec --onnx=encoder_{v}.onnx --stronglyTyped --noTF32 --minShapes={shape(profile['min'])} "
                  f"--optShapes={shape(profile['opt'])} --maxShapes={shape(profile['max'])} "
                  f"--memPoolSize=workspace:1024M --timingCacheFile=tensorrt/timing.cache "
                  f"--saveEngine={plan_relpath(v)}",
                  key_command(plan_relpath(v), f"encoder_{v}.onnx")]
    return "\n".join(lines + _trtexec_dla_lines(variants, shape, dla_batch)) + "\n"


def _trtexec_dla_lines(variants: list[str], shape: Any, dla_batch: int) -> list[str]:
    """DLA lines for TensorRT 10 (uncommented when ``dla_batch`` > 0) and for TensorRT >= 11.4.1 (commented: run them
    instead of the TensorRT 10 ones there). Flags checked against trtexec's sources (NVIDIA/TensorRT
    samples/common/sampleOptions.cpp; tests/device/test_export_tensorrt.py lists them per major):

    - TensorRT 10 (JetPack 6, 10.3): weakly typed as trtexec 10.x builds for DLA: ``--fp16``; int8_trt builds from
      its Q/DQ-free DLA graph with ``--int8 --fp16 --calib=<cache>`` (implicit quantization, NVIDIA qdq-translator
      README: ``trtexec --onnx=<noqdq> --calib=<cache> --useDLACore=0 --int8 --fp16 ... --allowGPUFallback``).
    - TensorRT >= 11.4.1 (JetPack 7.2.2+): no ``--fp16`` / ``--int8`` / ``--calib`` ("TensorRT 11.x removes all
      precision flags ... removes the --int8 and --calib flags", 10.x -> 11.x trtexec migration); ``--stronglyTyped``
      is always on there and accepted; int8_trt builds from the graph with Q/DQ on every DLA tensor.

    Without a DLA batch the bundle has no DLA INT8 graphs: fp16 examples only, commented. Unverified on an Orin.
    """
    from edge_encoder.export.dla_int8 import CACHE_FILE, EXPLICIT_FILE, IMPLICIT_FILE

    dla = [v for v in variants if v in DLA_VARIANTS]
    batch = dla_batch or 1
    shapes = (f"--minShapes={shape(batch)} --optShapes={shape(batch)} --maxShapes={shape(batch)} "
              f"--shapes={shape(batch)} --memPoolSize=workspace:1024M --timingCacheFile=tensorrt/timing.cache")
    lines = [f"# Jetson DLA core 0: {', '.join(dla) or 'no DLA variant in this bundle'} (DLA has no FP32), one static "
             f"batch {batch}" + ("" if dla_batch else " (export.dla_batch = 0: examples only, uncomment to use)") + ".",
             "# Layers DLA cannot run fall back to the GPU (--allowGPUFallback); the key step records what ran where.",
             "# TensorRT 10 (JetPack 6): weakly typed with --fp16 / --int8, as trtexec 10.x builds for DLA. int8_trt",
             f"# builds from {IMPLICIT_FILE} (no Q/DQ: DLA takes INT8 from implicit quantization) with the scales",
             f"# of {CACHE_FILE} (--calib); its first line names TensorRT 10.3.0 (TRT-100300-...): on another 10.x",
             "# put the version there in a copy (major*10000 + minor*100 + patch) or TensorRT may ignore the cache."]
    prefix = "" if dla_batch else "# "
    builds: dict[str, list[tuple[str, str]]] = {"10": [], "11": []}
    for v in dla:
        if v == "int8_trt" and not dla_batch:
            lines.append("# int8_trt: export with export.dla_batch = B for its DLA INT8 graphs and calibration cache.")
            continue
        if v == "int8_trt":
            builds["10"].append((IMPLICIT_FILE, f"--int8 --fp16 --calib={CACHE_FILE}"))
            builds["11"].append((EXPLICIT_FILE, "--stronglyTyped"))
        else:
            builds["10"].append((f"encoder_{v}.onnx", "--fp16"))
            builds["11"].append((f"encoder_{v}.onnx", "--stronglyTyped"))
    for major, entries in builds.items():
        if major == "11":
            lines += ["# TensorRT >= 11.4.1 (JetPack 7.2.2+, Jetson AGX Orin): strongly typed, no --fp16 / --int8 / "
                      "--calib;", f"# int8_trt builds from {EXPLICIT_FILE} (Q/DQ on every DLA tensor). Uncomment "
                      "these instead of the lines above."]
        lead = prefix if major == "10" else "# "
        for onnx_file, precision in entries:
            plan = plan_relpath(parse_plan_variant(onnx_file), 0, batch)
            lines += [f"{lead}trtexec --onnx={onnx_file} {precision} --useDLACore=0 --allowGPUFallback --noTF32 "
                      f"{shapes} --saveEngine={plan}",
                      f"{lead}{key_command(plan, onnx_file, 0)}"]
    return lines


def parse_plan_variant(onnx_file: str) -> str:
    """The variant a trtexec line's ONNX file builds: ``encoder_<v>.onnx``, or int8_trt for its DLA graphs."""
    from edge_encoder.export.dla_int8 import EXPLICIT_FILE, IMPLICIT_FILE

    return "int8_trt" if onnx_file in (IMPLICIT_FILE, EXPLICIT_FILE) else onnx_file[len("encoder_"):-len(".onnx")]


def write_triton_repository(bundle: Path, manifest: dict[str, Any]) -> None:
    """``triton/``: the ONNX Runtime models ``encoder_onnx_<v>`` (``config.pbtxt`` + ``1/model.onnx``, a hard link to
    ``encoder_<v>.onnx``) of every variant, ready to serve as exported. int8_cpu is ONNX Runtime's CPU graph; int8_trt
    is kept too (valid for ONNX Runtime, slow on a CPU: its Q/DQ layout is TensorRT's). The TensorRT models
    (``encoder_trt_<v>``, ``encoder_trt_<v>_dla``) are written by ``edge-encoder build`` with their plan: an
    exported repository holds no model folder without its model file, which would stop ``tritonserver`` at start
    (see ``device.triton``). Configs come from ``device.triton``, as on the device."""
    write_onnx_models(bundle, manifest)


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
                      f"`edge_encoder.device` engines still take uint8 NHWC\nand apply it themselves.")
    dla_batch = manifest.get("dla_batch", 0)
    dla_arg = "" if dla_batch else "--dla-batch 1"
    dla_text = (f"this bundle's is {dla_batch} (export.dla_batch), `tensorrt/encoder_<variant>.dla0.b{dla_batch}.plan`."
                if dla_batch else "this bundle sets none (export.dla_batch = 0), so pass `--dla-batch B`.")
    triton_dla = f"{dla_batch} for this bundle, or `--dla-batch B`" if dla_batch else "`--dla-batch B`"
    return f"""# Edge encoder deploy bundle

{input_text}
Output `{out['name']}`: float32 (N, {out['embedding_dim']}), rows L2-normalised (computed in FP32 in every variant).

| variant | file | engine | parity passed | min cosine | kNN top-1 agreement |
|---|---|---|---|---|---|
{rows}

## Install on this device (no torch, no training code)

    python3 -m venv --system-site-packages ~/edge-encoder   # --system-site-packages: JetPack's TensorRT bindings
    . ~/edge-encoder/bin/activate
    pip install edge_encoder-*.whl onnxruntime    # the wheel `make wheel` built beside this bundle

The base install is NumPy, Pillow and tqdm (the device runtime: `edge-encoder verify`, `build`, `key`,
`embed --images`); ONNX Runtime is the CPU backend. TensorRT must be 10 or newer: JetPack 6.1 / 6.2 bring 10.3
(`python3-libnvinfer`, `trtexec` in /usr/src/tensorrt/bin); JetPack 6.0 brings 8.6, which is refused. On a server:
`pip install "$(echo edge_encoder-*.whl)[tensorrt]"`.

## Build TensorRT engines on this device (TensorRT >= 10; no training code or dataset needed)

    edge-encoder build .            # fp32, fp16, int8_trt -> tensorrt/encoder_<variant>.plan (+ engine key)
    edge-encoder build . --dla-core 0 {dla_arg}  # Jetson DLA: fp16 + int8_trt, static batch

or the equivalent `trtexec` lines in `trtexec.txt`, each followed by its `... key` line (the engine key; a plan
without one still loads). Engines are tied to the GPU and TensorRT version; a mismatching engine is refused with
the commands that rebuild it. DLA runs FP16 and INT8 only (fp32 is refused) and one static batch: {dla_text}
Layers DLA cannot run fall back to the GPU; the engine key records what TensorRT placed on the DLA and in which
precision. With `export.dla_batch` set, int8_trt's DLA plan is built from `encoder_int8_trt_dla.onnx` plus
`calibration_dla.cache` on TensorRT 10 (DLA takes INT8 from implicit quantization) and from
`encoder_int8_trt_dla_qdq.onnx` on TensorRT >= 11.4.1; `edge-encoder build` picks the one for the installed
TensorRT (unverified on an Orin). int8_cpu is ONNX Runtime's CPU graph and is never built with TensorRT.

## Verify on this device

    edge-encoder verify .                          # ONNX Runtime, every variant (imports only onnxruntime + numpy)
    edge-encoder verify . --backend tensorrt       # the plans built above (add --dla-core 0 for the DLA plans)

checks every file of this folder against its SHA-256 in `manifest.json` (`files`: the variants, `triton/`,
`trtexec.txt`, `calibration.json`, this README and `reference/`: {manifest.get('reference', {}).get('count', 0)} of the
parity images, their labels and their FP32 PyTorch embeddings), checks what this device added (`device_files`:
`tensorrt/` plans against their engine keys, `triton/encoder_trt_*/1/model.plan` against the plan it copies,
the timing cache, the device reports) and refuses any other file (remove it; hidden files such as `.DS_Store`
too), runs each engine on the reference images, gates it against the FP32 embeddings with the thresholds in
`manifest.json` (`reference.gates`), times it at batch 1, 8 and {manifest['tensorrt_profile']['max']} after warm-up,
and writes `device_report.json` and `device_report.md` here. Exit 0: every file intact and every gate passed;
2: a missing, changed or unexpected file; 3: a gate failed (each named in one line on stderr). In Python,
`edge_encoder.device.bundle_files.open_engine('.', 'fp32')` opens a variant after the same file checks.

`manifest.json` records every other file, so pin the manifest itself: the export printed
`manifest sha256: HEX`; keep HEX where the bundle cannot rewrite it and run

    edge-encoder verify . --manifest-sha256 HEX

A manifest rewritten after export (another gate, another file's hash) is then refused (exit 2) before anything is
read. `sha256sum manifest.json` prints the same HEX.

## Serve with Triton

`triton/` is a model repository that loads as exported:

    tritonserver --model-repository=$PWD/triton

It holds `encoder_onnx_<variant>` for every variant (onnxruntime_onnx; int8_cpu is the INT8 graph for CPUs,
int8_trt runs on ONNX Runtime too, slowly on a CPU), max_batch_size = {manifest['tensorrt_profile']['max']} (the
TensorRT profile's max batch), dynamic batching.

The TensorRT models appear after `edge-encoder build`, which writes each plan it builds as a Triton model beside
the others:

- `triton/encoder_trt_<variant>/` (tensorrt_plan: config.pbtxt + 1/model.plan): the GPU plan, the same
  max_batch_size;
- `triton/encoder_trt_<variant>_dla/` with `--dla-core N` (fp16, int8_trt): the DLA plan at its fixed batch
  ({triton_dla}) as max_batch_size 0 with the batch in dims, DLA core N as the instance's secondary device.

Each model folder appears whole (built beside `triton/`, then renamed in): restart tritonserver, or run it with
`--model-control-mode=poll`, to serve new ones. A plan built with `trtexec` gets no Triton model; build it with
`edge-encoder build` instead.
"""
