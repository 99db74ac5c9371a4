"""npz labels: a dataset whose labels are not 0..C-1 is remapped (with a warning) or refused, before training;
arrays the loader cannot take are refused in one line naming the file and the key."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from edge_encoder.imagedata import DatasetError, load_dataset
from edge_encoder.imagedata.splits import dense_labels


def _npz(path: Path, y_train: np.ndarray, y_test: np.ndarray, **extra: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (len(y_train), 8, 8, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, (len(y_test), 8, 8, 3), dtype=np.uint8)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, **extra)
    return path


def test_one_label_of_65535_is_two_classes_not_65536(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    y_train = np.array([0, 0, 0, 65535, 0, 65535], dtype=np.uint16)
    y_test = np.array([0, 65535], dtype=np.uint16)
    with caplog.at_level(logging.WARNING):
        splits = load_dataset(f"npz:{_npz(tmp_path / 'sparse.npz', y_train, y_test)}")
    assert splits.num_classes == 2 and splits.class_names == ("0", "65535")
    np.testing.assert_array_equal(splits.y_train, [0, 0, 0, 1, 0, 1])
    np.testing.assert_array_equal(splits.y_test, [0, 1])
    assert "remapped" in caplog.text and "65535->1" in caplog.text and "sparse.npz" in caplog.text


def test_dense_labels_are_left_as_they_are(caplog: pytest.LogCaptureFixture) -> None:
    y = np.array([2, 0, 1, 1], dtype=np.int64)
    with caplog.at_level(logging.WARNING):
        y_train, _, names = dense_labels(y, y[:2], None, "x")
    assert y_train is y and names == ("0", "1", "2") and not caplog.text


def test_a_gap_is_remapped_in_sorted_order_over_both_splits() -> None:
    y_train, y_test, names = dense_labels(np.array([3, 10, 3]), np.array([7, 10]), None, "x")
    assert names == ("3", "7", "10")
    np.testing.assert_array_equal(y_train, [0, 2, 0])
    np.testing.assert_array_equal(y_test, [1, 2])


def test_a_label_outside_class_names_is_refused(tmp_path: Path) -> None:
    path = _npz(tmp_path / "named.npz", np.array([0, 1, 2, 1]), np.array([0, 3]), class_names=np.array(["a", "b", "c"]))
    with pytest.raises(DatasetError, match=r"named.npz: y_test holds label 3 but class_names has 3 names"):
        load_dataset(f"npz:{path}")


def test_class_names_with_unused_classes_are_kept(tmp_path: Path) -> None:
    path = _npz(tmp_path / "named.npz", np.array([0, 2, 2, 0]), np.array([0, 2]), class_names=np.array(["a", "b", "c"]))
    splits = load_dataset(f"npz:{path}")
    assert splits.class_names == ("a", "b", "c")
    np.testing.assert_array_equal(splits.y_train, [0, 2, 2, 0])


@pytest.mark.parametrize("y_train, y_test, message", [
    (np.array([0, -1, 1, 0]), np.array([0, 1]), "y_train: labels must be >= 0, found -1"),
    (np.array([0.0, 1.0, 1.0, 0.0]), np.array([0, 1]), "y_train: labels must be integers, got dtype float64"),
    (np.array([0, 1, 1]), np.array([0, 1]), r"y_train: labels must have shape \(4,\) to match the images"),
    (np.array([True, False, True, False]), np.array([0, 1]), "y_train: labels must be integers, got dtype bool"),
])
def test_bad_labels_are_refused_naming_the_key(tmp_path: Path, y_train: np.ndarray, y_test: np.ndarray,
                                               message: str) -> None:
    path = tmp_path / "bad.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), y_train=y_train,
             x_test=rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8), y_test=y_test)
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"npz:{path}")


@pytest.mark.parametrize("key", ["x_train", "y_test", "class_names"])
def test_an_object_array_is_refused_naming_the_key(tmp_path: Path, key: str) -> None:
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), "y_train": np.array([0, 1, 0, 1]),
              "x_test": rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8), "y_test": np.array([0, 1]),
              "class_names": np.array(["a", "b"])}
    arrays[key] = np.array([object(), "x"] if key != "x_train" else [{"a": 1}] * 4, dtype=object)
    path = tmp_path / "objects.npz"
    np.savez(path, **arrays)  # allow_pickle is the default for saving: the file holds a pickle
    with pytest.raises(DatasetError, match=rf"objects.npz: array '{key}' holds Python objects \(dtype object\), "
                                           "which are never unpickled"):
        load_dataset(f"npz:{path}")


def test_class_names_must_be_one_dimensional(tmp_path: Path) -> None:
    path = _npz(tmp_path / "scalar.npz", np.array([0, 1, 1, 0]), np.array([0, 1]), class_names=np.array("ab"))
    with pytest.raises(DatasetError, match=r"scalar.npz: class_names must be a 1-D array"):
        load_dataset(f"npz:{path}")
