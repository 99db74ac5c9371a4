"""One command from images to a deployed, evaluated encoder: train (MoCo) -> export (ONNX variants) -> evaluate.

    python pipeline.py                                   # digits, CPU quick preset
    python pipeline.py --config configs/cifar10_cpu.toml --dataset npz:../shared/data/cifar10_dev.npz
    python pipeline.py --set train.epochs=5 --set evaluate.knn_k=200 --name my_run

This is the only module that composes the stages; each stage takes plain arrays (or, with ``data.stream``, image
sequences decoded on access) and small config objects.
Every run writes ``runs/<name>/``: ``config.json`` (resolved), ``train/`` (checkpoints, log), ``deploy/`` (ONNX
variants, manifest), ``report.json``, ``report.md`` and a printed summary. Exit codes: 0 ok, 2 usage or input
error, 3 a precision variant failed its parity gate (see ``--allow-failed-parity``), 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "digits_cpu.toml"
SECTIONS = ("name", "data", "train", "export", "evaluate")
EXPORT_VARIANTS = ("fp32", "fp16", "int8_trt", "int8_cpu")
CALIBRATION_METHODS = ("percentile", "minmax", "entropy")  # export.precision.QuantConfig.calibrate_method
EXIT_USAGE, EXIT_PARITY, EXIT_INTERRUPTED = 2, 3, 130

log = logging.getLogger(__name__)


class UsageError(ValueError):
    """Bad command line, config file or input data: reported in one line, exit code 2."""


@dataclass(frozen=True)
class DataSettings:
    """The ``[data]`` section. ``0`` means "not set" for the size limits.

    ``stream`` (``folder:PATH`` datasets only): the folder is never decoded into memory. ``load_data`` lists it
    (``imagedata.FolderSplits``); training reads the train split through DataLoader workers
    (``train.data_workers``); the channel statistics take one streamed pass over it; calibration, parity and kNN
    monitor images are the selected items, decoded and stacked; evaluation embeds both splits batch by batch.
    """

    dataset: str = "digits"
    image_size: int = 0
    max_train: int = 0
    max_test: int = 0
    test_fraction: float = 0.2
    seed: int = 0
    skip_corrupt: bool = False
    data_root: str = ""
    stream: bool = False


@dataclass(frozen=True)
class ExportSettings:
    """The ``[export]`` section."""

    variants: list = field(default_factory=lambda: list(EXPORT_VARIANTS))
    opset: int = 18  # the dynamo exporter's native opset; TensorRT 10/11 parse it
    exporter: str = "auto"
    calibration_images: int = 256
    calibration_method: str = "percentile"  # or "minmax" / "entropy": see export.precision.QuantConfig
    parity_images: int = 500
    allow_failed: bool = False


# ---------------------------------------------------------------------------------------------- configuration


def _check_section(name: str, cls: type, values: dict[str, Any]) -> Any:
    """Build a settings dataclass from a config section, naming unknown keys and wrong types."""
    known = {f.name: f for f in fields(cls)}
    for key, value in values.items():
        if key not in known:
            raise UsageError(f"unknown config key '{name}.{key}'; known keys: {', '.join(sorted(known))}")
        default = cls().__getattribute__(key)
        ok = (
            isinstance(value, type(default)) and not (isinstance(value, bool) and not isinstance(default, bool))
        ) or (isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            raise UsageError(
                f"config key '{name}.{key}': expected {type(default).__name__}, got {type(value).__name__} ({value!r})"
            )
    settings = cls(**values)
    for key in ("image_size", "max_train", "max_test", "calibration_images", "parity_images"):
        if getattr(settings, key, 0) < 0:
            raise UsageError(f"config key '{name}.{key}' must be >= 0, got {getattr(settings, key)}")
    return settings


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


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults <- config file <- dedicated flags <- ``--set`` overrides, validated section by section."""
    config = load_config_file(Path(args.config) if args.config else DEFAULT_CONFIG)
    for section in SECTIONS[1:]:
        config.setdefault(section, {})
        if not isinstance(config[section], dict):
            raise UsageError(f"config section [{section}] must be a table")
    if args.dataset:
        config["data"]["dataset"] = args.dataset
    if args.skip_corrupt:
        config["data"]["skip_corrupt"] = True
    if args.data_root:
        config["data"]["data_root"] = args.data_root
    if args.allow_failed_parity:
        config["export"]["allow_failed"] = True
    for text in args.set or []:
        (section, key), value = parse_override(text)
        config[section][key] = value
    return config


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one run."""

    name: str
    data: DataSettings
    train: Any  # train.config.TrainConfig
    export: ExportSettings
    evaluate: Any  # evaluate.suite.EvalConfig

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "data": asdict(self.data),
            "train": self.train.to_dict(),
            "export": asdict(self.export),
            "evaluate": self.evaluate.to_dict(),
        }


def validate_config(config: dict[str, Any], name: str | None) -> Settings:
    from edge_encoder.evaluate.suite import eval_config_from_dict
    from edge_encoder.train.config import train_config_from_dict

    data = _check_section("data", DataSettings, config["data"])
    if data.stream and not data.dataset.startswith("folder:"):
        raise UsageError(f"config key 'data.stream': only folder:PATH datasets stream from disk, not {data.dataset!r} "
                         "(set data.stream = false)")
    export = _check_section("export", ExportSettings, config["export"])
    bad = [v for v in export.variants if v not in EXPORT_VARIANTS]
    if bad or not export.variants:
        raise UsageError(f"config key 'export.variants': {bad or 'empty'} not allowed; choose from {list(EXPORT_VARIANTS)}")
    if export.calibration_method not in CALIBRATION_METHODS:
        raise UsageError(f"config key 'export.calibration_method': {export.calibration_method!r} not allowed; choose "
                         f"from {list(CALIBRATION_METHODS)}")
    try:
        train = train_config_from_dict(config["train"])
        evaluation = eval_config_from_dict(config["evaluate"])
    except (ValueError, TypeError) as exc:
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


def load_data(settings: DataSettings):  # -> imagedata.ImageSplits, or imagedata.FolderSplits for data.stream
    """The dataset as arrays, or for ``data.stream`` its two splits listed (nothing decoded; ``skip_corrupt`` reads
    each file's header): the same images, order and labels either way."""
    from edge_encoder.imagedata import DatasetError, FolderSplits, load_dataset

    try:
        if settings.stream:  # validate_config allows it for folder:PATH datasets only
            return FolderSplits.open(
                settings.dataset, settings.dataset[len("folder:"):], image_size=settings.image_size or None,
                test_fraction=settings.test_fraction, seed=settings.seed, skip_corrupt=settings.skip_corrupt,
                max_train=settings.max_train or None, max_test=settings.max_test or None,
            )
        return load_dataset(
            settings.dataset,
            data_root=Path(settings.data_root).expanduser() if settings.data_root else None,
            image_size=settings.image_size or None,
            test_fraction=settings.test_fraction,
            seed=settings.seed,
            skip_corrupt=settings.skip_corrupt,
            max_train=settings.max_train or None,
            max_test=settings.max_test or None,
        )
    except DatasetError as exc:
        raise UsageError(str(exc)) from exc


def take_images(images: Any, rows: slice | np.ndarray) -> np.ndarray:
    """``images[rows]`` as ``uint8 (len(rows), H, W, 3)``: an array indexed as always, or the selected items of an
    image sequence (``data.stream``) decoded and stacked: only those are decoded."""
    if isinstance(images, np.ndarray):
        return images[rows]
    indices = range(*rows.indices(len(images))) if isinstance(rows, slice) else [int(i) for i in rows]
    if len(indices) == 0:
        return np.zeros((0, *images[0].shape), dtype=np.uint8)
    return np.stack([images[i] for i in indices])


def channel_stats(images: Any) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``uint8 (N, H, W, 3)`` images on the 0..1 scale (the preprocessing contract).

    An image sequence (``data.stream``) is read in one pass, one image at a time, into per-channel counts of the
    256 values; mean and std follow exactly from those counts. A seeded sample would be cheaper, but its statistics
    differ from the full split's (in the 3rd-4th decimal for 5,000 images), so a streamed run would not train on
    the same inputs as an in-memory one; the full pass costs one decode of the train split (~85 us an image for
    32 px PNGs here, a few ms for ImageNet JPEGs), against the decode per epoch that training and the decode per
    engine that evaluation pay anyway. The results equal the in-memory ones to the 6 decimals kept.
    """
    if not isinstance(images, np.ndarray):
        return _streamed_channel_stats(images)
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    std = np.maximum(pixels.std(axis=0), 1e-3)  # a constant channel (grey data) must not divide by zero
    return [round(float(v), 6) for v in pixels.mean(axis=0)], [round(float(v), 6) for v in std]


def _streamed_channel_stats(images: Any) -> tuple[list[float], list[float]]:
    """:func:`channel_stats` of an image sequence, from exact per-channel value counts (constant memory)."""
    started = time.perf_counter()
    offsets = np.array([0, 256, 512], dtype=np.uint16)  # channel c's value v counts in bin 256 * c + v
    counts = np.zeros(3 * 256, dtype=np.int64)
    for i in range(len(images)):
        counts += np.bincount((images[i].reshape(-1, 3) + offsets).ravel(), minlength=3 * 256)
    counts = counts.reshape(3, 256)
    values = np.arange(256, dtype=np.float64) / 255.0
    total = counts.sum(axis=1)
    mean = counts @ values / total
    std = np.sqrt((counts * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / total)
    std = np.maximum(std, 1e-3)  # a constant channel (grey data) must not divide by zero
    log.info("channel statistics: one streamed pass over all %d train images in %.1f s", len(images),
             time.perf_counter() - started)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def knn_monitor_rows(num_train: int, num_test: int, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``int64`` rows of the train and test splits for the kNN monitor: a seeded random subset of at most
    ``limit`` rows of each (all rows when the split is smaller)."""
    rng = np.random.default_rng(seed)
    return tuple(np.sort(rng.choice(n, size=min(limit, n), replace=False)).astype(np.int64)  # type: ignore[return-value]
                 for n in (num_train, num_test))


def make_knn_monitor(data, preprocess: dict[str, Any], eval_config, limit: int = 2000):
    """A callback for train/: kNN top-1 of the current backbone, through evaluate/'s kNN (labels only here).

    Its bank and queries are seeded random subsets of ``limit`` images of each split (in file order, so a streamed
    folder is read forward), not the first ``limit``: folder datasets are sorted by class, and their first images
    would cover a few classes only. Taken at the first call (streamed data is decoded then, and kept for the later
    calls: at most ``2 * limit`` images)."""
    from edge_encoder.evaluate.knn import knn_accuracy
    from edge_encoder.export.engines import TorchEngine

    bank_rows, query_rows = knn_monitor_rows(len(data.y_train), len(data.y_test), limit, eval_config.seed)
    bank_y, query_y = data.y_train[bank_rows], data.y_test[query_rows]
    held: list[np.ndarray] = []

    def monitor(backbone) -> dict[str, float]:
        if not held:
            held.extend((take_images(data.x_train, bank_rows), take_images(data.x_test, query_rows)))
        bank_x, query_x = held
        with TorchEngine(backbone, preprocess, name="monitor", device=next(backbone.parameters()).device.type) as engine:
            bank, queries = engine.embed(bank_x), engine.embed(query_x)
        scores = knn_accuracy(bank, bank_y, queries, query_y, k=eval_config.knn_k, temperature=eval_config.knn_temperature)
        return {"knn_top1": scores["top1"], "knn_top5": scores["top5"]}

    return monitor


def run_train(settings: Settings, data, run_dir: Path, device: str, progress: bool) -> tuple[Any, dict[str, Any]]:
    from edge_encoder.train.loop import train_moco

    mean, std = channel_stats(data.x_train)
    preprocess = {"image_size": int(data.image_shape[0]), "mean": mean, "std": std}
    if settings.data.stream:  # data.x_train is then the folder's FolderImages, decoded on access
        log.info("training streams %d images from disk (train.data_workers = %s)", len(data.x_train),
                 settings.train.data_workers)
    try:
        result = train_moco(
            data.x_train,
            settings.train,
            run_dir / "train",
            device=device,
            preprocess_mean=tuple(mean),
            preprocess_std=tuple(std),
            progress=progress,
            knn_monitor=make_knn_monitor(data, preprocess, settings.evaluate),
        )
    except ValueError as exc:  # refused before any step: a config that does not fit the data or the run dir
        raise UsageError(f"{exc} (to start afresh, choose another --name)" if "different training" in str(exc) else str(exc)) from exc
    return result, preprocess


def run_export(settings: Settings, data, checkpoint: Path, run_dir: Path, progress: bool):
    from dataclasses import replace

    from edge_encoder.export.bundle import ParityGateError, export_bundle
    from edge_encoder.export.precision import INT8_FLAVOURS, select_calibration_indices

    calib = select_calibration_indices(len(data.x_train), settings.export.calibration_images, seed=settings.data.seed)
    parity = slice(0, min(settings.export.parity_images, len(data.x_test)))
    try:
        return export_bundle(
            checkpoint,
            run_dir / "deploy",
            calibration_images=take_images(data.x_train, calib),
            calibration_indices=calib,
            parity_images=take_images(data.x_test, parity),
            parity_labels=data.y_test[parity],
            variants=tuple(settings.export.variants),
            opset=settings.export.opset,
            exporter=settings.export.exporter,
            quant_configs={flavour: replace(config, calibrate_method=settings.export.calibration_method)
                           for flavour, config in INT8_FLAVOURS.items()},
            allow_failed=True,  # evaluate every variant anyway; the gate decides the exit code below
            progress=progress,
        )
    except ParityGateError as exc:  # pragma: no cover - allow_failed=True above never raises it
        raise AssertionError("export_bundle raised despite allow_failed") from exc


def run_evaluate(settings: Settings, data, checkpoint: Path, bundle, run_dir: Path,
                 progress: bool) -> tuple[dict[str, Any], Any]:
    """Evaluate the PyTorch reference, every exported variant and the two baselines.

    Returns ``(metrics table, the evaluation whose embeddings the index benchmark uses)``: ``onnx_fp32`` when
    exported, else the first exported variant, else the PyTorch reference."""
    import torch
    from edge_encoder.evaluate.baselines import RawPixelEngine
    from edge_encoder.evaluate.suite import compare_engines, evaluate_engine
    from edge_encoder.export.engines import TorchEngine, open_engine
    from edge_encoder.train.backbones import build_backbone
    from edge_encoder.train.checkpoint import load_backbone

    def evaluate(engine, reference=None):  # noqa: ANN001, ANN202 - local shorthand
        return evaluate_engine(
            engine, data.x_train, data.y_train, data.x_test, data.y_test, config=settings.evaluate,
            dataset_id=data.spec, cache_dir=run_dir / "cache" / "embeddings", reference=reference, progress=progress,
        )

    evaluations, kinds = {}, {}
    backbone, preprocess, backbone_config = load_backbone(checkpoint)
    with TorchEngine(backbone, preprocess, name="pytorch_fp32") as engine:
        reference = evaluations["pytorch_fp32"] = evaluate(engine)
    kinds["pytorch_fp32"] = "reference"
    for variant_name, variant in bundle.variants.items():
        with open_engine(bundle.manifest_path.parent, variant_name) as engine:
            evaluations[variant.engine_name] = evaluate(engine, reference)
        kinds[variant.engine_name] = "engine"
    # Per-image centring: the stronger of the two raw-pixel variants here (0.4085 vs 0.3975 kNN top-1 on
    # cifar10_dev), and the definition behind the data README's published 0.407.
    with RawPixelEngine(data.x_train, centering="image") as engine:
        evaluations["raw_pixels"] = evaluate(engine)
    torch.manual_seed(settings.train.seed)  # the random-init baseline is reproducible too
    with TorchEngine(build_backbone(backbone_config).eval(), preprocess, name="random_init") as engine:
        evaluations["random_init"] = evaluate(engine)
    kinds["raw_pixels"] = kinds["random_init"] = "baseline"

    metrics = compare_engines(evaluations, reference="pytorch_fp32", kinds=kinds)
    for variant in bundle.variants.values():
        metrics[variant.engine_name].update(precision=variant.precision, parity_passed=variant.passed)
    exported = [v.engine_name for v in bundle.variants.values()]
    indexed = "onnx_fp32" if "onnx_fp32" in exported else (exported[0] if exported else "pytorch_fp32")
    return metrics, evaluations[indexed]


def run_index_benchmark(settings: Settings, evaluation) -> dict[str, Any]:
    """The report's ``index_benchmark`` section: FAISS approximate indexes on one engine's real embeddings."""
    from edge_encoder.evaluate.index_bench import index_benchmark_section
    from edge_encoder.evaluate.knn import configure_threads

    threads = configure_threads(settings.evaluate.num_threads)
    bank, queries = evaluation.train_embeddings, evaluation.test_embeddings
    return index_benchmark_section(
        {"real": (bank, f"{len(bank)} train-split embeddings of {evaluation.name}")}, queries,
        engine=evaluation.name, recall_target=settings.evaluate.index_recall_target,
        shards=settings.evaluate.index_shards, threads=threads)


# ---------------------------------------------------------------------------------------------- report


def environment() -> dict[str, Any]:
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for module in ("onnx", "onnxruntime", "faiss", "tensorrt"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # not installed, or a broken optional install: report it as absent
            versions[module] = None
    return {
        "versions": versions,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def train_summary(result) -> dict[str, Any]:
    """The report's ``train`` entry: figures of the run plus the kNN monitor's history (best and final)."""
    monitored = [h for h in result.history if "knn_top1" in h]
    summary = {
        "checkpoint": str(result.checkpoint_path),
        "steps": result.steps,
        "epochs": result.epochs,
        "final_loss": result.final_loss,
        "images_per_s": result.images_per_s,
        "seconds": result.seconds,
        "resumed_from_step": result.resumed_from_step,
        "knn_monitor": monitored,
    }
    if monitored:
        summary["knn_top1_final"] = monitored[-1]["knn_top1"]
        summary["knn_top1_best"] = max(h["knn_top1"] for h in monitored)
    return summary


def export_summary(bundle) -> dict[str, Any]:
    """The report's ``export`` entry: the bundle location and, per variant, file, precision and parity."""
    manifest = json.loads(bundle.manifest_path.read_text())
    return {
        "bundle": str(bundle.manifest_path.parent),
        "opset": manifest.get("opset"),
        "exporter": manifest.get("exporter"),
        "variants": {
            name: {"file": str(v.path.name), "engine": v.engine_name, "precision": v.precision, "passed": v.passed, "parity": v.parity}
            for name, v in bundle.variants.items()
        },
    }


def build_report(settings: Settings, data, device: str, timings: dict[str, float], train_result, bundle, metrics) -> dict[str, Any]:
    from edge_encoder.evaluate.report import SCHEMA_VERSION

    return {
        "schema_version": SCHEMA_VERSION,
        "name": settings.name,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "dataset": data.summary(),
        "config": settings.to_dict(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "train": train_summary(train_result),
        "export": export_summary(bundle),
        "metrics": metrics,
        "environment": environment(),
    }


# ---------------------------------------------------------------------------------------------- command line


def add_run_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of a whole run (``edge-encoder run`` and ``python pipeline.py``), added to ``parser``."""
    parser.epilog = "Config keys: see configs/*.toml and README.md. Any key can be overridden with --set SECTION.KEY=VALUE."
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", metavar="PATH", help=f"TOML preset (default: {DEFAULT_CONFIG.relative_to(PROJECT_ROOT)})")
    parser.add_argument(
        "--dataset",
        metavar="SPEC",
        help="digits | cifar10 | cifar100 | stl10 | mnist | fashion-mnist | folder:PATH | npz:PATH (overrides data.dataset)",
    )
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


def run(args: argparse.Namespace) -> int:
    settings = validate_config(resolve_config(args), args.name)
    device = pick_device(args.device)
    progress = not args.no_progress and sys.stderr.isatty()
    run_dir = Path(args.runs_dir) / settings.name
    # Under torchrun every rank trains (train/ shards the data and only rank 0 writes checkpoints); export and
    # evaluation run once, on rank 0.
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(run_dir / "config.json", settings.to_dict())
        _log_to_file(run_dir / "pipeline.log")
    log.info("run %s on %s -> %s", settings.name, device, run_dir)

    timings: dict[str, float] = {}
    started = time.perf_counter()
    with _timed(timings, "data"):
        data = load_data(settings.data)
    log.info("data %s: %d train / %d test images of %s", data.name, len(data.x_train), len(data.x_test), data.image_shape)
    with _timed(timings, "train"):
        train_result, _ = run_train(settings, data, run_dir, device, progress)
    log.info("trained %d steps (%d epochs) in %.1f s, %.0f images/s, final loss %.4f -> %s", train_result.steps,
             train_result.epochs, train_result.seconds, train_result.images_per_s, train_result.final_loss,
             train_result.checkpoint_path)
    _leave_process_group()  # export and evaluation run single-process on rank 0 (the others are done)
    if rank != 0:
        return 0
    with _timed(timings, "export"):
        bundle = run_export(settings, data, train_result.checkpoint_path, run_dir, progress)
    with _timed(timings, "evaluate"):
        metrics, indexed = run_evaluate(settings, data, train_result.checkpoint_path, bundle, run_dir, progress)
    index_section = None
    if settings.evaluate.index_benchmark:
        with _timed(timings, "index_benchmark"):
            index_section = run_index_benchmark(settings, indexed)
        log.info("index benchmark on %s: %s", indexed.name, index_section["recommendation"])
    timings["total"] = time.perf_counter() - started

    from edge_encoder.evaluate.report import render_summary_table, write_report

    report = build_report(settings, data, device, timings, train_result, bundle, metrics)
    if index_section is not None:
        report["index_benchmark"] = index_section
    json_path, md_path = write_report(run_dir, report)
    print(render_summary_table(report))
    print(f"\nreport: {json_path}\n        {md_path}")
    failed = [v.engine_name for v in bundle.variants.values() if not v.passed]
    if failed and not settings.export.allow_failed:
        print(f"error: parity gate failed for {', '.join(failed)} (files kept, marked failed in "
              f"{bundle.manifest_path}); rerun with --allow-failed-parity to accept", file=sys.stderr)
        return EXIT_PARITY
    return 0


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


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    from edge_encoder.core.files import atomic_write_json

    atomic_write_json(path, payload)


def _log_to_file(path: Path) -> None:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_QuietThirdParty())
    logging.getLogger().addHandler(handler)


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


def main(argv: list[str] | None = None) -> int:
    """``python pipeline.py ARGS``: parse ``argv`` and run; returns the exit code."""
    return main_args(build_parser().parse_args(argv))


def main_args(args: argparse.Namespace) -> int:
    """Run with parsed arguments, turning expected failures into exit codes (see the module docstring)."""
    setup_logging(args.verbose)
    try:
        return run(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        from edge_encoder.imagedata import DatasetError

        if not isinstance(exc, DatasetError):
            raise
        # Streamed data (data.stream) is decoded only as stages reach it: an unreadable file can surface mid-run.
        print(f"error: {exc}. Remove or replace the file and rerun: checkpoints and finished files are kept",
              file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: checkpoints and finished files are kept; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


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
