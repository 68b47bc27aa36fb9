"""Joint augmentations: the image and its label map move together, pixel for pixel.

Each transform is called as ``transform(image, label, rng)`` with ``image`` (H, W, 3) uint8 (or float32
in [0, 1], from files of more than 8 bits), ``label`` (H, W) int64 and ``rng`` a ``numpy.random.Generator``,
and returns the new ``(image, label)``. Taking the generator as an argument (instead of owning one) lets the
DataLoader seed each pass with ``default_rng([seed, epoch])``, so a resumed run draws exactly
the augmentations an uninterrupted one would.

Every transform returns a fixed output size (so samples stack into a batch): RandomCrop gives
``size``; RandomScale gives back the input's size by cropping a zoom-in and padding a zoom-out.
Padded label pixels get ``label_fill`` (default -100, ``cross_entropy``'s default
``ignore_index``), so the loss skips them; pass ``ignore_index`` to metrics too.
"""
import numpy as np
from PIL import Image

from ..arguments import pair
from .images import resize_image
from .masks import IGNORE_INDEX

__all__ = ["RandomHorizontalFlip", "RandomVerticalFlip", "RandomCrop", "RandomScale", "Compose"]

# Pillow >= 9.1 names its filters in Image.Resampling; older versions only as Image.BILINEAR.
_Resampling = getattr(Image, "Resampling", Image)


class RandomHorizontalFlip:
    """Mirror image and label left-right with probability ``p``."""

    def __init__(self, p=0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, image, label, rng):
        _check_pair(image, label, "RandomHorizontalFlip")
        if rng.random() < self.p:
            return image[:, ::-1], label[:, ::-1]
        return image, label

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class RandomVerticalFlip:
    """Mirror image and label top-bottom with probability ``p`` (for data with no "up", such as microscopy)."""

    def __init__(self, p=0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomVerticalFlip: p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, image, label, rng):
        _check_pair(image, label, "RandomVerticalFlip")
        if rng.random() < self.p:
            return image[::-1], label[::-1]
        return image, label

    def __repr__(self):
        return f"RandomVerticalFlip(p={self.p})"


class RandomCrop:
    """Cut the same random ``size`` window from image and label (torchvision's RandomCrop, jointly).

    ``padding`` pixels are first added on every side; ``pad_if_needed`` pads an image smaller
    than ``size`` up to it (evenly on both sides). Padding fills the image with ``fill`` and the
    label with ``label_fill``.
    """

    def __init__(self, size, padding=0, pad_if_needed=False, fill=0, label_fill=IGNORE_INDEX):
        self.size = pair("RandomCrop", "size", size, minimum=1)
        if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
            raise ValueError(f"RandomCrop: padding must be an integer >= 0, got {padding!r}")
        self.padding = int(padding)
        self.pad_if_needed = pad_if_needed
        self.fill = fill
        self.label_fill = label_fill

    def __call__(self, image, label, rng):
        _check_pair(image, label, "RandomCrop")
        crop_height, crop_width = self.size
        if self.padding:
            p = self.padding
            image, label = _pad(image, label, (p, p), (p, p), self.fill, self.label_fill)
        height, width = label.shape
        if self.pad_if_needed and (height < crop_height or width < crop_width):
            extra_rows, extra_cols = max(crop_height - height, 0), max(crop_width - width, 0)
            image, label = _pad(image, label, (extra_rows // 2, extra_rows - extra_rows // 2),
                                (extra_cols // 2, extra_cols - extra_cols // 2), self.fill, self.label_fill)
            height, width = label.shape
        if height < crop_height or width < crop_width:
            raise ValueError(f"RandomCrop: size {crop_height}x{crop_width} is larger than the (padded) image "
                             f"{height}x{width}; use a smaller size, padding or pad_if_needed=True")
        top = int(rng.integers(0, height - crop_height + 1))
        left = int(rng.integers(0, width - crop_width + 1))
        window = (slice(top, top + crop_height), slice(left, left + crop_width))
        return image[window], label[window]

    def __repr__(self):
        return (f"RandomCrop(size={self.size}, padding={self.padding}, pad_if_needed={self.pad_if_needed}, "
                f"fill={self.fill}, label_fill={self.label_fill})")


class RandomScale:
    """Zoom image and label by a factor drawn uniformly from ``scale``, keeping the input's size.

    The image is resized bilinearly (Pillow, which also smooths when shrinking); the label with
    nearest neighbour, since averaging class ids would invent classes. A zoom-in is then cut back
    to the original size at a random offset; a zoom-out is placed at a random offset and the
    border filled with ``fill`` (image) and ``label_fill`` (label).
    """

    def __init__(self, scale=(0.75, 1.25), fill=0, label_fill=IGNORE_INDEX):
        values = (scale, scale) if np.isscalar(scale) else tuple(scale)
        if len(values) != 2 or not 0 < values[0] <= values[1]:
            raise ValueError(f"RandomScale: scale must be (low, high) with 0 < low <= high, got {scale!r}")
        self.scale = (float(values[0]), float(values[1]))
        self.fill = fill
        self.label_fill = label_fill

    def __call__(self, image, label, rng):
        _check_pair(image, label, "RandomScale")
        height, width = label.shape
        factor = rng.uniform(*self.scale)
        new_height, new_width = max(1, round(height * factor)), max(1, round(width * factor))
        image = resize_image(image, (new_height, new_width))
        # Pillow's 32-bit integer mode "I" holds any class id (and -100) exactly.
        label_image = Image.fromarray(np.ascontiguousarray(label, dtype=np.int32))
        label = np.asarray(label_image.resize((new_width, new_height), _Resampling.NEAREST)).astype(np.int64)

        missing_rows, missing_cols = max(height - new_height, 0), max(width - new_width, 0)
        if missing_rows or missing_cols:
            top, left = int(rng.integers(0, missing_rows + 1)), int(rng.integers(0, missing_cols + 1))
            image, label = _pad(image, label, (top, missing_rows - top), (left, missing_cols - left),
                                self.fill, self.label_fill)
        top = int(rng.integers(0, label.shape[0] - height + 1))
        left = int(rng.integers(0, label.shape[1] - width + 1))
        window = (slice(top, top + height), slice(left, left + width))
        return image[window], label[window]

    def __repr__(self):
        return f"RandomScale(scale={self.scale}, fill={self.fill}, label_fill={self.label_fill})"


class Compose:
    """Apply ``transforms`` in order, all drawing from the same generator."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for transform in self.transforms:
            if not callable(transform):
                raise TypeError(f"Compose: every transform must be callable, got {transform!r}")

    def __call__(self, image, label, rng):
        for transform in self.transforms:
            image, label = transform(image, label, rng)
        return image, label

    def __repr__(self):
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


def _pad(image, label, rows, cols, fill, label_fill):
    """Pad ``rows`` = (top, bottom) and ``cols`` = (left, right) pixels around image and label."""
    image = np.pad(image, (rows, cols, (0, 0)), mode="constant", constant_values=fill)
    label = np.pad(label, (rows, cols), mode="constant", constant_values=label_fill)
    return image, label


def _check_pair(image, label, owner):
    if image.ndim != 3 or label.ndim != 2 or image.shape[:2] != label.shape:
        raise ValueError(f"{owner}: expected image (H, W, C) and label (H, W) of the same height and width, "
                         f"got image {image.shape} and label {label.shape}")
