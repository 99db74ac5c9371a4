"""``edge-encoder embed``: the rows equal ``evaluate``'s embeddings of the same images; a folder at any depth; bad
input one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from edge_encoder.imagedata import load_dataset
from edge_encoder.imagedata.folder import read_image

from tests.commands.conftest import QUICK, call

SMALL = ["--set", "data.max_train=200", "--set", "data.max_test=60"]


def cached_embeddings(run_dir: Path, engine: str, split: str) -> np.ndarray:
    """The embeddings ``evaluate`` computed (and scored) for one engine and split, from its embedding cache."""
    cache = run_dir / "cache" / "embeddings"
    hits = [p for p in cache.glob("*.json")
            if json.loads(p.read_text()).get("engine") == engine and json.loads(p.read_text()).get("split") == split]
    assert len(hits) == 1, sorted(p.name for p in cache.iterdir())
    return np.load(hits[0].with_suffix(".npy"))


def test_embed_rows_match_evaluate_for_the_same_images(capsys, resnet18_onnx: Path, tmp_path: Path) -> None:
    code, _, err = call(capsys, "evaluate", resnet18_onnx, "--dataset", "digits", "--preset", "imagenet", *SMALL,
                        *QUICK, "--no-baselines", "--runs-dir", tmp_path, "--name", "ev")
    assert code == 0, err[-2000:]
    out = tmp_path / "emb" / "digits.npz"
    code, stdout, err = call(capsys, "embed", resnet18_onnx, "--dataset", "digits", "--preset", "imagenet", *SMALL,
                             "--out", out, "--no-progress")
    assert code == 0, err[-2000:]
    assert "260 embeddings (512-d" in stdout
    with np.load(out, allow_pickle=False) as saved:
        embeddings, paths, labels = saved["embeddings"], saved["paths"], saved["labels"]
        assert str(saved["engine"]) == "resnet18"
    assert embeddings.dtype == np.float32 and embeddings.shape == (260, 512)
    assert list(paths[:2]) == ["train/0", "train/1"] and list(paths[-1:]) == ["test/59"]
    data = load_dataset("digits", image_size=32, max_train=200, max_test=60)
    np.testing.assert_array_equal(labels, np.concatenate([data.y_train, data.y_test]))
    for split, rows in (("train", slice(0, 200)), ("test", slice(200, 260))):
        np.testing.assert_allclose(embeddings[rows], cached_embeddings(tmp_path / "ev", "resnet18", split),
                                   rtol=0, atol=1e-6)
    # --split picks one split, with the same rows.
    code, _, err = call(capsys, "embed", resnet18_onnx, "--dataset", "digits", "--preset", "imagenet", *SMALL,
                        "--split", "test", "--out", tmp_path / "test.npz", "--no-progress")
    assert code == 0, err[-2000:]
    with np.load(tmp_path / "test.npz") as saved:
        np.testing.assert_array_equal(saved["embeddings"], embeddings[200:])
        assert saved["paths"][0] == "test/0"


def test_embed_a_folder_at_any_depth_through_a_bundle(capsys, caplog, tiny_bundle: Path, image_tree: Path,
                                                       tmp_path: Path) -> None:
    from edge_encoder.device.bundle_files import open_engine

    from PIL import Image

    pixels = np.random.default_rng(5).integers(0, 256, (18, 22, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image_tree / "sub" / "g.jfif", format="JPEG")  # a JPEG as Windows saves it
    (image_tree / "__MACOSX" / "sub").mkdir(parents=True)
    Image.fromarray(pixels).save(image_tree / "__MACOSX" / "sub" / "c.jpg", format="JPEG")  # a zip's resource forks
    (image_tree / "IMG_0001.HEIC").write_bytes(b"\0\0\0\x18ftypheic")  # not read, but counted
    out = tmp_path / "photos.npz"
    code, _, err = call(capsys, "embed", tiny_bundle, "--images", image_tree, "--out", out, "--batch-size", "4",
                        "--no-progress")
    assert code == 0, err[-2000:]
    assert "1 photo(s) of a type not read here left out (1 .heic" in caplog.text + err
    expected = ["a.png", "b.PNG", "sub/c.jpg", "sub/d.JPEG", "sub/deeper/e.Jpg", "sub/deeper/f.png", "sub/g.jfif"]
    with np.load(out, allow_pickle=False) as saved:
        assert list(saved["paths"]) == expected and "labels" not in saved.files  # a folder has no labels
        embeddings = saved["embeddings"]
        assert str(saved["engine"]) == "onnx_fp32"  # the default variant
    with open_engine(tiny_bundle, "fp32") as engine:
        direct = engine.embed(np.stack([read_image(image_tree / p, 16) for p in expected]))
    np.testing.assert_allclose(embeddings, direct, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_embed_mistakes_are_one_line_exit_2(capsys, tiny_bundle: Path, image_tree: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.png").write_bytes(b"\x89PNG not really")
    cases = [
        (["--images", image_tree, "--out", tmp_path / "x.npy"], "must end in .npz"),
        (["--images", tmp_path / "nowhere", "--out", tmp_path / "x.npz"], "does not exist"),
        (["--images", tmp_path / "empty", "--out", tmp_path / "x.npz"], "no image files"),
        (["--images", broken, "--out", tmp_path / "x.npz"], "bad.png"),
        (["--images", image_tree, "--variant", "fp64", "--out", tmp_path / "x.npz"], "not in"),
        (["--dataset", "digits", "--set", "evaluate.knn_k=3", "--out", tmp_path / "x.npz"], "data.KEY only"),
        (["--images", image_tree, "--skip-corrupt", "--out", tmp_path / "x.npz"], "apply to --dataset"),
        (["--images", "", "--out", tmp_path / "x.npz"], "--images names no folder"),  # not the current folder
        (["--dataset", "folder:", "--out", tmp_path / "x.npz"], "names no path: give folder:PATH"),
    ]
    for argv, message in cases:
        code, _, err = call(capsys, "embed", tiny_bundle, *argv)
        assert code == 2 and message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x.npz").exists()
