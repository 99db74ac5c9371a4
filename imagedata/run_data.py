"""The images of one run: what trains, and what evaluates (``open_run_data``).

``data.train_data`` names the training images, whose labels, if any, are never read (``imagedata.unlabelled``
says what each spec gives); ``data.eval_data`` names the labelled evaluation set: its train split is the kNN bank
and the linear probe's training set, its test split the queries. ``data.dataset`` is both when neither is set.

Which sets a run gets (``DataSettings.train_spec`` / ``eval_spec``):

- one spec for both (``data.dataset``, or the same spec twice): a labelled dataset trains on its train split and is
  evaluated on both splits, as always; an unlabelled one (``images:``, ``list:``, a folder with images directly in
  it, an npz without labels) trains on all its images but a held-out slice (below) and accuracy is not measured.
- ``train_data`` and a labelled ``eval_data``: training images exclude the evaluation queries when both are image
  files (``folder:X`` twice gives the same train split as ``--dataset folder:X``; ``images:X`` beside
  ``folder:X`` loses the files of X's test split), and the evaluation set is fitted to the training images' size.
  A query is matched as a file, not a path (``imagedata.eval_files``): a symlink, a symlinked folder, a hard link
  or another spelling of its path is left out (``excluded_eval_images``), and so is a byte-identical copy
  (``excluded_eval_duplicates``).
- ``train_data`` and an unlabelled ``eval_data``: the evaluation images (never trained on) feed the label-free
  metrics and the parity check; accuracy is not measured.
- ``train_data`` alone: a seeded slice of the training images is held out (never trained on) for the label-free
  metrics and the parity check: ``round(data.test_fraction * N)`` images, at most ``data.max_test`` (default cap
  ``DEFAULT_HELDOUT``); accuracy is not measured.

Both sets are fitted to ``data.image_size`` (one size per run; with 0, the training images' own size, which a
folder of photos does not have: set it). ``data.max_train`` takes a seeded random subset of the training images
(labels are not used to balance it); ``data.stream`` leaves image files on disk (``FolderImages``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from edge_encoder.core.subsets import seeded_rows
from edge_encoder.imagedata.decode import DEFAULT_MAX_IMAGE_PIXELS
from edge_encoder.imagedata.eval_files import EvalFiles
from edge_encoder.imagedata.folder import (
    FolderImages,
    FolderSplits,
    _header_readable,
    folder_layout,
    list_folder,
)
from edge_encoder.imagedata.sources import _read_images, load_dataset
from edge_encoder.imagedata.splits import DatasetError, ImageSplits, require_classes, resize_images
from edge_encoder.imagedata.unlabelled import (
    image_files,
    is_file_spec,
    npz_has_labels,
    npz_images,
)

if TYPE_CHECKING:
    from edge_encoder.imagedata.config import DataSettings

log = logging.getLogger(__name__)

DEFAULT_HELDOUT = 1000  # held-out training images without data.max_test: enough for the label-free metrics
NO_EVAL_SET = "no labelled evaluation set was given (--eval-data)"

Images = Any  # uint8 (N, S, S, 3) ndarray, or FolderImages decoded on access


@dataclass(frozen=True)
class RunData:
    """The training images and the evaluation set of one run.

    Attributes:
        train_images: ``uint8 (N, S, S, 3)``, or with ``data.stream`` a ``FolderImages`` decoded on access. Their
            labels are never read.
        evaluation: the labelled evaluation set (``ImageSplits``, or ``FolderSplits`` with ``data.stream``):
            ``x_train``/``y_train`` the kNN bank and probe training set, ``x_test``/``y_test`` the queries; ``None``
            when no labelled set is given.
        heldout: the images of the parity check and the label-free metrics (``evaluation.x_test``, the images of an
            evaluation set given without labels, or a seeded slice held out of the training images).
        heldout_source: one sentence saying which.
        accuracy_note: why accuracy is not measured (``None`` when ``evaluation`` is set).
        train_info: the report's ``train_data`` object (``train_summary``).
        layout: how each folder spec was read, spec -> ``FolderLayout.describe()``.
    """

    train_images: Images
    evaluation: ImageSplits | FolderSplits | None
    heldout: Images
    heldout_source: str
    accuracy_note: str | None
    train_info: dict[str, Any]
    layout: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_splits(cls, splits: "ImageSplits | FolderSplits | RunData") -> "RunData":
        """One labelled dataset for both roles (what ``--dataset`` gives): trains on ``x_train``, evaluates on both
        splits. A ``RunData`` is returned as it is."""
        if isinstance(splits, RunData):
            return splits
        info = {"spec": splits.spec, "name": splits.name, "num_images": len(splits.x_train),
                "image_shape": list(splits.image_shape), "labels_used": False,
                "source": "the train split of the evaluation set", "held_out": 0, "excluded_eval_images": 0,
                "excluded_eval_duplicates": 0, "skipped_files": list(splits.skipped_files)}
        return cls(splits.x_train, splits, splits.x_test, "the evaluation set's test split", None, info)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        if isinstance(self.train_images, np.ndarray):
            return tuple(self.train_images.shape[1:])  # type: ignore[return-value]
        return (self.train_images.image_size, self.train_images.image_size, 3)

    @property
    def name(self) -> str:
        return self.evaluation.name if self.evaluation is not None else str(self.train_info["name"])

    def describe(self) -> str:
        """One log line: what trains and what evaluates."""
        evaluation = (f"evaluation {self.evaluation.name}: {len(self.evaluation.x_train)} bank / "
                      f"{len(self.evaluation.x_test)} query images" if self.evaluation is not None
                      else f"no accuracy ({self.accuracy_note}); label-free metrics on {self.heldout_source}")
        return (f"training on {len(self.train_images)} images of {self.train_info['spec']} at {self.image_shape} "
                f"(labels not used); {evaluation}")

    def summary(self) -> dict[str, Any]:
        """The report's ``dataset`` object: the labelled evaluation set, or (``labelled: false``) the held-out
        images, with ``num_train`` the training images and ``num_test`` the held-out ones."""
        if self.evaluation is not None:
            out = {**self.evaluation.summary(), "labelled": True}
        else:
            out = {"spec": self.train_info["spec"], "name": self.train_info["name"],
                   "num_train": len(self.train_images), "num_test": len(self.heldout),
                   "image_shape": list(self.image_shape), "num_classes": 0, "class_names": [],
                   "skipped_files": list(self.train_info["skipped_files"]), "labelled": False}
        out["held_out_images"] = self.heldout_source
        spec = out["spec"]
        if spec in self.layout:
            out["layout"] = self.layout[spec]
        return out

    def train_summary(self) -> dict[str, Any]:
        """The report's ``train_data`` object (docs/report_schema.md)."""
        return dict(self.train_info)


