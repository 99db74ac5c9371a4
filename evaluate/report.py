"""Run reports: ``report.json`` (machine-readable, schema in docs/report_schema.md), ``report.md`` (tables),
PNG plots, and the terminal summary table.

The pipeline assembles the report dict; this module only validates its top-level shape, serialises it
(numpy values become plain JSON, NaN/Inf become ``null``) and renders it.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from edge_encoder.core.files import atomic_write_text

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


def _metric_rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return list(report.get("metrics", {}).items())


def render_summary_table(report: dict[str, Any]) -> str:
    """Fixed-width text table of the headline metrics, one row per engine/baseline."""
    header = ["name", "kind"] + [title for _, title, _ in SUMMARY_COLUMNS]
    rows = [
        [name, str(m.get("kind", ""))] + [_fmt(m.get(key), spec) for key, _, spec in SUMMARY_COLUMNS]
        for name, m in _metric_rows(report)
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    title = f"{report.get('name', '?')} — {report.get('dataset', {}).get('name', '?')}"
    return "\n".join([title, *lines])


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _md_dataset(report: dict[str, Any]) -> str:
    ds = report.get("dataset", {})
    keys = ("spec", "name", "num_train", "num_test", "image_shape", "num_classes", "skipped_files")
    return _md_table(["field", "value"], [[k, _fmt(ds.get(k), "")] for k in keys if k in ds])


def _md_timings(report: dict[str, Any]) -> str:
    t = report.get("timings_s", {})
    return _md_table(["stage", "seconds"], [[k, _fmt(v, ".1f")] for k, v in t.items()])


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


def render_markdown(report: dict[str, Any], plots: list[str] | None = None) -> str:
    """``report.md`` text: dataset, timings, headline metrics, all metrics, per-class kNN, index benchmark."""
    parts = [f"# Run `{report.get('name', '?')}`", f"Created {report.get('created_utc', '?')} — schema "
             f"v{report.get('schema_version')}", "## Dataset", _md_dataset(report), "## Timings (s)",
             _md_timings(report), "## Metrics", _md_metrics(report),
             "Δ columns are engine minus the FP32 reference; kNN accuracy always uses exact search.",
             "## All metrics", _md_detail(report)]
    for title, section in (("## Per-class kNN top-1", _md_per_class(report)),
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
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a readable JSON report: {exc}") from exc
    return check_report(data)
