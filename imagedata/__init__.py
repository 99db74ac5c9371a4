"""Dataset loading: every source becomes uint8 NHWC RGB train/test arrays (see ``ImageSplits``); an ImageFolder
split can also be read lazily, one decoded image per access (``FolderImages``; both splits: ``FolderSplits``)."""

from edge_encoder.imagedata.folder import FolderImages, FolderSplits
from edge_encoder.imagedata.sources import (
    DATASET_NAMES,
    default_data_root,
    load_dataset,
)
from edge_encoder.imagedata.splits import DatasetError, ImageSplits

__all__ = ["DATASET_NAMES", "DatasetError", "FolderImages", "FolderSplits", "ImageSplits", "default_data_root", "load_dataset"]
