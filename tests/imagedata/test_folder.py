"""FolderImages: the lazy split of an ImageFolder tree equals what load_dataset decodes into memory."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from edge_encoder.imagedata import DatasetError, FolderImages, load_dataset
from PIL import Image


def _stack(images: FolderImages) -> np.ndarray:
    return np.stack([images[i] for i in range(len(images))])


@pytest.mark.parametrize("seed, max_train, max_test", [(0, None, None), (3, 30, 7)])
def test_single_tree_split_equals_load_dataset(tmp_path: Path, write_png_tree: Callable[..., Path], seed: int,
                                               max_train: int | None, max_test: int | None) -> None:
    # odd-sized sources: the fit to 12 px (crop + resize) is part of what must match
    root = write_png_tree(tmp_path / "tree", classes=3, per_class=17, size=(15, 21))
    data = load_dataset(f"folder:{root}", image_size=12, test_fraction=0.3, seed=seed, max_train=max_train,
                        max_test=max_test)
    train = FolderImages.open(root, "train", image_size=12, test_fraction=0.3, seed=seed, max_images=max_train)
    test = FolderImages.open(root, "test", image_size=12, test_fraction=0.3, seed=seed, max_images=max_test)
    assert len(train) == len(data.x_train) and len(test) == len(data.x_test)
    np.testing.assert_array_equal(_stack(train), data.x_train)
    np.testing.assert_array_equal(train.labels, data.y_train)
    np.testing.assert_array_equal(_stack(test), data.x_test)
    np.testing.assert_array_equal(test.labels, data.y_test)
    assert train.class_names == data.class_names == ("class_0", "class_1", "class_2")
    other = FolderImages.open(root, "train", image_size=12, test_fraction=0.3, seed=seed + 1)
    assert other.files != FolderImages.open(root, "train", image_size=12, test_fraction=0.3, seed=seed).files


def test_train_test_layout_equals_load_dataset(tmp_path: Path, write_png_tree: Callable[..., Path]) -> None:
    write_png_tree(tmp_path / "train", classes=2, per_class=5)
    write_png_tree(tmp_path / "test", classes=2, per_class=3)
    data = load_dataset(f"folder:{tmp_path}", image_size=8)
    train, test = (FolderImages.open(tmp_path, split, image_size=8) for split in ("train", "test"))
    np.testing.assert_array_equal(_stack(train), data.x_train)
    np.testing.assert_array_equal(_stack(test), data.x_test)
    np.testing.assert_array_equal(test.labels, data.y_test)
    assert train[0].dtype == np.uint8 and train[0].shape == (8, 8, 3) and train[-1].shape == (8, 8, 3)
    assert [image.shape for image in train] == [(8, 8, 3)] * 10  # plain iteration ends at IndexError


def test_picklable_for_dataloader_workers(tmp_path: Path, write_png_tree: Callable[..., Path]) -> None:
    images = FolderImages.open(write_png_tree(tmp_path), image_size=8)
    copy = pickle.loads(pickle.dumps(images))
    assert copy.files == images.files and copy.class_names == images.class_names
    np.testing.assert_array_equal(copy[5], images[5])


def test_corrupt_file_is_named_on_access_or_skipped_like_load_dataset(tmp_path: Path,
                                                                      write_png_tree: Callable[..., Path]) -> None:
    root = write_png_tree(tmp_path, classes=2, per_class=10)
    broken = root / "class_1" / "005.png"
    broken.write_bytes(b"\x89PNG not really")
    images = FolderImages.open(root, image_size=8, seed=1)  # listing does not decode
    index = images.files.index(str(broken))
    with pytest.raises(DatasetError, match=f"cannot read image {broken}"):
        images[index]
    # skip_corrupt: a header that PIL cannot parse is found while listing, exactly as load_dataset skips it
    kept = FolderImages.open(root, image_size=8, seed=1, skip_corrupt=True)
    data = load_dataset(f"folder:{root}", image_size=8, seed=1, skip_corrupt=True)
    assert kept.skipped_files == data.skipped_files == (str(broken),)
    np.testing.assert_array_equal(_stack(kept), data.x_train)


def test_truncated_file_passes_the_header_check_and_is_named_when_decoded(tmp_path: Path,
                                                                            write_png_tree: Callable[..., Path]) -> None:
    root = write_png_tree(tmp_path, classes=2, per_class=10)
    truncated = root / "class_0" / "003.png"
    Image.fromarray(np.full((64, 64, 3), 7, np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])  # valid header, no pixel data
    data = load_dataset(f"folder:{root}", image_size=8, skip_corrupt=True)
    assert data.skipped_files == (str(truncated),)
    images = FolderImages.open(root, image_size=8, skip_corrupt=True)  # the header is fine: kept
    with pytest.raises(DatasetError, match=str(truncated)):
        _stack(images)
    # the in-memory load's findings can be handed over: then both hold the same images
    excluded = FolderImages.open(root, image_size=8, skip_corrupt=True, exclude=data.skipped_files)
    np.testing.assert_array_equal(_stack(excluded), data.x_train)


def test_bad_arguments_are_named(tmp_path: Path, write_png_tree: Callable[..., Path]) -> None:
    root = write_png_tree(tmp_path / "tree")
    with pytest.raises(DatasetError, match="does not exist"):
        FolderImages.open(tmp_path / "nope", image_size=8)
    with pytest.raises(DatasetError, match="split must be one of"):
        FolderImages.open(root, "val", image_size=8)
    with pytest.raises(DatasetError, match="image_size must be a positive int"):
        FolderImages.open(root, image_size=0)
    with pytest.raises(DatasetError, match="test_fraction"):
        FolderImages.open(root, image_size=8, test_fraction=1.0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class sub-folders"):
        FolderImages.open(tmp_path / "empty", image_size=8)
    with pytest.raises(IndexError, match="out of range"):
        FolderImages.open(root, image_size=8)[10_000]


def test_fingerprint_follows_the_files_without_decoding_them(tmp_path: Path,
                                                             write_png_tree: Callable[..., Path]) -> None:
    import os
    import shutil

    root = write_png_tree(tmp_path / "tree", classes=2, per_class=6)
    broken = root / "class_0" / "002.png"
    broken.write_bytes(b"\x89PNG not really")  # fingerprint() must not decode: this file would raise
    first = FolderImages.open(root, image_size=8).fingerprint()
    assert FolderImages.open(root, image_size=8).fingerprint() == first  # stable, recomputed per call
    others = {FolderImages.open(root, "test", image_size=8).fingerprint(),
              FolderImages.open(root, image_size=9).fingerprint(),
              FolderImages.open(root, image_size=8, seed=1).fingerprint()}  # another split of the files
    assert first not in others and len(others) == 3
    # moved with its timestamps (copy2), the tree keeps its fingerprint: paths are hashed relative to the root
    moved = shutil.copytree(root, tmp_path / "elsewhere")
    assert FolderImages.open(moved, image_size=8).fingerprint() == first
    images = FolderImages.open(root, image_size=8)
    touched = Path(images.files[3])
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert images.fingerprint() != first  # the same object notices: nothing is memoised
    touched.unlink()
    with pytest.raises(DatasetError, match=f"cannot read image {touched}"):
        images.fingerprint()


def test_a_file_changed_after_listing_is_named_instead_of_read(tmp_path: Path,
                                                               write_png_tree: Callable[..., Path]) -> None:
    """Issue 18: a file rewritten (other bytes, or the same size and mtime on a new inode) or removed after the
    folder was listed stops the reader naming it, also in a pickled copy (a DataLoader worker); an added one is not
    read; untouched files still decode as before."""
    import os

    root = write_png_tree(tmp_path / "tree", classes=2, per_class=6)
    images = FolderImages.open(root, image_size=8, max_images=8)  # a subset keeps each file's listed stats
    first = images[0]
    rewritten, replaced, removed = (Path(images.files[i]) for i in (1, 2, 3))
    Image.fromarray(np.full((16, 16, 3), 255, np.uint8)).save(rewritten)
    st = replaced.stat()
    data = replaced.read_bytes()
    replaced.unlink()
    replaced.write_bytes(data)  # same bytes, size and mtime, another inode: a replace-by-rename, cp -p
    os.utime(replaced, ns=(st.st_atime_ns, st.st_mtime_ns))
    removed.unlink()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "class_0" / "added.png")
    for copy in (images, pickle.loads(pickle.dumps(images))):
        assert np.array_equal(copy[0], first) and len(copy) == 8
        for path in (rewritten, replaced):
            with pytest.raises(DatasetError, match=f"image {path} changed after its folder was listed"):
                copy[images.files.index(str(path))]
        with pytest.raises(DatasetError, match=f"cannot read image {removed}"):
            copy[images.files.index(str(removed))]
    assert str(root / "class_0" / "added.png") not in images.files


@pytest.mark.parametrize("seed, max_train, max_test", [(0, None, None), (2, 20, 5)])
def test_folder_splits_list_what_load_dataset_decodes(tmp_path: Path, write_png_tree: Callable[..., Path], seed: int,
                                                     max_train: int | None, max_test: int | None) -> None:
    from edge_encoder.imagedata import FolderSplits

    root = write_png_tree(tmp_path / "tree", classes=3, per_class=12, size=(13, 17))
    broken = root / "class_1" / "004.png"
    broken.write_bytes(b"\x89PNG not really")  # unreadable header: skipped by both
    kwargs = dict(image_size=10, test_fraction=0.25, seed=seed, skip_corrupt=True, max_train=max_train,
                  max_test=max_test)
    data = load_dataset(f"folder:{root}", **kwargs)
    lazy = FolderSplits.open(f"folder:{root}", root, **kwargs)
    assert lazy.summary() == data.summary() and lazy.skipped_files == (str(broken),)
    assert lazy.image_shape == data.image_shape and lazy.num_classes == data.num_classes == 3
    for images, labels, x, y in ((lazy.x_train, lazy.y_train, data.x_train, data.y_train),
                                 (lazy.x_test, lazy.y_test, data.x_test, data.y_test)):
        np.testing.assert_array_equal(_stack(images), x)
        np.testing.assert_array_equal(labels, y)
    with pytest.raises(DatasetError, match="set data.image_size"):
        FolderSplits.open(f"folder:{root}", root, image_size=None)
