"""ImageFolder trees: how a folder is read (its layout), listing it, the seeded split, decoding one file, and
``FolderImages``.

Layouts (``folder_layout``; hidden entries — names starting with ``.``, such as ``.DS_Store``, ``._x.jpg`` or
``.ipynb_checkpoints/``, and ``__MACOSX/`` — are ignored everywhere):

- **splits**: ``PATH/train/`` beside an evaluation split ``PATH/val/``, ``valid/``, ``validation/`` or ``test/``
  (names compared case-insensitively). When a val-like folder and ``test/`` are both present, the val-like one is
  the evaluation split and ``test/`` is left untouched (logged); two val-like folders (``val/`` + ``validation/``)
  are refused. Each split holds class folders; the class names are the union over both splits, sorted, with one
  index in both (a class found in only one split is kept and logged: see ``list_folder``).
- **classes**: ``PATH/<class>/...`` with no image files directly in ``PATH``: one tree, split per class by a seeded
  fraction. The class is the first level below ``PATH`` (or below a split folder): images at any depth under
  ``PATH/<class>/`` belong to it, so ``PATH/<class>/<subdir>/*.jpg`` works. Folders holding no image at all are
  not classes (logged), nor, with ``skip_corrupt``, are those whose every image is unreadable
  (``without_empty_classes``: logged, listed in the report's ``classes_without_readable_images``).
- **wrapped**: ``PATH`` whose only folder with images holds only sub-folders (``food-101/images/<class>/`` beside
  ``meta/``, a zip's doubled ``dataset/dataset/train/``) is read as that folder's layout, logged; as one class
  it would make every accuracy 1.0 (a labelled set of one class is refused: ``require_classes``).
- **images** (unlabelled): image files directly in ``PATH``. Every image at any depth is one of the set; there
  are no labels. ``imagedata.unlabelled`` reads it; the labelled listing (``list_folder``) refuses it.

Refused in one line naming what was found: ``train/`` + a split folder beside other folders holding images (a
split layout or a class tree?); image files directly beside ``train/`` + ``val/``; two val-like folders; a folder
named like a split at the class level that holds only sub-folders (``PATH/train/<x>/`` with no ``val/`` beside
it: a split or a class?). A class folder named like a split that holds images (``PATH/test/*.png`` among other
classes, e.g. CIFAR-100's class ``train``) is read as a class, with a warning naming its path.

File types: anything Pillow decodes among ``IMAGE_SUFFIXES`` (JPEG, PNG, BMP, GIF, WebP, TIFF, PPM/PGM),
suffixes compared case-insensitively (``.JPEG``, ``.PNG``). ``load_dataset("folder:PATH", ...)`` decodes a whole
tree into arrays through these functions; ``FolderImages`` is one split of the same tree decoded on access, for
data that should not be held in memory (``train.loop.train_moco`` streams it through DataLoader workers,
``evaluate.extract`` embeds it batch by batch), and ``FolderSplits`` pairs the train and test ``FolderImages``
the way ``ImageSplits`` pairs arrays.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Sequence

import numpy as np
from edge_encoder.imagedata.decode import DECODER, DEFAULT_MAX_IMAGE_PIXELS, header_readable, read_image
from edge_encoder.imagedata.splits import DatasetError, seeded_subset, splits_summary

log = logging.getLogger(__name__)

# Bump when read_image would decode the same file differently: old embedding caches keyed by fingerprint() then miss.
FINGERPRINT_FORMAT = f"edge-encoder/folder-images/2 ({DECODER})"
# .jfif / .jpe: JPEGs as Windows and browsers save them; .avif: decoded by Pillow >= 11.3 (an older Pillow refuses the
# file in one line naming it, or --skip-corrupt leaves it out).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jfif", ".jpe", ".bmp", ".gif", ".webp", ".avif", ".tif", ".tiff", ".ppm",
                  ".pgm", ".pbm", ".pnm"}
# Photos Pillow does not decode (iPhone HEIC, camera raw, vector): never read, but a listing says how many it left out,
# so a phone's folder is not quietly a third of itself.
UNREAD_PHOTO_SUFFIXES = {".heic", ".heif", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2", ".svg"}
SPLITS = ("train", "test")  # the two splits FolderImages.open lists ("test" = the evaluation split, e.g. val/)
TRAIN_DIR = "train"
VAL_DIRS = ("val", "valid", "validation")  # preferred over test/ as the evaluation split when both are present
EVAL_DIRS = (*VAL_DIRS, "test")
MAX_WRAPPER_DEPTH = 4  # wrapper folders entered to find the classes (_wrapped_layout); deeper is not a download
# Folder names that look like a split: at the class level they are never taken silently.
SPLIT_LIKE = {TRAIN_DIR, *EVAL_DIRS, "training", "testing", "eval", "evaluation"}
IGNORED_NAMES = {"__MACOSX"}  # the resource-fork folder macOS zips add; dot-names are ignored as hidden

FileList = list[tuple[Path, int]]


def visible(name: str) -> bool:
    """Whether a file or folder name takes part in a dataset (hidden names and ``__MACOSX`` do not)."""
    return not name.startswith(".") and name not in IGNORED_NAMES


def is_image_name(name: str) -> bool:
    """A visible file name with an image suffix (case-insensitive)."""
    return visible(name) and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """Every image file under ``folder`` at any depth, hidden files and folders skipped, sorted by path.

    Symlinked folders are not followed (a link back up the tree would loop); symlinked files are listed. Photos of
    a type not read (``UNREAD_PHOTO_SUFFIXES``: HEIC, camera raw) are counted in one warning naming the folder.
    """
    return sorted(walk_images(folder))


def walk_images(folder: Path) -> list[Path]:
    """``list_images`` unsorted (a caller with its own order sorts them), with the same warning."""
    found, unread = _walk(folder)
    _warn_unread(folder, unread)
    return found


def _walk(folder: Path) -> tuple[list[Path], list[str]]:
    """``(image files, photos of a type not read)`` under ``folder``, unsorted."""
    found: list[Path] = []
    unread: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if visible(d)]  # pruned in place: os.walk does not descend into them
        found += [Path(dirpath, name) for name in filenames if is_image_name(name)]
        unread += [os.path.join(dirpath, name) for name in filenames
                   if visible(name) and os.path.splitext(name)[1].lower() in UNREAD_PHOTO_SUFFIXES]
    return found, unread


def _warn_unread(folder: Path, unread: list[str]) -> None:
    """One warning counting the photos of ``folder`` left out for their type (none: nothing)."""
    if not unread:
        return
    by_suffix = Counter(os.path.splitext(path)[1].lower() for path in unread)
    counts = ", ".join(f"{n} {suffix}" for suffix, n in sorted(by_suffix.items()))
    _warn(f"{folder}: {len(unread)} photo(s) of a type not read here left out ({counts}; e.g. {min(unread)}): "
          "convert them to JPEG or PNG to include them")


def _holds_image(folder: Path) -> bool:
    """Whether any image lies under ``folder`` (stops at the first one)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if visible(d)]
        if any(is_image_name(name) for name in filenames):
            return True
    return False


