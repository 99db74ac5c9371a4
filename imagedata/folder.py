"""ImageFolder trees: listing a tree (both layouts, the seeded split), decoding one file, and ``FolderImages``.

Layouts: ``PATH/train/<class>/*`` + ``PATH/test/<class>/*``, or one ``PATH/<class>/*`` tree split per class by a
seeded fraction. ``load_dataset("folder:PATH", ...)`` decodes a whole tree into arrays through these functions;
``FolderImages`` is one split of the same tree decoded on access, for data that should not be held in memory
(``train.loop.train_moco`` streams it through DataLoader workers, ``evaluate.extract`` embeds it batch by batch),
and ``FolderSplits`` pairs the train and test ``FolderImages`` the way ``ImageSplits`` pairs arrays.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Sequence

import numpy as np
from edge_encoder.imagedata.splits import DatasetError, seeded_subset, splits_summary

log = logging.getLogger(__name__)

# Bump when read_image would decode the same file differently: old embedding caches keyed by fingerprint() then miss.
FINGERPRINT_FORMAT = "edge-encoder/folder-images/1 (PIL ImageOps.fit bilinear, RGB)"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
SPLITS = ("train", "test")

FileList = list[tuple[Path, int]]


def list_folder(root: Path, test_fraction: float, seed: int) -> tuple[list[str], FileList, FileList]:
    """``(class names, train files, test files)`` of an ImageFolder tree; files are ``(path, label)`` in a fixed order.

    Raises:
        DatasetError: the path is missing, not a folder, or has no class sub-folders.
    """
    if not root.exists():
        raise DatasetError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        train_files = _class_files(root / "train", classes)
        test_files = _class_files(root / "test", classes)
    else:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        train_files, test_files = _split_files(_class_files(root, classes), test_fraction, seed)
    if not classes:
        raise DatasetError(f"image folder {root} has no class sub-folders (expected {root}/<class>/*.png or train/ and test/)")
    return classes, train_files, test_files


def _class_files(folder: Path, classes: list[str]) -> FileList:
    files = []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if class_dir.is_dir():
            files += [(p, label) for p in sorted(class_dir.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    return files


def _split_files(files: FileList, test_fraction: float, seed: int) -> tuple[FileList, FileList]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in sorted({label for _, label in files}):
        members = [f for f in files if f[1] == label]
        order = rng.permutation(len(members))
        n_test = max(1, int(round(len(members) * test_fraction))) if len(members) > 1 else 0
        test += [members[i] for i in order[:n_test]]
        train += [members[i] for i in order[n_test:]]
    return train, test


def read_image(path: Path | str, size: int) -> np.ndarray:
    """Decode one file as ``uint8 (size, size, 3)`` RGB: centre-fitted (aspect kept, sides cropped), bilinear.

    Raises:
        DatasetError: the file cannot be decoded (the message names it).
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            fitted = ImageOps.fit(image.convert("RGB"), (size, size), method=Image.Resampling.BILINEAR)
            return np.array(fitted, dtype=np.uint8)  # a writable copy (asarray would be a read-only view)
    except Exception as exc:  # PIL raises many types for damaged files
        raise DatasetError(f"cannot read image {path}: {exc}") from exc


def _header_readable(path: Path) -> bool:
    """Whether PIL recognises the file (reads the header only: ~20 us, against ~90 us for decoding a 32 px PNG)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 - opening parses the header; nothing is decoded
        return True
    except Exception:  # PIL raises many types for damaged files
        return False


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
        root, split: the tree and split the files were listed from (``open`` sets them; ``fingerprint`` hashes
            paths relative to ``root``, so a tree moved with its timestamps keeps its embedding caches).
    """

    def __init__(self, files: Sequence[Path | str], labels: np.ndarray | Sequence[int], image_size: int,
                 class_names: Sequence[str], skipped_files: Sequence[str] = (), *, root: Path | str | None = None,
                 split: str = "") -> None:
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

    @classmethod
    def open(cls, root: Path | str, split: str = "train", *, image_size: int, test_fraction: float = 0.2,
             seed: int = 0, skip_corrupt: bool = False, max_images: int | None = None,
             exclude: Collection[str] = ()) -> "FolderImages":
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
            if str(path) in excluded or (skip_corrupt and not _header_readable(path)):
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
        return cls(paths, labels, image_size, classes, skipped, root=root, split=split)

    @property
    def files(self) -> list[str]:
        """The image paths, in item order."""
        return [os.fsdecode(p) for p in self._paths]

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, index: int) -> np.ndarray:
        """``uint8 (S, S, 3)`` RGB of item ``index``; ``DatasetError`` naming the file if it cannot be decoded."""
        if not -len(self) <= index < len(self):  # IndexError ends plain iteration (``for image in images``)
            raise IndexError(f"FolderImages index {index} out of range for {len(self)} images")
        return read_image(os.fsdecode(self._paths[index]), self.image_size)

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

    @classmethod
    def open(cls, spec: str, root: Path | str, *, image_size: int | None, test_fraction: float = 0.2, seed: int = 0,
             skip_corrupt: bool = False, max_train: int | None = None, max_test: int | None = None) -> "FolderSplits":
        """List both splits of the tree at ``root`` (no decoding; ``skip_corrupt`` reads each file's header).

        The same files, order, labels, split and subsets as ``load_dataset(spec, ...)`` with these arguments.

        Raises:
            DatasetError: as ``FolderImages.open``; ``image_size`` unset for an existing folder.
        """
        root = Path(root).expanduser()
        if image_size is None and root.is_dir():
            raise DatasetError(f"folder dataset {root}: set data.image_size (images are resized to one size)")
        common = dict(image_size=image_size, test_fraction=test_fraction, seed=seed, skip_corrupt=skip_corrupt)
        train = FolderImages.open(root, "train", max_images=max_train, **common)  # type: ignore[arg-type]
        test = FolderImages.open(root, "test", max_images=max_test, **common)  # type: ignore[arg-type]
        return cls(f"folder:{root.name}", spec, train, train.labels, test, test.labels, train.class_names,
                   train.skipped_files + test.skipped_files)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.x_train.image_size, self.x_train.image_size, 3)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> dict[str, object]:
        """JSON-ready description for reports: the keys and values of ``ImageSplits.summary`` for the same tree."""
        return splits_summary(self)
