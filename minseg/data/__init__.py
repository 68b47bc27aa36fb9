"""Data for segmentation: fetch CamVid tiny, read a fastai-layout folder, augment, batch.

Read in this order: ``download`` (fetch and unpack the archive), ``dataset`` (the folder
read into arrays, the train/valid split, channel statistics), ``transforms`` (joint
image + label augmentation), ``loader`` (seeded, normalized batches of Tensors).
"""
from .download import download_camvid_tiny, DownloadError
from .dataset import SegmentationDataset, channel_stats
from .transforms import RandomHorizontalFlip, RandomCrop, RandomScale, Compose
from .loader import DataLoader

__all__ = ["download_camvid_tiny", "DownloadError", "SegmentationDataset", "channel_stats",
           "RandomHorizontalFlip", "RandomCrop", "RandomScale", "Compose", "DataLoader"]
