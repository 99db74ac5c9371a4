from pathlib import Path

import numpy as np
import pytest
from edge_encoder.evaluate.extract import (
    Engine,
    ImageSource,
    cache_key,
    extract,
)

from tests.evaluate.conftest import ListSource, ProjectionEngine, make_projection_model


def test_embeddings_match_engine_and_batches(engine, images):
    x = images[0]
    emb = extract(engine, x, batch_size=7).embeddings
    assert emb.shape == (len(x), 16) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, engine.embed(x), atol=1e-6)  # BLAS blocking differs by batch size
    assert isinstance(engine, Engine)


def test_second_extraction_is_a_cache_hit(engine, images, tmp_path):
    x = images[0]
    first = extract(engine, x, batch_size=16, cache_dir=tmp_path / "c", dataset_id="toy", split="train")
    calls = engine.calls
    second = extract(engine, x, batch_size=16, cache_dir=tmp_path / "c", dataset_id="toy", split="train")
    assert not first.cache_hit and second.cache_hit and engine.calls == calls
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    assert second.images_per_s == first.images_per_s
    assert not list((tmp_path / "c").glob("*.tmp"))  # atomic writes leave no temp files


def test_cache_key_depends_on_model_dataset_split_and_images(tmp_path, images):
    x = images[0]
    a = ProjectionEngine(make_projection_model(tmp_path / "a.npy", seed=0))
    b = ProjectionEngine(make_projection_model(tmp_path / "b.npy", seed=1))
    base = cache_key(a, x, "toy", "train")
    assert base == cache_key(a, x.copy(), "toy", "train")
    others = {cache_key(b, x, "toy", "train"), cache_key(a, x, "toy2", "train"),
              cache_key(a, x, "toy", "test"), cache_key(a, x[:-1], "toy", "train"),
              cache_key(a, 255 - x, "toy", "train")}
    assert base not in others and len(others) == 5


def test_corrupt_cache_is_recomputed(engine, images, tmp_path):
    x = images[0]
    first = extract(engine, x, cache_dir=tmp_path, dataset_id="toy", split="train")
    first.cache_path.write_bytes(b"not a npy file")
    again = extract(engine, x, cache_dir=tmp_path, dataset_id="toy", split="train")
    assert not again.cache_hit
    np.testing.assert_array_equal(again.embeddings, first.embeddings)


class _BadEngine:
    name = "bad"
    source_path = None

    def __init__(self, fn):
        self.fn = fn

    def embed(self, images):
        return self.fn(images)


@pytest.mark.parametrize(
    "fn, match",
    [
        (lambda x: np.full((len(x), 4), np.nan, np.float32), "NaN/Inf"),
        (lambda x: np.zeros((len(x) + 1, 4), np.float32), r"expected \(5, D\)"),
        (lambda x: np.zeros((len(x),), np.float32), r"expected \(5, D\)"),
    ],
)
def test_bad_engine_output(fn, match, images):
    with pytest.raises(ValueError, match=match):
        extract(_BadEngine(fn), images[0][:5])


def test_bad_images(engine, images):
    x = images[0]
    with pytest.raises(ValueError, match="empty"):
        extract(engine, x[:0])
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        extract(engine, x[..., 0])
    with pytest.raises(TypeError, match="uint8"):
        extract(engine, x.astype(np.float32))


def test_input_spec_mismatch(engine, images):
    engine.input_spec = type("Spec", (), {"height": 16, "width": 16})()
    with pytest.raises(ValueError, match="expects 16x16 images but got 8x8"):
        extract(engine, images[0])


def test_missing_model_file(tmp_path, images):
    eng = ProjectionEngine(make_projection_model(tmp_path / "m.npy"))
    eng.source_path = Path(tmp_path / "gone.onnx")
    with pytest.raises(ValueError, match="gone.onnx is not a file"):
        extract(eng, images[0], cache_dir=tmp_path)


@pytest.mark.slow
def test_extract_distributed_matches_single_process(tmp_path):
    import subprocess
    import sys

    from tests.evaluate.conftest import make_images

    model = make_projection_model(tmp_path / "m.npy")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "tests.evaluate.dist_extract_worker", str(model), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    x, _ = make_images(13, 3, seed=4)
    want = ProjectionEngine(model).embed(x)
    for r in (0, 1):
        np.testing.assert_allclose(np.load(tmp_path / f"rank{r}.npy"), want, atol=1e-6)
    # each rank ran only its shard: one untimed warm-up batch, then ceil(19/8) = 3 and ceil(20/8) = 3 batches
    assert [int(np.load(tmp_path / f"calls{r}.npy")[0]) for r in (0, 1)] == [4, 4]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1