def _entries(folder: Path) -> tuple[list[str], list[str]]:
    """``(visible sub-folder names, visible image file names)`` directly in ``folder``, each sorted."""
    try:
        with os.scandir(folder) as it:
            entries = [(e.name, e.is_dir()) for e in it if visible(e.name)]
    except OSError as exc:
        raise DatasetError(f"cannot list image folder {folder}: {exc}") from exc
    dirs = sorted(name for name, is_dir in entries if is_dir)
    images = sorted(name for name, is_dir in entries if not is_dir and is_image_name(name))
    return dirs, images


@functools.lru_cache(maxsize=1024)
def _warn(message: str) -> None:
    """Log a layout warning once per process (a tree is listed once per split and again for each role)."""
    log.warning("%s", message)


@dataclass(frozen=True)
class FolderLayout:
    """How ``folder_layout`` reads a folder.

    Attributes:
        root: the folder given.
        kind: ``"splits"`` (``train/`` + an evaluation split), ``"classes"`` (one class tree) or ``"images"``
            (unlabelled: image files directly in ``root``).
        train: the folder of the training images (``root/train`` for splits, else ``root``).
        test: the evaluation split folder (``root/val``, ...) for splits, else ``None``.
        notes: warnings about the layout (a folder left out, a class named like a split), logged by ``describe``.
    """

    root: Path
    kind: str
    train: Path
    test: Path | None
    notes: tuple[str, ...] = ()

    def log_notes(self) -> None:
        """Log each note as a warning (once per process: a tree is listed once per split and per role)."""
        for note in self.notes:
            _warn(note)

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``"train/ + val/ (test/ not used)"``."""
        if self.kind == "splits":
            assert self.test is not None
            text = f"{self.train.name}/ + {self.test.name}/"
        else:
            text = "one class tree, split by data.test_fraction" if self.kind == "classes" else "unlabelled images"
        return text + ("" if not self.notes else " — " + "; ".join(self.notes))


def folder_layout(root: Path, depth: int = 0) -> FolderLayout:
    """Read the layout of the folder ``root`` (module docstring): which folders are splits, classes or images.

    ``depth``: how many wrapper folders were entered to reach ``root`` (``_wrapped_layout``).

    Raises:
        DatasetError: missing path, not a folder, no images, or an ambiguous layout (one line naming what was found).
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    dirs, loose = _entries(root)
    trains = [d for d in dirs if d.lower() == TRAIN_DIR]
    evals = [d for d in dirs if d.lower() in EVAL_DIRS]
    if trains and evals:
        return _split_layout(root, dirs, loose, trains, evals)
    if loose:
        return FolderLayout(root, "images", root, None)
    if not dirs:
        raise DatasetError(f"image folder {root} has no class sub-folders and no images (expected {root}/<class>/*.png, "
                           f"{root}/train/<class>/ + {root}/val/<class>/, or image files)")
    return _wrapped_layout(root, dirs, depth) or FolderLayout(root, "classes", root, None,
                                                              tuple(_split_named_classes(root, dirs)))


