"""Run reports: ``report.json`` (machine-readable, schema in docs/report_schema.md), ``report.md`` (tables),
PNG plots, and the terminal summary table.

``assemble_report`` puts a run's report together from plain sections (each stage describes itself);
the rest validates its top-level shape, serialises it (numpy values become plain JSON, NaN/Inf become
``null``) and renders it.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from edge_encoder.core.files import atomic_write_text
from edge_encoder.core.markdown import md_table

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
REQUIRED_KEYS = ("schema_version", "name", "dataset", "metrics")
# (metric key, column title, format) for the headline table, in order.
SUMMARY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("knn_top1", "kNN top-1", ".4f"),
    ("knn_top5", "kNN top-5", ".4f"),
    ("linear_top1", "linear top-1", ".4f"),
    ("recall_at_1", "R@1", ".4f"),
    ("map_at_r", "mAP@R", ".4f"),
    ("delta_knn_top1", "Δ kNN top-1", "+.4f"),
    ("embed_images_per_s", "img/s", ".0f"),
)


def to_jsonable(obj: Any) -> Any:
    """Recursively convert numpy scalars/arrays, tuples and Paths to JSON types; NaN/Inf -> ``None``."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def check_report(report: object) -> dict[str, Any]:
    """Raise ``ValueError``/``TypeError`` unless ``report`` has the top-level shape of the schema."""
    if not isinstance(report, dict):
        raise TypeError(f"report must be a dict, got {type(report).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in report]
    if missing:
        raise ValueError(f"report is missing key(s) {missing}")
    if not isinstance(report["dataset"], dict):
        raise TypeError(f"report['dataset'] must be an object (docs/report_schema.md), got {type(report['dataset']).__name__}")
    if not isinstance(report["metrics"], dict):
        raise TypeError("report['metrics'] must map engine/baseline names to metric dicts")
    for name, m in report["metrics"].items():
        if not isinstance(m, dict) or m.get("kind") not in ("engine", "baseline", "reference"):
            raise ValueError(f"report['metrics'][{name!r}] needs kind engine|baseline|reference")
    return report


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return format(v, spec)
    return str(v)


# (label_free engine key, column title, format) for the label-free table, in order.
LABEL_FREE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("alignment", "alignment", ".4f"),
    ("uniformity", "uniformity", ".4f"),
    ("effective_rank", "eff. rank", ".1f"),
    ("dim", "D", "d"),
    ("dim_std_sqrt_d_mean", "std·√D", ".3f"),
    ("dead_dim_fraction", "dead dims", ".3f"),
    ("reference_cosine_min", "cos ref min", ".4f"),
    ("embed_images_per_s", "img/s", ".0f"),
)


def _metric_rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return list(report.get("metrics", {}).items())


def render_summary_table(report: dict[str, Any]) -> str:
    """Fixed-width text table of the headline metrics, one row per engine/baseline (label-free measures, after a
    line saying so, when the run measured no accuracy)."""
    if report.get("accuracy_measured") is False:
        columns = LABEL_FREE_COLUMNS
        rows = [[name, str(m.get("kind", ""))] + [_fmt(m.get(key), spec) for key, _, spec in columns]
                for name, m in report.get("label_free", {}).get("engines", {}).items()]
    else:
        columns = SUMMARY_COLUMNS
        rows = [[name, str(m.get("kind", ""))] + [_fmt(m.get(key), spec) for key, _, spec in columns]
                for name, m in _metric_rows(report)]
    header = ["name", "kind"] + [title for _, title, _ in columns]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    title = f"{report.get('name', '?')} — {report.get('dataset', {}).get('name', '?')}"
    note = [accuracy_sentence(report)] if report.get("accuracy_measured") is False else []
    return "\n".join([title, *note, *lines])


def accuracy_sentence(report: dict[str, Any]) -> str:
    """``"Accuracy was not measured: <reason>."`` for a run without a labelled evaluation set."""
    reason = report.get("accuracy_note") or "no labelled evaluation set was given (--eval-data)"
    return f"Accuracy was not measured: {reason}."


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    """Every table of report.md: each cell escaped (``core.markdown``), so a class name, path or engine name holding
    ``|`` or a line break keeps its row to the header's column count."""
    return md_table(header, rows)


def _md_dataset(report: dict[str, Any]) -> str:
    ds = report.get("dataset", {})
    keys = ("spec", "name", "labelled", "layout", "num_train", "num_test", "image_shape", "num_classes",
            "classes_without_train_images", "classes_without_readable_images", "held_out_images", "skipped_files")
    return _md_table(["field", "value"], [[k, _fmt(ds.get(k), "")] for k in keys if k in ds])


