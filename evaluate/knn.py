"""Exact cosine k-nearest-neighbour search with FAISS and weighted kNN classification.

Search: ``IndexFlatIP``-equivalent brute force (``faiss.knn``; on GPUs an ``IndexFlatIP`` sharded over all of
them) on L2-normalised vectors, tiled over queries and bank so that no ``Q x N`` similarity matrix is ever
held; per-tile top-k results are merged with ``faiss.ResultHeap`` exactly as ``faiss.contrib.exhaustive_search`` does.
Classification: Wu et al. (2018) / DINO weighted vote, ``score[q, c] = sum_{j in topk(q), y_j = c} exp(s_qj / T)``,
defined once in ``core.knn`` (the export gate and ``verify`` use the same vote).
Approximate indexes never feed these numbers (see ``index_bench.py`` for those).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

import faiss
import numpy as np
import torch
from edge_encoder.core.knn import rank_classes, vote_scores  # noqa: F401 - the one kNN vote, re-exported
from edge_encoder.evaluate.validation import (
    check_embeddings,
    check_labels,
    check_same_dim,
    l2_normalize,
)

log = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET_BYTES = 512 * 2**20
_MAX_QUERY_TILE = 16384
# FAISS GPU indexes select at most GPU_MAX_SELECTION_K = 2048 neighbours ("GPU index only supports min/max-K
# selection up to 2048", faiss/gpu/impl/IndexUtils.cu; facebookresearch/faiss#2103, #1384: "limited to 2048 due
# to GPU register memory limitations"); mAP@R searches R deep (5,000 per class on CIFAR-10).
GPU_MAX_K = 2048


def available_cpus() -> int:
    """Cores this process may run on (cgroup/affinity aware where the OS tells us)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS has no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def configure_threads(num_threads: int | None = None) -> int:
    """Set FAISS (OpenMP) and PyTorch intra-op thread counts to the same explicit value.

    Both libraries default to "all cores" independently; used together (or next to a data loader) they
    oversubscribe the CPU, which makes search several times slower on small machines.
    Returns the thread count used.
    """
    n = available_cpus() if num_threads is None else int(num_threads)
    if n < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads!r}")
    faiss.omp_set_num_threads(n)
    torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def scoped_threads(num_threads: int | None = None) -> Iterator[int]:
    """``configure_threads(num_threads)`` for the block (it gives the count used), then FAISS's and PyTorch's
    thread counts as they were before: a stage that sets them does not leave them set for the stages after it."""
    previous_faiss, previous_torch = faiss.omp_get_max_threads(), torch.get_num_threads()
    try:
        yield configure_threads(num_threads)
    finally:
        faiss.omp_set_num_threads(previous_faiss)
        torch.set_num_threads(previous_torch)


def gpus_to_use(use_gpu: bool | None) -> int:
    """How many GPUs FAISS should use: all it sees for ``None``/``True``, none for ``False``.

    Raises:
        ValueError: ``use_gpu=True`` but the installed FAISS sees no GPU (a CPU-only build, or no device).
    """
    if use_gpu is False:
        return 0
    n = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if use_gpu and n == 0:
        raise ValueError("use_gpu=True but FAISS sees no GPU (faiss-cpu is installed, or no CUDA device is visible)")
    return n


def _gpu_flat_index(dim: int, ngpu: int) -> faiss.Index:
    """An empty exact inner-product index over ``ngpu`` GPUs, vectors sharded across them (FAISS's own recipe
    for exact ground truth on GPUs, ``faiss.contrib.exhaustive_search``); needs a GPU build of FAISS."""
    options = faiss.GpuMultipleClonerOptions()
    options.shard = True
    return faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(dim), co=options, ngpu=ngpu)


def _tile_sizes(nq: int, nb: int, dim: int, k: int, budget: int) -> tuple[int, int]:
    """(query tile, bank tile) such that a bank tile plus one query-tile x bank-tile block fit ``budget``."""
    q_tile = min(nq, _MAX_QUERY_TILE)
    b_tile = budget // (4 * (dim + q_tile)) - 1
    return q_tile, int(min(nb, max(k, b_tile, 1)))


