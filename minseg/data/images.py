"""Reading the files of a dataset: image and mask files, class lists, and resizing a pair.

``read_image`` gives every image as (H, W, 3) holding its real values on one scale, the model's input
range [0, 1]; the array type says how to get there:

* 8-bit kinds stay **uint8**, read as value / 255 by ``loader.normalize``: greyscale ("L", "1"), palette
  ("P", through its palette), RGB, YCbCr, LAB, HSV and CMYK (converted to RGB by Pillow), and those with
  an alpha channel ("RGBA", "LA", "PA", ...), whose alpha is dropped: the colours are kept as stored.
* 16-bit greyscale ("I;16" and its byte orders, and "I": 32-bit integers, as older Pillows give 16-bit
  PNGs) becomes **float32** value / 65535; an "I" image with values outside 0..65535 is refused.
* 32-bit float greyscale ("F", float TIFFs) is taken as given, as **float32**: its values must lie
  in [0, 1], and NaN, infinities or values outside are refused.

So the same picture saved as 8-bit, 16-bit or float gives the same normalized batch. A mode not listed
is refused. ``as_one_kind`` makes a list of images one array type (float32 as soon as one is float).

``read_mask`` gives a mask's stored values (one per pixel, or RGB for colour masks); masks whose values
are class ids must be stored losslessly. A broken or refused file raises a ValueError naming it, so a
dataset can collect every problem before reporting (``SegmentationDataset.check``).
"""
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["IMAGE_SUFFIXES", "list_images", "read_image", "read_mask", "read_codes", "resize_pair", "resize_image",
           "target_size", "as_one_kind", "to_unit_float", "is_lossy"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Single-channel modes whose pixel values are stored numbers. For "P" these are the palette
# indices (what the file stores), never the colours the palette maps them to.
_SINGLE_CHANNEL_MODES = ("L", "P", "I", "I;16", "1")
_Resampling = getattr(Image, "Resampling", Image)  # Pillow >= 9.1 names its filters here
# Modes of 8 bits per channel that Pillow converts to RGB itself; "La" (alpha premultiplied) via "LA".
_EIGHT_BIT_MODES = ("1", "L", "P", "RGB", "RGBA", "RGBX", "RGBa", "LA", "La", "PA", "CMYK", "YCbCr", "LAB", "HSV")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


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


def _refuse(path, what):
    raise ValueError(f"image {path} {what}; save it as an 8-bit or 16-bit PNG, or a float TIFF with values in [0, 1]")


def read_image(path):
    """(H, W, 3): uint8 for 8-bit images, float32 in [0, 1] for 16-bit and float ones (see the module docstring)."""
    image = _open(path, "image")
    if image.mode in _EIGHT_BIT_MODES:
        image = image.convert("LA") if image.mode == "La" else image
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)
    if image.mode not in _SIXTEEN_BIT_MODES + ("F",):
        _refuse(path, f"has mode {image.mode!r}, which read_image does not read")
    values = np.asarray(image)
    if image.mode == "F":
        if not np.all((values >= 0) & (values <= 1)):  # False for NaN too
            bad = values[~((values >= 0) & (values <= 1))]
            _refuse(path, f"is a float image with values outside [0, 1] (e.g. {bad[0]}, {bad.size} pixels)")
        grey = values.astype(np.float32)
    else:
        if values.size and (values.min() < 0 or values.max() > 65535):
            _refuse(path, f"is a 32-bit integer image with values in {values.min()}..{values.max()}, "
                          "not the 16-bit range 0..65535")
        grey = values.astype(np.float32)
        grey /= np.float32(65535)
    return np.repeat(grey[..., None], 3, axis=-1)


def to_unit_float(image):
    """An image as float32 in [0, 1]: uint8 divided by 255 (as ``loader.normalize`` does), float32 as it is."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        pixels = image.astype(np.float32)
        pixels /= np.float32(255)
        return pixels
    return image.astype(np.float32, copy=False)


def as_one_kind(images):
    """A list of images as one array type: unchanged when all are uint8, else every one ``to_unit_float``."""
    if all(np.asarray(image).dtype == np.uint8 for image in images):
        return images
    return [to_unit_float(image) for image in images]


def is_lossy(image, path):
    """True when the file at ``path``, opened as the Pillow ``image``, was compressed lossily: JPEG, a TIFF
    with JPEG compression, or a WebP unless its first chunk is the lossless "VP8L" one."""
    if image.format in ("JPEG", "MPO"):
        return True
    if image.format == "TIFF":
        return str(image.info.get("compression", "")).lower() in ("jpeg", "tiff_jpeg")
    if image.format == "WEBP":
        with open(path, "rb") as file:
            return file.read(16)[12:16] != b"VP8L"
    return False


def read_mask(path, rgb=False, class_ids=False):
    """A mask's stored values: (H, W) from a single-channel file, or (H, W, 3) colours with ``rgb``.

    ``class_ids``: the values are the class ids themselves, so a lossily compressed file is refused:
    its artifacts would be read as other, valid, class ids. (Value maps and colour tables need no such
    check: an artifact names no class and is reported as unknown.)
    """
    mask = _open(path, "mask")
    if class_ids and is_lossy(mask, path):
        raise ValueError(f"mask {path} is a lossy {mask.format} file: its compression changes pixel values, "
                         "which would be read as other class ids; save masks as PNG")
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
    image = resize_image(image, size)
    height, width = size
    label_image = Image.fromarray(np.ascontiguousarray(label, dtype=np.int32))  # mode "I" holds -100 exactly
    label = np.asarray(label_image.resize((width, height), _Resampling.NEAREST)).astype(np.int64)
    return image, label


def resize_image(image, size):
    """An (H, W, 3) image resized bilinearly (Pillow, which also smooths when shrinking) to ``size`` = (height,
    width); uint8 stays uint8, a float image is resized channel by channel in Pillow's float mode."""
    height, width = size
    if image.dtype == np.uint8:
        return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((width, height), _Resampling.BILINEAR))
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32))
                           .resize((width, height), _Resampling.BILINEAR)) for c in range(image.shape[-1])]
    return np.clip(np.stack(channels, axis=-1), 0, 1)
