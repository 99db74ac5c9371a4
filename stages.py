"""The stages of a run as functions of validated settings and loaded data: what ``pipeline.run`` composes and the
``train``, ``export`` and ``evaluate`` commands call one at a time.

Each stage owns its config section (``settings.Settings``), takes plain arrays or image sequences decoded on
access (``data.stream``), and describes its own result for the report. A failure a user can fix is a
``core.errors.UsageError`` (or another ``InputError``) naming the file, key or value.

    load_run_data(settings.data) -> RunData             check_fit(settings, data)      check_bundle_dir(path)
    run_train(settings, data, run_dir, device, progress) -> TrainResult
    run_export(settings, data, checkpoint, bundle_dir, progress) -> BundleResult
    run_evaluate(settings, splits, checkpoint, bundle, run_dir, progress) -> (metrics, indexed evaluation)
    run_label_free(...) -> dict | None                   run_index_benchmark(settings, evaluation) -> dict
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_encoder.core.contract import Preprocess
from edge_encoder.core.errors import UsageError
from edge_encoder.core.subsets import seeded_rows, seeded_subset
from edge_encoder.device.bundle_files import open_engine
from edge_encoder.evaluate.baselines import RawPixelEngine
from edge_encoder.evaluate.index_bench import index_benchmark_section
from edge_encoder.evaluate.knn import knn_accuracy, scoped_threads
from edge_encoder.evaluate.label_free import evaluate_label_free, label_free_section, positive_views
from edge_encoder.evaluate.suite import EngineEvaluation, EvalConfig, evaluate_engines
from edge_encoder.export.bundle import (
    BundleImages,
    BundleResult,
    BundleTargetError,
    check_bundle_target,
    export_bundle,
)
from edge_encoder.export.engines import TorchEngine
from edge_encoder.export.precision import select_calibration_indices
from edge_encoder.imagedata import DatasetError, ImageSplits, RunData, open_run_data, require_classes
from edge_encoder.imagedata.config import DataSettings, open_splits
from edge_encoder.imagedata.stats import channel_stats, knn_monitor_rows, take_images
from edge_encoder.settings import Settings
from edge_encoder.train.backbones import build_backbone
from edge_encoder.train.checkpoint import load_backbone
from edge_encoder.train.loop import TrainResult, check_train_images, train_moco

log = logging.getLogger(__name__)


def pick_device(requested: str) -> str:
    """``"auto"`` -> ``"cuda"`` when PyTorch sees a GPU, else ``"cpu"``; ``"cuda"`` without one is refused."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was requested but PyTorch sees no CUDA device (use --device cpu or auto)")
    return requested


def load_data(settings: DataSettings) -> Any:  # -> ImageSplits, or FolderSplits for data.stream
    """The labelled dataset ``settings`` names (``imagedata.config.open_splits``); a bad one is a UsageError."""
    try:
        return open_splits(settings)
    except DatasetError as exc:
        raise UsageError(str(exc)) from exc


def load_labelled_data(settings: DataSettings) -> Any:  # -> ImageSplits, or FolderSplits for data.stream
    """``load_data`` for measuring accuracy on: a set whose images carry one class is refused
    (``imagedata.require_classes``: every figure would read 1.0)."""
    data = load_data(settings)
    try:
        require_classes(data, settings.dataset)
    except DatasetError as exc:
        raise UsageError(str(exc)) from exc
    return data


def load_run_data(settings: DataSettings) -> RunData:
    """The training images (``data.train_data``, labels never read) and the labelled evaluation set
    (``data.eval_data``), or ``data.dataset`` for both (``imagedata.open_run_data``)."""
    try:
        return open_run_data(settings)
    except DatasetError as exc:
        raise UsageError(str(exc)) from exc


def check_fit(settings: Settings, data: RunData) -> None:
    """Refuse a training config the images cannot serve (batch larger than the training set, non-square images
    without ``train.image_size``): called right after loading, before any run folder exists."""
    try:
        check_train_images(data.train_images, settings.train)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def check_bundle_dir(bundle_dir: Path) -> None:
    """Refuse (exit 2) a bundle folder an export may not replace: one that exists and is not a deploy bundle
    (``export.bundle.check_bundle_target``), such as a user's folder. Reads only."""
    try:
        check_bundle_target(bundle_dir)
    except BundleTargetError as exc:
        raise UsageError(str(exc)) from exc


