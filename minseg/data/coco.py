"""Instance data in COCO's JSON format: the format a user's own instance annotations usually come in.

``CocoInstances(images_folder, annotation_file)`` reads an instances file (``{"images": [...], "annotations":
[...], "categories": [...]}``, as COCO's ``instances_train2017.json`` or a labelling tool's export) and gives
``ds[i] = (image (H, W, 3) uint8, target)`` with the instance target of ``ShapesDataset`` (the image is float32
in [0, 1] when its file has more than 8 bits per channel, as ``images.read_image`` reads it):

* ``labels`` are contiguous, 1..K: the COCO category ids sorted, the smallest becomes 1 (COCO's own ids run
  1..90 with gaps). ``category_ids[k - 1]`` is the COCO id of label k, ``things[k - 1]`` its name.
* ``masks`` (N, H, W) from each annotation's ``segmentation``: polygons or RLE, compressed or not
  (``rle``), drawn as pycocotools draws them. Masks may overlap, as annotated.
* ``boxes`` are recomputed from the masks (pixel-edge extents, ``shapes.masks_to_boxes``); the file's ``bbox``
  is not read, so a box that disagrees with its mask is no error. An instance whose mask is empty (a polygon
  thinner than a pixel) is left out, as torchvision's reference drops boxes of no area.
* ``semantic`` (H, W): the category (``label - 1``: a plain instances file has no stuff, so
  ``num_stuff`` is 0) of each pixel inside an instance, later annotations painted over earlier ones, and
  -100 everywhere else: background is unlabelled here. COCO's stuff classes come in separate files.
* ``iscrowd`` (N,) and ``image_id``: crowd annotations (``iscrowd: 1``, a region of many objects) are left out
  of the targets, as torchvision's detection reference trains, and their pixels are -100 in ``semantic``;
  ``include_crowd=True`` keeps them, flagged 1 in ``iscrowd`` (for evaluation). A missing ``iscrowd`` is 0.

Checked eagerly, at construction, because it is cheap: the JSON's structure, every key an image, annotation
or category needs, duplicate ids, unknown image or category ids, and the form of each segmentation (and an
RLE's size against its image's height and width); every problem is listed in one ``DatasetError``, one line
each naming the file. Checked lazily, when an image is read (or by ``check()``, which reads them all): the
image file exists, decodes, and has the JSON's height and width; a compressed RLE decodes to that size.
"""
import json
from pathlib import Path

import numpy as np

from .dataset import DatasetError
from .images import read_image
from .masks import IGNORE_INDEX
from .rle import _short, polygons_to_mask, rle_decode
from .shapes import masks_to_boxes

__all__ = ["CocoInstances"]

_WHERE = "CocoInstances"


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _missing(entry, keys):
    return [key for key in keys if key not in entry]


# ---------------------------------------------------------------------------------------------
# checking the JSON
# ---------------------------------------------------------------------------------------------
def _segmentation_problem(segmentation, height, width):
    """What is wrong with the form of a segmentation (None when nothing): polygons or an RLE dict."""
    if isinstance(segmentation, list):
        if not segmentation:
            return "segmentation must hold at least one polygon, got []"
        for polygon in segmentation:
            if (not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2
                    or not all(_is_number(v) and np.isfinite(v) for v in polygon)):
                return ("segmentation must be polygons [[x1, y1, x2, y2, ...], ...] of at least 3 points (an even "
                        f"count of at least 6 numbers), got {_short(polygon)}")
        return None
    if isinstance(segmentation, dict):
        if _missing(segmentation, ("counts", "size")):
            return f"segmentation RLE must have 'counts' and 'size', got keys {sorted(segmentation)}"
        if segmentation["size"] != [height, width]:
            return (f"segmentation RLE size must be the image's [height, width] = [{height}, {width}], "
                    f"got {_short(segmentation['size'])}")
        counts = segmentation["counts"]
        if isinstance(counts, str):
            return None  # decoded (and checked) when the image is read
        if not isinstance(counts, list) or not all(_is_int(c) and c >= 0 for c in counts):
            return f"segmentation RLE counts must be a string or a list of integers >= 0, got {_short(counts)}"
        if sum(counts) != height * width:
            return (f"segmentation RLE counts must sum to height x width = {height * width}, got {sum(counts)}")
        return None
    return f"segmentation must be polygons (a list) or an RLE dict, got {_short(segmentation)}"


def _check_list(data, key, path, problems):
    """The list ``data[key]`` of objects, or None (and a problem) when it is not one."""
    entries = data.get(key) if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        problems.append(f"{path}: '{key}' must be a list of objects, got {_short(entries)}")
        return None
    return entries