def _wrapped_layout(root: Path, dirs: list[str], depth: int) -> FolderLayout | None:
    """The layout inside the one folder of ``root`` that holds images, when that folder holds only sub-folders:
    a wrapper, as downloads have them (``food-101/images/<class>/``, ``101_ObjectCategories/<class>/``, a zip's
    doubled ``dataset/dataset/train/``). Read as ``root``'s one class, it would make every accuracy 1.0. ``None``
    when there is no such folder, it is named like a split (refused or read as a class by the caller), it is a
    symlink (a link back up the tree would loop), or what lies inside is not a labelled layout."""
    holding = _image_folders(root, dirs)
    if len(holding) != 1 or holding[0].lower() in SPLIT_LIKE or depth >= MAX_WRAPPER_DEPTH:
        return None
    inner = root / holding[0]
    if inner.is_symlink() or _entries(inner)[1]:
        return None
    nested = folder_layout(inner, depth + 1)
    if nested.kind == "images" or (nested.kind == "classes" and len(_image_folders(nested.train)) < 2):
        return None  # inside is still one class (cats/2019/*.jpg): keep the folder as given, refused as one class
    note = f"read inside {inner}/: the only folder of {root} with images, and it holds only sub-folders (a wrapper)"
    return FolderLayout(root, nested.kind, nested.train, nested.test, (note, *nested.notes))


def _image_folders(folder: Path, dirs: list[str] | None = None) -> list[str]:
    """The first two of ``dirs`` (default: ``folder``'s visible sub-folders) that hold an image at any depth; it stops
    there, so a class tree of 1,000 folders is not walked."""
    found = []
    for name in _entries(folder)[0] if dirs is None else dirs:
        if _holds_image(folder / name):
            found.append(name)
            if len(found) == 2:
                break
    return found