def make_knn_monitor(splits: Any, preprocess: Preprocess, eval_config: EvalConfig,
                     limit: int = 2000) -> Callable[[torch.nn.Module], dict[str, float]]:
    """A callback for train/: kNN top-1 of the current backbone on the labelled ``splits``, through evaluate/'s
    kNN (labels only here). Its bank and queries are seeded subsets of ``limit`` images of each split
    (``imagedata.stats.knn_monitor_rows``), decoded at the first call and kept (at most ``2 * limit`` images)."""
    bank_rows, query_rows = knn_monitor_rows(len(splits.y_train), len(splits.y_test), limit, eval_config.seed)
    bank_y, query_y = splits.y_train[bank_rows], splits.y_test[query_rows]
    held: list[np.ndarray] = []

    def monitor(backbone: torch.nn.Module) -> dict[str, float]:
        if not held:
            held.extend((take_images(splits.x_train, bank_rows), take_images(splits.x_test, query_rows)))
        bank_x, query_x = held
        with TorchEngine(backbone, preprocess, name="monitor", device=next(backbone.parameters()).device.type) as engine:
            bank, queries = engine.embed(bank_x), engine.embed(query_x)
        scores = knn_accuracy(bank, bank_y, queries, query_y, k=eval_config.knn_k, temperature=eval_config.knn_temperature)
        return {"knn_top1": scores["top1"], "knn_top5": scores["top5"]}

    return monitor


def run_train(settings: Settings, data: Any, run_dir: Path, device: str, progress: bool) -> TrainResult:
    """Train (or resume) MoCo on the run's training images (``RunData``, or a labelled dataset's train split)
    into ``run_dir/train``; the preprocessing is their own channel statistics (``imagedata.stats``)."""
    data = RunData.from_splits(data)  # a labelled dataset trains on its train split
    mean, std = channel_stats(data.train_images)  # the training images' own statistics, whatever evaluates
    preprocess = Preprocess(int(data.image_shape[0]), mean, std)
    if settings.data.stream:  # data.train_images is then a FolderImages, decoded on access
        log.info("training streams %d images from disk (train.data_workers = %s)", len(data.train_images),
                 settings.train.data_workers)
    monitor = None if data.evaluation is None else make_knn_monitor(data.evaluation, preprocess, settings.evaluate)
    try:
        return train_moco(data.train_images, settings.train, run_dir / "train", device=device,
                          preprocess_mean=tuple(mean), preprocess_std=tuple(std), progress=progress,
                          knn_monitor=monitor)
    except ValueError as exc:  # refused before any step: a config that does not fit the data or the run folder
        hint = " (to start afresh, choose another --name)" if "different training" in str(exc) else ""
        raise UsageError(f"{exc}{hint}") from exc


def parity_rows(num_heldout: int, count: int, labels: np.ndarray | None, seed: int) -> np.ndarray:
    """Sorted rows of the held-out split for the parity gate: a seeded, class-balanced subset when labels are known
    (folders and most npz files are sorted by class, so the first rows would cover a few classes only), else a
    seeded sample."""
    count = min(count, num_heldout)
    return seeded_subset(labels, count, seed) if labels is not None else seeded_rows(num_heldout, count, seed)


def run_export(settings: Settings, data: Any, checkpoint: Path, bundle_dir: Path, progress: bool) -> BundleResult:
    """Export ``checkpoint`` into the bundle ``bundle_dir`` (``export.bundle.export_bundle``): INT8 calibrated on
    a seeded sample of the training images, parity on ``export.parity_images`` held-out images (:func:`parity_rows`,
    with labels when there are). Every variant is kept; the caller applies the gate (:func:`gate_failure`)."""
    data = RunData.from_splits(data)  # calibration: training images; parity: held-out images (labels if any)
    calib = select_calibration_indices(len(data.train_images), settings.export.calibration_images, seed=settings.data.seed)
    labels = None if data.evaluation is None else data.evaluation.y_test
    parity = parity_rows(len(data.heldout), settings.export.parity_images, labels, seed=settings.data.seed)
    images = BundleImages(take_images(data.train_images, calib), take_images(data.heldout, parity),
                          None if labels is None else labels[parity], calibration_indices=calib)
    return export_bundle(checkpoint, bundle_dir, images, settings.export.bundle_config(), progress=progress)


def gate_failure(bundle: BundleResult) -> str | None:
    """The one-line error for the variants of ``bundle`` that failed a gate (parity or TensorRT conformance), naming
    each variant and its failed checks; ``None`` when all passed."""
    failed = {v.engine_name: v.parity.get("failures", []) for v in bundle.variants.values() if not v.passed}
    if not failed:
        return None
    named = "; ".join(f"{name} ({', '.join(checks[:3]) + (' ...' if len(checks) > 3 else '') or 'see manifest'})"
                      for name, checks in failed.items())
    return (f"error: gate failed for {named}: files kept, marked failed in {bundle.manifest_path}; rerun with "
            "--allow-failed-parity to accept")


