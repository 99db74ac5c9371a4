"""The ``[data]`` config section (:class:`DataSettings`) and the one function that opens what it names.

Validated like every section (``core.config``): unknown keys, types, then the ranges below, all before a run
creates anything. ``open_splits`` is what ``stages.load_data`` calls: the dataset as arrays, or with
``stream`` its two splits listed and decoded on access.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from edge_encoder.core.config import check_types, config_from_dict, require
from edge_encoder.imagedata.decode import DEFAULT_MAX_IMAGE_PIXELS
from edge_encoder.imagedata.folder import FolderSplits
from edge_encoder.imagedata.sources import load_dataset
from edge_encoder.imagedata.splits import ImageSplits

SECTION = "data"
# The smallest side a run accepts: 2**3, the CIFAR stem's downsampling (three stride-2 stages: an 8 px image
# reaches layer4 as 1x1 maps; the ImageNet stem's /32 is coarser still), and train.config's floor for
# train.image_size / crop_size. Measured on the tiny preset (digits, width 4, 2 epochs; 2-core CPU): a ResNet
# forward, training and the FP32/FP16 export run at any side >= 1 (every stride-2 layer pads), but at 2 and
# 4 px ONNX Runtime's INT8 calibration fails (activation range [nan, nan]: a traceback after training); 5-8 px
# complete. 8 keeps one floor for the data and the train sections.
MIN_IMAGE_SIZE = 8
# The test split gives the kNN queries and the export's parity subset, and parity needs at least 2 rows
# (device.parity.compare_embeddings: measured, data.max_test = 1 ended in that traceback after training).
MIN_TEST_IMAGES = 2


PATH_SPECS = {"folder": "PATH", "images": "PATH", "list": "FILE.txt", "npz": "PATH.npz"}  # spec kinds naming a path


@dataclass(frozen=True)
class DataSettings:
    """The ``[data]`` section. ``0`` means "not set" for the size limits.

    Attributes:
        dataset: the dataset spec (``digits``, ``cifar10``, ``npz:PATH``, ``folder:PATH``...; ``imagedata.sources``).
        image_size: resize every image to this side (0 = the images' own size; else >= ``MIN_IMAGE_SIZE``).
        max_train, max_test: keep a seeded class-balanced subset of this size (0 = all; ``max_test`` >= 2).
        test_fraction: share of each class held out as test where the source has no test split, in (0, 1).
        seed: seeds the split and the subsets (>= 0).
        skip_corrupt: leave unreadable images out (listed in the report) instead of stopping.
        data_root: where torchvision datasets are read (or downloaded) from ("" = the default).
        train_data: the training images, whose labels are never read ("" = ``dataset``): also ``images:PATH``,
            ``list:FILE.txt`` or an npz holding only ``x_train`` (``imagedata.run_data``).
        eval_data: the labelled evaluation set ("" = ``dataset`` when ``train_data`` is "" too; with ``train_data``
            set, "" means none: accuracy is not measured and the report carries label-free metrics). The command
            line's ``--dataset X --train-data Y`` sets it to X.
        max_image_pixels: an image file larger than this (width x height, read from its header) is refused before
            it is decoded, naming it (``--skip-corrupt`` leaves it out): a guard against decompression bombs
            (``imagedata.decode``; default 50 Mpx).
        stream: ``folder:PATH`` datasets only: the folder is never decoded into memory. ``open_splits`` lists it
            (``imagedata.FolderSplits``); training reads the train split through DataLoader workers
            (``train.data_workers``); the channel statistics take one streamed pass over it; calibration,
            parity and kNN monitor images are the selected items, decoded and stacked; evaluation embeds both
            splits batch by batch.
    """

    dataset: str = "digits"
    image_size: int = 0
    max_train: int = 0
    max_test: int = 0
    test_fraction: float = 0.2
    seed: int = 0
    skip_corrupt: bool = False
    data_root: str = ""
    stream: bool = False
    train_data: str = ""
    eval_data: str = ""
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        check_types(SECTION, self)
        require(bool(self.dataset.strip()), SECTION, "dataset", "must name a dataset", self.dataset)
        require(self.image_size == 0 or self.image_size >= MIN_IMAGE_SIZE, SECTION, "image_size",
                f"must be 0 (the images' own size) or >= {MIN_IMAGE_SIZE}", self.image_size)
        require(self.max_train >= 0, SECTION, "max_train", "must be >= 0 (0 = all)", self.max_train)
        require(self.max_test == 0 or self.max_test >= MIN_TEST_IMAGES, SECTION, "max_test",
                f"must be 0 (all) or >= {MIN_TEST_IMAGES} (kNN and the linear probe need test queries)",
                self.max_test)
        require(0.0 < self.test_fraction < 1.0, SECTION, "test_fraction", "must lie in (0, 1)", self.test_fraction)
        require(self.seed >= 0, SECTION, "seed", "must be >= 0", self.seed)
        require(self.max_image_pixels >= 1, SECTION, "max_image_pixels", "must be >= 1 (pixels per image)",
                self.max_image_pixels)
        for key in ("dataset", "train_data", "eval_data"):  # "folder:" alone was read as the current folder
            spec = getattr(self, key).strip()
            kind, colon, rest = spec.partition(":")
            require(not (colon and kind in PATH_SPECS and not rest.strip()), SECTION, key,
                    f"names no path: give {kind}:{PATH_SPECS.get(kind, 'PATH')}", spec)
        require(not self.stream or self.train_spec.startswith(("folder:", "images:", "list:")), SECTION, "stream",
                f"only folder:PATH datasets stream from disk (and images:PATH, list:FILE training images), not "
                f"{self.train_spec!r} (set data.stream = false)", self.stream)

    @property
    def train_spec(self) -> str:
        """The spec of the training images: ``train_data``, else ``dataset`` (``imagedata.run_data.run_specs``)."""
        return (self.train_data or self.dataset).strip()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def data_settings_from_dict(values: Mapping[str, Any]) -> DataSettings:
    """The validated ``[data]`` section; ``ValueError`` naming ``data.KEY`` otherwise."""
    return config_from_dict(SECTION, DataSettings, values)


def open_splits(settings: DataSettings) -> ImageSplits | FolderSplits:
    """The dataset ``settings`` names: decoded into arrays (``ImageSplits``), or for ``stream`` its two splits
    listed and decoded on access (``FolderSplits``; ``skip_corrupt`` reads each file's header). The same
    images, order and labels either way.

    Raises:
        DatasetError: the spec, a file or an array cannot be used (the message names it).
    """
    common = dict(image_size=settings.image_size or None, test_fraction=settings.test_fraction, seed=settings.seed,
                  skip_corrupt=settings.skip_corrupt, max_train=settings.max_train or None,
                  max_test=settings.max_test or None, max_image_pixels=settings.max_image_pixels)
    if settings.stream:  # DataSettings allows it for folder:PATH datasets only
        return FolderSplits.open(settings.dataset, settings.dataset[len("folder:"):], **common)  # type: ignore[arg-type]
    data_root = Path(settings.data_root).expanduser() if settings.data_root else None
    return load_dataset(settings.dataset, data_root=data_root, **common)  # type: ignore[arg-type]