def _split_layout(root: Path, dirs: list[str], loose: list[str], trains: list[str], evals: list[str]) -> FolderLayout:
    found = ", ".join(f"{d}/" for d in trains + evals)
    if len(trains) > 1:
        raise DatasetError(f"image folder {root} is ambiguous: {' and '.join(f'{d}/' for d in trains)} are both the "
                           "train split; keep one")
    others = [d for d in dirs if d not in trains and d not in evals]
    with_images = [d for d in others if _holds_image(root / d)]
    if with_images:
        shown = ", ".join(f"{d}/" for d in with_images[:4]) + (" ..." if len(with_images) > 4 else "")
        raise DatasetError(f"image folder {root} is ambiguous: split folders {found} beside other folders with images "
                           f"({shown}): a split layout or one class tree? Move those folders out, or give "
                           f"folder:{root / trains[0]} for one tree split by data.test_fraction")
    if loose:
        raise DatasetError(f"image folder {root} is ambiguous: {len(loose)} image file(s) directly in it (e.g. {loose[0]}) "
                           f"beside the split folders {found}; move them into a split or out of the folder")
    vals, tests = [d for d in evals if d.lower() in VAL_DIRS], [d for d in evals if d.lower() == "test"]
    for group in (vals, tests):
        if len(group) > 1:
            raise DatasetError(f"image folder {root} is ambiguous: {' and '.join(f'{d}/' for d in group)} could each be "
                               "the evaluation split; keep one (rename or move the other)")
    notes = [f"{root / d}/ holds no images: ignored" for d in others]
    chosen = vals[0] if vals else tests[0]
    if vals and tests:
        notes.append(f"{root / tests[0]}/ is not used: {chosen}/ is the evaluation split ({'/, '.join(VAL_DIRS)}/ are "
                     f"preferred to test/; give folder:PATH with only train/ and test/ to evaluate on test/)")
    for split in (trains[0], chosen):
        notes += _split_named_classes(root / split, _entries(root / split)[0])
    return FolderLayout(root, "splits", root / trains[0], root / chosen, tuple(notes))


def _split_named_classes(folder: Path, dirs: list[str]) -> list[str]:
    """Warnings for class folders named like a split; ``DatasetError`` for one holding only sub-folders."""
    notes = []
    for name in (d for d in dirs if d.lower() in SPLIT_LIKE):
        sub_dirs, images = _entries(folder / name)
        if not images and any(_holds_image(folder / name / d) for d in sub_dirs):
            raise DatasetError(
                f"image folder {folder} is ambiguous: {name}/ is named like a split and holds only sub-folders "
                f"({', '.join(f'{d}/' for d in sub_dirs[:3])}{' ...' if len(sub_dirs) > 3 else ''}) without a "
                f"train/ + val/ pair beside it: a split or a class? Add the missing split folder, give "
                f"folder:{folder / name}, or rename the class")
        if images:
            notes.append(f"class folder {folder / name}/ is named like a split; read as a class (rename it if it "
                         "is a split)")
    return notes


def list_folder(root: Path, test_fraction: float, seed: int) -> tuple[list[str], FileList, FileList]:
    """``(class names, train files, test files)`` of a labelled ImageFolder tree; files are ``(path, label)`` in a
    fixed order (by class, then by path; the single tree's split is seeded).

    Class names are the union over both splits, sorted, one index in both. A class with images in only one split
    is kept and logged: its test images stay queries (kNN and the probe can never predict a class without train
    images, so they count as misses, and the report lists it under ``classes_without_train_images``); a class
    without test images is never queried.

    Raises:
        DatasetError: as ``folder_layout``; the folder is unlabelled (images directly in it) or has no classes.
    """
    layout = folder_layout(root)
    layout.log_notes()
    if layout.kind == "images":
        first = _entries(root)[1][0]
        raise DatasetError(f"image folder {root} holds image files directly (e.g. {first}), so it is read as unlabelled "
                           f"images, not class folders: a labelled set needs {root}/<class>/*.png (or train/ + val/); "
                           f"to train on it give --train-data folder:{root}")
    if layout.kind == "classes":
        images = _class_images(layout.train)
        classes = sorted(images)
        files = [(p, label) for label, name in enumerate(classes) for p in images[name]]
        train_files, test_files = _split_files(files, test_fraction, seed)
        return classes, train_files, test_files
    assert layout.test is not None
    train_images, test_images = _class_images(layout.train), _class_images(layout.test)
    classes = sorted(set(train_images) | set(test_images))
    if not set(train_images) & set(test_images):  # every query a certain miss: figures of 0 that say nothing
        raise DatasetError(
            f"image folder {root}: no class of {layout.test}/ ({_listed([repr(n) for n in sorted(test_images)], 3)}) "
            f"has images in {layout.train}/ ({_listed([repr(n) for n in sorted(train_images)], 3)}), so every query "
            f"would be a miss: {layout.test}/ is not labelled by the same class folders (Tiny ImageNet's val/images/ "
            f"is labelled by a text file). Give folder:{layout.train} to split train/ by data.test_fraction")
    test_only = [f"{name!r} ({len(test_images[name])} images)" for name in classes if name not in train_images]
    if test_only:
        _warn(f"{_listed(test_only)} of {layout.test}/ {'has' if len(test_only) == 1 else 'have'} no images in "
              f"{layout.train}/: kept as {'a class' if len(test_only) == 1 else 'classes'}; kNN and the linear probe "
              "can never predict a class without train images, so these images count as misses")
    train_only = [repr(name) for name in classes if name not in test_images]
    if train_only:
        _warn(f"{_listed(train_only)} of {layout.train}/ {'has' if len(train_only) == 1 else 'have'} no images in "
              f"{layout.test}/: never queried")
    train_files = [(p, label) for label, name in enumerate(classes) for p in train_images.get(name, [])]
    test_files = [(p, label) for label, name in enumerate(classes) for p in test_images.get(name, [])]
    return classes, train_files, test_files


