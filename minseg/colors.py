"""Class colours: a palette that tells classes apart, colour images of class ids, and overlays.

Matplotlib-free, so the figures (``viz``), the ``Predictor`` and the mask files written by
``minseg predict`` draw a class in one colour without importing a plotting library. A dataset's own
colours (``SegmentationDataset.class_colors``: CamVid's label_colors.txt, VOC's palette, a colour
table) win; otherwise ``palette(C)``: Kelly's colours of maximum contrast, then spread-out hues.
"""
import colorsys

import numpy as np

from . import backend
from .autograd import Tensor

__all__ = ["KELLY_COLORS", "palette", "class_colors", "colorize", "overlay"]

# Kelly (1965), "twenty-two colors of maximum contrast", without white, black, and the two yellows
# (orange yellow, greenish yellow) that sit too close to his yellow when drawn small.
KELLY_COLORS = np.array([
    (243, 195, 0), (135, 86, 146), (243, 132, 0), (161, 202, 241), (190, 0, 50), (194, 178, 128),
    (132, 132, 130), (0, 136, 86), (230, 143, 172), (0, 103, 165), (249, 147, 121), (96, 78, 151),
    (179, 68, 108), (136, 45, 23), (141, 182, 0), (101, 69, 34),
    (226, 88, 34), (43, 61, 38)], dtype=np.uint8)


def as_numpy(values):
    """A Tensor, CuPy or NumPy array (or a list) as a NumPy array on the CPU."""
    values = values.data if isinstance(values, Tensor) else values
    return np.asarray(backend.to_device(values, "cpu")) if hasattr(values, "shape") else np.asarray(values)


def palette(num_classes):
    """(num_classes, 3) uint8 colours that are easy to tell apart: Kelly's 18, then spread-out hues."""
    extra = [colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.65, 0.95)
             for k in range(max(num_classes - len(KELLY_COLORS), 0))]
    extra = np.array(extra, dtype=np.float64).reshape(-1, 3)
    return np.concatenate([KELLY_COLORS, np.round(extra * 255).astype(np.uint8)])[:num_classes]


def class_colors(num_classes, colors=None):
    """``colors`` (the dataset's own, (C, 3) uint8) when given, else ``palette(num_classes)``."""
    if colors is None:
        return palette(num_classes)
    colors = np.asarray(colors, dtype=np.uint8)
    if colors.shape != (num_classes, 3) and not (colors.ndim == 2 and len(colors) >= num_classes):
        raise ValueError(f"class_colors: colors must have shape ({num_classes}, 3), got {colors.shape}")
    return colors[:num_classes]


def colorize(label, num_classes=32, colors=None):
    """Class ids (..., H, W) → RGB uint8 (..., H, W, 3); ignored pixels (negative ids) are black."""
    label = as_numpy(label)
    table = np.concatenate([class_colors(num_classes, colors), np.zeros((1, 3), np.uint8)])
    return table[np.where(label < 0, num_classes, label)]


def overlay(image, ids, colors, alpha=0.5):
    """``image`` with the class colours blended in, ``(1 - alpha)·image + alpha·colour``; pixels with a
    negative id (ignored) keep the image.

    ``image`` (H, W, 3) is uint8 (the result is then uint8, rounded) or float in [0, 1] (what the
    figures show); ``colors`` is (C, 3) uint8.
    """
    image, ids, colors = np.asarray(image), np.asarray(ids), np.asarray(colors)
    colour = colors[np.maximum(ids, 0)]
    if image.dtype == np.uint8:
        blended = (1 - alpha) * image.astype(np.float32) + alpha * colour.astype(np.float32)
        blended = np.round(blended).astype(np.uint8)
    else:
        blended = (1 - alpha) * image + alpha * (colour / 255.0)
    return np.where((ids < 0)[..., None], image, blended)