def _check_ids(entries, what, required, path, problems, valid):
    """``{id: entry}`` of the entries with every required key of the right type, problems for the others, and
    the ids already reported (of broken entries; None when the list itself is broken: all of them), so an
    annotation that names one is not reported a second time."""
    if entries is None:
        return {}, None
    by_id, reported = {}, set()
    for index, entry in enumerate(entries):
        if isinstance(entry.get("id"), (int, str)) and not isinstance(entry.get("id"), bool):
            reported.add(entry["id"])
        missing = _missing(entry, required)
        if missing:
            names = ", ".join(map(repr, missing))
            problems.append(f"{path}: {what} {index} (id {entry.get('id', '?')}): has no {names}")
            continue
        problem = valid(entry)
        if problem:
            problems.append(f"{path}: {what} {index} (id {entry['id']!r}): {problem}")
        elif entry["id"] in by_id:
            problems.append(f"{path}: {what} {index}: id {entry['id']} is used twice")
        else:
            by_id[entry["id"]] = entry
            reported.discard(entry["id"])
    return by_id, reported


def _names_reported(value, reported):
    try:
        return reported is None or value in reported
    except TypeError:  # an unhashable id: reported by the annotation's own check
        return False


def _image_problem(image):
    if not _is_int(image["id"]):
        return f"id must be an integer, got {_short(image['id'])}"
    if not isinstance(image["file_name"], str) or not image["file_name"]:
        return f"file_name must be a file name, got {_short(image['file_name'])}"
    if not all(_is_int(image[key]) and image[key] > 0 for key in ("height", "width")):
        return f"height and width must be integers > 0, got {_short(image['height'])} and {_short(image['width'])}"
    return None


def _category_problem(category):
    if not _is_int(category["id"]):
        return f"id must be an integer, got {_short(category['id'])}"
    if not isinstance(category["name"], str):
        return f"name must be a string, got {_short(category['name'])}"
    return None


