import numpy as np
import pytest
from edge_encoder.evaluate.retrieval import (
    map_at_r,
    per_class_mean,
    precision_at_k,
    recall_at_k,
    relevance,
    relevant_counts,
    retrieval_per_query,
    summarize,
)


def retrieval_metrics(neighbor_ids: np.ndarray, bank_labels: np.ndarray, query_labels: np.ndarray,
                      ks: tuple[int, ...]) -> dict[str, object]:
    """The report's retrieval metrics in one call, composed as ``evaluate.suite`` composes them (there per query
    chunk, concatenated before ``summarize``)."""
    rel = relevance(neighbor_ids, bank_labels, query_labels)
    r = relevant_counts(bank_labels, query_labels)
    return summarize(retrieval_per_query(rel, r, ks), query_labels, r)


def test_map_at_r_hand_cases():
    # Musgrave et al. worked example: R = 10, only ranks 1 and 2 relevant -> (1/1 + 2/2) / 10 = 0.2.
    rel = np.zeros((3, 10), dtype=bool)
    rel[0, [0, 1]] = True
    # R = 4, relevant at ranks 1 and 3 (rank 5 is beyond R and must not count): (1 + 2/3) / 4.
    rel[1, [0, 2, 4]] = True
    # R = 2, relevant at ranks 2 and 3 (only rank 2 is within R): (1/2) / 2.
    rel[2, [1, 2]] = True
    np.testing.assert_allclose(map_at_r(rel, np.array([10, 4, 2])), [0.2, (1 + 2 / 3) / 4, 0.25])


def test_recall_precision_hand_cases():
    rel = np.array([[False, True, True, False], [False, False, False, False]])
    np.testing.assert_array_equal(recall_at_k(rel, 1), [0.0, 0.0])
    np.testing.assert_array_equal(recall_at_k(rel, 2), [1.0, 0.0])
    np.testing.assert_allclose(precision_at_k(rel, 4), [0.5, 0.0])
    with pytest.raises(ValueError, match="k=5"):
        recall_at_k(rel, 5)


def _oracle(neighbor_ids, bank_labels, query_labels, ks):
    """Per-query loops straight from the definitions."""
    out = {f"recall_at_{k}": [] for k in ks} | {f"precision_at_{k}": [] for k in ks} | {"map_at_r": []}
    for q, row in enumerate(neighbor_ids):
        rel = [bank_labels[j] == query_labels[q] for j in row]
        r = int((bank_labels == query_labels[q]).sum())
        for k in ks:
            out[f"recall_at_{k}"].append(float(any(rel[:k])))
            out[f"precision_at_{k}"].append(sum(rel[:k]) / k)
        hits, ap = 0, 0.0
        for i in range(r):
            if rel[i]:
                hits += 1
                ap += hits / (i + 1)
        out["map_at_r"].append(ap / r)
    return {name: float(np.mean(v)) for name, v in out.items()}


def test_retrieval_metrics_match_oracle():
    rng = np.random.default_rng(0)
    bank_labels = rng.integers(0, 5, size=60)
    query_labels = rng.integers(0, 5, size=15)
    neighbor_ids = np.stack([rng.permutation(60) for _ in range(15)])  # K = 60 >= every R
    got = retrieval_metrics(neighbor_ids, bank_labels, query_labels, ks=(1, 5, 10))
    want = _oracle(neighbor_ids, bank_labels, query_labels, (1, 5, 10))
    for name, v in want.items():
        assert got[name] == pytest.approx(v), name
    assert got["num_queries_without_relevant"] == 0
    # per-class means average back to the overall mean when weighted by class counts
    pc = got["per_class"]["map_at_r"]
    counts = np.bincount(query_labels, minlength=5)
    assert sum(pc[c] * counts[c] for c in pc) / counts.sum() == pytest.approx(got["map_at_r"])


def test_queries_without_relevant_items_are_excluded():
    bank_labels = np.array([0, 0, 1])
    query_labels = np.array([0, 2])  # class 2 is absent from the bank
    ids = np.array([[0, 1, 2], [0, 1, 2]])
    got = retrieval_metrics(ids, bank_labels, query_labels, ks=(1,))
    assert got["num_queries_without_relevant"] == 1
    assert got["recall_at_1"] == 1.0 and got["map_at_r"] == 1.0
    assert np.isnan(got["per_class"]["map_at_r"][2])


def test_map_at_r_needs_enough_ranks():
    ids = np.array([[0]])
    rel = relevance(ids, np.array([0, 0, 0]), np.array([0]))
    with pytest.raises(ValueError, match="needs 3 ranked results"):
        map_at_r(rel, relevant_counts(np.array([0, 0, 0]), np.array([0])))


def test_labels_wrong_length():
    with pytest.raises(ValueError, match="query labels has 1 entries"):
        retrieval_metrics(np.zeros((2, 1), dtype=int), np.array([0]), np.array([0]), ks=(1,))


def test_per_class_mean():
    assert per_class_mean(np.array([1.0, 0.0, 0.5]), np.array([3, 3, 7])) == {3: 0.5, 7: 0.5}
