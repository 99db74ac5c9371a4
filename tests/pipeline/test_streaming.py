"""data.stream: a folder's FolderImages go through the real engines, the embedding cache and the evaluation exactly
as their decoded arrays do, and load_data lists the folder without decoding it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from edge_encoder import stages
from edge_encoder.commands.options import resolve_run_config
from edge_encoder.commands.run import build_parser
from edge_encoder.pipeline import main as run_main
from edge_encoder.core.errors import UsageError
from edge_encoder.settings import validate_config
from edge_encoder.evaluate.extract import extract
from edge_encoder.evaluate.suite import EvalConfig, evaluate_engine
from edge_encoder.device.engines import OnnxRuntimeEngine
from edge_encoder.export.engines import TorchEngine
from edge_encoder.export.onnx_export import build_fp32_encoder, save_model
from edge_encoder.imagedata import DatasetError, FolderImages, load_dataset
from PIL import Image

from tests.export.conftest import IMAGE_SIZE, PREPROCESS, make_backbone

TINY = Path(__file__).with_name("tiny.toml")


@pytest.fixture
def tree(tmp_path: Path, write_png_tree: Callable[..., Path]) -> Path:
    return write_png_tree(tmp_path / "pngs", classes=3, per_class=14, size=(18, 22))


def _splits(root: Path) -> tuple[FolderImages, FolderImages]:
    return tuple(FolderImages.open(root, split, image_size=IMAGE_SIZE, seed=1) for split in ("train", "test"))


def test_folder_images_embed_and_evaluate_exactly_as_their_arrays(tree: Path, tmp_path: Path) -> None:
    train, test = _splits(tree)
    data = load_dataset(f"folder:{tree}", image_size=IMAGE_SIZE, seed=1)
    backbone = make_backbone()
    onnx_path = tmp_path / "encoder_fp32.onnx"
    save_model(build_fp32_encoder(backbone, PREPROCESS, exporter="torchscript")[0], onnx_path)
    with OnnxRuntimeEngine(onnx_path) as engine:  # the same batches reach the engine: bit-identical rows
        np.testing.assert_array_equal(extract(engine, train, batch_size=8).embeddings,
                                      extract(engine, data.x_train, batch_size=8).embeddings)
    config = EvalConfig(knn_k=3, extra_knn=(), num_threads=1, batch_size=8)
    with TorchEngine(backbone, PREPROCESS) as engine:
        streamed = evaluate_engine(engine, train, train.labels, test, test.labels, config=config, dataset_id="tree",
                                   cache_dir=None)
        in_memory = evaluate_engine(engine, data.x_train, data.y_train, data.x_test, data.y_test, config=config,
                                    dataset_id="tree", cache_dir=None)
    np.testing.assert_array_equal(streamed.train_embeddings, in_memory.train_embeddings)
    np.testing.assert_array_equal(streamed.test_embeddings, in_memory.test_embeddings)
    timings = ("evaluate_s", "search_s", "linear_probe_s", "embed_images_per_s")
    assert {k: v for k, v in streamed.metrics.items() if k not in timings} == \
        {k: v for k, v in in_memory.metrics.items() if k not in timings}


def test_folder_embeddings_are_cached_until_a_file_changes(tree: Path, tmp_path: Path) -> None:
    import os

    cache = tmp_path / "cache"
    with TorchEngine(make_backbone(), PREPROCESS) as engine:
        def embed() -> object:
            return extract(engine, _splits(tree)[0], cache_dir=cache, dataset_id="tree", split="train")

        first, second = embed(), embed()
        assert not first.cache_hit and second.cache_hit and second.cache_path == first.cache_path
        np.testing.assert_array_equal(first.embeddings, second.embeddings)
        images = _splits(tree)[0]
        path = Path(images.files[5])
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touched, same pixels
        touched = embed()
        assert not touched.cache_hit and touched.cache_path != first.cache_path
        np.testing.assert_array_equal(touched.embeddings, first.embeddings)
        Image.fromarray(np.full((18, 22, 3), 200, np.uint8)).save(path)  # rewritten: row 5 changes, only it
        rewritten = embed()
        assert not rewritten.cache_hit and embed().cache_hit
        changed = np.flatnonzero((rewritten.embeddings != first.embeddings).any(axis=1))
        assert changed.tolist() == [5]


def test_streamed_load_data_lists_the_folder_without_decoding_it(capsys: pytest.CaptureFixture[str], tree: Path,
                                                                 tmp_path: Path) -> None:
    """Every file keeps a valid header but loses its pixels: only a decode can tell. The streamed load_data sees
    nothing wrong (so it decoded nothing), the in-memory one finds them all; the run stops naming a file."""
    for path in sorted(tree.rglob("*.png")):
        path.write_bytes(path.read_bytes()[:60])  # the PNG signature and IHDR chunk survive
    argv = ["--config", str(TINY), "--dataset", f"folder:{tree}", "--skip-corrupt", "--runs-dir", str(tmp_path)]
    args = build_parser().parse_args([*argv, "--set", "data.stream=true"])
    data = stages.load_data(validate_config(resolve_run_config(args), "lazy").data)
    assert isinstance(data.x_train, FolderImages) and isinstance(data.x_test, FolderImages)
    assert len(data.x_train) + len(data.x_test) == 42 and data.skipped_files == ()
    assert data.summary()["image_shape"] == [16, 16, 3] and data.y_train.dtype == np.int64
    with pytest.raises(DatasetError, match="cannot read image"):
        data.x_train[0]
    args = build_parser().parse_args(argv)
    with pytest.raises(UsageError, match="has no readable images"):
        stages.load_data(validate_config(resolve_run_config(args), "eager").data)
    # a file damaged past its header stops a streamed run when first decoded (here the channel statistics pass)
    code = run_main([*argv, "--name", "stops", "--set", "data.stream=true"])
    output = capsys.readouterr().err
    assert code == 2 and "error: cannot read image" in output and "Traceback" not in output