def _listed(names: list[str], limit: int = 10) -> str:
    """``"class 'a'"`` / ``"classes 'a', 'b', ... (12 in all)"`` for one warning line."""
    shown = ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")
    return f"class {shown}" if len(names) == 1 else f"classes {shown}"


def _class_images(folder: Path) -> dict[str, list[Path]]:
    """Class name -> its images (any depth) for each sub-folder of ``folder`` that holds images.

    Raises:
        DatasetError: ``folder`` holds image files directly (not a class tree) or no class folder holds images.
    """
    dirs, loose = _entries(folder)
    if loose:
        raise DatasetError(f"image folder {folder} holds image files directly (e.g. {loose[0]}) instead of class "
                           f"folders {folder}/<class>/*")
    images: dict[str, list[Path]] = {}
    unread: list[str] = []
    for name in dirs:
        found, left_out = _walk(folder / name)
        images[name] = sorted(found)
        unread += left_out
    _warn_unread(folder, unread)  # one line for the tree, not one a class
    for name in [n for n, files in images.items() if not files]:
        _warn(f"{folder / name}/ holds no images: not a class")
        del images[name]
    if not images:
        raise DatasetError(f"image folder {folder} has no class sub-folders with images (expected {folder}/<class>/*.png)")
    return images


def _split_files(files: FileList, test_fraction: float, seed: int) -> tuple[FileList, FileList]:
    rng = np.random.default_rng(seed)
    by_label: dict[int, FileList] = {}
    for item in files:  # grouped in one pass (a scan per class is quadratic on ImageNet's 1,000 classes)
        by_label.setdefault(item[1], []).append(item)
    train, test = [], []
    for label in sorted(by_label):
        members = by_label[label]
        order = rng.permutation(len(members))
        n_test = max(1, int(round(len(members) * test_fraction))) if len(members) > 1 else 0
        test += [members[i] for i in order[:n_test]]
        train += [members[i] for i in order[n_test:]]
    return train, test


def without_empty_classes(class_names: Sequence[str], y_train: np.ndarray, y_test: np.ndarray, where: Path | str
                          ) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, tuple[str, ...]]:
    """``(class names, y_train, y_test, dropped names)`` without the classes left with no image in either split (every
    file of the class folder unreadable, left out by ``skip_corrupt``), labels renumbered ``0..C-1`` in the same order
    (a monotone map: a seeded subset picks the same images), each dropped class named in a warning.

    Such a folder is not a class, as a folder holding no image file is not one (``_class_images``): counted, it would
    be a class never queried nor predictable, a ``num_classes`` one larger than the confusion matrix and a per-class
    table a row short. Its files are in ``skipped_files``, its name in ``classes_without_images``.
    """
    present = np.union1d(np.unique(y_train), np.unique(y_test)).astype(np.int64)
    if len(present) == len(class_names):
        return tuple(class_names), y_train, y_test, ()
    kept = set(present.tolist())
    dropped = tuple(name for label, name in enumerate(class_names) if label not in kept)
    _warn(f"{_listed([repr(name) for name in dropped])} of {where} {'has' if len(dropped) == 1 else 'have'} no "
          f"readable image (every file unreadable, left out by --skip-corrupt): not counted as "
          f"{'a class' if len(dropped) == 1 else 'classes'}")
    mapping = np.full(len(class_names), -1, dtype=np.int64)
    mapping[present] = np.arange(len(present), dtype=np.int64)
    return (tuple(class_names[label] for label in present.tolist()), mapping[y_train], mapping[y_test], dropped)


