from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from edge_encoder.imagedata import DatasetError, load_dataset
from edge_encoder.imagedata.sources import DEBIAN_FASHION_MNIST
from PIL import Image


def test_digits_is_embedded_rgb_uint8_and_stratified() -> None:
    data = load_dataset("digits")
    assert data.x_train.dtype == np.uint8 and data.x_train.shape[1:] == (8, 8, 3)
    assert len(data.x_train) + len(data.x_test) == 1797
    assert data.x_train.max() == 255  # 0..16 stretched to the full uint8 range
    train_share = np.bincount(data.y_train) / len(data.y_train)
    test_share = np.bincount(data.y_test) / len(data.y_test)
    np.testing.assert_allclose(train_share, test_share, atol=0.01)


def test_digits_resized_and_subset_are_seeded() -> None:
    a = load_dataset("digits", image_size=16, max_train=100, max_test=50, seed=3)
    b = load_dataset("digits", image_size=16, max_train=100, max_test=50, seed=3)
    assert a.x_train.shape == (100, 16, 16, 3) and a.x_test.shape == (50, 16, 16, 3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert set(np.unique(a.y_train)) == set(range(10))  # the subset keeps every class


def test_npz_round_trip(tiny_npz: Path) -> None:
    data = load_dataset(f"npz:{tiny_npz}")
    assert data.x_train.shape == (128, 16, 16, 3) and data.y_test.dtype == np.int64
    assert data.summary()["num_classes"] == 4


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x_train": np.zeros((2, 4, 4, 3), np.uint8), "y_train": np.zeros(2, np.int64)}, "lacks the keys ['x_test', 'y_test']"),
        ({"x_train": np.zeros((2, 4, 4, 3), np.float32), "y_train": np.zeros(2), "x_test": np.zeros((1, 4, 4, 3), np.uint8), "y_test": np.zeros(1)}, "x_train: images must be uint8"),
        ({"x_train": np.zeros((2, 4, 4, 5), np.uint8), "y_train": np.zeros(2), "x_test": np.zeros((1, 4, 4, 3), np.uint8), "y_test": np.zeros(1)}, "x_train: images must have shape"),
        ({"x_train": np.zeros((2, 4, 4, 3), np.uint8), "y_train": np.zeros(3, np.int64), "x_test": np.zeros((1, 4, 4, 3), np.uint8), "y_test": np.zeros(1, np.int64)}, "y_train: labels must have shape (2,)"),
        ({"x_train": np.zeros((2, 4, 4, 3), np.uint8), "y_train": np.zeros(2, np.int64), "x_test": np.zeros((0, 4, 4, 3), np.uint8), "y_test": np.zeros(0, np.int64)}, "x_test: the split is empty"),
        ({"x_train": np.zeros((2, 4, 4, 3), np.uint8), "y_train": np.zeros(2, np.float32), "x_test": np.zeros((1, 4, 4, 3), np.uint8), "y_test": np.zeros(1, np.int64)}, "labels must be integers"),
    ],
)
def test_bad_npz_is_named(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError) as info:
        load_dataset(f"npz:{path}")
    assert message in str(info.value) and str(path) in str(info.value)


def test_missing_paths_and_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nope'}", image_size=8)
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet-21k'"):
        load_dataset("imagenet-21k")
    not_npz = tmp_path / "text.npz"
    not_npz.write_text("hello")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        load_dataset(f"npz:{not_npz}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class sub-folders"):
        load_dataset(f"folder:{tmp_path / 'empty'}", image_size=8)


def _write_folder(root: Path, per_class: int = 5) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 255, size=(20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")


def test_folder_train_test_layout(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    data = load_dataset(f"folder:{tmp_path}", image_size=12)
    assert data.x_train.shape == (10, 12, 12, 3) and data.x_test.shape == (10, 12, 12, 3)
    assert data.class_names == ("cat", "dog")


def test_folder_single_tree_is_split_by_seeded_fraction(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    tree = tmp_path / "train"
    a = load_dataset(f"folder:{tree}", image_size=8, test_fraction=0.4, seed=1)
    b = load_dataset(f"folder:{tree}", image_size=8, test_fraction=0.4, seed=1)
    assert len(a.x_test) == 4 and len(a.x_train) == 6
    np.testing.assert_array_equal(a.x_test, b.x_test)


def test_corrupt_image_is_named_or_skipped_and_counted(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    broken = tmp_path / "train" / "dog" / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError) as info:
        load_dataset(f"folder:{tmp_path}", image_size=8)
    assert str(broken) in str(info.value) and "--skip-corrupt" in str(info.value)
    data = load_dataset(f"folder:{tmp_path}", image_size=8, skip_corrupt=True)
    assert data.skipped_files == (str(broken),) and len(data.x_train) == 10


def test_offline_torchvision_dataset_names_the_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar100", data_root=tmp_path)
    assert str(tmp_path / "cifar100") in str(info.value)


def test_cifar10_dev_file(cifar10_dev: Path) -> None:
    data = load_dataset(f"npz:{cifar10_dev}")
    assert data.x_train.shape == (10000, 32, 32, 3) and data.x_test.shape == (2000, 32, 32, 3)
    assert data.class_names[0] == "airplane"


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package() -> None:
    data = load_dataset("fashion-mnist", max_train=500, max_test=100)
    assert data.x_train.shape == (500, 28, 28, 3) and data.num_classes == 10
