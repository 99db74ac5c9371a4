"""Two runs' reports side by side (what ``edge-encoder compare RUN_A RUN_B`` prints; its command line is
``commands/compare.py``).

RUN_A / RUN_B are run directories (holding ``report.json``) or report files. For each engine/baseline
present in either run it prints the headline metrics of A, of B, and B minus A.
"""

from __future__ import annotations

from typing import Any

from edge_encoder.evaluate.report import SUMMARY_COLUMNS

COMPARED = tuple((k, t) for k, t, _ in SUMMARY_COLUMNS if not k.startswith("delta_"))


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _cell(v: float | None, spec: str = ".4f") -> str:
    return "–" if v is None else format(v, spec)


def render_comparison(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Text table: one row per (engine, metric) with A, B and B - A."""
    names = list(a["metrics"]) + [n for n in b["metrics"] if n not in a["metrics"]]
    rows = [["engine", "metric", f"A: {a.get('name', '?')}", f"B: {b.get('name', '?')}", "B - A"]]
    for name in names:
        ma, mb = a["metrics"].get(name, {}), b["metrics"].get(name, {})
        for key, title in COMPARED:
            va, vb = _num(ma.get(key)), _num(mb.get(key))
            spec = ".0f" if key == "embed_images_per_s" else ".4f"
            diff = None if va is None or vb is None else vb - va
            rows.append([name, title, _cell(va, spec), _cell(vb, spec), _cell(diff, "+" + spec)])
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    da, db = a.get("dataset", {}), b.get("dataset", {})
    head = [f"A: {a.get('name')} on {da.get('name')} ({da.get('num_train')} train / {da.get('num_test')} test)",
            f"B: {b.get('name')} on {db.get('name')} ({db.get('num_train')} train / {db.get('num_test')} test)"]
    if da.get("name") != db.get("name"):
        head.append("warning: the runs use different datasets; differences are not comparable")
    return "\n".join(head + [""] + lines)