def _md_train_data(report: dict[str, Any]) -> str:
    td = report["train_data"]
    keys = ("spec", "source", "layout", "num_images", "image_shape", "labels_used", "held_out", "excluded_eval_images",
            "excluded_eval_duplicates", "skipped_files")
    return _md_table(["field", "value"], [[k, _fmt(td.get(k), "")] for k in keys if k in td])


def _md_timings(report: dict[str, Any]) -> str:
    t = report.get("timings_s", {})
    return _md_table(["stage", "seconds"], [[k, _fmt(v, ".1f")] for k, v in t.items()])


def _md_training_settings(report: dict[str, Any]) -> str | None:
    """The settings training chose on this machine (``train.runtime``: ISA, precision, memory format, threads)."""
    runtime = (report.get("train") or {}).get("runtime") or {}
    keys = ("device", "cpu_isa", "precision", "channels_last", "threads", "compile", "augment", "data_workers",
            "split_bn_groups", "world_size")
    rows = [[k, _fmt(runtime[k], "")] for k in keys if k in runtime]
    return _md_table(["setting", "value"], rows) if rows else None


def _md_metrics(report: dict[str, Any]) -> str:
    header = ["name", "kind"] + [title for _, title, _ in SUMMARY_COLUMNS]
    rows = [[name, str(m.get("kind"))] + [_fmt(m.get(k), s) for k, _, s in SUMMARY_COLUMNS]
            for name, m in _metric_rows(report)]
    return _md_table(header, rows)


def _md_detail(report: dict[str, Any]) -> str:
    """Every scalar metric per engine (columns = engines), including extra kNN settings and agreements."""
    rows_by_name = _metric_rows(report)
    keys: list[str] = []
    for _, m in rows_by_name:
        keys += [k for k, v in m.items() if k not in keys and k != "kind" and not isinstance(v, (dict, list))]
    return _md_table(["metric"] + [n for n, _ in rows_by_name],
                     [[k] + [_fmt(m.get(k), ".4g") for _, m in rows_by_name] for k in keys])


def _md_per_class(report: dict[str, Any]) -> str | None:
    rows_by_name = [(n, m["per_class"]["knn_top1"]) for n, m in _metric_rows(report)
                    if isinstance(m.get("per_class"), dict) and "knn_top1" in m["per_class"]]
    if not rows_by_name:
        return None
    classes = sorted({c for _, pc in rows_by_name for c in pc}, key=lambda c: int(c))
    names = report.get("dataset", {}).get("class_names")
    label = (lambda c: f"{c} {names[int(c)]}") if isinstance(names, list) and len(names) >= len(classes) else str
    return _md_table(["class"] + [n for n, _ in rows_by_name],
                     [[label(c)] + [_fmt(pc.get(c), ".3f") for _, pc in rows_by_name] for c in classes])


def _md_label_free(report: dict[str, Any]) -> str | None:
    section = report.get("label_free")
    if not isinstance(section, dict) or not section.get("engines"):
        return None
    rows = [[name, str(m.get("kind"))] + [_fmt(m.get(k), s) for k, _, s in LABEL_FREE_COLUMNS]
            for name, m in section["engines"].items()]
    table = _md_table(["name", "kind"] + [t for _, t, _ in LABEL_FREE_COLUMNS], rows)
    return (f"On {section.get('images')} images: {section.get('source')}. Positive pairs: "
            f"{section.get('positive_pairs')}.\n\n{table}\n\n"
            "Alignment: mean squared distance between an image's and its view's embeddings (lower: more invariant). "
            "Uniformity: log mean exp(-2 d²) over pairs of images (0 = collapsed to one point; lower: more spread). "
            "Effective rank: exp of the entropy of the normalised singular values (1 = collapsed). std·√D: "
            "per-dimension spread (about 1 when isotropic); dead dims: share below "
            f"{section.get('dead_ratio')}/√D. cos ref min: lowest per-image cosine to the PyTorch FP32 reference.")


def _md_index_bench(report: dict[str, Any]) -> str | None:
    bench = report.get("index_benchmark")
    if not isinstance(bench, dict) or not bench.get("rows"):
        return None
    cols = [("bank", "s"), ("index", "s"), ("param", "s"), ("recall_at_10", ".4f"), ("qps", ",.0f"), ("build_s", ".2f"),
            ("memory_mb", ".2f"), ("placement", "s")]
    table = _md_table([c for c, _ in cols], [[_fmt(r.get(c), f) if f != "s" else str(r.get(c, "")) for c, f in cols]
                                            for r in bench["rows"]])
    rec = bench.get("recommendation")
    return table + (f"\n\nRecommendation: {rec}" if rec else "")