def each_engine(settings: Settings, checkpoint: Path, bundle: BundleResult, images: Any) -> Iterator[tuple[str, Any]]:
    """Yield ``(kind, engine)`` for the PyTorch reference, each exported variant and the two baselines, each open
    only while the caller holds it; ``images`` (any split: only its image size is read) sizes the raw pixels."""
    backbone, preprocess, backbone_config = load_backbone(checkpoint)
    with TorchEngine(backbone, preprocess, name="pytorch_fp32") as engine:
        yield "reference", engine
    for variant_name in bundle.variants:
        with open_engine(bundle.manifest_path.parent, variant_name) as engine:
            yield "engine", engine
    # Per-image centring: the stronger of the two raw-pixel variants here (0.4085 vs 0.3975 kNN top-1 on
    # cifar10_dev), and the definition behind the data README's published 0.407.
    with RawPixelEngine(images, centering="image") as engine:
        yield "baseline", engine
    # The random-init baseline is reproducible too: seeded inside fork_rng, so the caller's global RNG state is
    # left as it was (the same weights as a global torch.manual_seed(seed) would give).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.train.seed)
        random_init = build_backbone(backbone_config).eval()
    with TorchEngine(random_init, preprocess, name="random_init") as engine:
        yield "baseline", engine


def run_evaluate(settings: Settings, splits: ImageSplits, checkpoint: Path, bundle: BundleResult, run_dir: Path,
                 progress: bool) -> tuple[dict[str, Any], EngineEvaluation]:
    """Evaluate the PyTorch reference, every exported variant and the two baselines on a labelled set.

    Returns ``(metrics table, the evaluation whose embeddings the index benchmark uses)``: ``onnx_fp32`` when
    exported, else the first exported variant, else the PyTorch reference."""
    metrics, evaluations = evaluate_engines(each_engine(settings, checkpoint, bundle, splits.x_train), splits,
                                            config=settings.evaluate, cache_dir=run_dir / "cache" / "embeddings",
                                            progress=progress)
    for variant in bundle.variants.values():
        metrics[variant.engine_name].update(precision=variant.precision, parity_passed=variant.passed)
    exported = [v.engine_name for v in bundle.variants.values()]
    indexed = "onnx_fp32" if "onnx_fp32" in exported else (exported[0] if exported else "pytorch_fp32")
    return metrics, evaluations[indexed]


def run_label_free(settings: Settings, data: RunData, checkpoint: Path, bundle: BundleResult, run_dir: Path,
                   progress: bool) -> dict[str, Any] | None:
    """The report's ``label_free`` section: alignment, uniformity, effective rank and per-dimension spread of every
    engine and baseline on a seeded subset of the held-out images and one positive view of each (``None`` when
    ``evaluate.label_free_images`` is 0)."""
    if settings.evaluate.label_free_images == 0 or len(data.heldout) < 2:
        return None
    rows = seeded_rows(len(data.heldout), settings.evaluate.label_free_images, settings.evaluate.seed)
    images = take_images(data.heldout, rows)
    views = positive_views(images, seed=settings.evaluate.seed)
    results, kinds = {}, {}
    for kind, engine in each_engine(settings, checkpoint, bundle, images):
        results[engine.name] = evaluate_label_free(
            engine, images, views, batch_size=settings.evaluate.batch_size, cache_dir=run_dir / "cache" / "embeddings",
            dataset_id=f"{data.train_info['spec']}|{data.heldout_source}", progress=progress,
            reference=results.get("pytorch_fp32"))
        kinds[engine.name] = kind
    return label_free_section(results, kinds, source=data.heldout_source)


def run_index_benchmark(settings: Settings, evaluation: EngineEvaluation) -> dict[str, Any]:
    """The report's ``index_benchmark`` section: FAISS approximate indexes on one engine's real embeddings."""
    bank, queries = evaluation.train_embeddings, evaluation.test_embeddings
    with scoped_threads(settings.evaluate.num_threads) as threads:  # restored after: no process-wide setting
        return index_benchmark_section(
            {"real": (bank, f"{len(bank)} train-split embeddings of {evaluation.name}")}, queries,
            engine=evaluation.name, recall_target=settings.evaluate.index_recall_target,
            shards=settings.evaluate.index_shards, threads=threads)
