"""Data for segmentation: read any folder layout, augment, batch; fetch CamVid tiny.

Read in this order: ``images`` (reading image and mask files), ``masks`` (how mask pixels become
class ids: index masks, value maps, colour tables, ignored values), ``dataset`` (one class for any
layout, in memory or lazy, checked whole, split deterministically), ``camvid`` and ``layouts``
(presets: fastai, SegNet's CamVid, Pascal VOC, images/ + masks/, the ISBI membrane slices),
``stats`` (normalization statistics), ``transforms`` (joint image + label augmentation), ``loader``
(seeded, normalized batches of Tensors), ``download`` (fetch and unpack CamVid tiny).
For instances: ``shapes`` (the synthetic dataset), ``rle`` (COCO's mask encodings: RLE and polygons), ``coco``
(COCO instances files), ``instance_loader`` (batches of images and target dicts).
"""
from . import layouts, rle
from .coco import CocoInstances
from .dataset import DatasetError, SegmentationDataset, check_together
from .download import DownloadError, download_camvid_tiny
from .images import list_images, read_image
from .instance_loader import InstanceDataLoader, RandomHorizontalFlipInstances
from .loader import DataLoader, normalize
from .masks import IGNORE_INDEX, MaskDecoder, read_color_table, void_class
from .shapes import ShapesDataset, masks_to_boxes
from .stats import channel_stats
from .transforms import Compose, RandomCrop, RandomHorizontalFlip, RandomScale, RandomVerticalFlip

__all__ = ["download_camvid_tiny", "DownloadError", "SegmentationDataset", "DatasetError", "check_together",
           "channel_stats", "MaskDecoder", "IGNORE_INDEX", "read_color_table", "void_class", "layouts", "read_image",
           "list_images", "normalize", "RandomHorizontalFlip", "RandomVerticalFlip", "RandomCrop", "RandomScale",
           "Compose", "DataLoader", "ShapesDataset", "masks_to_boxes", "InstanceDataLoader",
           "RandomHorizontalFlipInstances", "CocoInstances", "rle"]
