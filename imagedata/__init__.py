"""Dataset loading: every source becomes uint8 NHWC RGB train/test arrays (see ``ImageSplits``); an ImageFolder
split can also be read lazily, one decoded image per access (``FolderImages``)."""

from imagedata.folder import FolderImages
from imagedata.sources import DATASET_NAMES, default_data_root, load_dataset
from imagedata.splits import DatasetError, ImageSplits

__all__ = ["DATASET_NAMES", "DatasetError", "FolderImages", "ImageSplits", "default_data_root", "load_dataset"]
