"""Embedding-aware parity gates: a variant against the FP32 PyTorch reference on a fixed image subset.

One flattened cosine over the whole output hides neighbour flips; these metrics are per row and on the
kNN structure retrieval depends on. Brute-force NumPy only. The kNN accuracy is the report's weighted kNN
(``core.knn``: k and T as the manifest records them, ``reference.knn``), used by the export gate and by
``edge-encoder verify`` alike, so the figure verify prints is the one it gates on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from edge_encoder.core.knn import DEFAULT_K, DEFAULT_TEMPERATURE, loo_knn_correct, loo_neighbours


@dataclass(frozen=True)
class ParityThresholds:
    """Pass conditions for one precision; ``None`` disables a check.

    Attributes:
        min_cosine: lower bound on the worst per-row cosine.
        p1_cosine: lower bound on the 1st percentile of per-row cosine.
        max_abs_diff: upper bound on the largest absolute element difference.
        min_top1_agreement: fraction of rows whose nearest neighbour (in the subset) is unchanged.
        min_top10_overlap: mean fraction of shared top-10 neighbours.
        max_knn_accuracy_drop: largest allowed drop of leave-one-out kNN top-1 accuracy (fraction), widened by
            two standard errors of the paired difference on the parity subset,
            checked only when labels are given.
    """

    min_cosine: float | None = None
    p1_cosine: float | None = None
    max_abs_diff: float | None = None
    min_top1_agreement: float | None = None
    min_top10_overlap: float | None = None
    max_knn_accuracy_drop: float | None = None


DEFAULT_THRESHOLDS: dict[str, ParityThresholds] = {
    "fp32": ParityThresholds(min_cosine=0.9999, p1_cosine=0.9999, max_abs_diff=1e-3, min_top1_agreement=0.98,
                             min_top10_overlap=0.97, max_knn_accuracy_drop=0.002),
    "fp16": ParityThresholds(min_cosine=0.999, p1_cosine=0.9995, max_abs_diff=1e-2, min_top1_agreement=0.95,
                             min_top10_overlap=0.93, max_knn_accuracy_drop=0.01),
    # INT8: a high flattened cosine is not enough (neighbours flip first), hence the neighbour gates.
    "int8_trt": ParityThresholds(min_cosine=0.98, p1_cosine=0.985, min_top1_agreement=0.75,
                                 min_top10_overlap=0.80, max_knn_accuracy_drop=0.015),
    "int8_cpu": ParityThresholds(min_cosine=0.98, p1_cosine=0.985, min_top1_agreement=0.75,
                                 min_top10_overlap=0.80, max_knn_accuracy_drop=0.015),
}


# Built-in floors: the loosest gate `edge-encoder verify` accepts from a manifest without --allow-loose-gates, so that
# a manifest with null or loosened thresholds cannot pass anything. Each is well below DEFAULT_THRESHOLDS (a trained
# encoder's variants clear them by a wide margin) and above what a broken engine reaches: a changed weight byte or a
# wrong normalisation drops the worst-row cosine far below 0.95 and the top-1 agreement towards chance.
GATE_FLOORS: dict[str, ParityThresholds] = {
    "fp32": ParityThresholds(min_cosine=0.999, min_top1_agreement=0.9, min_top10_overlap=0.9,
                             max_knn_accuracy_drop=0.01),
    "fp16": ParityThresholds(min_cosine=0.99, min_top1_agreement=0.8, min_top10_overlap=0.8,
                             max_knn_accuracy_drop=0.02),
    "int8": ParityThresholds(min_cosine=0.95, min_top1_agreement=0.4, min_top10_overlap=0.6,
                             max_knn_accuracy_drop=0.05),
}
# For each floored field, which direction is stricter.
_FLOOR_FIELDS = {"min_cosine": "min", "min_top1_agreement": "min", "min_top10_overlap": "min",
                 "max_knn_accuracy_drop": "max"}


def gate_floor(variant: str) -> ParityThresholds:
    """The floor of ``variant``: its own, else the INT8 one (the loosest) for int8_* and any other name."""
    return GATE_FLOORS.get(variant, GATE_FLOORS["int8"])


def loose_gate_fields(variant: str, gate: dict[str, Any]) -> list[str]:
    """The fields of a manifest ``gate`` (``reference.gates[variant]``) that are missing, null or looser than the
    floor, each as ``"field = value (floor F)"``; empty when the gate is at least as strict as the floor."""
    floor, loose = asdict(gate_floor(variant)), []
    for name, direction in _FLOOR_FIELDS.items():
        value = gate.get(name)
        bound = floor[name]
        looser = value is None or (value < bound if direction == "min" else value > bound)
        if looser:
            loose.append(f"{name} = {value} ({'>=' if direction == 'min' else '<='} {bound} is the floor)")
    return loose


@dataclass
class ParityReport:
    """Metrics of a candidate against the reference, plus the verdict (JSON-serialisable via ``to_dict``)."""

    n: int
    cosine_min: float
    cosine_p1: float
    cosine_mean: float
    abs_diff_max: float
    abs_diff_p99: float
    norm_drift_max: float
    top1_agreement: float
    top10_overlap: float
    knn_accuracy_reference: float | None = None
    knn_accuracy_candidate: float | None = None
    knn_accuracy_delta: float | None = None
    knn_accuracy_delta_stderr: float | None = None
    knn_k: int | None = None
    knn_temperature: float | None = None
    thresholds: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d


def _neighbours(emb: np.ndarray, k: int) -> np.ndarray:
    """Indices ``(N, k)`` of each row's k most similar other rows (``core.knn.loo_neighbours``, self excluded)."""
    return loo_neighbours(emb, k)[1]


