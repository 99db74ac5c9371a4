"""Label-free measures against hand-computed values and brute-force oracles; the engine-level helper on a real
engine with the embedding cache."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from edge_encoder.evaluate.baselines import RawPixelEngine
from edge_encoder.evaluate.label_free import (
    alignment,
    dimension_spread,
    effective_rank,
    evaluate_label_free,
    label_free_metrics,
    label_free_section,
    positive_views,
    uniformity,
)


def _sphere(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_uniformity_hand_values_and_brute_force_oracle() -> None:
    assert uniformity(np.tile([[0.6, 0.8]], (7, 1))) == pytest.approx(0.0, abs=1e-12)  # collapsed: log 1
    assert uniformity(np.eye(5)) == pytest.approx(-4.0)  # every pair at squared distance 2: log exp(-4)
    assert uniformity(np.array([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-8.0)  # antipodal: 4 * -2
    x = _sphere(23, 6).astype(np.float64)
    pairs = [math.exp(-2.0 * float(((x[i] - x[j]) ** 2).sum())) for i in range(23) for j in range(i + 1, 23)]
    assert uniformity(x) == pytest.approx(math.log(sum(pairs) / len(pairs)), rel=1e-6)
    assert uniformity(x, chunk=4) == pytest.approx(uniformity(x), rel=1e-12)  # blocks do not change the sum
    assert uniformity(x * 3.0) == pytest.approx(uniformity(x), rel=1e-6)  # rows are normalised first
    with pytest.raises(ValueError, match="at least 2"):
        uniformity(x[:1])


def test_effective_rank_hand_values() -> None:
    assert effective_rank(np.eye(6)) == pytest.approx(6.0)  # D equal singular values
    assert effective_rank(np.tile([[1.0, 2.0, 2.0]], (9, 1))) == pytest.approx(1.0)  # rank 1: collapsed
    # rows e1, e1, e2: singular values sqrt(2) and 1
    p = np.array([math.sqrt(2.0), 1.0]) / (1.0 + math.sqrt(2.0))
    expected = math.exp(-float((p * np.log(p)).sum()))
    assert effective_rank(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])) == pytest.approx(expected)
    assert 1.0 <= effective_rank(_sphere(50, 8)) <= 8.0
    with pytest.raises(ValueError, match="all-zero"):
        effective_rank(np.zeros((3, 4)))


def test_alignment_hand_values() -> None:
    x = _sphere(10, 4)
    assert alignment(x, x) == pytest.approx(0.0, abs=1e-12)
    assert alignment(x, -x) == pytest.approx(4.0)
    assert alignment(np.array([[1.0, 0.0]]), np.array([[0.0, 2.0]])) == pytest.approx(2.0)  # after normalising
    with pytest.raises(ValueError, match="one positive per embedding"):
        alignment(x, x[:5])
    with pytest.raises(ValueError, match="NaN/Inf"):
        alignment(np.full((2, 2), np.nan), x[:2, :2])


def test_dimension_spread_flags_dead_dimensions() -> None:
    spread = dimension_spread(np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]))
    assert spread["dim_std_sqrt_d_max"] == pytest.approx(math.sqrt(3.0))  # std 1 on the live dimension
    assert spread["dim_std_sqrt_d_min"] == 0.0 and spread["dead_dim_fraction"] == pytest.approx(2 / 3)
    healthy = dimension_spread(_sphere(4000, 16))
    assert healthy["dim_std_sqrt_d_mean"] == pytest.approx(1.0, abs=0.05) and healthy["dead_dim_fraction"] == 0.0


def test_label_free_metrics_tell_a_collapsed_encoder_from_a_spread_one() -> None:
    spread, views = _sphere(200, 16, 0), _sphere(200, 16, 0) + 0.05 * _sphere(200, 16, 1)
    collapsed = np.tile(spread[:1], (200, 1))
    good, bad = label_free_metrics(spread, views), label_free_metrics(collapsed, collapsed)
    assert bad["uniformity"] == pytest.approx(0.0, abs=1e-9) and bad["effective_rank"] == pytest.approx(1.0)
    assert bad["dead_dim_fraction"] == 1.0 and bad["alignment"] == pytest.approx(0.0, abs=1e-12)
    assert good["uniformity"] < -3.0 and good["effective_rank"] > 10.0 and good["alignment"] < 0.01
    assert good["effective_rank_fraction"] == pytest.approx(good["effective_rank"] / 16)


def test_positive_views_are_seeded_flipped_crops_of_the_same_shape() -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 12, 9, 3), dtype=np.uint8)
    views = positive_views(images, seed=3)
    assert views.shape == images.shape and views.dtype == np.uint8
    np.testing.assert_array_equal(views, positive_views(images, seed=3))
    assert not np.array_equal(views, positive_views(images, seed=4))
    np.testing.assert_array_equal(positive_views(images, seed=0, min_side=1.0), images[:, :, ::-1])  # no crop: mirror
    flat = np.full((2, 8, 8, 3), 77, np.uint8)
    np.testing.assert_array_equal(positive_views(flat, seed=0), flat)
    with pytest.raises(ValueError, match="uint8"):
        positive_views(images.astype(np.float32), seed=0)


def test_evaluate_label_free_on_a_real_engine_with_the_cache(tmp_path: Path) -> None:
    images = np.random.default_rng(1).integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    views = positive_views(images, seed=0)
    with RawPixelEngine(images, centering="image") as engine:
        first = evaluate_label_free(engine, images, views, batch_size=7, cache_dir=tmp_path, dataset_id="t")
        again = evaluate_label_free(engine, images, views, batch_size=7, cache_dir=tmp_path, dataset_id="t",
                                    reference=first)
    assert first.metrics["dim"] == 192 and first.metrics["cache_hit"] is False and again.metrics["cache_hit"] is True
    assert again.metrics["reference_cosine_min"] == pytest.approx(1.0, abs=1e-5)
    expected = label_free_metrics(engine.embed(images), engine.embed(views))
    for key, value in expected.items():
        assert first.metrics[key] == pytest.approx(value, rel=1e-5)
    section = label_free_section({"raw_pixels": first}, {"raw_pixels": "baseline"}, source="test images")
    assert section["images"] == 30 and section["engines"]["raw_pixels"]["kind"] == "baseline"