# Decoding one file (pixel limit, EXIF orientation, 16-bit and alpha to 8-bit RGB, fit) lives in imagedata/decode.py.
_header_readable = header_readable


class FolderImages:
    """One split of an ImageFolder tree, decoded on access: ``images[i]`` is ``uint8 (S, S, 3)`` RGB.

    ``FolderImages.open(root, split, ...)`` lists the same files, in the same order, with the same labels and the
    same seeded split and subset as ``load_dataset("folder:root", ...)``: stacking every item gives its
    ``x_train`` (or ``x_test``). Only paths, labels and the size are held, so it pickles cheaply into DataLoader
    workers. The paths are one numpy bytes array rather than a list of ``str`` objects: forked workers then do not
    copy them page by page as reference counts change (copy-on-write), and a million paths take tens of MB.

    Attributes:
        labels: ``int64 (N,)``, one per item (for evaluation; training never reads them).
        class_names: one name per label value.
        image_size: the side ``S`` every image is fitted to.
        skipped_files: files left out because their header is unreadable (``skip_corrupt``) or excluded.
        max_pixels: the pixel limit of a file (``data.max_image_pixels``): a larger one is refused when decoded,
            and left out by ``open(..., skip_corrupt=True)``.
        root, split: the tree and split the files were listed from (``open`` sets them; ``fingerprint`` hashes
            paths relative to ``root``, so a tree moved with its timestamps keeps its embedding caches).

    Each file's size, modification and status-change times (ns) and inode are recorded when the object is made (the folder is
    listed) and checked after every decode: a file rewritten, replaced or removed since raises ``DatasetError``
    naming it, so a run that reads each image several times (every epoch, the export's calibration, the
    evaluation) stops instead of training on the old contents and evaluating on the new. A file added since is
    simply not read (the items are those listed).
    """

    def __init__(self, files: Sequence[Path | str], labels: np.ndarray | Sequence[int], image_size: int,
                 class_names: Sequence[str], skipped_files: Sequence[str] = (), *, root: Path | str | None = None,
                 split: str = "", max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                 stats: np.ndarray | None = None) -> None:
        if len(files) != len(labels):
            raise ValueError(f"FolderImages: {len(files)} files but {len(labels)} labels")
        if image_size < 1:
            raise ValueError(f"FolderImages: image_size must be >= 1, got {image_size}")
        self._paths = np.array([os.fsencode(f) for f in files], dtype=bytes)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.image_size = int(image_size)
        self.class_names = tuple(class_names)
        self.skipped_files = tuple(skipped_files)
        self.root = None if root is None else Path(root)
        self.split = split
        self.max_pixels = int(max_pixels)
        # (size, mtime_ns, ctime_ns, inode) a file as listed; -1 where it could not be stat'ed (its read then names it)
        self._stats = _file_stats(self._paths) if stats is None else np.asarray(stats, dtype=np.int64)

    @classmethod
    def open(cls, root: Path | str, split: str = "train", *, image_size: int, test_fraction: float = 0.2,
             seed: int = 0, skip_corrupt: bool = False, max_images: int | None = None,
             exclude: Collection[str] = (), max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> "FolderImages":
        """List one split of the tree at ``root`` (see the module docstring for the layouts).

        Args:
            split: ``"train"`` or ``"test"``.
            image_size: every image is fitted to ``image_size x image_size``.
            test_fraction, seed: the per-class held-out share of a single tree, as ``load_dataset``'s.
            skip_corrupt: leave out files whose header PIL cannot read (checked now, ~20 us a file). A file damaged
                past its header is found only when decoded, and then raises ``DatasetError`` naming it.
            max_images: keep a seeded, class-balanced subset of this size (``load_dataset``'s ``max_train`` /
                ``max_test``, same subset).
            exclude: paths to leave out, e.g. the ``skipped_files`` of ``load_dataset`` on the same tree.

        Raises:
            DatasetError: missing or empty folder, bad ``split``/``test_fraction``/``image_size``, empty split.
        """
        if split not in SPLITS:
            raise DatasetError(f"folder split must be one of {list(SPLITS)}, got {split!r}")
        if not 0.0 < test_fraction < 1.0:
            raise DatasetError(f"test_fraction must be in (0, 1), got {test_fraction}")
        if not isinstance(image_size, (int, np.integer)) or image_size < 1:
            raise DatasetError(f"folder dataset {root}: image_size must be a positive int, got {image_size!r}")
        root = Path(root).expanduser()
        classes, train_files, test_files = list_folder(root, test_fraction, seed)
        files, skipped, excluded = [], [], {str(p) for p in exclude}
        for path, label in train_files if split == "train" else test_files:
            if str(path) in excluded or (skip_corrupt and not _header_readable(path, max_pixels)):
                skipped.append(str(path))
                if str(path) not in excluded:
                    log.warning("skipping unreadable image %s", path)
            else:
                files.append((path, label))
        if not files:
            raise DatasetError(f"image folder {root}: the {split} split has no readable images")
        paths, labels = [p for p, _ in files], np.array([label for _, label in files], dtype=np.int64)
        if max_images is not None and max_images < len(files):
            keep = seeded_subset(labels, max_images, seed if split == "train" else seed + 1)  # as finalize_splits
            paths, labels = [paths[i] for i in keep], labels[keep]
        return cls(paths, labels, image_size, classes, skipped, root=root, split=split, max_pixels=max_pixels)

    def _relabelled(self, labels: np.ndarray, class_names: Sequence[str], max_images: int | None,
                    seed: int) -> "FolderImages":
        """The same files with new labels and class names (``without_empty_classes``), then ``open``'s seeded,
        class-balanced subset of ``max_images`` (``seed``: ``open``'s seed for this split)."""
        paths, stats = self.files, self._stats
        if max_images is not None and max_images < len(paths):
            keep = seeded_subset(labels, max_images, seed)
            paths, labels, stats = [paths[i] for i in keep], labels[keep], stats[keep]
        return FolderImages(paths, labels, self.image_size, class_names, self.skipped_files, root=self.root,
                            split=self.split, max_pixels=self.max_pixels, stats=stats)

    @property
    def files(self) -> list[str]:
        """The image paths, in item order."""
        return [os.fsdecode(p) for p in self._paths]

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, index: int) -> np.ndarray:
        """``uint8 (S, S, 3)`` RGB of item ``index``; ``DatasetError`` naming the file if it cannot be decoded or
        changed since it was listed (see the class docstring)."""
        if not -len(self) <= index < len(self):  # IndexError ends plain iteration (``for image in images``)
            raise IndexError(f"FolderImages index {index} out of range for {len(self)} images")
        path = os.fsdecode(self._paths[index])
        image = read_image(path, self.image_size, self.max_pixels)
        # Checked after the decode: a change before or during it shows in the stat, one after it at the next read.
        listed = self._stats[index]
        if listed[0] >= 0 and tuple(_file_stats([self._paths[index]])[0]) != tuple(listed):
            raise DatasetError(f"image {path} changed after its folder was listed (its size, modification or "
                               "status-change time or inode differ): the images of a run are read several times (each epoch, the export, the "
                               "evaluation), so it stops rather than mix the old and new contents; leave the folder "
                               "unchanged while a run reads it")
        return image

    def fingerprint(self) -> str:
        """A hex digest that changes whenever an item would decode differently, read without decoding anything.

        BLAKE2 over the split, ``image_size``, the PIL version, the decoder (``FINGERPRINT_FORMAT``) and, per file
        in item order, its path relative to ``root``, size, mtime (ns) and label: one ``stat`` a file (~4 us with
        the metadata cached: ~5 s for ImageNet's 1.3 M files). Cheap enough to recompute on every call rather than
        memoise, so a file rewritten or touched since is noticed. ``evaluate.extract`` keys its embedding cache
        on it.

        Raises:
            DatasetError: a file cannot be stat'ed (the message names it).
        """
        import PIL

        digest = hashlib.blake2b(digest_size=16)
        header = {"format": FINGERPRINT_FORMAT, "pil": PIL.__version__, "split": self.split,
                  "image_size": self.image_size, "count": len(self)}
        digest.update(json.dumps(header, sort_keys=True).encode())
        # open() lists files as root/...: cutting that prefix gives os.path.relpath's answer without its normalising
        prefix = b"" if self.root is None else os.path.join(os.fsencode(self.root), b"")
        for path, label in zip(self._paths, self.labels.tolist()):
            try:
                st = os.stat(path)
            except OSError as exc:
                raise DatasetError(f"cannot read image {os.fsdecode(path)}: {exc}") from exc
            relative = path[len(prefix):] if path.startswith(prefix) else path
            digest.update(relative + b"\0" + f"{st.st_size}:{st.st_mtime_ns}:{label}\n".encode())
        return digest.hexdigest()

    def __repr__(self) -> str:
        return (f"FolderImages({len(self)} images, {len(self.class_names)} classes, "
                f"{self.image_size}x{self.image_size})")


