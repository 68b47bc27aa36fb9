"""A semantic segmentation dataset in fastai's layout, read into memory once.

The layout (fastai's CAMVID / CAMVID_TINY)::

    root/codes.txt              class names, one per line; line k names class id k
    root/images/<stem>.png      the photographs (any mode Pillow reads: RGB, RGBA, greyscale, palette)
    root/labels/<stem>_P.png    one class id per pixel, as a greyscale ("L") or palette ("P") image

Everything is loaded eagerly into two arrays, ``images`` uint8 (N, H, W, 3) and ``labels`` int64
(N, H, W): CamVid tiny is 100 images of 96x128 pixels, under 15 MB in all, and a training loop then
only slices arrays. (A dataset too large for memory would read files lazily in ``__getitem__``
instead.) Stacking needs every image to have the same size.
"""
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["SegmentationDataset", "channel_stats", "read_codes", "IMAGE_SUFFIXES", "LABEL_SUFFIX"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LABEL_SUFFIX = "_P.png"
# Modes whose pixel values are the class ids themselves. For "P" these are the palette
# indices (what the file stores), never the colours the palette maps them to.
_LABEL_MODES = ("L", "P", "I", "I;16", "1")


class SegmentationDataset:
    """Images and per-pixel class ids from ``root`` (see the module docstring for the layout).

    Attributes: ``images`` uint8 (N, H, W, 3), ``labels`` int64 (N, H, W), ``codes`` (class
    names), ``num_classes``, ``stems`` (file names without extension, in sorted order), ``root``.
    ``ds[i]`` is ``(image (H, W, 3) uint8, label (H, W) int64)``.
    """

    def __init__(self, root):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"SegmentationDataset: the dataset folder {root} does not exist")
        codes = read_codes(root / "codes.txt")
        image_paths = _list_images(root / "images")
        label_folder = root / "labels"
        if not label_folder.is_dir():
            raise FileNotFoundError(f"SegmentationDataset: the label folder {label_folder} does not exist")

        images, labels = [], []
        for image_path in image_paths:
            label_path = label_folder / (image_path.stem + LABEL_SUFFIX)
            if not label_path.is_file():
                raise FileNotFoundError(f"SegmentationDataset: image {image_path} has no label: "
                                        f"expected {label_path}")
            image = _read_image(image_path)
            label = _read_label(label_path)
            if label.shape != image.shape[:2]:
                raise ValueError(f"SegmentationDataset: label {label_path} is {_size(label)} but its image "
                                 f"{image_path} is {_size(image)} (height x width)")
            if images and image.shape != images[0].shape:
                raise ValueError(f"SegmentationDataset: image {image_path} is {_size(image)} but "
                                 f"{image_paths[0]} is {_size(images[0])}; all images must share one size "
                                 "to be stacked into one array (resize them first)")
            _check_class_ids(label, label_path, len(codes))
            images.append(image)
            labels.append(label)
        self._set(root, np.stack(images), np.stack(labels), codes, [path.stem for path in image_paths])

    def _set(self, root, images, labels, codes, stems):
        self.root = root
        self.images = images
        self.labels = labels
        self.codes = codes
        self.stems = stems

    @property
    def num_classes(self):
        return len(self.codes)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]

    def __repr__(self):
        height, width = self.images.shape[1:3]
        return (f"SegmentationDataset({len(self)} images of {height}x{width}, "
                f"{self.num_classes} classes, root={str(self.root)!r})")

    def subset(self, indices):
        """A new dataset holding the images at ``indices`` (a sequence of ints), in that order."""
        indices = np.asarray(indices)
        if indices.size == 0:
            indices = indices.astype(np.int64)  # np.asarray([]) is float64
        if indices.ndim != 1 or indices.dtype.kind not in "iu":
            raise TypeError(f"subset: indices must be a 1-D sequence of integers, got {indices.dtype} "
                            f"with shape {indices.shape}")
        out_of_range = indices[(indices < 0) | (indices >= len(self))]
        if out_of_range.size:
            raise IndexError(f"subset: indices {sorted(set(out_of_range.tolist()))} are out of range "
                             f"for a dataset of {len(self)} images")
        part = object.__new__(SegmentationDataset)
        part._set(self.root, self.images[indices], self.labels[indices], list(self.codes),
                  [self.stems[i] for i in indices.tolist()])
        return part

    def split(self, valid_every=5):
        """``(train, valid)``: image k (0-based, sorted order) is validation when (k + 1) % valid_every == 0.

        So with the default, images 4, 9, 14, ... (the 5th, 10th, ...) are validation: 20 of 100.
        Neighbouring CamVid frames are near-duplicates, so a spread-out split like this one
        measures a little optimistically, but it is the same for every run.
        """
        if isinstance(valid_every, bool) or not isinstance(valid_every, (int, np.integer)) or valid_every < 2:
            raise ValueError(f"split: valid_every must be an integer >= 2, got {valid_every!r}")
        is_valid = np.arange(len(self)) % valid_every == valid_every - 1
        return self.subset(np.flatnonzero(~is_valid)), self.subset(np.flatnonzero(is_valid))


