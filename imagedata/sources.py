"""Dataset sources, chosen by a spec string.

- ``digits``: the 1,797 8x8 digits that ship inside scikit-learn (no download).
- ``cifar10``, ``cifar100``, ``stl10``, ``mnist``, ``fashion-mnist``: torchvision (a local copy under the data
  root is read; a download is tried only when it is missing). ``fashion-mnist`` is also read from
  ``/usr/share/datasets/fashion-mnist/`` (Debian package ``dataset-fashion-mnist``).
- ``folder:PATH``: an ImageFolder tree, ``PATH/train/<class>/*`` beside ``PATH/val/``, ``valid/``, ``validation/``
  or ``test/``, or one ``PATH/<class>/*`` tree split by a seeded fraction (layouts and refusals:
  ``imagedata.folder``; unlabelled images: ``imagedata.unlabelled``).
- ``npz:PATH``: arrays ``x_train``, ``y_train``, ``x_test``, ``y_test`` (uint8 NHWC); optional ``class_names``. Object
  arrays are refused naming the key (never unpickled); labels become 0..C-1 (see ``splits.dense_labels``).
"""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from edge_encoder.imagedata.decode import DEFAULT_MAX_IMAGE_PIXELS
from edge_encoder.imagedata.folder import list_folder, read_image, without_empty_classes
from edge_encoder.imagedata.splits import (
    DatasetError,
    ImageSplits,
    as_labels,
    as_rgb_nhwc,
    dense_labels,
    finalize_splits,
)

log = logging.getLogger(__name__)

TORCHVISION_SETS = ("cifar10", "cifar100", "stl10", "mnist", "fashion-mnist")
DATASET_NAMES = ("digits",) + TORCHVISION_SETS
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def default_data_root() -> Path:
    """Where torchvision datasets are looked for: ``$EDGE_ENCODER_DATA`` or ``~/.cache/edge-encoder/datasets``."""
    return Path(os.environ.get("EDGE_ENCODER_DATA", Path.home() / ".cache" / "edge-encoder" / "datasets"))