def test_a_source_embeds_exactly_as_its_array(engine, images):
    x = images[0]
    source = ListSource(x)
    assert isinstance(source, ImageSource)
    for batch_size in (7, 256):  # the same batches reach the engine, so the rows are bit-identical
        np.testing.assert_array_equal(extract(engine, source, batch_size=batch_size).embeddings,
                                      extract(engine, x, batch_size=batch_size).embeddings)
    source.reads = 0
    extract(engine, source, batch_size=7)
    assert source.reads == 1 + 7 + len(x)  # item 0 checked, one warm-up batch, then every item once


def test_a_source_is_cached_by_its_fingerprint(engine, images, tmp_path):
    x = images[0]
    first = extract(engine, ListSource(x), cache_dir=tmp_path, dataset_id="toy", split="train")
    calls = engine.calls
    source = ListSource(x)
    second = extract(engine, source, cache_dir=tmp_path, dataset_id="toy", split="train")
    assert not first.cache_hit and second.cache_hit and engine.calls == calls and source.reads == 1
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    changed = extract(engine, ListSource(x, fingerprint="v2"), cache_dir=tmp_path, dataset_id="toy", split="train")
    assert not changed.cache_hit and engine.calls > calls
    assert cache_key(engine, ListSource(x), "toy", "train") not in {
        cache_key(engine, x, "toy", "train"), cache_key(engine, ListSource(x[:-1]), "toy", "train"),
        cache_key(engine, ListSource(x), "toy", "test")}


def test_a_source_without_fingerprint_is_not_cached(engine, images, tmp_path, caplog):
    x = images[0]
    with caplog.at_level("WARNING", logger="edge_encoder.evaluate.extract"):
        first = extract(engine, ListSource(x, fingerprint=None), cache_dir=tmp_path / "c", dataset_id="toy", split="train")
    assert first.cache_path is None and not (tmp_path / "c").exists()
    assert "images (a ListSource) have no fingerprint()" in caplog.text
    assert cache_key(engine, ListSource(x, fingerprint=None), "toy", "train") is None


def test_bad_source_items_are_named_by_index(engine, images):
    x = images[0]
    items = list(x)
    with pytest.raises(ValueError, match=r"image 3 is float32 \(8, 8, 3\)"):
        extract(engine, ListSource(items[:3] + [items[3].astype(np.float32)] + items[4:]))
    with pytest.raises(ValueError, match=r"image 9 has shape \(8, 7, 3\) but image 0 has \(8, 8, 3\)"):
        extract(engine, ListSource(items[:9] + [items[9][:, :7]] + items[10:]))
    with pytest.raises(ValueError, match="image 0 is a list"):
        extract(engine, [[1, 2, 3]])
    with pytest.raises(ValueError, match="empty"):
        extract(engine, ListSource([]))
    with pytest.raises(TypeError, match="indexable image sequence"):
        extract(engine, 42)
    engine.input_spec = type("Spec", (), {"height": 16, "width": 16})()
    with pytest.raises(ValueError, match="expects 16x16 images but got 8x8"):
        extract(engine, ListSource(x))


@pytest.mark.slow
def test_extract_distributed_of_a_source_decodes_only_each_ranks_shard(tmp_path):
    import subprocess
    import sys

    from tests.evaluate.conftest import make_images

    model = make_projection_model(tmp_path / "m.npy")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "tests.evaluate.dist_extract_worker", str(model), str(tmp_path), "source"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    x, _ = make_images(13, 3, seed=4)
    want = ProjectionEngine(model).embed(x)
    for r in (0, 1):
        np.testing.assert_allclose(np.load(tmp_path / f"rank{r}.npy"), want, atol=1e-6)
    # item 0 checked, 8 warm-up items, then the shard only: 19 items on rank 0, 20 on rank 1
    assert [int(np.load(tmp_path / f"reads{r}.npy")[0]) for r in (0, 1)] == [1 + 8 + 19, 1 + 8 + 20]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
