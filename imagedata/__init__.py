"""Dataset loading: every source becomes uint8 NHWC RGB train/test arrays (see ``ImageSplits``); an ImageFolder
split can also be read lazily, one decoded image per access (``FolderImages``; both splits: ``FolderSplits``).
``open_run_data`` gives a run its training images (labels never read) and its evaluation set (``RunData``)."""

from edge_encoder.imagedata.folder import FolderImages, FolderSplits
from edge_encoder.imagedata.sources import (
    DATASET_NAMES,
    default_data_root,
    load_dataset,
)
from edge_encoder.imagedata.run_data import RunData, open_run_data
from edge_encoder.imagedata.splits import DatasetError, ImageSplits, require_classes

__all__ = ["DATASET_NAMES", "DatasetError", "FolderImages", "FolderSplits", "ImageSplits", "RunData", "default_data_root",
           "load_dataset", "open_run_data", "require_classes"]
