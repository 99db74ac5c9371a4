"""Evaluation does not depend on, or leave behind, process-global state (issue 17): sharding is the caller's
explicit choice, not implied by an initialised torch.distributed group, and thread counts are scoped."""

from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
import torch.distributed as dist
from edge_encoder.evaluate import extract as extract_module
from edge_encoder.evaluate.extract import extract
from edge_encoder.evaluate.knn import scoped_threads
from edge_encoder.evaluate.suite import EvalConfig, evaluate_engine


@pytest.fixture
def gloo_group(tmp_path: Path):
    """An initialised gloo group of world size 1, destroyed after the test."""
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_an_initialised_group_does_not_shard_unless_asked(engine, images, tmp_path, gloo_group, monkeypatch):
    x = images[0]
    assert dist.is_initialized() and extract_module._dist_world() == (0, 1)
    sharded: list[tuple[int, int]] = []

    def spy(engine_, images_, batch_size, progress, rank, world):  # noqa: ANN001, ANN202
        sharded.append((rank, world))
        return extract_module._run_engine(engine_, images_, batch_size, progress)

    monkeypatch.setattr(extract_module, "_run_sharded", spy)
    # as if the group had 2 ranks: only shard=True may look at it
    monkeypatch.setattr(extract_module, "_dist_world", lambda: (0, 2))
    want = engine.embed(x)
    calls = engine.calls
    plain = extract(engine, x, batch_size=16, cache_dir=tmp_path / "c", dataset_id="toy", split="train")
    assert sharded == [] and not plain.cache_hit
    assert engine.calls - calls == 1 + -(-len(x) // 16)  # one warm-up batch, then every batch on this process
    np.testing.assert_allclose(plain.embeddings, want, atol=1e-6)
    extract(engine, x, batch_size=16, dataset_id="toy", split="train", shard=True)
    assert sharded == [(0, 2)]


def test_scoped_threads_restores_both_counts() -> None:
    before = faiss.omp_get_max_threads(), torch.get_num_threads()
    try:
        faiss.omp_set_num_threads(3)
        torch.set_num_threads(3)
        with scoped_threads(1) as n:
            assert n == 1 and faiss.omp_get_max_threads() == 1 and torch.get_num_threads() == 1
        assert (faiss.omp_get_max_threads(), torch.get_num_threads()) == (3, 3)
        with pytest.raises(ValueError, match="num_threads must be >= 1"), scoped_threads(0):
            pass
        assert (faiss.omp_get_max_threads(), torch.get_num_threads()) == (3, 3)
    finally:
        faiss.omp_set_num_threads(before[0])
        torch.set_num_threads(before[1])


def test_evaluate_engine_leaves_thread_counts_as_they_were(engine, images) -> None:
    before = faiss.omp_get_max_threads(), torch.get_num_threads()
    try:
        faiss.omp_set_num_threads(3)
        torch.set_num_threads(3)
        ev = evaluate_engine(engine, *images, config=EvalConfig(knn_k=5, extra_knn=(), linear_probe=False,
                                                                 num_threads=1), dataset_id="toy", cache_dir=None)
        assert ev.metrics["threads"] == 1
        assert (faiss.omp_get_max_threads(), torch.get_num_threads()) == (3, 3)
    finally:
        faiss.omp_set_num_threads(before[0])
        torch.set_num_threads(before[1])