@dataclass(frozen=True)
class _Options:
    size: int | None
    seed: int
    test_fraction: float
    skip_corrupt: bool
    stream: bool
    max_train: int | None
    max_test: int | None
    data_root: Path | None
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # data.max_image_pixels (imagedata.decode)


def open_run_data(settings: "DataSettings") -> RunData:
    """The training images and evaluation set ``settings`` name (module docstring).

    Raises:
        DatasetError: a spec, file or array cannot be used, or the sets do not fit together (the message names it).
    """
    opts = _Options(settings.image_size or None, settings.seed, settings.test_fraction, settings.skip_corrupt,
                    settings.stream, settings.max_train or None, settings.max_test or None,
                    Path(settings.data_root).expanduser() if settings.data_root else None,
                    getattr(settings, "max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS))
    train_spec, eval_spec = run_specs(settings)
    layout = {s: folder_layout(Path(s[7:]).expanduser()).describe() for s in {train_spec, eval_spec}
              if s is not None and s.startswith("folder:")}
    if eval_spec == train_spec and _labelled(eval_spec):  # one labelled dataset for both: as it always was
        data = RunData.from_splits(_open_labelled(eval_spec, opts))
        return replace(data, layout=layout, train_info=_with_layout(data.train_info, layout))
    if eval_spec is None or eval_spec == train_spec:  # nothing labelled: hold a slice of the training images out
        reason = NO_EVAL_SET if eval_spec is None else f"the dataset {eval_spec} has no labels"
        train, heldout, info = _open_training(train_spec, opts, exclude=None, holdout=True)
        share = f"{len(heldout)} images ({len(heldout) / (len(train) + len(heldout)):.1%})"
        source = f"a seeded slice of {share} held out of the training images, never trained on"
        return RunData(train, None, heldout, source, reason, _with_layout(info, layout), layout)
    labelled = _labelled(eval_spec)
    exclude = _query_files(eval_spec, opts, labelled) if is_file_spec(train_spec) else None
    train, _, info = _open_training(train_spec, opts, exclude=exclude, holdout=False)
    info = _with_layout(info, layout)
    opts = replace(opts, size=opts.size or _side(train, train_spec))
    if labelled:
        evaluation = _open_labelled(eval_spec, opts)
        return RunData(train, evaluation, evaluation.x_test, "the evaluation set's test split", None, info, layout)
    heldout = _open_unlabelled_eval(eval_spec, opts)
    return RunData(train, None, heldout, f"the {len(heldout)} images of {eval_spec} (given without labels)",
                   f"the evaluation set {eval_spec} has no labels", info, layout)


def run_specs(settings: Any) -> tuple[str, str | None]:
    """``(training spec, evaluation spec or None)`` of a ``[data]`` section: ``train_data`` else ``dataset``; and
    ``eval_data``, else ``dataset`` when ``train_data`` is unset, else none (no labelled evaluation)."""
    dataset = settings.dataset.strip()
    train_data, eval_data = getattr(settings, "train_data", "").strip(), getattr(settings, "eval_data", "").strip()
    return train_data or dataset, eval_data or (None if train_data else dataset)


def _with_layout(info: dict[str, Any], layout: dict[str, str]) -> dict[str, Any]:
    return {**info, "layout": layout[info["spec"]]} if info["spec"] in layout else info


def _labelled(spec: str) -> bool:
    """Whether ``spec`` names a labelled dataset (unlabelled: ``images:``, ``list:``, a folder with images directly
    in it, an npz without ``y_train``/``x_test``/``y_test``)."""
    if spec.startswith(("images:", "list:")):
        return False
    if spec.startswith("folder:"):
        return folder_layout(Path(spec[7:]).expanduser()).kind != "images"
    if spec.startswith("npz:"):
        return npz_has_labels(Path(spec[4:]).expanduser())
    return True


def _open_labelled(spec: str, opts: _Options) -> ImageSplits | FolderSplits:
    common = dict(image_size=opts.size, test_fraction=opts.test_fraction, seed=opts.seed,
                  skip_corrupt=opts.skip_corrupt, max_train=opts.max_train, max_test=opts.max_test,
                  max_image_pixels=opts.max_pixels)
    if opts.stream and spec.startswith("folder:"):
        splits = FolderSplits.open(spec, spec[7:], **common)  # type: ignore[arg-type]
    else:
        splits = load_dataset(spec, data_root=opts.data_root, **common)  # type: ignore[arg-type]
    require_classes(splits, spec)
    return splits


def _query_files(spec: str, opts: _Options, labelled: bool) -> EvalFiles | None:
    """The evaluation images that must not be trained on (its test split; every image of an unlabelled set), matched
    as files (``EvalFiles``: links and copies too); ``None`` when the set is not image files."""
    if labelled and spec.startswith("folder:"):
        files = [p for p, _ in list_folder(Path(spec[7:]).expanduser(), opts.test_fraction, opts.seed)[2]]
    elif not labelled and is_file_spec(spec):
        files = image_files(spec, skip_missing=True)[1]
    else:
        return None
    return EvalFiles(files)


def _side(images: Images, spec: str) -> int:
    shape = images.shape[1:3] if isinstance(images, np.ndarray) else (images.image_size,) * 2
    if shape[0] != shape[1]:
        raise DatasetError(f"training images of {spec} are {shape[0]}x{shape[1]}: set data.image_size so the "
                           "evaluation set can be fitted to one square size")
    return int(shape[0])


def _open_training(spec: str, opts: _Options, *, exclude: EvalFiles | None,
                   holdout: bool) -> tuple[Images, Images | None, dict[str, Any]]:
    """``(training images, held-out images or None, train_data info)`` of a spec read without labels; the files of
    ``exclude`` (evaluation queries, by any path or link, and their byte-identical copies) are left out."""
    duplicates = 0
    if is_file_spec(spec):
        if opts.size is None:
            raise DatasetError(f"training images {spec}: set data.image_size (images are fitted to one size)")
        root, files, skipped = image_files(spec, skip_missing=opts.skip_corrupt)
        kept, same, duplicates = exclude.split(files) if exclude else (list(files), 0, 0)
        if same or duplicates:
            log.warning("%d of the %d training images of %s are evaluation queries (%d the query's own file, by its "
                        "path or a link; %d byte-identical copies): left out of training", same + duplicates,
                        len(files), spec, same, duplicates)
        train_rows, heldout_rows = _rows(len(kept), spec, opts, holdout)
        train, skip_train = _materialise([kept[i] for i in train_rows], root, opts, "train")
        heldout = None
        if heldout_rows is not None:
            heldout, skip_held = _materialise([kept[i] for i in heldout_rows], root, opts, "heldout")
            skip_train += skip_held
        name, excluded, skipped = f"{spec.partition(':')[0]}:{root.name}", same, skipped + skip_train
        source = _file_source(spec)
    else:
        images = _training_array(spec, opts)
        train_rows, heldout_rows = _rows(len(images), spec, opts, holdout)
        train, heldout = images[train_rows], None if heldout_rows is None else images[heldout_rows]
        name, excluded, skipped = spec if not spec.startswith("npz:") else f"npz:{Path(spec[4:]).stem}", 0, []
        source = "the archive's x_train" if spec.startswith("npz:") else "the dataset's train split"
    info = {"spec": spec, "name": name, "num_images": len(train), "image_shape": list(_shape(train)),
            "labels_used": False, "source": source, "held_out": 0 if heldout is None else len(heldout),
            "excluded_eval_images": excluded, "excluded_eval_duplicates": duplicates, "skipped_files": skipped}
    return train, heldout, info


def _rows(count: int, spec: str, opts: _Options, holdout: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Training rows (``max_train`` subset) and, with ``holdout``, the seeded held-out rows; both sorted."""
    heldout = None
    rows = np.arange(count)
    if holdout:
        if count < 2:
            raise DatasetError(f"training images {spec}: {count} image(s); at least 2 are needed to hold one out for "
                               "the label-free metrics (or give --eval-data)")
        wanted = min(max(1, int(round(count * opts.test_fraction))), opts.max_test or DEFAULT_HELDOUT, count - 1)
        heldout = seeded_rows(count, wanted, opts.seed)
        rows = np.setdiff1d(rows, heldout)
    if count == 0 or len(rows) == 0:
        raise DatasetError(f"training images {spec}: no images left to train on")
    if opts.max_train is not None and opts.max_train < len(rows):
        rows = rows[seeded_rows(len(rows), opts.max_train, opts.seed)]
    return rows, heldout


def _materialise(paths: list[Path], root: Path, opts: _Options, split: str) -> tuple[Images, list[str]]:
    """Image files as a decoded array, or (``stream``) as ``FolderImages``; ``(images, skipped paths)``."""
    assert opts.size is not None
    skipped: list[str] = []
    if opts.stream:
        if opts.skip_corrupt:
            readable = [_header_readable(p, opts.max_pixels) for p in paths]
            skipped = [str(p) for p, ok in zip(paths, readable) if not ok]
            paths = [p for p, ok in zip(paths, readable) if ok]
        if not paths:
            raise DatasetError(f"image files under {root}: no readable images")
        return FolderImages(paths, np.zeros(len(paths), np.int64), opts.size, (), skipped, root=root, split=split,
                            max_pixels=opts.max_pixels), skipped
    images, _ = _read_images([(p, 0) for p in paths], opts.size, opts.skip_corrupt, skipped, opts.max_pixels)
    if len(images) == 0:
        raise DatasetError(f"image files under {root}: no readable images")
    return images, skipped


def _training_array(spec: str, opts: _Options) -> np.ndarray:
    """The training images of an array-backed spec (an npz's ``x_train``, a named dataset's train split), fitted."""
    if spec.startswith("npz:"):
        images = npz_images(Path(spec[4:]).expanduser())
    else:
        images = load_dataset(spec, data_root=opts.data_root, seed=opts.seed, test_fraction=opts.test_fraction).x_train
    return images if opts.size is None else resize_images(images, opts.size)


def _open_unlabelled_eval(spec: str, opts: _Options) -> Images:
    """Evaluation images given without labels (never trained on): all of them, at most ``data.max_test``."""
    if is_file_spec(spec):
        root, files, _ = image_files(spec, skip_missing=opts.skip_corrupt)
        rows = seeded_rows(len(files), opts.max_test or len(files), opts.seed)
        return _materialise([files[i] for i in rows], root, opts, "test")[0]
    images = _training_array(spec, opts)
    return images[seeded_rows(len(images), opts.max_test or len(images), opts.seed)]


def _shape(images: Images) -> tuple[int, int, int]:
    return tuple(images.shape[1:]) if isinstance(images, np.ndarray) else (images.image_size, images.image_size, 3)


def _file_source(spec: str) -> str:
    """Where the training images of a file-based spec come from, in words."""
    kind, _, rest = spec.partition(":")
    if kind == "list":
        return "the images the list file names"
    if kind == "folder":
        layout = folder_layout(Path(rest).expanduser())
        if layout.kind == "splits":
            return f"every image under {layout.train}/ (the split layout's train split; labels not used)"
        if layout.kind == "classes":
            return "every image under the folder (its class folders are not used as labels)"
    return "every image under the folder, at any depth"
