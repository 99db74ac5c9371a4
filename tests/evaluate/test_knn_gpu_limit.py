"""FAISS GPU indexes search at most k = 2048 (GPU_MAX_SELECTION_K); mAP@R searches deeper. The tile loop falls
back to ``faiss.knn`` on the CPU for tiles deeper than the index's limit. Here the index is a CPU
``faiss.IndexFlatIP`` (the interface of the sharded GPU flat index) with the limit set small, so both paths, and
their mix within one call, run on this machine and must give exactly the unlimited results."""

from __future__ import annotations

import logging

import faiss
import numpy as np
import pytest
from edge_encoder.evaluate.knn import GPU_MAX_K, exact_search, tiled_search
from edge_encoder.evaluate.validation import l2_normalize


def _data(ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    bank = rng.normal(size=(301, 12)).astype(np.float32)
    if ties:  # duplicate rows: equal similarities must come out in bank order whatever the path
        bank[150:200] = bank[100:150]
        bank[250:] = bank[0]
    queries = rng.normal(size=(23, 12)).astype(np.float32)
    queries[:3] = bank[:3]
    return l2_normalize(bank), l2_normalize(queries)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("b_tile", [301, 64])  # one bank tile; five tiles, the last one 45 rows
def test_deep_search_over_limit_equals_unlimited(ties, b_tile, caplog) -> None:
    bank, queries = _data(ties)
    k = 60
    expected = tiled_search(bank, queries, k, (23, b_tile), None)  # faiss.knn throughout
    unlimited = tiled_search(bank, queries, k, (23, b_tile), faiss.IndexFlatIP(12), max_index_k=k)
    with caplog.at_level(logging.INFO, logger="edge_encoder.evaluate.knn"):
        # 50 < k: every full tile falls back to the CPU; with 64-row tiles the last (45 rows, depth 45) uses the index
        limited = tiled_search(bank, queries, k, (23, b_tile), faiss.IndexFlatIP(12), max_index_k=50)
    for sims, ids in (unlimited, limited):
        np.testing.assert_array_equal(ids, expected[1])
        np.testing.assert_array_equal(sims, expected[0])
    messages = [r.getMessage() for r in caplog.records if "GPU_MAX_SELECTION_K" in r.getMessage()]
    assert len(messages) == 1 and "k=60" in messages[0] and "at most k=50" in messages[0]


def test_ties_come_out_in_bank_order() -> None:
    bank, queries = _data(ties=True)
    sims, ids = tiled_search(bank, queries, 60, (23, 64), faiss.IndexFlatIP(12), max_index_k=50)
    row = ids[0]  # query 0 equals bank[0] == bank[250:]: 52 rows of similarity 1, in increasing id order
    assert list(row[:52]) == [0, *range(250, 301)]
    equal = sims[:, :-1] == sims[:, 1:]
    assert (ids[:, :-1][equal] < ids[:, 1:][equal]).all()


def test_within_limit_the_index_is_used_without_a_log_line(caplog) -> None:
    bank, queries = _data(ties=False)
    with caplog.at_level(logging.INFO, logger="edge_encoder.evaluate.knn"):
        got = tiled_search(bank, queries, 20, (23, 64), faiss.IndexFlatIP(12), max_index_k=50)
    expected = tiled_search(bank, queries, 20, (23, 64), None)
    np.testing.assert_array_equal(got[1], expected[1])
    assert not [r for r in caplog.records if "GPU_MAX_SELECTION_K" in r.getMessage()]


def test_exact_search_default_limit_and_cpu_path() -> None:
    assert GPU_MAX_K == 2048
    bank, queries = _data(ties=False)
    # No GPU here: the limit does not change a CPU search.
    a = exact_search(bank, queries, 300, use_gpu=False, gpu_max_k=8)
    b = exact_search(bank, queries, 300, use_gpu=False)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