def load_dataset(
    spec: str,
    *,
    data_root: Path | None = None,
    image_size: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    skip_corrupt: bool = False,
    max_train: int | None = None,
    max_test: int | None = None,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> ImageSplits:
    """Load a dataset by spec (see module docstring) as uint8 NHWC RGB splits.

    Args:
        image_size: resize every image to ``image_size x image_size`` (required for folders of mixed sizes).
        test_fraction: share of each class held out as test where the source has no test split.
        skip_corrupt: leave unreadable image files out (listed in ``skipped_files``) instead of failing.
        max_train / max_test: keep a seeded, class-balanced subset of this size.
        max_image_pixels: a folder image larger than this (from its header) is refused before it is decoded
            (``imagedata.decode``), or left out with ``skip_corrupt``.

    Labels are ``0..C-1`` afterwards: an npz's sparse labels without ``class_names`` are remapped with a warning,
    labels outside ``class_names`` refused (``splits.dense_labels``).

    Raises:
        DatasetError: unknown name, missing or empty path, malformed arrays, unreadable image.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError("dataset spec is empty; use one of " + ", ".join(DATASET_NAMES) + ", folder:PATH, npz:PATH")
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test_fraction must be in (0, 1), got {test_fraction}")
    spec = spec.strip()
    if spec.startswith("npz:"):
        splits = _load_npz(spec, Path(spec[4:]).expanduser())
    elif spec.startswith("folder:"):
        splits = _load_folder(spec, Path(spec[7:]).expanduser(), image_size, test_fraction, seed, skip_corrupt,
                              max_image_pixels)
    elif spec == "digits":
        splits = _load_digits(spec, test_fraction, seed)
    elif spec in TORCHVISION_SETS:
        splits = _load_torchvision(spec, data_root or default_data_root())
    else:
        raise DatasetError(
            f"unknown dataset {spec!r}; use one of {', '.join(DATASET_NAMES)}, folder:PATH or npz:PATH"
        )
    return finalize_splits(splits, image_size, max_train, max_test, seed)


def _load_digits(spec: str, test_fraction: float, seed: int) -> ImageSplits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # Pixel values are 0..16; stretch to 0..255 so the engine contract (uint8) holds as for any photo.
    images = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return ImageSplits(
        name="digits",
        spec=spec,
        x_train=as_rgb_nhwc(x_train, "digits train"),
        y_train=y_train,
        x_test=as_rgb_nhwc(x_test, "digits test"),
        y_test=y_test,
        class_names=tuple(str(i) for i in range(10)),
    )


def open_npz(path: Path) -> Any:
    """The ``np.load`` archive of an npz file (pickles never loaded), or a ``DatasetError`` naming the file."""
    if not path.is_file():
        raise DatasetError(f"npz dataset {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a damaged file
        raise DatasetError(f"{path} is not a readable .npz archive: {exc}") from exc


def _load_npz(spec: str, path: Path) -> ImageSplits:
    with open_npz(path) as archive:
        missing = [key for key in ("x_train", "y_train", "x_test", "y_test") if key not in archive.files]
        if missing:
            raise DatasetError(f"{path} lacks the keys {missing} (has {sorted(archive.files)})")
        x_train = as_rgb_nhwc(_npz_array(archive, "x_train", path), f"{path}: x_train")
        x_test = as_rgb_nhwc(_npz_array(archive, "x_test", path), f"{path}: x_test")
        y_train = as_labels(_npz_array(archive, "y_train", path), len(x_train), f"{path}: y_train")
        y_test = as_labels(_npz_array(archive, "y_test", path), len(x_test), f"{path}: y_test")
        class_names = None
        if "class_names" in archive.files:
            names = _npz_array(archive, "class_names", path)
            if names.ndim != 1:
                raise DatasetError(f"{path}: class_names must be a 1-D array of names, got shape {names.shape}")
            class_names = tuple(str(name) for name in names.tolist())
    y_train, y_test, class_names = dense_labels(y_train, y_test, class_names, str(path))
    return ImageSplits(f"npz:{path.stem}", spec, x_train, y_train, x_test, y_test, class_names)


def _npz_array(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    """``archive[key]``, or a ``DatasetError`` naming the file and the key (an object array, whose pickle is never
    loaded, or a damaged member)."""
    try:
        return archive[key]
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise DatasetError(f"{path}: array '{key}' cannot be read: {exc}") from exc
        raise DatasetError(f"{path}: array '{key}' holds Python objects (dtype object), which are never unpickled; "
                           "save it as a plain array (uint8 images, integer labels, str class names)") from exc
    except Exception as exc:  # zipfile / zlib / EOF errors of a damaged member
        raise DatasetError(f"{path}: array '{key}' cannot be read: {exc}") from exc


def _load_torchvision(name: str, root: Path) -> ImageSplits:
    if name == "fashion-mnist" and DEBIAN_FASHION_MNIST.is_dir():
        return _load_idx_fashion_mnist(name, DEBIAN_FASHION_MNIST)
    import torchvision.datasets as tvd

    classes = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST}
    root = root / name
    parts = []
    for train in (True, False):
        try:
            if name == "stl10":
                dataset = _open_torchvision(lambda d: tvd.STL10(str(root), split="train" if train else "test", download=d))
                images, labels = np.transpose(dataset.data, (0, 2, 3, 1)), dataset.labels
            else:
                dataset = _open_torchvision(lambda d: classes[name](str(root), train=train, download=d))
                images = dataset.data.numpy() if hasattr(dataset.data, "numpy") else dataset.data
                labels = np.asarray(dataset.targets)
        except Exception as exc:
            raise DatasetError(
                f"dataset {name!r}: no local copy under {root} and the download failed ({exc}). "
                f"Copy the torchvision files there, or set EDGE_ENCODER_DATA / --data-root."
            ) from exc
        parts.append((as_rgb_nhwc(np.asarray(images), f"{name} {'train' if train else 'test'}"), labels))
        class_names = tuple(str(c) for c in dataset.classes)
    (x_train, y_train), (x_test, y_test) = parts
    return ImageSplits(
        name, name, x_train, as_labels(y_train, len(x_train), name), x_test, as_labels(y_test, len(x_test), name), class_names
    )


def _open_torchvision(factory):  # type: ignore[no-untyped-def]
    """Read the local copy; only when that fails try a download (which fails quickly offline)."""
    try:
        return factory(False)
    except RuntimeError:
        log.info("no local copy found; trying to download")
        return factory(True)


FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def _load_idx_fashion_mnist(name: str, folder: Path) -> ImageSplits:
    def read_idx(path: Path) -> np.ndarray:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
        dims = data[3]
        shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)

    x_train = read_idx(folder / "train-images-idx3-ubyte.gz")
    y_train = read_idx(folder / "train-labels-idx1-ubyte.gz")
    x_test = read_idx(folder / "t10k-images-idx3-ubyte.gz")
    y_test = read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    return ImageSplits(
        name,
        name,
        as_rgb_nhwc(x_train, f"{folder} train"),
        as_labels(y_train, len(x_train), f"{folder} train labels"),
        as_rgb_nhwc(x_test, f"{folder} test"),
        as_labels(y_test, len(x_test), f"{folder} test labels"),
        FASHION_MNIST_CLASSES,
    )


def _load_folder(spec: str, root: Path, image_size: int | None, test_fraction: float, seed: int, skip_corrupt: bool,
                 max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> ImageSplits:
    if image_size is None and root.is_dir():
        raise DatasetError(f"folder dataset {root}: set data.image_size (images are resized to one size)")
    classes, train_files, test_files = list_folder(root, test_fraction, seed)
    assert image_size is not None  # list_folder raised for a path that is not a folder
    skipped: list[str] = []
    x_train, y_train = _read_images(train_files, image_size, skip_corrupt, skipped, max_pixels)
    x_test, y_test = _read_images(test_files, image_size, skip_corrupt, skipped, max_pixels)
    for split, files in (("train", x_train), ("test", x_test)):
        if len(files) == 0:
            raise DatasetError(f"image folder {root}: the {split} split has no readable images")
    names, y_train, y_test, dropped = without_empty_classes(classes, y_train, y_test, root)  # all files unreadable
    return ImageSplits(f"folder:{root.name}", spec, x_train, y_train, x_test, y_test, names, tuple(skipped), dropped)


def _read_images(files: list[tuple[Path, int]], size: int, skip_corrupt: bool, skipped: list[str],
                 max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for path, label in files:
        try:
            images.append(read_image(path, size, max_pixels))
        except DatasetError as exc:
            if not skip_corrupt:
                raise DatasetError(f"{exc}. Remove it, or pass --skip-corrupt to leave such files out") from exc.__cause__
            log.warning("skipping unreadable image %s: %s", path, exc.__cause__ or exc)
            skipped.append(str(path))
            continue
        labels.append(label)
    if not images:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros((0,), np.int64)
    return np.stack(images), np.asarray(labels, dtype=np.int64)
