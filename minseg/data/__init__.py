"""Data for segmentation: read any folder layout, augment, batch; fetch CamVid tiny.

Read in this order: ``masks`` (how mask pixels become class ids: index masks, value maps, colour
tables, ignored values), ``dataset`` (one class for any layout, in memory or lazy, checked whole,
split deterministically), ``layouts`` (presets: fastai, SegNet's CamVid, Pascal VOC, images/ +
masks/, the ISBI membrane slices), ``transforms`` (joint image + label augmentation), ``loader``
(seeded, normalized batches of Tensors), ``download`` (fetch and unpack CamVid tiny).
"""
from . import layouts
from .dataset import DatasetError, SegmentationDataset, channel_stats
from .download import DownloadError, download_camvid_tiny
from .loader import DataLoader
from .masks import IGNORE_INDEX, MaskDecoder, read_color_table
from .transforms import Compose, RandomCrop, RandomHorizontalFlip, RandomScale, RandomVerticalFlip

__all__ = ["download_camvid_tiny", "DownloadError", "SegmentationDataset", "DatasetError", "channel_stats",
           "MaskDecoder", "IGNORE_INDEX", "read_color_table", "layouts",
           "RandomHorizontalFlip", "RandomVerticalFlip", "RandomCrop", "RandomScale", "Compose", "DataLoader"]
