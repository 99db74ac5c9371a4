"""Dataset loading: every source becomes uint8 NHWC RGB train/test arrays (see ``ImageSplits``)."""

from imagedata.sources import DATASET_NAMES, default_data_root, load_dataset
from imagedata.splits import DatasetError, ImageSplits

__all__ = ["DATASET_NAMES", "DatasetError", "ImageSplits", "default_data_root", "load_dataset"]