def _md_engines(report: dict[str, Any]) -> str | None:
    """Where each engine of an ``edge-encoder evaluate`` report came from and who L2-normalised its output."""
    engines = report.get("engines")
    if not isinstance(engines, dict) or not engines:
        return None
    rows = [[name, str(e.get("kind", "")), str(e.get("source", "")), str(e.get("input_layout", "")),
             "x".join(str(v) for v in e.get("input_size", [])),
             (f"`{e['graph_output']}`: " if e.get("graph_output") else "") + str(e.get("output", ""))]
            for name, e in engines.items() if isinstance(e, dict)]
    return _md_table(["engine", "kind", "source", "input", "size", "output"], rows)


def render_markdown(report: dict[str, Any], plots: list[str] | None = None) -> str:
    """``report.md`` text: dataset, training images, timings, headline and all metrics (without labels: a sentence
    saying accuracy was not measured, first), engines, label-free measures, per-class kNN, index benchmark."""
    parts = [f"# Run `{report.get('name', '?')}`", f"Created {report.get('created_utc', '?')} — schema "
             f"v{report.get('schema_version')}"]
    if report.get("accuracy_measured") is False:  # said first, in words: there is no accuracy table below
        parts += [f"**{accuracy_sentence(report)}**"]
    parts += ["## Dataset", _md_dataset(report)]
    if isinstance(report.get("train_data"), dict):
        parts += ["## Training images", _md_train_data(report)]
    parts += ["## Timings (s)", _md_timings(report)]
    settings = _md_training_settings(report)
    if settings is not None:
        parts += ["## Training settings (chosen for this machine)", settings]
    if report.get("accuracy_measured") is not False:
        parts += ["## Metrics", _md_metrics(report),
                  "Δ columns are engine minus the FP32 reference; kNN accuracy always uses exact search.",
                  "## All metrics", _md_detail(report)]
    for title, section in (("## Engines", _md_engines(report)), ("## Label-free measures", _md_label_free(report)),
                           ("## Per-class kNN top-1", _md_per_class(report)),
                           ("## Approximate index benchmark", _md_index_bench(report))):
        if section:
            parts += [title, section]
    if plots:
        parts += ["## Plots"] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n\n".join(parts) + "\n"


def write_plots(run_dir: Path, report: dict[str, Any]) -> list[str]:
    """PNG plots under ``run_dir/plots/``; returns their paths relative to ``run_dir`` ([] without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on servers/CI
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: report without plots")
        return []
    from edge_encoder.evaluate import plots

    out_dir = run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [p for p in (plots.accuracy_bars(plt, out_dir, report), plots.best_confusion(plt, out_dir, report),
                           plots.recall_vs_qps(plt, out_dir, report)) if p is not None]
    return [str(p.relative_to(run_dir)) for p in written]


def write_report(run_dir: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` (atomically) plus plots into ``run_dir``.

    Returns:
        ``(json_path, md_path)``.
    """
    check_report(report)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = to_jsonable(report)
    data["plots"] = write_plots(run_dir, data)
    json_path, md_path = run_dir / "report.json", run_dir / "report.md"
    atomic_write_text(json_path, json.dumps(data, indent=2, allow_nan=False) + "\n")
    atomic_write_text(md_path, render_markdown(data, data["plots"]))
    return json_path, md_path


def load_report(path: Path) -> dict[str, Any]:
    """Read a run's ``report.json`` (``path`` may be the run directory); ``ValueError`` naming the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise ValueError(f"no report at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a readable JSON report: {exc}") from exc
    try:
        return check_report(data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not a report of docs/report_schema.md: {exc}") from exc


def environment() -> dict[str, Any]:
    """The report's ``environment`` entry: library versions (None where absent), platform, CPUs, CUDA device."""
    import os
    import platform

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


def assemble_report(*, name: str, device: str, dataset: dict[str, Any], config: dict[str, Any],
                    timings: dict[str, float], train: dict[str, Any], export: dict[str, Any],
                    metrics: dict[str, Any]) -> dict[str, Any]:
    """A run's report (docs/report_schema.md) from plain sections: each stage describes itself (``dataset``:
    ``ImageSplits.summary()``, ``train``: ``TrainResult.summary()``, ``export``: ``BundleResult.summary()``),
    so this module needs none of them. Optional sections (``index_benchmark``...) are added by the caller."""
    import datetime as dt

    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "dataset": dataset,
        "config": config,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "train": train,
        "export": export,
        "metrics": metrics,
        "environment": environment(),
    }
