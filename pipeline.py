"""One command from images to a deployed, evaluated encoder: train (MoCo) -> export (ONNX variants) -> evaluate.

    python pipeline.py                                   # digits, CPU quick preset
    python pipeline.py --config configs/cifar10_cpu.toml --dataset npz:../shared/data/cifar10_dev.npz
    python pipeline.py --set train.epochs=5 --set evaluate.knn_k=200 --name my_run

This module only composes the stages: each stage owns and validates its config section (``imagedata.config``,
``train.config``, ``export.config``, ``evaluate.suite``), takes plain arrays (or, with ``data.stream``, image
sequences decoded on access) and describes its own result for the report (``evaluate.report.assemble_report``).
Every run writes ``runs/<name>/``: ``config.json`` (resolved), ``train/`` (checkpoints, log), ``deploy/`` (ONNX
variants, manifest), ``report.json``, ``report.md`` and a printed summary. One process at a time holds a run
directory (``core.files.hold_lock``). Exit codes (``core.errors``, one line on stderr): 0 ok, 2 usage, input or
I/O error (the run directory in use, a full or read-only disk), 3 a gate failed (a precision variant's parity gate,
see ``--allow-failed-parity``; a non-finite training state), 130 interrupted.

Stage functions (what ``edge-encoder`` subcommands call): ``validate_config(config, name) -> Settings``,
``load_data(settings.data) -> ImageSplits | FolderSplits``, ``load_run_data(settings.data) -> RunData``,
``run_train(settings, data, run_dir, device, progress) -> TrainResult``,
``run_export(settings, data, checkpoint, bundle_dir, progress) -> BundleResult``,
``run_evaluate(settings, data, checkpoint, bundle, run_dir, progress) -> (metrics, indexed evaluation)``,
``run_label_free(settings, data, checkpoint, bundle, run_dir, progress) -> dict | None``,
``run_index_benchmark(settings, evaluation) -> dict``. ``data`` is what ``load_data`` or ``load_run_data`` returns.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "digits_cpu.toml"
# The default without --config when the images are files (folder:, images:, list: specs): the digits preset
# would shrink photos to its 16 px (default_preset).
PHOTO_CONFIG = PROJECT_ROOT / "configs" / "photos_cpu.toml"
SECTIONS = ("name", "data", "train", "export", "evaluate")
EXIT_USAGE, EXIT_PARITY, EXIT_INTERRUPTED = 2, 3, 130

log = logging.getLogger(__name__)


class UsageError(ValueError):
    """Bad command line, config file or input data: reported in one line, exit code 2."""


# ---------------------------------------------------------------------------------------------- configuration


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML preset; errors name the file."""
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist")
    try:
        with path.open("rb") as handle:
            config = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from exc
    unknown = set(config) - set(SECTIONS)
    if unknown:
        raise UsageError(f"config file {path}: unknown section(s) {sorted(unknown)}; allowed: {list(SECTIONS)}")
    return config


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=5"`` -> (["train", "epochs"], 5); values are TOML literals, bare words are strings."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) != 2 or parts[0] not in SECTIONS[1:] or not parts[1]:
        raise UsageError(f"override {text!r} must look like SECTION.KEY=VALUE with SECTION in {list(SECTIONS[1:])}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return parts, value


def preset_path(text: str) -> Path:
    """``--config`` as a file path, or a shipped preset's name (``cifar10_cpu``: ``configs/cifar10_cpu.toml``, which
    an installed wheel carries as package data beside this module) when no such file exists."""
    path = Path(text).expanduser()
    shipped = DEFAULT_CONFIG.parent / f"{text}.toml"
    if not path.exists() and path.name == text and shipped.is_file():
        return shipped
    return path


def default_preset(args: argparse.Namespace) -> Path:
    """The preset of a run without ``--config``: ``PHOTO_CONFIG`` when any image set it names (``--dataset``,
    ``--train-data``, ``--eval-data`` or ``--set data.dataset=...``) is image files (``folder:``, ``images:``,
    ``list:``), else ``DEFAULT_CONFIG`` (digits). The digits preset's 16 px and CIFAR stem suit 8x8 digits, not
    photos; the photo preset's ``data.image_size`` (64 px) and ImageNet-style stem do, and ``--set`` still
    overrides any of its values."""
    from edge_encoder.imagedata.unlabelled import is_file_spec

    specs = [getattr(args, flag, None) for flag in ("dataset", "train_data", "eval_data")]
    for text in args.set or []:
        (section, key), value = parse_override(text)
        if section == "data" and key in ("dataset", "train_data", "eval_data"):
            specs.append(value)
    return PHOTO_CONFIG if any(isinstance(s, str) and is_file_spec(s.strip()) for s in specs) else DEFAULT_CONFIG


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults <- config file <- dedicated flags <- ``--set`` overrides (validated by :func:`validate_config`).

    Without ``--config`` the preset is :func:`default_preset`'s: photo-sized for image files, digits otherwise."""
    preset = preset_path(args.config) if args.config else default_preset(args)
    config = load_config_file(preset)
    for section in SECTIONS[1:]:
        config.setdefault(section, {})
        if not isinstance(config[section], dict):
            raise UsageError(f"config section [{section}] must be a table")
    if args.dataset:
        config["data"]["dataset"] = args.dataset
    for flag in ("train_data", "eval_data"):
        if getattr(args, flag, None):
            config["data"][flag] = getattr(args, flag)
    if args.dataset and getattr(args, "train_data", None) and not getattr(args, "eval_data", None):
        config["data"]["eval_data"] = args.dataset  # --dataset keeps its evaluation role beside --train-data
    if args.skip_corrupt:
        config["data"]["skip_corrupt"] = True
    if args.data_root:
        config["data"]["data_root"] = args.data_root
    if args.allow_failed_parity:
        config["export"]["allow_failed"] = True
    for text in args.set or []:
        (section, key), value = parse_override(text)
        config[section][key] = value
    if not args.config and preset != DEFAULT_CONFIG:
        log.info("no --config given and the images are files: preset %s (images fitted to %s px, %s stem) instead of "
                 "the digits default (16 px); pass --config to choose another", preset.stem,
                 config["data"].get("image_size", "their own"), config["train"].get("stem", "cifar"))
    return config


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one run, one frozen dataclass per section, each owned by its stage."""

    name: str
    data: Any  # imagedata.config.DataSettings
    train: Any  # train.config.TrainConfig
    export: Any  # export.config.ExportSettings
    evaluate: Any  # evaluate.suite.EvalConfig

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "data": self.data.to_dict(), "train": self.train.to_dict(),
                "export": self.export.to_dict(), "evaluate": self.evaluate.to_dict()}


def validate_config(config: dict[str, Any], name: str | None) -> Settings:
    """Every section through its stage's validator (``core.config.config_from_dict``), before anything runs."""
    from edge_encoder.evaluate.suite import eval_config_from_dict
    from edge_encoder.export.config import export_settings_from_dict
    from edge_encoder.imagedata.config import data_settings_from_dict
    from edge_encoder.train.config import train_config_from_dict

    try:
        data = data_settings_from_dict(config.get("data", {}))
        train = train_config_from_dict(config.get("train", {}))
        export = export_settings_from_dict(config.get("export", {}))
        evaluation = eval_config_from_dict(config.get("evaluate", {}))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    run_name = name or config.get("name") or "run"
    if not isinstance(run_name, str) or not run_name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UsageError(f"run name {run_name!r} must use letters, digits, '-', '_' or '.' only")
    return Settings(run_name, data, train, export, evaluation)


# ---------------------------------------------------------------------------------------------- stages


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was requested but PyTorch sees no CUDA device (use --device cpu or auto)")
    return requested


def load_data(settings: Any) -> Any:  # DataSettings -> imagedata.ImageSplits, or FolderSplits for data.stream
    """The dataset ``settings`` (``imagedata.config.DataSettings``) names (``imagedata.config.open_splits``)."""
    from edge_encoder.imagedata import DatasetError
    from edge_encoder.imagedata.config import open_splits

    try:
        return open_splits(settings)
    except DatasetError as exc:
        raise UsageError(str(exc)) from exc


def load_run_data(settings: Any) -> Any:  # DataSettings -> imagedata.RunData
    """The training images (``data.train_data``, labels never read) and the labelled evaluation set
    (``data.eval_data``), or ``data.dataset`` for both (``imagedata.run_data``)."""
    from edge_encoder.imagedata import DatasetError, open_run_data

    try:
        return open_run_data(settings)
    except DatasetError as exc:
        raise UsageError(str(exc)) from exc


def make_knn_monitor(data: Any, preprocess: dict[str, Any], eval_config: Any, limit: int = 2000) -> Any:
    """A callback for train/: kNN top-1 of the current backbone, through evaluate/'s kNN (labels only here).

    Its bank and queries are seeded random subsets of ``limit`` images of each split
    (``imagedata.stats.knn_monitor_rows``), taken at the first call (streamed data is decoded then, and kept for
    the later calls: at most ``2 * limit`` images)."""
    from edge_encoder.evaluate.knn import knn_accuracy
    from edge_encoder.export.engines import TorchEngine
    from edge_encoder.imagedata.stats import knn_monitor_rows, take_images

    bank_rows, query_rows = knn_monitor_rows(len(data.y_train), len(data.y_test), limit, eval_config.seed)
    bank_y, query_y = data.y_train[bank_rows], data.y_test[query_rows]
    held: list[np.ndarray] = []

    def monitor(backbone) -> dict[str, float]:  # noqa: ANN001 - an nn.Module
        if not held:
            held.extend((take_images(data.x_train, bank_rows), take_images(data.x_test, query_rows)))
        bank_x, query_x = held
        with TorchEngine(backbone, preprocess, name="monitor", device=next(backbone.parameters()).device.type) as engine:
            bank, queries = engine.embed(bank_x), engine.embed(query_x)
        scores = knn_accuracy(bank, bank_y, queries, query_y, k=eval_config.knn_k, temperature=eval_config.knn_temperature)
        return {"knn_top1": scores["top1"], "knn_top5": scores["top5"]}

    return monitor


def run_train(settings: Settings, data: Any, run_dir: Path, device: str, progress: bool) -> Any:  # -> TrainResult
    """Train (or resume) MoCo on the run's training images (``imagedata.RunData``, or a labelled dataset's train
    split) into ``run_dir/train``; the preprocessing is their channel statistics (``imagedata.stats``)."""
    from edge_encoder.imagedata import RunData
    from edge_encoder.imagedata.stats import channel_stats
    from edge_encoder.train.loop import train_moco

    data = RunData.from_splits(data)  # a labelled dataset trains on its train split
    mean, std = channel_stats(data.train_images)  # the training images' own statistics, whatever evaluates
    preprocess = {"image_size": int(data.image_shape[0]), "mean": mean, "std": std}
    if settings.data.stream:  # data.train_images is then a FolderImages, decoded on access
        log.info("training streams %d images from disk (train.data_workers = %s)", len(data.train_images),
                 settings.train.data_workers)
    monitor = None if data.evaluation is None else make_knn_monitor(data.evaluation, preprocess, settings.evaluate)
    try:
        return train_moco(data.train_images, settings.train, run_dir / "train", device=device,
                          preprocess_mean=tuple(mean), preprocess_std=tuple(std), progress=progress,
                          knn_monitor=monitor)
    except ValueError as exc:  # refused before any step: a config that does not fit the data or the run dir
        raise UsageError(f"{exc} (to start afresh, choose another --name)" if "different training" in str(exc) else str(exc)) from exc


def parity_rows(num_heldout: int, count: int, labels: np.ndarray | None, seed: int) -> np.ndarray:
    """Sorted rows of the held-out split for the parity gate: a seeded, class-balanced subset when labels are known
    (folders and most npz files are sorted by class, so the first rows would cover a few classes only), else a
    seeded sample."""
    from edge_encoder.core.subsets import seeded_rows, seeded_subset

    count = min(count, num_heldout)
    return seeded_subset(labels, count, seed) if labels is not None else seeded_rows(num_heldout, count, seed)


def run_export(settings: Settings, data: Any, checkpoint: Path, bundle_dir: Path, progress: bool) -> Any:
    """Export ``checkpoint`` into the bundle ``bundle_dir`` (``export.bundle.export_bundle``): INT8 calibrated on
    a seeded sample of the training images, parity on ``export.parity_images`` held-out images (:func:`parity_rows`,
    with labels when there are). Every variant is kept (``BundleResult``); the caller applies the parity gate."""
    from edge_encoder.export.bundle import BundleImages, export_bundle
    from edge_encoder.export.precision import select_calibration_indices
    from edge_encoder.imagedata import RunData
    from edge_encoder.imagedata.stats import take_images

    data = RunData.from_splits(data)  # calibration: training images; parity: held-out images (labels if any)
    calib = select_calibration_indices(len(data.train_images), settings.export.calibration_images, seed=settings.data.seed)
    labels = None if data.evaluation is None else data.evaluation.y_test
    parity = parity_rows(len(data.heldout), settings.export.parity_images, labels, seed=settings.data.seed)
    images = BundleImages(take_images(data.train_images, calib), take_images(data.heldout, parity),
                          None if labels is None else labels[parity], calibration_indices=calib)
    return export_bundle(checkpoint, bundle_dir, images, settings.export.bundle_config(), progress=progress)


def run_evaluate(settings: Settings, data: Any, checkpoint: Path, bundle: Any, run_dir: Path,
                 progress: bool) -> tuple[dict[str, Any], Any]:
    """Evaluate the PyTorch reference, every exported variant and the two baselines on a labelled set.

    Returns ``(metrics table, the evaluation whose embeddings the index benchmark uses)``: ``onnx_fp32`` when
    exported, else the first exported variant, else the PyTorch reference."""
    from edge_encoder.evaluate.suite import compare_engines, evaluate_engine

    evaluations, kinds = {}, {}
    for name, kind, engine in each_engine(settings, checkpoint, bundle, data.x_train):
        evaluations[name] = evaluate_engine(
            engine, data.x_train, data.y_train, data.x_test, data.y_test, config=settings.evaluate,
            dataset_id=data.spec, cache_dir=run_dir / "cache" / "embeddings", progress=progress,
            reference=evaluations["pytorch_fp32"] if kind == "engine" else None, num_classes=data.num_classes,
        )
        kinds[name] = kind

    metrics = compare_engines(evaluations, reference="pytorch_fp32", kinds=kinds)
    for variant in bundle.variants.values():
        metrics[variant.engine_name].update(precision=variant.precision, parity_passed=variant.passed)
    exported = [v.engine_name for v in bundle.variants.values()]
    indexed = "onnx_fp32" if "onnx_fp32" in exported else (exported[0] if exported else "pytorch_fp32")
    return metrics, evaluations[indexed]


def each_engine(settings: Settings, checkpoint: Path, bundle: Any, images: Any) -> Any:
    """Yield ``(name, kind, engine)`` for the PyTorch reference, each exported variant and the two baselines, each
    open only while the caller uses it; ``images`` (any split: only its image size is read) sizes the raw pixels."""
    import torch
    from edge_encoder.evaluate.baselines import RawPixelEngine
    from edge_encoder.device.bundle_files import open_engine
    from edge_encoder.export.engines import TorchEngine
    from edge_encoder.train.backbones import build_backbone
    from edge_encoder.train.checkpoint import load_backbone

    backbone, preprocess, backbone_config = load_backbone(checkpoint)
    with TorchEngine(backbone, preprocess, name="pytorch_fp32") as engine:
        yield "pytorch_fp32", "reference", engine
    for variant_name, variant in bundle.variants.items():
        with open_engine(bundle.manifest_path.parent, variant_name) as engine:
            yield variant.engine_name, "engine", engine
    # Per-image centring: the stronger of the two raw-pixel variants here (0.4085 vs 0.3975 kNN top-1 on
    # cifar10_dev), and the definition behind the data README's published 0.407.
    with RawPixelEngine(images, centering="image") as engine:
        yield "raw_pixels", "baseline", engine
    # The random-init baseline is reproducible too: seeded inside fork_rng, so the caller's global RNG state is
    # left as it was (the same weights as a global torch.manual_seed(seed) would give).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.train.seed)
        random_init = build_backbone(backbone_config).eval()
    with TorchEngine(random_init, preprocess, name="random_init") as engine:
        yield "random_init", "baseline", engine


def run_label_free(settings: Settings, data: Any, checkpoint: Path, bundle: Any, run_dir: Path,
                   progress: bool) -> dict[str, Any] | None:
    """The report's ``label_free`` section: alignment, uniformity, effective rank and per-dimension spread of every
    engine and baseline on a seeded subset of the held-out images and one positive view of each (``None`` when
    ``evaluate.label_free_images`` is 0)."""
    from edge_encoder.core.subsets import seeded_rows
    from edge_encoder.evaluate.label_free import evaluate_label_free, label_free_section, positive_views
    from edge_encoder.imagedata.stats import take_images

    if settings.evaluate.label_free_images == 0 or len(data.heldout) < 2:
        return None
    rows = seeded_rows(len(data.heldout), settings.evaluate.label_free_images, settings.evaluate.seed)
    images = take_images(data.heldout, rows)
    views = positive_views(images, seed=settings.evaluate.seed)
    results, kinds = {}, {}
    for name, kind, engine in each_engine(settings, checkpoint, bundle, images):
        results[name] = evaluate_label_free(
            engine, images, views, batch_size=settings.evaluate.batch_size, cache_dir=run_dir / "cache" / "embeddings",
            dataset_id=f"{data.train_info['spec']}|{data.heldout_source}", progress=progress,
            reference=results.get("pytorch_fp32"))
        kinds[name] = kind
    return label_free_section(results, kinds, source=data.heldout_source)


def run_index_benchmark(settings: Settings, evaluation: Any) -> dict[str, Any]:
    """The report's ``index_benchmark`` section: FAISS approximate indexes on one engine's real embeddings."""
    from edge_encoder.evaluate.index_bench import index_benchmark_section
    from edge_encoder.evaluate.knn import scoped_threads

    bank, queries = evaluation.train_embeddings, evaluation.test_embeddings
    with scoped_threads(settings.evaluate.num_threads) as threads:  # restored after: no process-wide setting
        return index_benchmark_section(
            {"real": (bank, f"{len(bank)} train-split embeddings of {evaluation.name}")}, queries,
            engine=evaluation.name, recall_target=settings.evaluate.index_recall_target,
            shards=settings.evaluate.index_shards, threads=threads)


# ---------------------------------------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> int:
    """Validate, load, train, export, evaluate, report; returns the exit code."""
    from edge_encoder.core.files import atomic_write_json, hold_lock

    settings = validate_config(resolve_config(args), args.name)
    device = pick_device(args.device)
    progress = not args.no_progress and sys.stderr.isatty()
    run_dir = Path(args.runs_dir) / settings.name
    # Under torchrun every rank trains (train/ shards the data and only rank 0 writes checkpoints); export and
    # evaluation run once, on rank 0.
    rank = int(os.environ.get("RANK", "0"))
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with _timed(timings, "data"):
        data = load_run_data(settings.data)  # before anything is written: a bad dataset leaves no run folder
    check_fit(settings, data)  # as `edge-encoder train`: refused here, before the run folder or its lock
    check_bundle_dir(run_dir / "deploy")  # before training, not after it: the export would refuse a user's folder
    if rank == 0:  # ranks > 0 take no lock: rank 0's guards the folder for all (and they cannot wait on it)
        run_dir.mkdir(parents=True, exist_ok=True)
        hold_lock(run_dir)  # one run per folder; held until this process ends (a killed one blocks nothing)
        if not (run_dir / "config.json").exists():  # rewritten once training accepted the run (below)
            atomic_write_json(run_dir / "config.json", settings.to_dict())
        _log_to_file(run_dir / "pipeline.log")
    log.info("run %s on %s -> %s", settings.name, device, run_dir)
    log.info("data: %s", data.describe())
    with _timed(timings, "train"):
        train_result = run_train(settings, data, run_dir, device, progress)
    log.info("trained %d steps (%d epochs) in %.1f s, %.0f images/s, final loss %.4f -> %s", train_result.steps,
             train_result.epochs, train_result.seconds, train_result.images_per_s, train_result.final_loss,
             train_result.checkpoint_path)
    _leave_process_group()  # export and evaluation run single-process on rank 0 (the others are done)
    if rank != 0:
        return 0
    # A rerun that training refused (another config in the same run folder) leaves the old config.json as it was.
    atomic_write_json(run_dir / "config.json", settings.to_dict())
    with _timed(timings, "export"):
        bundle = run_export(settings, data, train_result.checkpoint_path, run_dir / "deploy", progress)
    metrics, indexed = {}, None
    if data.evaluation is not None:
        with _timed(timings, "evaluate"):
            metrics, indexed = run_evaluate(settings, data.evaluation, train_result.checkpoint_path, bundle, run_dir,
                                            progress)
    sections: dict[str, Any] = {"metrics": metrics}
    with _timed(timings, "label_free"):
        sections["label_free"] = run_label_free(settings, data, train_result.checkpoint_path, bundle, run_dir, progress)
    if settings.evaluate.index_benchmark and indexed is not None:
        with _timed(timings, "index_benchmark"):
            sections["index_benchmark"] = run_index_benchmark(settings, indexed)
        log.info("index benchmark on %s: %s", indexed.name, sections["index_benchmark"]["recommendation"])
    timings["total"] = time.perf_counter() - started
    return _report(settings, data, device, timings, train_result, bundle, sections, run_dir)


def check_fit(settings: Settings, data: Any) -> None:
    """Refuse, before the run folder exists, a training config the images cannot serve (batch larger than the
    training set, non-square images without ``train.image_size``). ``run`` and ``edge-encoder train`` both call it
    right after loading the data, so the same input is refused at the same point, leaving no run folder."""
    from edge_encoder.train.loop import check_train_images

    try:
        check_train_images(data.train_images, settings.train)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def check_bundle_dir(bundle_dir: Path) -> None:
    """Refuse (exit 2) a bundle folder an export may not replace: one that exists and is not a deploy bundle
    (``export.bundle.check_bundle_target``), such as a user's folder. Reads only; ``run`` calls it for
    ``runs/<name>/deploy`` before training, ``edge-encoder export`` for ``--out`` before loading anything."""
    from edge_encoder.export.bundle import BundleTargetError, check_bundle_target

    try:
        check_bundle_target(bundle_dir)
    except BundleTargetError as exc:
        raise UsageError(str(exc)) from exc


def _report(settings: Settings, data: Any, device: str, timings: dict[str, float], train_result: Any, bundle: Any,
            sections: dict[str, Any], run_dir: Path) -> int:
    """Write and print the report (``sections``: ``metrics``, then optional ones, None = left out); returns the
    parity gate's exit code."""
    from edge_encoder.evaluate.report import assemble_report, render_summary_table, write_report

    report = assemble_report(name=settings.name, device=device, dataset=data.summary(), config=settings.to_dict(),
                             timings=timings, train=train_result.summary(), export=bundle.summary(),
                             metrics=sections.pop("metrics"))
    report.update(train_data=data.train_summary(), accuracy_measured=data.evaluation is not None,
                  accuracy_note=data.accuracy_note)
    report.update({key: value for key, value in sections.items() if value is not None})
    json_path, md_path = write_report(run_dir, report)
    print(render_summary_table(report))
    print(f"\nreport: {json_path}\n        {md_path}")
    print(bundle.pin_line())
    message = gate_failure(bundle)
    if message and not settings.export.allow_failed:
        print(message, file=sys.stderr)
        return EXIT_PARITY
    return 0


def gate_failure(bundle: Any) -> str | None:
    """The one-line error for the variants of ``bundle`` that failed a gate (parity or TensorRT conformance), naming
    each variant and its failed checks; ``None`` when all passed."""
    failed = {v.engine_name: v.parity.get("failures", []) for v in bundle.variants.values() if not v.passed}
    if not failed:
        return None
    named = "; ".join(f"{name} ({', '.join(checks[:3]) + (' ...' if len(checks) > 3 else '') or 'see manifest'})"
                      for name, checks in failed.items())
    return (f"error: gate failed for {named}: files kept, marked failed in {bundle.manifest_path}; rerun with "
            "--allow-failed-parity to accept")


def _leave_process_group() -> None:
    """Close the torchrun process group train/ opened, so later stages do not wait for ranks that have exited."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class _timed:
    """``with _timed(timings, "train"):`` records the block's wall time."""

    def __init__(self, timings: dict[str, float], key: str) -> None:
        self.timings, self.key = timings, key

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.key] = time.perf_counter() - self.start


