"""Folder layouts as people have them: train/ beside val/, valid/, validation/ or test/; one class tree; nested
classes; mixed and upper-case suffixes; hidden files; ambiguous trees refused in one line; test-only classes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from edge_encoder.imagedata import DatasetError, FolderSplits, load_dataset
from edge_encoder.imagedata.folder import MAX_WRAPPER_DEPTH, folder_layout, list_folder, list_images
from PIL import Image


def write_images(folder: Path, count: int, suffix: str = ".png", size: tuple[int, int] = (12, 10),
                 seed: int = 0) -> list[Path]:
    """``count`` seeded RGB images ``folder/000<suffix>``...; returns their paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:03d}{suffix}"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, format=_format(suffix))
        paths.append(path)
    return paths


def _format(suffix: str) -> str:
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF",
            ".tiff": "TIFF"}[suffix.lower()]


def write_split_tree(root: Path, eval_dir: str, classes: dict[str, tuple[int, int]], suffix: str = ".png") -> Path:
    """``root/train/<class>/`` and ``root/<eval_dir>/<class>/`` with (train, eval) image counts per class."""
    for c, (n_train, n_eval) in classes.items():
        if n_train:
            write_images(root / "train" / c, n_train, suffix, seed=hash(c) % 1000)
        if n_eval:
            write_images(root / eval_dir / c, n_eval, suffix, seed=hash(c) % 1000 + 1)
    return root


@pytest.mark.parametrize("eval_dir", ["val", "valid", "validation", "test", "VAL"])
def test_train_beside_an_evaluation_split_is_read_as_the_two_splits(tmp_path: Path, eval_dir: str) -> None:
    root = write_split_tree(tmp_path / "tree", eval_dir, {"cat": (5, 2), "dog": (4, 3), "emu": (3, 1)})
    data = load_dataset(f"folder:{root}", image_size=8)
    assert data.class_names == ("cat", "dog", "emu")  # not ("train", "val"): the silent misreading
    assert (len(data.x_train), len(data.x_test)) == (12, 6)
    np.testing.assert_array_equal(np.bincount(data.y_train), [5, 4, 3])
    np.testing.assert_array_equal(np.bincount(data.y_test), [2, 3, 1])
    layout = folder_layout(root)
    assert layout.kind == "splits" and layout.test == root / eval_dir
    lazy = FolderSplits.open(f"folder:{root}", root, image_size=8)
    assert lazy.summary() == data.summary()


def test_val_is_preferred_to_test_and_test_is_left_out_loudly(tmp_path: Path, caplog) -> None:
    root = write_split_tree(tmp_path / "tree", "val", {"a": (3, 2), "b": (3, 2)})
    write_images(root / "test" / "a", 7)
    with caplog.at_level(logging.WARNING):
        data = load_dataset(f"folder:{root}", image_size=8)
    assert len(data.x_test) == 4  # val/, not test/ (7 images)
    assert f"{root / 'test'}/ is not used: val/ is the evaluation split" in caplog.text
    assert folder_layout(root).describe().startswith("train/ + val/ — ")
    assert "test/ is not used" in folder_layout(root).describe()


def test_one_class_tree_is_split_per_class_by_the_seeded_fraction(tmp_path: Path) -> None:
    for c in ("x", "y"):
        write_images(tmp_path / "tree" / c, 10)
    data = load_dataset(f"folder:{tmp_path / 'tree'}", image_size=8, test_fraction=0.3, seed=1)
    assert data.class_names == ("x", "y") and (len(data.x_train), len(data.x_test)) == (14, 6)


