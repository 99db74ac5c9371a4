import numpy as np
import pytest
from edge_encoder.evaluate.index_bench import (
    IndexSpec,
    benchmark_indexes,
    build_index,
    default_specs,
    recall_at_10,
    recommend,
    synthesize_bank,
)


def test_recall_at_10_hand_case():
    exact = np.arange(20).reshape(2, 10)
    approx = exact.copy()
    approx[1, :5] = -1  # FAISS pads missing results with -1
    assert recall_at_10(approx, exact) == pytest.approx(0.75)


def test_flat_is_exact_and_sweeps_are_reported():
    rng = np.random.default_rng(0)
    bank, queries = rng.normal(size=(2000, 16)).astype(np.float32), rng.normal(size=(50, 16)).astype(np.float32)
    specs = [IndexSpec("Flat"), IndexSpec("IVF16,Flat", "nprobe", (1, 16)), IndexSpec("HNSW32", "efSearch", (64,))]
    rows = benchmark_indexes(bank, queries, specs)
    assert [(r["index"], r["param"]) for r in rows] == [
        ("Flat", ""), ("IVF16,Flat", "nprobe=1"), ("IVF16,Flat", "nprobe=16"), ("HNSW32", "efSearch=64")]
    assert rows[0]["recall_at_10"] == 1.0
    assert rows[2]["recall_at_10"] == 1.0  # probing every list is exhaustive
    assert rows[1]["recall_at_10"] < 1.0
    assert all(r["qps"] > 0 and r["memory_mb"] > 0 for r in rows)
    assert recommend(rows, 0.99).startswith(("Flat", "IVF16,Flat nprobe=16", "HNSW32"))
    assert recommend(rows, 1.01) is None


def test_default_specs_cover_the_families():
    names = [s.factory for s in default_specs(1_000_000, 128)]
    assert names == ["Flat", "IVF4096,Flat", "HNSW32", "IVF4096,PQ16", "SQ8"]


def test_synthesize_bank_keeps_real_rows_and_is_unit_norm():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(300, 8)).astype(np.float32)
    bank, sources = synthesize_bank(real, 1000, seed=0)
    assert bank.shape == (1000, 8) and sources.shape == (1000,)
    np.testing.assert_array_equal(sources[:300], np.arange(300))
    unit = real / np.linalg.norm(real, axis=1, keepdims=True)
    # each synthetic row stays closer to its source than a typical other real row
    assert ((bank[300:] * unit[sources[300:]]).sum(axis=1) > 0.8).mean() > 0.9
    np.testing.assert_allclose(np.linalg.norm(bank, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(bank[:300], real / np.linalg.norm(real, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_array_equal(bank, synthesize_bank(real, 1000, seed=0)[0])


def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim))
    x = centres[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_sharded_flat_equals_exact_search():
    from edge_encoder.evaluate.knn import exact_search

    bank, queries = _clustered(3001, 16, 0), _clustered(40, 16, 1)
    built = build_index("Flat", bank, shards=3, use_gpu=False)
    assert built.placement == "cpu, 3 shards" and built.index.ntotal == 3001
    assert built.memory_mb == pytest.approx(3001 * 16 * 4 / 2**20, rel=0.01)
    sims, ids = built.index.search(queries, 10)
    ref_sims, ref_ids = exact_search(bank, queries, 10, use_gpu=False)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)


def test_sharded_ivf_matches_unsharded_at_every_nprobe():
    bank, queries = _clustered(4000, 16, 2), _clustered(60, 16, 3)
    single = build_index("IVF32,Flat", bank, use_gpu=False)
    sharded = build_index("IVF32,Flat", bank, shards=4, use_gpu=False)
    for nprobe in (1, 4, 32):
        single.set_param("nprobe", nprobe)
        sharded.set_param("nprobe", nprobe)  # must reach every shard
        np.testing.assert_array_equal(sharded.index.search(queries, 10)[1], single.index.search(queries, 10)[1])
    rows = benchmark_indexes(bank, queries, [IndexSpec("IVF32,Flat", "nprobe", (32,))], shards=2, use_gpu=False)
    assert rows[0]["placement"] == "cpu, 2 shards" and rows[0]["recall_at_10"] == 1.0


def test_bad_placement_requests_are_refused():
    import faiss

    bank = _clustered(100, 8, 4)
    with pytest.raises(ValueError, match="shards"):
        build_index("Flat", bank, shards=0)
    if faiss.get_num_gpus() == 0:
        with pytest.raises(ValueError, match="sees no GPU"):
            build_index("Flat", bank, use_gpu=True)


def test_index_benchmark_section_recommends_on_the_last_bank():
    from edge_encoder.evaluate.index_bench import index_benchmark_section

    small, large = _clustered(500, 16, 5), _clustered(3000, 16, 6)
    section = index_benchmark_section({"real": (small, "real"), "synthetic_3000": (large, "grown")},
                                      _clustered(30, 16, 7), engine="onnx_fp32", recall_target=0.9)
    assert {r["bank"] for r in section["rows"]} == {"real", "synthetic_3000"}
    assert section["placement"] == ["cpu"] and section["engine"] == "onnx_fp32"
    assert "3000 vectors" in section["recommendation"] and "500 vectors" in section["recommendation_real"]
    # small banks: the sweep adapts so every k-means list gets enough training points
    assert [r["index"] for r in section["rows"] if r["bank"] == "real"][1] == "IVF8,Flat"
    with pytest.raises(ValueError, match="no bank"):
        index_benchmark_section({}, small, engine="x")