# ---------------------------------------------------------------------------------------------- command line


def _log_to_file(path: Path) -> None:
    handler = _RunLogHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_QuietThirdParty())
    logging.getLogger().addHandler(handler)


class _RunLogHandler(logging.FileHandler):
    """``pipeline.log``. A failed write (a full disk) would print logging's "--- Logging error ---" traceback on
    every record; instead one warning line says the file is abandoned, and the run goes on logging to the terminal
    (the next file it must write fails in one line naming that file)."""

    def handleError(self, record: logging.LogRecord) -> None:  # logging's name for it
        error = sys.exc_info()[1]
        logging.getLogger().removeHandler(self)
        with contextlib.suppress(Exception):
            self.close()
        print(f"WARNING {__name__}: stopped writing {self.baseFilename}: {error}", file=sys.stderr)


class _QuietThirdParty(logging.Filter):
    """Drops the ONNX exporter's pass-by-pass INFO chatter and ONNX Runtime's quantizer advice (logged on root)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(("onnxscript", "onnx_ir", "faiss")) and record.levelno < logging.WARNING:
            return False
        return "pre-processing before quantization" not in record.getMessage()


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_QuietThirdParty())


def add_run_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of a whole run (``edge-encoder run`` and ``python pipeline.py``), added to ``parser``."""
    parser.epilog = "Config keys: see configs/*.toml and README.md. Any key can be overridden with --set SECTION.KEY=VALUE."
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    shipped = ", ".join(sorted(p.stem for p in DEFAULT_CONFIG.parent.glob("*.toml")))
    parser.add_argument("--config", metavar="PATH",
                        help=f"TOML preset, or a shipped preset's name ({shipped}; default: {DEFAULT_CONFIG.stem}, or "
                             f"{PHOTO_CONFIG.stem} when the images are files: folder:, images:, list:)")
    parser.add_argument(
        "--dataset",
        metavar="SPEC",
        help="digits | cifar10 | cifar100 | stl10 | mnist | fashion-mnist | folder:PATH | npz:PATH (overrides data.dataset)",
    )
    parser.add_argument("--train-data", metavar="SPEC",
                        help="training images, labels never used: folder:PATH | images:PATH | list:FILE.txt | npz:PATH "
                             "(x_train) | any dataset (its train split) (overrides data.train_data)")
    parser.add_argument("--eval-data", metavar="SPEC",
                        help="labelled evaluation set (train split = kNN bank and probe training set, test split = "
                             "queries); without it, beside --train-data, accuracy is not measured and the report "
                             "carries label-free metrics (overrides data.eval_data)")
    parser.add_argument("--name", metavar="NAME", help="run directory name: runs/NAME/ (default: the preset's name)")
    parser.add_argument("--runs-dir", metavar="DIR", default="runs", help="where run directories go (default: runs)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="training/reference device")
    parser.add_argument("--data-root", metavar="DIR", help="where torchvision datasets are read (or downloaded) from")
    parser.add_argument("--skip-corrupt", action="store_true", help="leave unreadable images out (counted in the report)")
    parser.add_argument("--allow-failed-parity", action="store_true", help="exit 0 even if a variant fails its parity gate")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python pipeline.py`` (= ``edge-encoder run``)."""
    return add_run_arguments(argparse.ArgumentParser(prog="pipeline.py", description=__doc__.split("\n\n")[0]))


def main(argv: list[str] | None = None) -> int:
    """``python pipeline.py ARGS``: parse ``argv`` and run; returns the exit code."""
    return main_args(build_parser().parse_args(argv))


def main_args(args: argparse.Namespace) -> int:
    """Run with parsed arguments, turning expected failures into exit codes (see the module docstring)."""
    setup_logging(args.verbose)
    return exit_code_of(run, args)


def exit_code_of(command: Any, *args: Any) -> int:
    """``command(*args)``'s exit code; the one error path of every command line (``pipeline.py``, ``edge-encoder``).

    An expected failure (``core.errors.expected_failure``: bad input, a held run lock, a full or read-only disk,
    a non-finite training state, an interrupt) prints one line on stderr and returns 2, 3 or 130; anything else
    is a bug and propagates with its traceback."""
    from edge_encoder.core.errors import expected_failure, one_line

    try:
        return command(*args)
    except BaseException as exc:
        # UsageError is this module's (a ValueError, not core's InputError: `python pipeline.py` defines this
        # module before the edge_encoder package can be imported from an uninstalled checkout).
        failure = (EXIT_USAGE, f"error: {one_line(exc)}") if isinstance(exc, UsageError) else expected_failure(exc)
        if failure is None:
            raise
        code, message = failure
        splits = sys.modules.get("edge_encoder.imagedata.splits")  # not imported: exc cannot be a DatasetError
        if splits is not None and isinstance(exc, splits.DatasetError) and not isinstance(exc, UsageError):
            # Streamed data (data.stream) is decoded only as stages reach it: an unreadable file can surface mid-run.
            message += ". Remove or replace the file and rerun: checkpoints and finished files are kept"
        print(message, file=sys.stderr)
        return code


def _import_package_from_checkout() -> None:
    """Let ``python pipeline.py`` run from a checkout that was never installed: ``edge_encoder`` is then this
    folder (the same mapping pyproject.toml installs: ``train/`` -> ``edge_encoder.train`` ...)."""
    import importlib.util
    import types

    if importlib.util.find_spec("edge_encoder") is None:
        package = types.ModuleType("edge_encoder")
        package.__path__ = [str(PROJECT_ROOT)]  # type: ignore[attr-defined]
        sys.modules["edge_encoder"] = package


if __name__ == "__main__":
    # Delegate to the package's own module, so that the run's classes (UsageError, ...) are the package's and not a
    # second copy living in __main__.
    _import_package_from_checkout()
    from edge_encoder.pipeline import main as package_main

    sys.exit(package_main())
