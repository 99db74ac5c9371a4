"""Embedding-aware parity gates: a variant against the FP32 PyTorch reference on a fixed image subset.

One flattened cosine over the whole output hides neighbour flips; these metrics are per row and on the
kNN structure retrieval depends on. Brute-force NumPy only (export/ does not import evaluate/).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


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
    """Indices ``(N, k)`` of each row's k most similar other rows (inner product, self excluded)."""
    sims = emb.astype(np.float64) @ emb.astype(np.float64).T  # N x N
    np.fill_diagonal(sims, -np.inf)
    k = min(k, len(emb) - 1)
    part = np.argpartition(-sims, kth=k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _loo_knn_correct(neighbours: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Leave-one-out majority vote over the neighbour lists ``(N, k)``, ties to the nearest's label -> bool ``(N,)``."""
    votes = labels[neighbours]  # N x k
    correct = np.zeros(len(labels), dtype=bool)
    for i, (row, lab) in enumerate(zip(votes, labels)):
        values, counts = np.unique(row, return_counts=True)
        best = values[counts == counts.max()]
        pred = row[0] if row[0] in best else best[0]
        correct[i] = pred == lab
    return correct


def compare_embeddings(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None,
                       thresholds: ParityThresholds | None = None, k: int = 10) -> ParityReport:
    """Parity of ``candidate`` float ``(N, D)`` against ``reference`` float ``(N, D)`` (same images, same order).

    Neighbour metrics use the subset itself as the bank (self excluded); ``labels`` int ``(N,)`` adds the
    leave-one-out kNN (k=``k``) accuracy of both and its change.
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
        ok_ref, ok_cand = _loo_knn_correct(nn_ref, labels), _loo_knn_correct(nn_cand, labels)
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
