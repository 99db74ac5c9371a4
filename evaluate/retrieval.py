"""Retrieval metrics from ranked neighbour lists: recall@k, precision@k, mAP@R, per class and overall.

Queries are the test split, the database is the train split, an item is relevant when it has the query's
label. Every function here is pure NumPy on a boolean relevance matrix ``rel (Q, K)`` whose row ``q`` says
whether the ``j``-th ranked database item is relevant to query ``q``.

Definitions (as in the metric-learning literature, Musgrave et al. 2020, "A Metric Learning Reality Check"):
- recall@k: 1 if any of the first ``k`` results is relevant, else 0 (the "Recall@K" of deep metric learning);
- precision@k: fraction of the first ``k`` results that are relevant;
- mAP@R: with ``R`` the number of relevant database items for the query,
  ``AP@R = (1/R) * sum_{i<=R} P(i) * rel(i)`` — average precision truncated at rank R.
Queries whose class has no item in the database (``R == 0``) get NaN and are left out of the means.
"""

from __future__ import annotations

import numpy as np
from edge_encoder.evaluate.validation import check_labels


def relevance(neighbor_ids: np.ndarray, bank_labels: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
    """``bool (Q, K)``: ``bank_labels[neighbor_ids] == query_labels[:, None]``."""
    if neighbor_ids.ndim != 2:
        raise ValueError(f"neighbor ids must be 2-D (Q, K), got shape {neighbor_ids.shape}")
    query_labels = check_labels(query_labels, neighbor_ids.shape[0], "query labels")
    bank_labels = np.asarray(bank_labels)
    return bank_labels[neighbor_ids] == query_labels[:, None]


def relevant_counts(bank_labels: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
    """``int64 (Q,)``: R, the number of database items sharing each query's label."""
    counts = np.bincount(bank_labels, minlength=int(max(bank_labels.max(), query_labels.max())) + 1)
    return counts[query_labels].astype(np.int64)


def _check_k(rel: np.ndarray, k: int) -> None:
    if k < 1 or k > rel.shape[1]:
        raise ValueError(f"k={k} must be between 1 and the {rel.shape[1]} ranked results per query")


def recall_at_k(rel: np.ndarray, k: int, num_relevant: np.ndarray | None = None) -> np.ndarray:
    """``float64 (Q,)``: 1.0 if a relevant item is in the top ``k``; NaN where ``num_relevant == 0``."""
    _check_k(rel, k)
    out = rel[:, :k].any(axis=1).astype(np.float64)
    return _mask_unanswerable(out, num_relevant)


def precision_at_k(rel: np.ndarray, k: int, num_relevant: np.ndarray | None = None) -> np.ndarray:
    """``float64 (Q,)``: fraction of the top ``k`` that is relevant; NaN where ``num_relevant == 0``."""
    _check_k(rel, k)
    out = rel[:, :k].mean(axis=1, dtype=np.float64)
    return _mask_unanswerable(out, num_relevant)


def map_at_r(rel: np.ndarray, num_relevant: np.ndarray) -> np.ndarray:
    """``float64 (Q,)`` AP@R per query. ``rel`` must hold at least ``max(num_relevant)`` ranked results."""
    num_relevant = np.asarray(num_relevant, dtype=np.int64)
    r_max = int(num_relevant.max()) if num_relevant.size else 0
    if r_max > rel.shape[1]:
        raise ValueError(f"mAP@R needs {r_max} ranked results per query (largest R) but got {rel.shape[1]}")
    ranks = np.arange(1, rel.shape[1] + 1)
    within_r = ranks[None, :] <= num_relevant[:, None]  # (Q, K): only the first R ranks count
    hits = rel & within_r
    precision_at_i = np.cumsum(hits, axis=1) / ranks[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (precision_at_i * hits).sum(axis=1) / num_relevant
    return np.where(num_relevant > 0, ap, np.nan)


def _mask_unanswerable(values: np.ndarray, num_relevant: np.ndarray | None) -> np.ndarray:
    if num_relevant is None:
        return values
    return np.where(np.asarray(num_relevant) > 0, values, np.nan)


def per_class_mean(values: np.ndarray, query_labels: np.ndarray) -> dict[int, float]:
    """Mean of per-query ``values`` for each class present in ``query_labels`` (NaNs skipped)."""
    out: dict[int, float] = {}
    for c in np.unique(query_labels):
        v = values[query_labels == c]
        out[int(c)] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    return out


def retrieval_per_query(
    rel: np.ndarray, num_relevant: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, np.ndarray]:
    """Per-query ``float64 (Q,)`` values of ``recall_at_<k>``, ``precision_at_<k>`` and ``map_at_r``."""
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"recall_at_{k}"] = recall_at_k(rel, k, num_relevant)
        out[f"precision_at_{k}"] = precision_at_k(rel, k, num_relevant)
    out["map_at_r"] = map_at_r(rel, num_relevant)
    return out


def summarize(per_query: dict[str, np.ndarray], query_labels: np.ndarray, num_relevant: np.ndarray) -> dict[str, object]:
    """Means over answerable queries (``R > 0``), the count of the others, and per-class means."""
    answerable = np.asarray(num_relevant) > 0
    out: dict[str, object] = {
        name: float(np.mean(v[answerable])) if answerable.any() else float("nan") for name, v in per_query.items()
    }
    out["num_queries_without_relevant"] = int((~answerable).sum())
    out["per_class"] = {name: per_class_mean(v, query_labels) for name, v in per_query.items()}
    return out