def channel_stats(dataset):
    """Per-channel ``(mean, std)`` of ``dataset.images`` scaled to [0, 1], each float32 of shape (3,).

    The std is the population one (divide by the pixel count). Use the training split's numbers
    to normalize both training and validation batches.
    """
    images = dataset.images
    if images.size == 0:
        raise ValueError("channel_stats: the dataset holds no images")
    mean = np.empty(3, dtype=np.float32)
    std = np.empty(3, dtype=np.float32)
    for channel in range(3):
        # float64 on purpose: a float32 running sum over ~10^6 pixels would lose digits.
        values = images[..., channel].astype(np.float64) / 255.0
        mean[channel] = values.mean()
        std[channel] = values.std()
    return mean, std


def read_codes(path):
    """Class names from ``codes.txt``, one per line; blank lines are skipped (as fastai does)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SegmentationDataset: the class list {path} does not exist "
                                "(it names one class per line; line k is class id k)")
    codes = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not codes:
        raise ValueError(f"SegmentationDataset: the class list {path} is empty")
    return codes


def _list_images(folder):
    if not folder.is_dir():
        raise FileNotFoundError(f"SegmentationDataset: the image folder {folder} does not exist")
    # Names starting with "." are hidden files, such as the "._x.png" that macOS tar adds.
    paths = sorted(path for path in folder.iterdir()
                   if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."))
    if not paths:
        raise ValueError(f"SegmentationDataset: the image folder {folder} holds no images "
                         f"(looked for {', '.join(IMAGE_SUFFIXES)})")
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
        raise ValueError(f"SegmentationDataset: cannot read {what} {path}: {type(error).__name__}: {error}") from error


def _read_image(path):
    image = _open(path, "image")
    if image.mode != "RGB":
        image = image.convert("RGB")  # RGBA drops alpha; greyscale and palette expand to 3 channels
    return np.asarray(image, dtype=np.uint8)


def _read_label(path):
    label = _open(path, "label")
    if label.mode not in _LABEL_MODES:
        raise ValueError(f"SegmentationDataset: label {path} has mode {label.mode!r}; labels must hold one "
                         f"class id per pixel, as a greyscale ('L') or palette ('P') PNG")
    return np.asarray(label).astype(np.int64)


def _check_class_ids(label, path, num_classes):
    if label.min() >= 0 and label.max() < num_classes:
        return
    bad = np.unique(label[(label < 0) | (label >= num_classes)]).tolist()
    shown = bad if len(bad) <= 10 else bad[:10] + ["..."]
    raise ValueError(f"SegmentationDataset: label {path} holds class ids {shown}, but codes.txt lists "
                     f"{num_classes} classes (ids 0 to {num_classes - 1})")


def _size(array):
    return f"{array.shape[0]}x{array.shape[1]}"