def _file_stats(paths: Sequence[bytes]) -> np.ndarray:
    """``int64 (N, 4)``: each file's size, mtime and ctime (ns) and inode; ``-1`` for one that cannot be stat'ed.
    The ctime catches what the others can miss: a file replaced by one of the same size with its mtime copied
    (``cp -p``, ``rsync -t``) on a freed inode number reused at once, as ext4 and tmpfs do."""
    stats = np.full((len(paths), 4), -1, dtype=np.int64)
    for i, path in enumerate(paths):
        try:
            st = os.stat(path)
        except OSError:
            continue
        stats[i] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    return stats


@dataclass(frozen=True)
class FolderSplits:
    """An ImageFolder tree as ``ImageSplits`` holds a dataset, but with the images left on disk (``data.stream``).

    ``x_train`` / ``x_test`` are ``FolderImages`` (``len``, ``x[i] -> uint8 (S, S, 3)``) instead of arrays; the
    other attributes, ``image_shape``, ``num_classes`` and ``summary()`` are those of the ``ImageSplits`` that
    ``load_dataset`` decodes from the same tree, except that ``skipped_files`` holds only the files whose header
    is unreadable (a file damaged past its header is found when first decoded, and then stops the run naming it).

    Attributes:
        x_train, x_test: the two splits, decoded on access.
        y_train, y_test: ``int64 (N,)`` and ``int64 (M,)`` labels (the ``FolderImages``' own).
    """

    name: str
    spec: str
    x_train: FolderImages
    y_train: np.ndarray
    x_test: FolderImages
    y_test: np.ndarray
    class_names: tuple[str, ...]
    skipped_files: tuple[str, ...] = field(default=())
    classes_without_images: tuple[str, ...] = field(default=())

    @classmethod
    def open(cls, spec: str, root: Path | str, *, image_size: int | None, test_fraction: float = 0.2, seed: int = 0,
             skip_corrupt: bool = False, max_train: int | None = None, max_test: int | None = None,
             max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> "FolderSplits":
        """List both splits of the tree at ``root`` (no decoding; ``skip_corrupt`` reads each file's header).

        The same files, order, labels, split and subsets as ``load_dataset(spec, ...)`` with these arguments.

        Raises:
            DatasetError: as ``FolderImages.open``; ``image_size`` unset for an existing folder.
        """
        root = Path(root).expanduser()
        if image_size is None and root.is_dir():
            raise DatasetError(f"folder dataset {root}: set data.image_size (images are resized to one size)")
        common = dict(image_size=image_size, test_fraction=test_fraction, seed=seed, skip_corrupt=skip_corrupt,
                      max_pixels=max_image_pixels)
        train = FolderImages.open(root, "train", **common)  # type: ignore[arg-type]
        test = FolderImages.open(root, "test", **common)  # type: ignore[arg-type]
        # A class whose every file was left out is not counted (as load_dataset), then the subsets are drawn (as
        # FolderImages.open draws them: seed for train, seed + 1 for test).
        names, y_train, y_test, dropped = without_empty_classes(train.class_names, train.labels, test.labels, root)
        train = train._relabelled(y_train, names, max_train, seed)
        test = test._relabelled(y_test, names, max_test, seed + 1)
        return cls(f"folder:{root.name}", spec, train, train.labels, test, test.labels, train.class_names,
                   train.skipped_files + test.skipped_files, dropped)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.x_train.image_size, self.x_train.image_size, 3)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> dict[str, object]:
        """JSON-ready description for reports: the keys and values of ``ImageSplits.summary`` for the same tree."""
        return splits_summary(self)
