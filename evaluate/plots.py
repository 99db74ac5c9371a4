"""The report's PNG plots. Called by ``report.write_plots`` with ``pyplot`` already imported (Agg backend).

Names a user chose (class folders, engine names) are drawn as plain text (``parse_math=False``): a ``$`` in one is
not read as mathtext, which would stop the report at ``savefig`` (``a$\\frac$b``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np


def accuracy_bars(plt: Any, out_dir: Path, report: dict[str, Any]) -> Path | None:
    """Grouped bars of kNN top-1 and linear top-1 per engine/baseline."""
    metrics = report.get("metrics", {})
    if not metrics:
        return None
    names = list(metrics)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(names)), 3.5))
    x = np.arange(len(names))
    for i, (key, label) in enumerate((("knn_top1", "kNN top-1"), ("linear_top1", "linear top-1"))):
        vals = [metrics[n].get(key) or 0.0 for n in names]
        ax.bar(x + (i - 0.5) * 0.38, vals, width=0.38, label=label)
    ax.set_xticks(x, names, rotation=20, ha="right", parse_math=False)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend()
    fig.tight_layout()
    path = out_dir / "accuracy.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def best_confusion(plt: Any, out_dir: Path, report: dict[str, Any]) -> Path | None:
    """Row-normalised kNN confusion matrix of the engine (not baseline) with the best kNN top-1."""
    candidates = [(m.get("knn_top1") or 0.0, n) for n, m in report.get("metrics", {}).items()
                  if m.get("kind") != "baseline" and m.get("confusion_matrix")]
    if not candidates:
        return None
    _, name = max(candidates)
    cm = np.asarray(report["metrics"][name]["confusion_matrix"], dtype=np.float64)
    cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    im = ax.imshow(cm, vmin=0, vmax=1, cmap="viridis")
    if len(cm) <= 20:  # readable tick labels only for small label sets
        names = (report.get("dataset") or {}).get("class_names")
        labels = names if isinstance(names, list) and len(names) == len(cm) else [str(i) for i in range(len(cm))]
        ax.set_xticks(range(len(cm)), labels, rotation=45, ha="right", fontsize=7, parse_math=False)
        ax.set_yticks(range(len(cm)), labels, fontsize=7, parse_math=False)
    ax.set_xlabel("predicted class (kNN)")
    ax.set_ylabel("true class")
    ax.set_title(f"{name}: kNN confusion", parse_math=False)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    path = out_dir / f"confusion_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def recall_vs_qps(plt: Any, out_dir: Path, report: dict[str, Any]) -> Path | None:
    """Recall@10 (vs exact) against queries/s per index family, log-scale QPS, one series per bank."""
    rows = (report.get("index_benchmark") or {}).get("rows") or []
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for (bank, index) in sorted({(r["bank"], r["index"]) for r in rows}):
        pts = sorted((r["qps"], r["recall_at_10"]) for r in rows if r["bank"] == bank and r["index"] == index)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{index} ({bank})")
    ax.set_xscale("log")
    ax.set_xlabel("queries / s")
    ax.set_ylabel("recall@10 vs exact")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "recall_vs_qps.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