def compare_embeddings(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None,
                       thresholds: ParityThresholds | None = None, k: int = 10, *, knn_k: int = DEFAULT_K,
                       knn_temperature: float = DEFAULT_TEMPERATURE) -> ParityReport:
    """Parity of ``candidate`` float ``(N, D)`` against ``reference`` float ``(N, D)`` (same images, same order).

    Neighbour metrics (top-1 agreement, top-``k`` overlap) use the subset itself as the bank (self excluded);
    ``labels`` int ``(N,)`` adds the leave-one-out weighted kNN accuracy (``core.knn``, ``knn_k`` neighbours,
    temperature ``knn_temperature``: the report's definition) of both and its change.
    """
    if reference.shape != candidate.shape or reference.ndim != 2:
        raise ValueError(f"reference and candidate must be equal (N, D) arrays, got {reference.shape} and {candidate.shape}")
    if len(reference) < 2:
        raise ValueError(f"parity needs at least 2 rows, got {len(reference)}")
    if labels is not None and labels.shape != (len(reference),):
        raise ValueError(f"labels must have shape ({len(reference)},), got {labels.shape}")
    ref, cand = reference.astype(np.float64), candidate.astype(np.float64)
    ref_n, cand_n = np.linalg.norm(ref, axis=1), np.linalg.norm(cand, axis=1)
    cos = (ref * cand).sum(1) / np.maximum(ref_n * cand_n, 1e-12)
    diff = np.abs(ref - cand)
    nn_ref, nn_cand = _neighbours(ref, k), _neighbours(cand, k)
    overlap = np.mean([len(np.intersect1d(a, b)) / nn_ref.shape[1] for a, b in zip(nn_ref, nn_cand)])
    report = ParityReport(
        n=len(ref), cosine_min=float(cos.min()), cosine_p1=float(np.percentile(cos, 1)), cosine_mean=float(cos.mean()),
        abs_diff_max=float(diff.max()), abs_diff_p99=float(np.percentile(diff, 99)),
        norm_drift_max=float(np.abs(cand_n - ref_n).max()),
        top1_agreement=float((nn_ref[:, 0] == nn_cand[:, 0]).mean()), top10_overlap=float(overlap),
    )
    if labels is not None:
        ok_ref = loo_knn_correct(ref, labels, knn_k, knn_temperature)
        ok_cand = loo_knn_correct(cand, labels, knn_k, knn_temperature)
        report.knn_k, report.knn_temperature = int(min(knn_k, len(ref) - 1)), float(knn_temperature)
        report.knn_accuracy_reference = float(ok_ref.mean())
        report.knn_accuracy_candidate = float(ok_cand.mean())
        report.knn_accuracy_delta = report.knn_accuracy_candidate - report.knn_accuracy_reference
        # Standard error of the paired difference: only the images whose verdict changed carry information.
        change = ok_cand.astype(np.float64) - ok_ref.astype(np.float64)
        report.knn_accuracy_delta_stderr = float(change.std(ddof=1) / np.sqrt(len(change))) if len(change) > 1 else 0.0
    if thresholds is not None:
        apply_thresholds(report, thresholds)
    return report


def apply_thresholds(report: ParityReport, t: ParityThresholds) -> ParityReport:
    """Fill ``report.failures`` (and ``thresholds``) from ``t``; returns the same report."""
    checks = [
        ("cosine_min", report.cosine_min, t.min_cosine, ">="),
        ("cosine_p1", report.cosine_p1, t.p1_cosine, ">="),
        ("abs_diff_max", report.abs_diff_max, t.max_abs_diff, "<="),
        ("top1_agreement", report.top1_agreement, t.min_top1_agreement, ">="),
        ("top10_overlap", report.top10_overlap, t.min_top10_overlap, ">="),
    ]
    if report.knn_accuracy_delta is not None and t.max_knn_accuracy_drop is not None:
        # The subset's accuracy is a sample: a drop fails only when it exceeds the allowed drop by more than
        # two standard errors, so a few hundred parity images cannot fail a good variant by chance.
        allowed = t.max_knn_accuracy_drop + 2.0 * (report.knn_accuracy_delta_stderr or 0.0)
        checks.append(("knn_accuracy_drop", -report.knn_accuracy_delta, allowed, "<="))
    report.failures = [
        f"{name} = {value:.6g} (needs {op} {bound:g})" for name, value, bound, op in checks
        if bound is not None and not (value >= bound if op == ">=" else value <= bound)
    ]
    report.thresholds = asdict(t)
    return report
