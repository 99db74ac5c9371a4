"""The one kNN classifier of the project: neighbour ids -> weighted vote -> ranked classes (pure NumPy).

Wu et al. (2018) / DINO weighted vote, ``score[q, c] = sum_{j in topk(q), y_j = c} exp(s_qj / T)``, ties to the lower
class id. The run report (``evaluate.suite``, neighbours from FAISS), the export parity gate and ``edge-encoder verify``
(``device.parity``, brute-force leave-one-out neighbours below) all classify with these functions, so the kNN figure a
report shows, the one the export gate checks and the one ``verify`` prints and gates are one definition with the k
and T the manifest records (``reference.knn``).
"""

from __future__ import annotations

import numpy as np

# The report's headline kNN (evaluate.suite.EvalConfig: knn_k = 20, knn_temperature = 0.07; DINO's k=20, T=0.07).
DEFAULT_K, DEFAULT_TEMPERATURE = 20, 0.07


def vote_scores(sims: np.ndarray, neighbor_labels: np.ndarray, num_classes: int, temperature: float) -> np.ndarray:
    """Weighted vote ``(Q, C) float64``: ``sum exp(sim/T)`` over the neighbours of each class.

    Args:
        sims: ``(Q, k)`` cosine similarities of the neighbours.
        neighbor_labels: ``(Q, k)`` int class ids (>= 0) of the neighbours.
        num_classes: C, larger than every label.
        temperature: T > 0.
    """
    if temperature <= 0:
        raise ValueError(f"kNN temperature must be > 0, got {temperature!r}")
    weights = np.exp(np.asarray(sims, dtype=np.float64) / temperature)  # |sim| <= 1: no overflow for T >= 0.002
    scores = np.zeros((weights.shape[0], num_classes), dtype=np.float64)
    rows = np.repeat(np.arange(weights.shape[0]), weights.shape[1])
    np.add.at(scores, (rows, np.asarray(neighbor_labels).ravel()), weights.ravel())
    return scores


def rank_classes(scores: np.ndarray, top: int) -> np.ndarray:
    """``(Q, top) int64`` class ids by decreasing score; ties go to the lower class id (stable sort)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :top]


def loo_neighbours(embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` most similar other rows by inner product, brute force (self excluded).

    Args:
        embeddings: float ``(N, D)``, N >= 2 (L2-normalised rows: inner product = cosine).
        k: neighbours per row; capped at N - 1.

    Returns:
        ``(sims float64 (N, k), ids int64 (N, k))`` sorted by decreasing similarity, ties by increasing row index
        (the order ``evaluate.knn.exact_search`` returns).
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2 or len(emb) < 2:
        raise ValueError(f"leave-one-out neighbours need an (N >= 2, D) array, got shape {emb.shape}")
    sims = emb @ emb.T  # N x N
    np.fill_diagonal(sims, -np.inf)
    k = min(int(k), len(emb) - 1)
    part = np.argpartition(-sims, kth=k - 1, axis=1)[:, :k]
    part_sims = np.take_along_axis(sims, part, axis=1)
    order = np.lexsort((part, -part_sims), axis=1)
    return np.take_along_axis(part_sims, order, axis=1), np.take_along_axis(part, order, axis=1).astype(np.int64)


def loo_knn_correct(embeddings: np.ndarray, labels: np.ndarray, k: int = DEFAULT_K,
                    temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """Leave-one-out weighted kNN within one labelled set: bool ``(N,)``, True where a row's top-1 class is its label.

    Each row is classified by its ``k`` most similar other rows (:func:`loo_neighbours`), voting with
    :func:`vote_scores`; ``labels`` int ``(N,)`` >= 0.
    """
    labels = np.asarray(labels)
    if labels.shape != (len(embeddings),):
        raise ValueError(f"kNN needs one label per row: {len(embeddings)} rows, labels of shape {labels.shape}")
    sims, ids = loo_neighbours(embeddings, k)
    scores = vote_scores(sims, labels[ids], int(labels.max()) + 1, temperature)
    return rank_classes(scores, 1)[:, 0] == labels
