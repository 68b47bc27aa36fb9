"""One segmentation dataset class for any folder layout: images, masks, and how one names the other.

``SegmentationDataset(image_folder, mask_folder, classes=..., mask_name=...)`` pairs every image with
its mask through ``mask_name``: a format string with ``{stem}`` (the image's name without its
extension) or ``{name}`` (the whole name), e.g. ``"{stem}_P.png"`` for fastai, ``"{stem}.png"``
(the default) when masks share their image's name. How mask pixels become class ids (index masks,
value maps, colour tables, values to ignore) is ``masks.MaskDecoder``'s business; the presets
for common layouts (fastai, SegNet's CamVid, Pascal VOC, images/ + masks/) are in ``layouts``.

In memory or lazily. By default every pair is read once, at construction: ``ds.images`` is then
uint8 (N, H, W, 3) (float32 in [0, 1] when any file has more than 8 bits: ``images.read_image``) and
``ds.labels`` int64 (N, H, W) when all images share one size, or lists of arrays when they do not.
With ``lazy=True`` only the file names are kept and ``ds[i]`` opens the files each time (``cache=True``
keeps what was read); ``ds.check()`` then reads everything once (fully decoded, so a truncated file
shows). Either way the dataset is checked whole before training, and before it is split: every broken,
missing, mis-sized or mis-labelled file is reported at once (up to ``max_problems``) in one
``DatasetError``. ``check_together`` does the same for splits kept in separate folders.

``resize`` applies at reading: an int resizes the shorter side to it, a pair ``(height, width)``
resizes exactly; images bilinearly, masks with nearest neighbour (averaging ids would invent classes).
Reading the files is ``images``'s; ``channel_stats`` (the normalization statistics) is ``stats``'.
"""
from pathlib import Path

import numpy as np

from .camvid import fastai_layout
from .images import (
    IMAGE_SUFFIXES,
    as_one_kind,
    list_images,
    read_codes,
    read_image,
    read_mask,
    resize_pair,
    target_size,
)
from .masks import IGNORE_INDEX, MaskDecoder
from .stats import channel_stats

# channel_stats, read_codes, list_images, read_image and IMAGE_SUFFIXES live in .stats and .images;
# they stay importable from here.
__all__ = ["SegmentationDataset", "DatasetError", "check_together", "channel_stats", "read_codes", "read_image",
           "list_images", "IMAGE_SUFFIXES"]


def _size(array):
    return f"{array.shape[0]}x{array.shape[1]}"


class DatasetError(ValueError):
    """A dataset with problems; ``problems`` lists every one found, each naming its file."""

    def __init__(self, where, problems, total=None):
        self.problems = list(problems)
        total = len(self.problems) if total is None else total
        self.where, self.total = where, total
        more = f"\n  ... and {total - len(self.problems)} more" if total > len(self.problems) else ""
        super().__init__(f"{where}: {total} problem{'s' * (total != 1)} in the dataset:\n  "
                         + "\n  ".join(self.problems) + more)


def check_together(*openers, max_problems=20):
    """The datasets ``opener()`` makes, each checked; one DatasetError reports every one's problems.

    For splits kept in separate folders (SegNet's train/ and val/): a problem in the second is not
    held back until the first is fixed. Each opener is a no-argument callable returning a dataset."""
    datasets, errors = [], []
    for opener in openers:
        try:
            datasets.append(opener().check())
        except DatasetError as error:
            errors.append(error)
    if errors:
        problems = [problem for error in errors for problem in error.problems]
        raise DatasetError(errors[0].where, problems[:max_problems], total=sum(error.total for error in errors))
    return datasets


