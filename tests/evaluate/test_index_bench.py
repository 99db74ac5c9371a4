import numpy as np
import pytest

from evaluate.index_bench import IndexSpec, benchmark_indexes, default_specs, recall_at_10, recommend, synthesize_bank


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
