"""Reading the files of a dataset: image and mask files, class lists, and resizing a pair.

``read_image`` gives every image as uint8 (H, W, 3), whatever its mode; ``read_mask`` gives a mask's stored
values (one per pixel, or RGB for colour masks). A broken file raises a ValueError naming it, so a dataset
can collect every problem before reporting (``SegmentationDataset.check``).
"""
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["IMAGE_SUFFIXES", "list_images", "read_image", "read_mask", "read_codes", "resize_pair", "target_size"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Single-channel modes whose pixel values are stored numbers. For "P" these are the palette
# indices (what the file stores), never the colours the palette maps them to.
_SINGLE_CHANNEL_MODES = ("L", "P", "I", "I;16", "1")
_Resampling = getattr(Image, "Resampling", Image)  # Pillow >= 9.1 names its filters here


def read_codes(path):
    """Class names from a text file, one per line (fastai's ``codes.txt``); blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SegmentationDataset: the class list {path} does not exist "
                                "(it names one class per line; line k is class id k)")
    codes = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not codes:
        raise ValueError(f"SegmentationDataset: the class list {path} is empty")
    return codes


def list_images(folder, where="SegmentationDataset"):
    """The image files in ``folder``, sorted; hidden files (macOS tar's "._x.png") are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{where}: the image folder {folder} does not exist")
    paths = sorted(path for path in folder.iterdir()
                   if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."))
    if not paths:
        raise ValueError(f"{where}: the image folder {folder} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    return paths


def _open(path, what):
    """The decoded Pillow image at ``path``; a broken file raises ValueError naming it."""
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not later
            return image
    # Pillow reports damage as OSError (truncated data, unknown format), SyntaxError (bad PNG
    # chunks), EOFError or ValueError depending on where the file breaks.
    except Exception as error:
        raise ValueError(f"cannot read {what} {path}: {type(error).__name__}: {error}") from error


def read_image(path):
    """uint8 (H, W, 3): RGBA drops alpha, greyscale and palette images expand to 3 channels."""
    image = _open(path, "image")
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)


def read_mask(path, rgb=False):
    """A mask's stored values: (H, W) from a single-channel file, or (H, W, 3) colours with ``rgb``."""
    mask = _open(path, "mask")
    if rgb:
        return np.asarray(mask.convert("RGB"))
    if mask.mode not in _SINGLE_CHANNEL_MODES:
        raise ValueError(f"mask {path} has mode {mask.mode!r}; this dataset reads one value per pixel "
                         "(a greyscale 'L' or palette 'P' PNG); for RGB colour masks pass a colour table")
    return np.asarray(mask)


def target_size(size, resize):
    """(height, width) after ``resize`` (None, shorter side as an int, or an exact pair)."""
    if resize is None:
        return size
    if isinstance(resize, (int, np.integer)):
        scale = resize / min(size)
        return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
    return tuple(resize)


def resize_pair(image, label, size):
    """Image bilinearly, label with nearest neighbour, to ``size`` = (height, width)."""
    if image.shape[:2] == tuple(size):
        return image, label
    height, width = size
    image = np.asarray(Image.fromarray(image).resize((width, height), _Resampling.BILINEAR))
    label_image = Image.fromarray(np.ascontiguousarray(label, dtype=np.int32))  # mode "I" holds -100 exactly
    label = np.asarray(label_image.resize((width, height), _Resampling.NEAREST)).astype(np.int64)
    return image, label