# ---------------------------------------------------------------------------------------------
# the dataset
# ---------------------------------------------------------------------------------------------
class SegmentationDataset:
    """Images and per-pixel class ids; ``ds[i]`` is ``(image (H, W, 3) uint8, label (H, W) int64)``.

    The image is float32 in [0, 1] instead when its file has more than 8 bits per channel (and every
    image of an in-memory dataset that holds such a file).

    ``SegmentationDataset(root)`` alone reads fastai's layout (``layouts.fastai``). Otherwise:
    ``image_folder``, ``mask_folder``; ``classes`` (a list of names, or a file of one name per line;
    not needed with ``values``/``colors``); ``mask_name`` (see the module docstring, or a callable
    ``image_path -> mask file name``); ``values`` / ``colors`` / ``ignore`` (see ``masks``);
    ``class_colors`` ((C, 3) uint8 colours to draw the classes with, when the data has its own);
    ``names`` (only these image stems, in this order: a split list); ``resize``; ``lazy``,
    ``cache``; ``max_problems`` (how many problems one DatasetError lists).

    Attributes: ``classes`` (also ``codes``), ``num_classes``, ``class_colors`` (or None),
    ``ignore_index`` (-100: what ignored pixels hold), ``stems``, ``image_paths``, ``mask_paths``,
    and, in memory, ``images`` and ``labels``.
    """

    def __init__(self, image_folder, mask_folder=None, classes=None, mask_name="{stem}.png", values=None,
                 colors=None, ignore=(), class_colors=None, names=None, resize=None, lazy=False, cache=False,
                 max_problems=20):
        if mask_folder is None:  # the original one-argument form: a fastai folder
            kwargs = fastai_layout(image_folder)
            image_folder, mask_folder, classes, mask_name = (kwargs.pop(key) for key in
                                                             ("image_folder", "mask_folder", "classes", "mask_name"))
            class_colors = kwargs["class_colors"] if class_colors is None else class_colors
        if isinstance(classes, (str, Path)):
            classes = read_codes(classes)
        self.decoder = MaskDecoder(classes, values=values, colors=colors, ignore=ignore)
        colours = self.decoder.colors if class_colors is None else np.asarray(class_colors, dtype=np.uint8)
        self.class_colors = None if colours is None else colours[:self.decoder.num_classes]
        self.root = Path(image_folder).parent
        self.resize, self.lazy, self.cache, self.max_problems = resize, lazy, cache, max_problems
        self.ignore_index = IGNORE_INDEX
        self._cached = {}
        self._pair_files(Path(image_folder), Path(mask_folder), mask_name, names)
        if not lazy:
            self._load_all()

    # --- files ---------------------------------------------------------------------------------
    def _pair_files(self, image_folder, mask_folder, mask_name, names):
        image_paths = list_images(image_folder)
        if not mask_folder.is_dir():
            raise FileNotFoundError(f"SegmentationDataset: the mask folder {mask_folder} does not exist")
        problems = []
        if names is not None:
            by_stem = {path.stem: path for path in image_paths}
            problems += [f"{image_folder / name}.*: listed in the split but no such image" for name in names
                         if name not in by_stem]
            image_paths = [by_stem[name] for name in names if name in by_stem]
        name_of = mask_name if callable(mask_name) else (lambda path: mask_name.format(stem=path.stem, name=path.name))
        # Problems are reported when the files are read (at construction, or by check() when lazy), all at once:
        # the names of a split list without an image, then each pair's missing mask or unreadable file.
        self._listing_problems = problems
        self.image_paths, self.mask_paths = image_paths, [mask_folder / name_of(path) for path in image_paths]
        self.stems = [path.stem for path in image_paths]

    def _raise_if(self, problems, where="SegmentationDataset"):
        if problems:
            raise DatasetError(where, problems[:self.max_problems], total=len(problems))

    def read(self, index):
        """Read pair ``index`` from its files (no cache): ``(image, label)``, or ValueError naming the file."""
        image_path, mask_path = self.image_paths[index], self.mask_paths[index]
        image = read_image(image_path)
        raw = read_mask(mask_path, rgb=self.decoder.wants_rgb, class_ids=self.decoder.kind == "index")
        if raw.shape[:2] != image.shape[:2]:
            raise ValueError(f"mask {mask_path} is {_size(raw)} but its image {image_path} is {_size(image)}")
        label, unknown = self.decoder(raw)
        if unknown.size:
            lossy = " (a lossy JPEG changes values: save masks as PNG)" if mask_path.suffix.lower() in (
                ".jpg", ".jpeg") else ""
            raise ValueError(f"mask {mask_path} {self.decoder.describe(unknown)}{lossy}")
        return resize_pair(image, label, target_size(image.shape[:2], self.resize))

    def _read_every_pair(self, where, problems=()):
        """Every pair read once; every problem collected (after ``problems``), then raised together."""
        pairs, problems = [], list(problems)
        for index in range(len(self.stems)):
            if not self.mask_paths[index].is_file():
                problems.append(f"{self.image_paths[index]}: has no mask (expected {self.mask_paths[index]})")
                continue
            try:
                pairs.append(self.read(index))
            except ValueError as error:
                problems.append(str(error))
        self._raise_if(problems, where)
        return pairs

    def _load_all(self):
        pairs = self._read_every_pair("SegmentationDataset", self._listing_problems)
        images, labels = as_one_kind([image for image, _ in pairs]), [label for _, label in pairs]
        if len({image.shape for image in images}) == 1:
            images, labels = np.stack(images), np.stack(labels)
        self._set_arrays(images, labels)

    def _set_arrays(self, images, labels):
        self.images, self.labels = images, labels

    def check(self):
        """Read every pair once and raise one DatasetError listing every problem; returns self."""
        if self.lazy:
            pairs = self._read_every_pair("SegmentationDataset.check", self._listing_problems)
            if self.cache:
                self._cached = dict(enumerate(pairs))
        return self

    # --- the sequence protocol -----------------------------------------------------------------
    @property
    def classes(self):
        return self.decoder.classes

    codes = classes  # fastai's name for the class list

    @property
    def num_classes(self):
        return self.decoder.num_classes

    @property
    def in_memory(self):
        return not self.lazy

    @property
    def same_size(self):
        """True when ``images`` is one stacked array (every image has one size)."""
        return self.in_memory and isinstance(self.images, np.ndarray)

    def __len__(self):
        return len(self.stems)

    def __getitem__(self, index):
        if not self.lazy:
            return self.images[index], self.labels[index]
        if index in self._cached:
            return self._cached[index]
        pair = self.read(index)
        if self.cache:
            self._cached[index] = pair
        return pair

    def __repr__(self):
        sizes = {tuple(self[i][0].shape[:2]) for i in range(min(len(self), 1))} if self.lazy else (
            {self.images.shape[1:3]} if self.same_size else {image.shape[:2] for image in self.images})
        size = "x".join(map(str, next(iter(sizes)))) if len(sizes) == 1 else "mixed sizes"
        return (f"SegmentationDataset({len(self)} images of {size}, {self.num_classes} classes, "
                f"{'lazy' if self.lazy else 'in memory'}, root={str(self.root)!r})")

    # --- splits ------------------------------------------------------------------------------
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
        chosen = indices.tolist()
        part = object.__new__(SegmentationDataset)
        part.__dict__.update(self.__dict__)
        part.image_paths = [self.image_paths[i] for i in chosen]
        part.mask_paths = [self.mask_paths[i] for i in chosen]
        part.stems = [self.stems[i] for i in chosen]
        part._cached = {new: self._cached[old] for new, old in enumerate(chosen) if old in self._cached}
        if not self.lazy:
            if self.same_size:
                part._set_arrays(self.images[indices], self.labels[indices])
            else:
                part._set_arrays([self.images[i] for i in chosen], [self.labels[i] for i in chosen])
        return part

    def split(self, valid_every=None, valid_fraction=None, seed=0):
        """``(train, valid)``, deterministic: every k-th image, or a seeded random fraction.

        ``valid_every=k`` (the default, k = 5): image i (0-based, sorted order) is validation when
        (i + 1) % k == 0, so images 4, 9, 14, ... Neighbouring video frames (CamVid) are near-duplicates,
        so a spread-out split like this measures a little optimistically, but it is the same for every
        run. ``valid_fraction=f``: round(f·N) images (at least 1) drawn with ``default_rng(seed)``.
        """
        if valid_fraction is not None:
            if valid_every is not None:
                raise ValueError("split: pass valid_every or valid_fraction, not both")
            if not 0 < valid_fraction < 1:
                raise ValueError(f"split: valid_fraction must be in (0, 1), got {valid_fraction!r}")
            count = max(1, round(valid_fraction * len(self)))
            is_valid = np.zeros(len(self), dtype=bool)
            is_valid[np.random.default_rng(seed).permutation(len(self))[:count]] = True
        else:
            valid_every = 5 if valid_every is None else valid_every
            if isinstance(valid_every, bool) or not isinstance(valid_every, (int, np.integer)) or valid_every < 2:
                raise ValueError(f"split: valid_every must be an integer >= 2, got {valid_every!r}")
            is_valid = np.arange(len(self)) % valid_every == valid_every - 1
        return self.subset(np.flatnonzero(~is_valid)), self.subset(np.flatnonzero(is_valid))