# ---------------------------------------------------------------------------------------------
# the dataset
# ---------------------------------------------------------------------------------------------
class CocoInstances:
    """The images of a COCO instances file with their instance targets (the module docstring says what each
    holds). Images in the order of their ids.

    ``include_crowd``: keep crowd annotations in the targets (flagged in ``iscrowd``).
    ``remove_images_without_annotations``: leave out images with no (non-crowd) annotation, as torchvision's
    reference does for training. ``max_problems``: how many problems one DatasetError lists.

    Attributes: ``things`` (category names, label k is ``things[k - 1]``), ``category_ids`` (their COCO ids),
    ``label_of`` (COCO id -> label), ``num_things``, ``stuff`` (empty) and ``num_stuff`` (0), ``categories``
    (the semantic map's category names), ``image_ids``, ``image_paths``.
    """

    stuff = ()
    num_stuff = 0

    def __init__(self, images_folder, annotation_file, include_crowd=False, remove_images_without_annotations=False,
                 max_problems=20):
        self.images_folder, self.annotation_file = Path(images_folder), Path(annotation_file)
        self.include_crowd, self.max_problems = include_crowd, max_problems
        if not self.annotation_file.is_file():
            raise FileNotFoundError(f"{_WHERE}: the annotation file {self.annotation_file} does not exist")
        if not self.images_folder.is_dir():
            raise FileNotFoundError(f"{_WHERE}: the image folder {self.images_folder} does not exist")
        try:
            data = json.loads(self.annotation_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise DatasetError(_WHERE, [f"{self.annotation_file}: is not valid JSON: {error}"]) from None
        images, categories = self._check(data)
        self.category_ids = sorted(categories)
        self.label_of = {category_id: k + 1 for k, category_id in enumerate(self.category_ids)}
        self.things = tuple(categories[category_id]["name"] for category_id in self.category_ids)
        self.num_things = len(self.things)
        self.categories = self.things
        self.image_ids = sorted(images)
        if remove_images_without_annotations:
            self.image_ids = [i for i in self.image_ids if any(not a.get("iscrowd", 0) for a in self._annotations[i])]
        self._images = images
        self.image_paths = [self.images_folder / images[i]["file_name"] for i in self.image_ids]

    def _check(self, data):
        """``images`` and ``categories`` by id, ``self._annotations`` by image id; one DatasetError for every
        problem of the JSON's structure."""
        path, problems = self.annotation_file, []
        if not isinstance(data, dict):
            raise DatasetError(_WHERE, [f"{path}: must hold a JSON object with 'images', 'annotations' and "
                                        f"'categories', got {type(data).__name__}"])
        images, bad_images = _check_ids(_check_list(data, "images", path, problems), "image",
                                        ("id", "file_name", "height", "width"), path, problems, _image_problem)
        categories, bad_categories = _check_ids(_check_list(data, "categories", path, problems), "category",
                                                ("id", "name"), path, problems, _category_problem)
        self._annotations = {image_id: [] for image_id in images}
        for index, annotation in enumerate(_check_list(data, "annotations", path, problems) or []):
            if _names_reported(annotation.get("image_id"), bad_images) or _names_reported(
                    annotation.get("category_id"), bad_categories):
                continue  # its image or category is reported already
            problem = self._annotation_problem(annotation, images, categories)
            if problem:
                problems.append(f"{path}: annotation {index} (id {annotation.get('id', '?')}): {problem}")
            else:
                self._annotations[annotation["image_id"]].append(annotation)
        if problems:
            raise DatasetError(_WHERE, problems[:self.max_problems], total=len(problems))
        return images, categories

    @staticmethod
    def _annotation_problem(annotation, images, categories):
        missing = _missing(annotation, ("id", "image_id", "category_id", "segmentation"))
        if missing:
            return f"has no {', '.join(map(repr, missing))}"
        if annotation["image_id"] not in images:
            return f"image_id {_short(annotation['image_id'])} names no image of the file"
        if annotation["category_id"] not in categories:
            return (f"category_id {_short(annotation['category_id'])} names no category of the file "
                    f"(known: {sorted(categories)})")
        if annotation.get("iscrowd", 0) not in (0, 1) or isinstance(annotation.get("iscrowd"), bool):
            return f"iscrowd must be 0 or 1, got {_short(annotation['iscrowd'])}"
        image = images[annotation["image_id"]]
        return _segmentation_problem(annotation["segmentation"], image["height"], image["width"])

    # --- reading ---------------------------------------------------------------------------------
    def __len__(self):
        return len(self.image_ids)

    def __getitem__(self, index):
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"{_WHERE}: index must be an integer, got {index!r}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"{_WHERE}: index {index} is out of range for {len(self)} images")
        try:
            return self.read(int(index) % len(self))
        except ValueError as error:  # one line, naming the call, then the file and what is wrong with it
            raise ValueError(f"{_WHERE}: {error}") from None

    def read(self, index):
        """``(image, target)`` of image ``index``, read from its file; a ValueError names the file and what is
        wrong with it."""
        image_id = self.image_ids[index]
        info, path = self._images[image_id], self.image_paths[index]
        if not path.is_file():
            raise ValueError(f"{path}: image {image_id} of {self.annotation_file} has no such file")
        image = read_image(path)
        height, width = info["height"], info["width"]
        if image.shape[:2] != (height, width):
            raise ValueError(f"{path}: is {image.shape[0]}x{image.shape[1]} (height x width) but "
                             f"{self.annotation_file} says {height}x{width}")
        return image, self._target(image_id, height, width)

    def _target(self, image_id, height, width):
        masks, labels, crowd = [], [], []
        semantic = np.full((height, width), IGNORE_INDEX, dtype=np.int64)
        for annotation in self._annotations[image_id]:
            is_crowd = int(annotation.get("iscrowd", 0))
            if is_crowd and not self.include_crowd:
                continue  # its pixels stay -100 unless another instance covers them
            mask = self._mask(annotation, height, width)
            if mask.any():
                label = self.label_of[annotation["category_id"]]
                semantic[mask.astype(bool)] = label - 1
                masks.append(mask)
                labels.append(label)
                crowd.append(is_crowd)
        masks = np.stack(masks) if masks else np.zeros((0, height, width), dtype=np.uint8)
        return {"boxes": masks_to_boxes(masks), "labels": np.array(labels, dtype=np.int64), "masks": masks,
                "semantic": semantic, "iscrowd": np.array(crowd, dtype=np.int64), "image_id": image_id}

    def _mask(self, annotation, height, width):
        segmentation = annotation["segmentation"]
        if isinstance(segmentation, list):
            return polygons_to_mask(segmentation, height, width)
        try:
            return rle_decode(segmentation)
        except ValueError as error:
            raise ValueError(f"{self.annotation_file}: annotation id {annotation['id']}: segmentation RLE "
                             f"{str(error).removeprefix('rle_decode: ')}") from None

    def check(self):
        """Read every image once and raise one DatasetError listing every problem; returns self."""
        problems = []
        for index in range(len(self)):
            try:
                self.read(index)
            except ValueError as error:
                problems.append(str(error))
        if problems:
            raise DatasetError(f"{_WHERE}.check", problems[:self.max_problems], total=len(problems))
        return self

    def __repr__(self):
        return (f"CocoInstances({len(self)} images, {self.num_things} categories, "
                f"annotation_file={str(self.annotation_file)!r})")

