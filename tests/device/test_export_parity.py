from __future__ import annotations

import numpy as np
import pytest
from edge_encoder.device.parity import ParityThresholds, _neighbours, compare_embeddings


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


def test_knn_drop_gate_allows_sampling_noise_but_not_a_real_drop() -> None:
    from dataclasses import replace

    from edge_encoder.device.parity import apply_thresholds

    e = _unit(np.random.default_rng(1).normal(size=(40, 8)))
    base = compare_embeddings(e, e.copy(), np.arange(40) % 4)
    gate = ParityThresholds(max_knn_accuracy_drop=0.015)
    # A 3-point drop on a small subset where many verdicts flipped both ways: within 0.015 + 2 x 0.012.
    noisy = apply_thresholds(replace(base, knn_accuracy_delta=-0.03, knn_accuracy_delta_stderr=0.012), gate)
    assert noisy.failures == []
    # The same drop measured precisely (small standard error) is a real regression.
    real = apply_thresholds(replace(base, knn_accuracy_delta=-0.03, knn_accuracy_delta_stderr=0.002), gate)
    assert len(real.failures) == 1 and real.failures[0].startswith("knn_accuracy_drop")


def test_knn_drop_stderr_is_the_paired_standard_error() -> None:
    rng = np.random.default_rng(2)
    ref = _unit(rng.normal(size=(60, 6)))
    cand = _unit(ref + 0.5 * rng.normal(size=ref.shape))
    labels = np.arange(60) % 3
    r = compare_embeddings(ref, cand, labels)
    from edge_encoder.core.knn import loo_knn_correct

    change = loo_knn_correct(cand, labels).astype(float) - loo_knn_correct(ref, labels)
    assert r.knn_accuracy_delta == pytest.approx(change.mean())
    assert r.knn_accuracy_delta_stderr == pytest.approx(change.std(ddof=1) / np.sqrt(60))
