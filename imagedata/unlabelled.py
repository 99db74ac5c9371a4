"""Image sets read without labels: the training images of a run (labels, if any, are never used) and evaluation
images given without labels.

What each spec gives in this role (``image_files`` for the file-based ones, ``npz_images`` for an archive):

- ``images:PATH``: every image file under ``PATH`` at any depth; folder names are never read as classes.
- ``folder:PATH``: ``PATH/train/`` when ``PATH`` is a split layout (``train/`` + ``val/``...), else every image under
  ``PATH`` (class folders, if any, are ignored). Layouts and their refusals are ``imagedata.folder``'s.
- ``list:FILE``: one image path per line, relative to the list file's folder or absolute; blank lines and lines
  starting with ``#`` are ignored.
- ``npz:PATH``: the ``x_train`` array (no other key is read, so an archive holding only ``x_train`` works).

Hidden files and folders (``.DS_Store``, ``._*``, ``.ipynb_checkpoints/``, ``__MACOSX/``) are never images.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from edge_encoder.imagedata.folder import IMAGE_SUFFIXES, folder_layout, list_images
from edge_encoder.imagedata.sources import open_npz
from edge_encoder.imagedata.splits import DatasetError, as_rgb_nhwc

FILE_PREFIXES = ("images:", "folder:", "list:")


def is_file_spec(spec: str) -> bool:
    """Whether ``spec`` names image files (``images:``, ``folder:``, ``list:``), which can stream from disk."""
    return spec.startswith(FILE_PREFIXES)


def image_files(spec: str, *, skip_missing: bool = False) -> tuple[Path, list[Path], list[str]]:
    """``(root, image paths, missing)`` of a file-based spec read without labels (module docstring).

    ``root`` is the folder the paths are relative to (fingerprints hash paths below it). ``missing`` lists the
    paths of a ``list:`` file that do not exist, left out when ``skip_missing`` (``data.skip_corrupt``).

    Raises:
        DatasetError: unknown prefix, missing folder or list file, a listed path missing, or no images.
    """
    kind, _, rest = spec.partition(":")
    path = Path(rest).expanduser()
    missing: list[str] = []
    if kind == "list":
        root, files, missing = path.parent, *read_image_list(path, skip_missing=skip_missing)
    elif kind == "images":
        if not path.is_dir():
            raise DatasetError(f"image folder {path} does not exist" if not path.exists() else f"{path} is not a folder")
        root, files = path, list_images(path)
    elif kind == "folder":
        layout = folder_layout(path)
        layout.log_notes()
        root, files = path, list_images(layout.train)
    else:
        raise DatasetError(f"{spec!r} does not name image files (use images:PATH, folder:PATH or list:FILE)")
    if not files:
        raise DatasetError(f"{spec}: no images found (image files are {', '.join(sorted(IMAGE_SUFFIXES))}; hidden files "
                           "are ignored)")
    return root, files, missing


def read_image_list(path: Path, *, skip_missing: bool = False) -> tuple[list[Path], list[str]]:
    """``(paths, missing)`` of a text file listing images, one per line (relative to its folder, or absolute;
    ``~`` expanded; blank lines and ``#`` comments ignored), in file order.

    Raises:
        DatasetError: the list file is missing or unreadable, or a listed file is missing (unless ``skip_missing``:
            then it is returned in ``missing``); the message names the file and line.
    """
    if not path.is_file():
        raise DatasetError(f"image list {path} does not exist" if not path.exists() else f"image list {path} is not a file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read image list {path}: {exc}") from exc
    files, missing = [], []
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        file = Path(os.path.expanduser(entry))
        file = file if file.is_absolute() else path.parent / file
        if not file.is_file():
            if not skip_missing:
                raise DatasetError(f"image list {path}, line {number}: {file} does not exist (fix the line, or pass "
                                   "--skip-corrupt to leave missing files out)")
            missing.append(str(file))
            continue
        files.append(file)
    return files, missing


def npz_images(path: Path) -> np.ndarray:
    """``uint8 (N, H, W, 3)``: the ``x_train`` array of an npz archive (grey replicated to RGB); nothing else is read.

    Raises:
        DatasetError: missing or unreadable file, no ``x_train``, or not uint8 NHWC/NHW images.
    """
    with open_npz(path) as archive:
        if "x_train" not in archive.files:
            raise DatasetError(f"{path} lacks the keys ['x_train'] (has {sorted(archive.files)}): training images are "
                               "read from x_train")
        try:
            images = archive["x_train"]
        except ValueError as exc:  # an object array would need pickle, which is never loaded
            raise DatasetError(f"{path}: x_train cannot be read without pickle ({exc}); store it as a uint8 array") from exc
    return as_rgb_nhwc(images, f"{path}: x_train")


def npz_has_labels(path: Path) -> bool:
    """Whether an npz archive is to be read as a labelled dataset: all of ``x_train``, ``y_train``, ``x_test``,
    ``y_test``, or no ``x_train`` either (then the labelled loader names every missing key)."""
    if not path.is_file():
        raise DatasetError(f"npz dataset {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            return "x_train" not in keys or {"y_train", "x_test", "y_test"} <= keys
    except Exception as exc:  # numpy raises several types for a damaged file
        raise DatasetError(f"{path} is not a readable .npz archive: {exc}") from exc