def test_nested_class_folders_take_the_first_level_as_the_class(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    write_images(root / "cat" / "indoor", 3)
    write_images(root / "cat" / "outdoor" / "2019", 2)
    write_images(root / "dog", 4)
    classes, train, test = list_folder(root, 0.25, 0)
    assert classes == ["cat", "dog"]
    labels = [label for _, label in train + test]
    assert labels.count(0) == 5 and labels.count(1) == 4


def test_mixed_types_and_upper_case_suffixes_are_all_read(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    for c, suffix in (("a", ".JPEG"), ("b", ".PNG"), ("c", ".bmp"), ("d", ".webp"), ("e", ".TIFF"), ("f", ".jpg")):
        write_images(root / c, 3, suffix)
    data = load_dataset(f"folder:{root}", image_size=8)
    assert data.num_classes == 6 and len(data.x_train) + len(data.x_test) == 18
    assert data.x_train.dtype == np.uint8 and data.x_train.shape[1:] == (8, 8, 3)


def test_hidden_files_and_folders_are_ignored(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    write_images(root / "a", 3)
    write_images(root / "b", 3)
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "a" / "._000.png").write_bytes(b"\0\5\26\7 AppleDouble")  # macOS resource fork: not an image
    write_images(root / "a" / ".ipynb_checkpoints", 2)
    write_images(root / ".cache", 2)
    write_images(root / "__MACOSX" / "a", 2)
    classes, train, test = list_folder(root, 0.3, 0)
    assert classes == ["a", "b"] and len(train) + len(test) == 6
    assert all("/." not in str(p) and "__MACOSX" not in str(p) for p, _ in train + test)
    assert len(list_images(root)) == 6


@pytest.mark.parametrize("make, message", [
    (lambda r: (write_split_tree(r, "val", {"a": (2, 1)}), write_images(r / "extra_class", 2)),
     "split folders train/, val/ beside other folders with images (extra_class/)"),
    (lambda r: (write_split_tree(r, "val", {"a": (2, 1)}), write_images(r / "validation" / "a", 1)),
     "val/ and validation/ could each be the evaluation split"),
    (lambda r: (write_split_tree(r, "test", {"a": (2, 1)}), write_images(r, 2)),
     "2 image file(s) directly in it (e.g. 000.png) beside the split folders"),
    (lambda r: (write_images(r / "train" / "a", 2), write_images(r / "b", 2)),
     "train/ is named like a split and holds only sub-folders"),
    (lambda r: (write_images(r / "val" / "a", 2), write_images(r / "val" / "b", 2)),
     "val/ is named like a split and holds only sub-folders"),
])
def test_ambiguous_trees_are_refused_in_one_line(tmp_path: Path, make, message: str) -> None:
    root = tmp_path / "tree"
    make(root)
    with pytest.raises(DatasetError) as info:
        load_dataset(f"folder:{root}", image_size=8)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_class_named_like_a_split_is_read_with_a_warning_naming_its_path(tmp_path: Path, caplog) -> None:
    root = tmp_path / "tree"
    write_images(root / "val", 4)  # a class that holds images: e.g. CIFAR-100's class "train"
    write_images(root / "zebra", 4)
    with caplog.at_level(logging.WARNING):
        data = load_dataset(f"folder:{root}", image_size=8)
    assert data.class_names == ("val", "zebra")
    assert f"class folder {root / 'val'}/ is named like a split" in caplog.text


def test_split_folders_without_class_folders_are_refused_for_labelled_use(tmp_path: Path) -> None:
    write_images(tmp_path / "tree" / "train", 3)
    write_images(tmp_path / "tree" / "val", 3)
    with pytest.raises(DatasetError, match="holds image files directly .* instead of class folders"):
        load_dataset(f"folder:{tmp_path / 'tree'}", image_size=8)


def test_a_flat_folder_is_unlabelled_and_refused_as_a_labelled_set(tmp_path: Path) -> None:
    write_images(tmp_path / "flat", 3)
    write_images(tmp_path / "flat" / "more", 2)
    assert folder_layout(tmp_path / "flat").kind == "images"
    with pytest.raises(DatasetError, match="read as unlabelled images.*--train-data folder:"):
        load_dataset(f"folder:{tmp_path / 'flat'}", image_size=8)


def test_empty_folders_are_not_classes(tmp_path: Path, caplog) -> None:
    root = tmp_path / "tree"
    write_images(root / "a", 3)
    write_images(root / "b", 3)
    (root / "notes").mkdir()
    with caplog.at_level(logging.WARNING):
        classes, _, _ = list_folder(root, 0.3, 0)
    assert classes == ["a", "b"] and f"{root / 'notes'}/ holds no images: not a class" in caplog.text
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="has no class sub-folders and no images"):
        list_folder(tmp_path / "empty", 0.3, 0)


def test_a_test_only_class_is_kept_warned_and_listed_never_dropped(tmp_path: Path, caplog) -> None:
    # issue 12 defect 7: "ghost" exists only in test/; "zoo" only in train/ (never queried)
    root = write_split_tree(tmp_path / "tree", "test", {"ant": (4, 2), "ghost": (0, 3), "zoo": (2, 0)})
    with caplog.at_level(logging.WARNING):
        data = load_dataset(f"folder:{root}", image_size=8)
    assert data.class_names == ("ant", "ghost", "zoo")  # the union, sorted: one index in both splits
    assert len(data.x_test) == 5 and int((data.y_test == 1).sum()) == 3  # its images are kept as queries
    assert data.summary()["classes_without_train_images"] == ["ghost"]
    assert "class 'ghost' (3 images) of" in caplog.text and "count as misses" in caplog.text
    assert "class 'zoo' of" in caplog.text and "never queried" in caplog.text
    lazy = FolderSplits.open(f"folder:{root}", root, image_size=8)
    assert lazy.summary() == data.summary()
    np.testing.assert_array_equal(lazy.y_test, data.y_test)


@pytest.mark.parametrize("layout", ["classes", "splits"])
def test_a_class_of_only_unreadable_images_is_not_counted(tmp_path: Path, caplog, layout: str) -> None:
    # issue 18, point 5: with --skip-corrupt a folder whose every file is unreadable is not a class (as an empty
    # folder is not): 6 classes, not 7 beside a 6x6 confusion matrix; labels stay 0..5 and both loaders agree
    root = tmp_path / "tree"
    good = ["ant", "bee", "dog", "eel", "fox", "gnu"]
    for c in good:
        if layout == "classes":
            write_images(root / c, 5, seed=ord(c[0]))
        else:
            write_images(root / "train" / c, 4, seed=ord(c[0]))
            write_images(root / "val" / c, 2, seed=ord(c[0]) + 1)
    bad_dirs = [root / "cat"] if layout == "classes" else [root / "train" / "cat", root / "val" / "cat"]
    for folder in bad_dirs:
        folder.mkdir(parents=True)
        for i in range(3):
            (folder / f"{i}.png").write_bytes(b"\x89PNG not an image")  # a header PIL cannot read
    with caplog.at_level(logging.WARNING):
        data = load_dataset(f"folder:{root}", image_size=8, skip_corrupt=True)
    assert data.class_names == tuple(good) and data.num_classes == 6
    assert set(np.unique(np.concatenate([data.y_train, data.y_test])).tolist()) == set(range(6))
    assert len(data.skipped_files) == 3 * len(bad_dirs) and all("/cat/" in f for f in data.skipped_files)
    summary = data.summary()
    assert summary["num_classes"] == len(summary["class_names"]) == 6
    assert summary["classes_without_readable_images"] == ["cat"]
    assert "class 'cat' of" in caplog.text and "not counted as a class" in caplog.text
    lazy = FolderSplits.open(f"folder:{root}", root, image_size=8, skip_corrupt=True)
    assert lazy.summary() == summary
    np.testing.assert_array_equal(lazy.y_train, data.y_train)
    np.testing.assert_array_equal(lazy.y_test, data.y_test)
    # the seeded subsets are drawn after the class is dropped, the same images either way
    small = load_dataset(f"folder:{root}", image_size=8, skip_corrupt=True, max_train=7, max_test=5)
    small_lazy = FolderSplits.open(f"folder:{root}", root, image_size=8, skip_corrupt=True, max_train=7, max_test=5)
    np.testing.assert_array_equal(np.stack([small_lazy.x_train[i] for i in range(7)]), small.x_train)
    np.testing.assert_array_equal(small_lazy.y_test, small.y_test)
    assert small_lazy.summary() == small.summary()
    with pytest.raises(DatasetError, match="cannot read image"):  # without --skip-corrupt: refused naming a file
        load_dataset(f"folder:{root}", image_size=8)


def test_a_wrapper_folder_as_downloads_have_it_is_read_inside(tmp_path: Path, caplog) -> None:
    """food-101/images/<class>/ beside meta/: read as one class 'images', every accuracy was 1.0."""
    root = tmp_path / "food-101"
    for c in ("apple_pie", "baklava", "churros"):
        write_images(root / "images" / c, 5, ".jpg", seed=len(c))
    (root / "meta").mkdir()
    (root / "meta" / "classes.txt").write_text("apple_pie\nbaklava\nchurros\n")
    (root / "README.txt").write_text("Food-101\n")
    with caplog.at_level(logging.WARNING):
        data = load_dataset(f"folder:{root}", image_size=8)
    assert data.class_names == ("apple_pie", "baklava", "churros")
    assert f"read inside {root / 'images'}/" in caplog.text
    layout = folder_layout(root)
    assert (layout.root, layout.kind, layout.train) == (root, "classes", root / "images")
    assert "read inside" in layout.describe()
    lazy = FolderSplits.open(f"folder:{root}", root, image_size=8)
    assert lazy.summary() == data.summary() and lazy.x_train.root == root


def test_a_doubled_zip_folder_around_a_split_layout_is_read_inside(tmp_path: Path) -> None:
    """kaggle_download/dataset/dataset/{train,test}/<class>/: two wrappers, then the split layout."""
    root = tmp_path / "kaggle_download"
    write_split_tree(root / "dataset" / "dataset", "test", {"cat": (4, 2), "dog": (3, 2)})
    layout = folder_layout(root)
    assert (layout.kind, layout.train, layout.test) == ("splits", root / "dataset" / "dataset" / "train",
                                                         root / "dataset" / "dataset" / "test")
    data = load_dataset(f"folder:{root}", image_size=8)
    assert data.class_names == ("cat", "dog") and (len(data.x_train), len(data.x_test)) == (7, 4)


@pytest.mark.parametrize("make, kind", [
    (lambda r: (write_images(r / "cats", 3), write_images(r / "cats" / "2019", 2)), "classes"),  # loose images in it
    (lambda r: write_images(r / "cats" / "2019", 4), "classes"),  # inside: image files, i.e. unlabelled
    (lambda r: (write_images(r / "a" / "x", 2), write_images(r / "b", 2)), "classes"),  # two folders with images
])
def test_a_folder_that_is_not_a_wrapper_stays_one_class(tmp_path: Path, make, kind: str) -> None:
    root = tmp_path / "tree"
    make(root)
    layout = folder_layout(root)
    assert (layout.kind, layout.train, layout.notes) == (kind, root, ())


def test_a_symlinked_wrapper_is_not_entered_so_a_loop_ends(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    write_images(root / "real" / "a", 2)
    write_images(root / "real" / "b", 2)
    (root / "real" / "loop").symlink_to(root, target_is_directory=True)
    outer = tmp_path / "outer"
    outer.mkdir()
    (outer / "link").symlink_to(root / "real", target_is_directory=True)
    assert folder_layout(outer).train == outer  # the symlink is not entered
    assert folder_layout(root).train == root / "real"  # entered once; its loop/ holds no image (links not walked)


@pytest.mark.parametrize("wrappers", [MAX_WRAPPER_DEPTH, MAX_WRAPPER_DEPTH + 1])
def test_wrappers_are_entered_a_bounded_number_of_times(tmp_path: Path, wrappers: int) -> None:
    chain = [f"w{i}" for i in range(wrappers + 1)]  # w0 holds w1 ... holds w(wrappers), which holds a/ and b/
    write_images(tmp_path.joinpath(*chain, "a"), 2)
    write_images(tmp_path.joinpath(*chain, "b"), 2)
    layout = folder_layout(tmp_path / "w0")
    if wrappers <= MAX_WRAPPER_DEPTH:
        assert layout.train == tmp_path.joinpath(*chain) and len(layout.notes) == wrappers
    else:  # past the bound: the folder as given, one class (w1), which a labelled run refuses
        assert (layout.train, layout.notes) == (tmp_path / "w0", ())


def test_jpeg_and_avif_as_browsers_save_them_are_read_and_unread_photos_are_counted(tmp_path: Path, caplog) -> None:
    """A phone or browser folder: .jfif/.jpe JPEGs and AVIF are images; HEIC and camera raw are not read, but a
    warning says how many were left out, so the folder is not quietly a part of itself."""
    root = tmp_path / "tree"
    write_images(root / "a", 2, ".jpg")
    rng = np.random.default_rng(3)
    for name, fmt in (("x.jfif", "JPEG"), ("y.JPE", "JPEG"), ("z.avif", "AVIF")):
        Image.fromarray(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)).save(root / "b" / name if (root / "b").is_dir()
                                                                               else _mkdir(root / "b") / name, format=fmt)
    for name in ("IMG_0001.HEIC", "IMG_0002.heic", "DSC_0001.NEF", ".hidden.heic"):
        (root / "b" / name).write_bytes(b"\0\0\0\x18ftypheic")
    with caplog.at_level(logging.WARNING):
        data = load_dataset(f"folder:{root}", image_size=8, test_fraction=0.5)
    assert data.class_names == ("a", "b") and len(data.x_train) + len(data.x_test) == 5
    assert (f"{root}: 3 photo(s) of a type not read here left out (2 .heic, 1 .nef; e.g. {root / 'b' / 'DSC_0001.NEF'})"
            in caplog.text)
    assert f"{root / 'b'}: " not in caplog.text  # one line for the tree, not one a class


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_an_evaluation_split_sharing_no_class_with_train_is_refused(tmp_path: Path) -> None:
    """Tiny ImageNet: train/<wnid>/images/*.JPEG, but val/images/*.JPEG labelled by val_annotations.txt. Read as a
    class 'images' of val/ only, every query was a certain miss and every figure 0."""
    root = tmp_path / "tiny-imagenet-200"
    for wnid in ("n01443537", "n01629819"):
        write_images(root / "train" / wnid / "images", 3, ".JPEG")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("x 0 0 1 1\n")
    write_images(root / "val" / "images", 4, ".JPEG")
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn01443537\t0\t0\t1\t1\n")
    (root / "wnids.txt").write_text("n01443537\nn01629819\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(f"folder:{root}", image_size=8)
    message = str(info.value)
    assert "no class of" in message and "'images'" in message and f"folder:{root / 'train'}" in message
    assert "\n" not in message
    data = load_dataset(f"folder:{root / 'train'}", image_size=8, test_fraction=0.34)
    assert data.class_names == ("n01443537", "n01629819")