def exact_search(
    bank: np.ndarray,
    queries: np.ndarray,
    k: int,
    *,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    normalize: bool = True,
    use_gpu: bool | None = None,
    gpu_max_k: int = GPU_MAX_K,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product (cosine after normalisation), tiled under a memory budget.

    Args:
        bank: ``(N, D)`` database embeddings.
        queries: ``(Q, D)`` query embeddings.
        k: neighbours per query, ``1 <= k <= N``.
        memory_budget_bytes: bound on bank tile + similarity block held at once.
        normalize: L2-normalise both sides first (cosine similarity).
        use_gpu: ``None`` = the GPUs the installed FAISS sees (bank tiles sharded across all of them), if any;
            ``True`` requires one.
        gpu_max_k: the deepest search a GPU index can do (FAISS: 2048); a deeper one runs on the CPU
            (``faiss.knn``, the same exact search), with a log line saying why.

    Returns:
        ``(sims float32 (Q, k), ids int64 (Q, k))`` sorted by decreasing similarity, ties by increasing
        bank index (deterministic whatever the tiling).
    """
    bank = check_embeddings(bank, "bank embeddings")
    queries = check_embeddings(queries, "query embeddings")
    check_same_dim(bank, queries)
    nb, dim = bank.shape
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > nb:
        raise ValueError(f"k={k} is larger than the bank ({nb} embeddings)")
    if normalize:
        bank, queries = l2_normalize(bank), l2_normalize(queries)
    ngpu = gpus_to_use(use_gpu)
    index = _gpu_flat_index(dim, ngpu) if ngpu else None
    tiles = _tile_sizes(queries.shape[0], nb, dim, k, memory_budget_bytes)
    return tiled_search(bank, queries, k, tiles, index, max_index_k=gpu_max_k)


def tiled_search(bank: np.ndarray, queries: np.ndarray, k: int, tiles: tuple[int, int],
                 index: faiss.Index | None = None, *, max_index_k: int = GPU_MAX_K) -> tuple[np.ndarray, np.ndarray]:
    """The tile loop of :func:`exact_search` on prepared (float32, normalised if wanted) arrays.

    Each bank tile is searched with ``index`` (added, searched, reset), or with ``faiss.knn`` on the CPU when there
    is no index or the tile's depth ``min(k, tile rows)`` exceeds ``max_index_k`` (logged once per call). Both are
    exact inner-product searches and the per-tile results merge in one ``ResultHeap``, so the output does not
    depend on which tiles ran where.

    Args:
        bank / queries: ``(N, D)`` / ``(Q, D)`` float32.
        tiles: ``(query tile, bank tile)`` sizes.
        index: an empty exact inner-product index (the sharded GPU ``IndexFlatIP``; a CPU ``faiss.IndexFlatIP``
            has the same interface), or None for ``faiss.knn`` throughout.
        max_index_k: the deepest search ``index`` supports (FAISS GPU: 2048).

    Returns:
        ``(sims float32 (Q, k), ids int64 (Q, k))``, sorted as :func:`exact_search` documents.
    """
    nq, nb = queries.shape[0], bank.shape[0]
    q_tile, b_tile = tiles
    sims = np.empty((nq, k), dtype=np.float32)
    ids = np.empty((nq, k), dtype=np.int64)
    warned = False
    for q0 in range(0, nq, q_tile):
        xq = queries[q0 : q0 + q_tile]
        heap = faiss.ResultHeap(xq.shape[0], k, keep_max=True)
        for b0 in range(0, nb, b_tile):
            xb = bank[b0 : b0 + b_tile]
            kt = min(k, xb.shape[0])
            if index is not None and kt <= max_index_k:
                index.add(xb)
                d, i = index.search(xq, kt)
                index.reset()
            else:
                if index is not None and not warned:
                    log.info("exact search k=%d: bank tiles searched on the CPU (faiss.knn), as the index searches at "
                             "most k=%d (FAISS GPU_MAX_SELECTION_K)", k, max_index_k)
                    warned = True
                d, i = faiss.knn(xq, xb, kt, metric=faiss.METRIC_INNER_PRODUCT)
            heap.add_result(d, i + b0)
        heap.finalize()
        sims[q0 : q0 + q_tile], ids[q0 : q0 + q_tile] = _sort_rows(heap.D, heap.I)
    return sims, ids


def _sort_rows(sims: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row by (-similarity, id) so equal similarities come out in bank order."""
    order = np.lexsort((ids, -sims), axis=1)
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(ids, order, axis=1)


def knn_classify(
    bank: np.ndarray,
    bank_labels: np.ndarray,
    queries: np.ndarray,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
) -> np.ndarray:
    """Weighted kNN class scores ``(Q, C) float64`` for queries against a labelled bank.

    ``C`` is ``num_classes`` or ``max(bank_labels) + 1``. Use :func:`rank_classes` for predictions.
    """
    bank = check_embeddings(bank, "bank embeddings")
    bank_labels = check_labels(bank_labels, bank.shape[0], "bank labels")
    sims, ids = exact_search(bank, queries, k, memory_budget_bytes=memory_budget_bytes)
    c = _num_classes(num_classes, bank_labels)
    return vote_scores(sims, bank_labels[ids], c, temperature)


def _num_classes(num_classes: int | None, *label_arrays: np.ndarray) -> int:
    inferred = max(int(a.max()) + 1 for a in label_arrays if a.size)
    if num_classes is None:
        return inferred
    if num_classes < inferred:
        raise ValueError(f"num_classes={num_classes} but labels go up to {inferred - 1}")
    return int(num_classes)


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Fractions in [0, 1] of rows whose label is among the ``k`` best-scored classes, as ``{"top<k>": acc}``.

    With fewer than ``k`` classes, top-k counts every class (accuracy 1.0), as the references do.
    """
    labels = check_labels(labels, scores.shape[0], "query labels")
    ranked = rank_classes(scores, max(ks))
    return {f"top{k}": float((ranked[:, :k] == labels[:, None]).any(axis=1).mean()) for k in ks}


def knn_accuracy(
    bank: np.ndarray,
    bank_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
) -> dict[str, float]:
    """Weighted kNN top-1/top-5 accuracy, ``{"top1": float, "top5": float}`` in [0, 1]."""
    bank = check_embeddings(bank, "bank embeddings")
    queries = check_embeddings(queries, "query embeddings")
    bank_labels = check_labels(bank_labels, bank.shape[0], "bank labels")
    query_labels = check_labels(query_labels, queries.shape[0], "query labels")
    c = _num_classes(num_classes, bank_labels, query_labels)
    scores = knn_classify(
        bank, bank_labels, queries, k=k, temperature=temperature, num_classes=c,
        memory_budget_bytes=memory_budget_bytes,
    )
    return topk_accuracy(scores, query_labels)
