from __future__ import annotations

import numpy as np
import pytest

from export.parity import ParityThresholds, _neighbours, compare_embeddings


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_identical_embeddings_are_perfect() -> None:
    e = _unit(np.random.default_rng(0).normal(size=(50, 8)))
    labels = np.arange(50) % 5
    r = compare_embeddings(e, e.copy(), labels, ParityThresholds(min_cosine=0.9999, min_top1_agreement=1.0))
    assert r.passed and r.cosine_min == pytest.approx(1.0) and r.top10_overlap == 1.0 and r.knn_accuracy_delta == 0


def test_hand_computed_case() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    cand = np.array([[0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])
    r = compare_embeddings(ref, cand, k=1)
    assert r.cosine_min == pytest.approx(0.8)
    assert r.abs_diff_max == pytest.approx(0.6)
    # reference NN: 0->2, 1->2, 2->1 ; candidate NN: 0->2 (0.96), 1->2, 2->0 (0.96 > 0.8)
    assert r.top1_agreement == pytest.approx(2 / 3)


def test_neighbours_against_sorting_oracle() -> None:
    e = _unit(np.random.default_rng(1).normal(size=(30, 6)))
    sims = e @ e.T
    np.fill_diagonal(sims, -np.inf)
    assert np.array_equal(_neighbours(e, 5), np.argsort(-sims, axis=1)[:, :5])


def test_thresholds_fail_with_named_metric() -> None:
    rng = np.random.default_rng(2)
    e = _unit(rng.normal(size=(40, 8)))
    noisy = _unit(e + 0.5 * rng.normal(size=e.shape))
    r = compare_embeddings(e, noisy, thresholds=ParityThresholds(min_cosine=0.99, max_abs_diff=0.01))
    assert not r.passed and any(f.startswith("cosine_min") for f in r.failures)
    assert any(f.startswith("abs_diff_max") for f in r.failures)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shape|equal"):
        compare_embeddings(np.zeros((3, 4)), np.zeros((3, 5)))
