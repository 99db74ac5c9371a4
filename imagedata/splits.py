"""The in-memory form every dataset takes: uint8 NHWC RGB train/test arrays with int64 labels."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from edge_encoder.core.errors import InputError
from edge_encoder.core.subsets import seeded_subset  # noqa: F401 - re-exported (folder.py)


class DatasetError(InputError):
    """A dataset spec, file or array that cannot be used; the message names the problem (a ``ValueError``)."""


@dataclass(frozen=True)
class ImageSplits:
    """A labelled dataset split into a train (bank) and a test (query) part.

    Attributes:
        name: short dataset name (``"digits"``, ``"cifar10"``, ``"npz:cifar10_dev"``...).
        spec: the spec the user gave.
        x_train: ``uint8 (N, H, W, 3)`` RGB images.
        y_train: ``int64 (N,)`` labels (used for evaluation only, never for training).
        x_test: ``uint8 (M, H, W, 3)``.
        y_test: ``int64 (M,)``.
        class_names: one name per label value.
        skipped_files: unreadable files left out (folder datasets with ``skip_corrupt``).
        classes_without_images: class folders whose every file was unreadable (``skip_corrupt``): not classes, so
            not in ``class_names`` (``folder.without_empty_classes``); listed in the report.
    """

    name: str
    spec: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    skipped_files: tuple[str, ...] = field(default=())
    classes_without_images: tuple[str, ...] = field(default=())

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> dict[str, object]:
        """JSON-ready description for reports."""
        return splits_summary(self)


def splits_summary(splits: Any) -> dict[str, object]:
    """The report's ``dataset`` object for ``ImageSplits`` or anything with the same attributes
    (``imagedata.FolderSplits``): one definition, so streamed and in-memory runs describe a dataset alike."""
    # Classes queried but absent from the bank (a test-only class of a train/ + val/ tree): never predictable.
    test_only = sorted(set(np.unique(splits.y_test).tolist()) - set(np.unique(splits.y_train).tolist()))
    return {
        "spec": splits.spec,
        "name": splits.name,
        "num_train": int(len(splits.x_train)),
        "num_test": int(len(splits.x_test)),
        "image_shape": list(splits.image_shape),
        "num_classes": splits.num_classes,
        "class_names": list(splits.class_names),
        "skipped_files": list(splits.skipped_files),
        "classes_without_train_images": [str(splits.class_names[c]) if c < len(splits.class_names) else str(c)
                                         for c in test_only],
        "classes_without_readable_images": list(getattr(splits, "classes_without_images", ())),
    }


def require_classes(splits: Any, spec: str) -> None:
    """Refuse a labelled evaluation set whose images carry fewer than two labels (``y_train`` and ``y_test``
    together): every kNN answer and every probe prediction would be right, so each accuracy and retrieval figure
    would read 1.0 and say nothing about the encoder. Refuse one whose test labels share no class with the train
    split too: every answer would be wrong.

    Raises:
        DatasetError: one line naming the set, its one class and what to give instead.
    """
    y_train, y_test = np.asarray(splits.y_train), np.asarray(splits.y_test)
    present = np.union1d(y_train, y_test).astype(np.int64)
    if len(present) >= 2:
        if len(y_test) and not np.isin(y_test, y_train).any():
            raise DatasetError(f"the labelled evaluation set {spec}: no test image's class has a train image, so every "
                               "kNN query and probe prediction would be a miss and every figure 0; its train and test "
                               "labels must share classes")
        return
    names = [str(splits.class_names[i]) for i in present if 0 <= i < len(splits.class_names)] or ["?"]
    raise DatasetError(
        f"the labelled evaluation set {spec} has images of one class only ({names[0]!r}): kNN, retrieval and the "
        "linear probe need two or more (with one, every answer is right and every figure reads 1.0). Give a set "
        f"with a folder per class, or --train-data {spec} alone to train without measuring accuracy")


def as_rgb_nhwc(images: np.ndarray, where: str) -> np.ndarray:
    """Validate ``uint8`` images as ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, H, W, 3)``; return ``(N, H, W, 3)``."""
    if not isinstance(images, np.ndarray):
        raise DatasetError(f"{where}: expected a numpy array, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise DatasetError(f"{where}: images must be uint8 (0..255), got dtype {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DatasetError(
            f"{where}: images must have shape (N, H, W, 3) or (N, H, W) (uint8 NHWC), got {images.shape}"
        )
    if images.shape[0] == 0:
        raise DatasetError(f"{where}: the split is empty (0 images)")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return np.ascontiguousarray(images)


def as_labels(labels: np.ndarray, count: int, where: str) -> np.ndarray:
    """Validate integer labels of length ``count``; return ``int64 (count,)``."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != count:
        raise DatasetError(f"{where}: labels must have shape ({count},) to match the images, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{where}: labels must be integers, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise DatasetError(f"{where}: labels must be >= 0, found {int(labels.min())}")
    if labels.size and labels.dtype.kind == "u" and int(labels.max()) > np.iinfo(np.int64).max:
        raise DatasetError(f"{where}: label {int(labels.max())} does not fit in int64")
    return labels.astype(np.int64)


# How many entries of a label remapping the warning lists before "...".
_SHOWN_MAPPINGS = 20


def dense_labels(y_train: np.ndarray, y_test: np.ndarray, class_names: tuple[str, ...] | None,
                 where: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """``(y_train, y_test, class_names)`` with labels ``0..C-1`` and one name per label value.

    With ``class_names``, a label is an index into them: one at or past ``len(class_names)`` is refused. Without,
    the labels present must be ``0..C-1``; sparse ones (``{0, 7, 65535}``: 65,536 classes if taken as indices,
    most of them empty) are remapped in sorted order to ``0..C-1`` with a warning listing the mapping, and each
    class is named by its original value. Either way the class count is the number of classes, never the
    largest label.

    Args:
        y_train, y_test: ``int64 (N,)`` / ``int64 (M,)`` labels already checked by :func:`as_labels`.

    Raises:
        DatasetError: a label outside ``class_names``.
    """
    import logging

    if class_names is not None:
        for split, labels in (("y_train", y_train), ("y_test", y_test)):
            if labels.size and int(labels.max()) >= len(class_names):
                raise DatasetError(f"{where}: {split} holds label {int(labels.max())} but class_names has "
                                   f"{len(class_names)} names (labels index class_names, 0..{len(class_names) - 1})")
        return y_train, y_test, tuple(class_names)
    values = np.unique(np.concatenate([y_train, y_test]))
    if values.size == 0 or int(values[-1]) == values.size - 1:  # already 0..C-1, every class present
        return y_train, y_test, tuple(str(i) for i in range(values.size))
    mapping = ", ".join(f"{int(v)}->{i}" for i, v in enumerate(values[:_SHOWN_MAPPINGS]))
    more = f", ... ({values.size} in all)" if values.size > _SHOWN_MAPPINGS else ""
    logging.getLogger(__name__).warning(
        "%s: labels are not 0..C-1 (%d distinct values up to %d, no class_names): remapped in sorted order to "
        "0..%d, each class named by its original label: %s%s", where, values.size, int(values[-1]),
        values.size - 1, mapping, more)
    return (np.searchsorted(values, y_train).astype(np.int64), np.searchsorted(values, y_test).astype(np.int64),
            tuple(str(int(v)) for v in values))


def resize_images(images: np.ndarray, size: int, chunk: int = 2048) -> np.ndarray:
    """Resize ``uint8 (N, H, W, 3)`` to ``(N, size, size, 3)`` (bilinear, antialiased when shrinking)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    import torch  # the training stack's resize (bilinear, antialiased): only datasets that need resizing get here
    import torch.nn.functional as F

    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for start in range(0, len(images), chunk):
        batch = torch.from_numpy(images[start : start + chunk]).permute(0, 3, 1, 2).float()
        resized = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start : start + chunk] = resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def finalize_splits(splits: ImageSplits, image_size: int | None, max_train: int | None, max_test: int | None, seed: int) -> ImageSplits:
    """Apply the optional subsetting (seeded, class-balanced order) and resizing common to all sources."""
    x_train, y_train, x_test, y_test = splits.x_train, splits.y_train, splits.x_test, splits.y_test
    if max_train is not None and max_train < len(x_train):
        keep = seeded_subset(y_train, max_train, seed)
        x_train, y_train = x_train[keep], y_train[keep]
    if max_test is not None and max_test < len(x_test):
        keep = seeded_subset(y_test, max_test, seed + 1)
        x_test, y_test = x_test[keep], y_test[keep]
    if image_size is not None:
        x_train, x_test = resize_images(x_train, image_size), resize_images(x_test, image_size)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetError(f"{splits.spec}: train images are {x_train.shape[1:]} but test images are {x_test.shape[1:]}")
    return replace(splits, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
