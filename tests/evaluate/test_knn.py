import numpy as np
import pytest
from edge_encoder.evaluate.knn import (
    exact_search,
    knn_accuracy,
    knn_classify,
    rank_classes,
    topk_accuracy,
    vote_scores,
)


def _oracle_knn(bank, labels, queries, k, t, c):
    """Brute force in float64: full similarity matrix, argsort, weighted vote, stable ranking."""
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q.astype(np.float64) @ b.T.astype(np.float64)
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    scores = np.zeros((len(q), c))
    for i in range(len(q)):
        for j in ids[i]:
            scores[i, labels[j]] += np.exp(sims[i, j] / t)
    return ids, np.take_along_axis(sims, ids, axis=1), scores


@pytest.mark.parametrize("budget", [1 << 30, 4 * (16 + 37) * 50])  # one tile; ~50-row bank tiles
def test_exact_search_matches_numpy_oracle(budget):
    rng = np.random.default_rng(0)
    bank, queries = rng.normal(size=(523, 16)), rng.normal(size=(37, 16))
    sims, ids = exact_search(bank, queries, 25, memory_budget_bytes=budget)
    o_ids, o_sims, _ = _oracle_knn(bank, np.zeros(523, int), queries, 25, 0.07, 1)
    np.testing.assert_array_equal(ids, o_ids)
    np.testing.assert_allclose(sims, o_sims, atol=1e-5)


def test_knn_classify_matches_oracle():
    rng = np.random.default_rng(1)
    bank, queries = rng.normal(size=(400, 8)), rng.normal(size=(50, 8))
    labels = rng.integers(0, 6, size=400)
    scores = knn_classify(bank, labels, queries, k=20, temperature=0.1, memory_budget_bytes=4 * (8 + 50) * 64)
    _, _, o_scores = _oracle_knn(bank, labels, queries, 20, 0.1, 6)
    np.testing.assert_allclose(scores, o_scores, rtol=1e-5)


def test_hand_computed_case():
    # Bank on the unit circle; the query at angle 0. Cosines: 1, 0.6, 0, -1.
    bank = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)
    labels = np.array([0, 1, 1, 2])
    query = np.array([[2.0, 0.0]], dtype=np.float32)  # not unit length: must be normalised
    sims, ids = exact_search(bank, query, 3)
    np.testing.assert_array_equal(ids, [[0, 1, 2]])
    np.testing.assert_allclose(sims, [[1.0, 0.6, 0.0]], atol=1e-6)
    scores = knn_classify(bank, labels, query, k=3, temperature=0.5)
    np.testing.assert_allclose(scores, [[np.exp(2.0), np.exp(1.2) + np.exp(0.0), 0.0]], rtol=1e-6)
    acc = knn_accuracy(bank, labels, query, np.array([1]), k=3, temperature=0.5)
    assert acc == {"top1": 0.0, "top5": 1.0}
    # With a huge temperature the vote is a count: class 1 (two neighbours) beats class 0.
    assert knn_accuracy(bank, labels, query, np.array([1]), k=3, temperature=1e6)["top1"] == 1.0


def test_ties_are_deterministic():
    bank = np.array([[1.0, 0.0]] * 4 + [[0.0, 1.0]], dtype=np.float32)  # four identical items
    sims, ids = exact_search(bank, np.array([[1.0, 0.0]], dtype=np.float32), 3)
    np.testing.assert_array_equal(ids, [[0, 1, 2]])  # equal similarity -> lower bank index first
    scores = np.array([[1.0, 2.0, 2.0, 0.5]])
    np.testing.assert_array_equal(rank_classes(scores, 4), [[1, 2, 0, 3]])  # equal score -> lower class
    assert topk_accuracy(scores, np.array([2]), ks=(1,))["top1"] == 0.0


def test_vote_scores_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        vote_scores(np.zeros((1, 1)), np.zeros((1, 1), int), 1, 0.0)


def _bank():
    rng = np.random.default_rng(2)
    return rng.normal(size=(20, 4)).astype(np.float32), rng.integers(0, 3, 20), rng.normal(size=(5, 4)).astype(np.float32)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda b, l, q, ql: (np.where(np.arange(4) == 1, np.nan, b), l, q, ql), "NaN/Inf"),
        (lambda b, l, q, ql: (b, l, np.full_like(q, np.inf), ql), "NaN/Inf"),
        (lambda b, l, q, ql: (b, l, q[:, :3], ql), "dimension 4 but queries have 3"),
        (lambda b, l, q, ql: (b, None, q, ql), "bank labels are missing"),
        (lambda b, l, q, ql: (b, l[:-1], q, ql), "bank labels has 19 entries"),
        (lambda b, l, q, ql: (b, l, q, ql[:2]), "query labels has 2 entries"),
        (lambda b, l, q, ql: (b[:0], l[:0], q, ql), "empty"),
        (lambda b, l, q, ql: (b, l, q[:0], ql[:0]), "empty"),
    ],
)
def test_bad_inputs(mutate, match):
    b, l, q = _bank()
    args = mutate(b, l, q, np.zeros(5, dtype=np.int64))
    with pytest.raises(ValueError, match=match):
        knn_accuracy(*args, k=5)


def test_k_larger_than_bank():
    b, l, q = _bank()
    with pytest.raises(ValueError, match="larger than the bank"):
        knn_accuracy(b, l, q, np.zeros(5, dtype=np.int64), k=21)


def test_float_labels_are_rejected():
    b, l, q = _bank()
    with pytest.raises(TypeError, match="integers"):
        knn_accuracy(b, l.astype(float), q, np.zeros(5, dtype=np.int64), k=5)
