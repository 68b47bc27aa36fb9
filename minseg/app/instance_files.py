"""``minseg predict`` for an instance model: instance ids, the panoptic map in COCO's encoding, an overlay.

A checkpoint written by ``instance_predict.save_instance_checkpoint`` (its run declares a ``task``) is predicted
by ``InstancePredictor``, one whole image at a time. For each image ``<stem>`` it writes into ``--out``:

* ``<stem>_instances.png``: a 16-bit greyscale PNG of instance ids (``instance_predict.instance_ids``): 0 where no
  instance is, k where the k-th instance by decreasing score is, the higher score on top where masks overlap;
* ``<stem>_instances.json``: each id's thing class (``label``, its name, its ``category_id``), score, box
  ``[x1, y1, x2, y2]`` and visible area in pixels;
* for a panoptic model, ``<stem>_panoptic.png`` and ``<stem>_panoptic.json`` as COCO's panoptic format stores
  one image: an RGB PNG whose pixel holds the segment id ``R + 256 G + 256² B`` (0: void), and the segments'
  ``id``, ``category_id``, ``category`` (the name), ``isthing``, ``area``, ``bbox`` ``[x, y, width, height]`` and
  ``iscrowd``. A segment's id is its value in the panoptic map plus one (``category * LABEL_DIVISOR + instance
  + 1``), so the PNG alone gives the map back; category ids are the instance conventions' (stuff first);
* ``<stem>_overlay.png``: the image with each instance blended in its own colour.

Every file is written atomically, and as for a semantic model (``files.plan_outputs``) nothing already in
``--out`` is replaced without ``--overwrite``. The flags that shape a semantic prediction (windows, flips, the CRF)
are refused in one line: an instance model predicts each image whole.
"""
import json

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..atomic import atomic_write
from ..colors import overlay, palette
from ..data.images import read_image
from ..detection.panoptic import LABEL_DIVISOR
from ..instance_predict import InstancePredictor, instance_ids, instance_ranking
from .files import _atomic_save, check_images, image_files, plan_outputs
from .options import UsageError

__all__ = ["MAX_INSTANCES", "INSTANCE_SUFFIXES", "PANOPTIC_SUFFIXES", "check_instance_flags", "save_instance_png",
           "panoptic_rgb", "segments_info", "instances_info", "predict_instance_files", "predict_instances"]

MAX_INSTANCES = 2 ** 16 - 1  # the largest id a 16-bit PNG holds
MAX_SEGMENT_ID = 2 ** 24 - 1  # the largest id three 8-bit channels hold
INSTANCE_SUFFIXES = ("_instances.png", "_instances.json", "_overlay.png")
PANOPTIC_SUFFIXES = ("_panoptic.png", "_panoptic.json")


# ---------------------------------------------------------------------------------------------
# the flags
# ---------------------------------------------------------------------------------------------
def check_instance_flags(args, name):
    """A UsageError naming every flag given that an instance model (``name``) has no use for."""
    given = [flag for flag, used in (("--tile", args.tile is not None), ("--overlap", args.overlap is not None),
                                     ("--blend", args.blend is not None), ("--tta", args.tta != "none"),
                                     ("--crf", args.crf)) if used]
    if given:
        raise UsageError(f"{' and '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to instance models "
                         f"(--checkpoint {args.checkpoint} holds {name}), which predict each image whole; leave "
                         f"{'it' if len(given) == 1 else 'them'} out")


# ---------------------------------------------------------------------------------------------
# the files of one image
# ---------------------------------------------------------------------------------------------
def save_instance_png(ids, path):
    """Instance ids (H, W), 0..MAX_INSTANCES, as a 16-bit greyscale PNG ("I;16": the pixel values are the ids)."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() > MAX_INSTANCES):
        raise ValueError(f"save_instance_png: ids must be in 0..{MAX_INSTANCES}, got {ids.min()}..{ids.max()}")
    _atomic_save(Image.fromarray(ids.astype(np.uint16)), path)


def _save_json(document, path):
    with atomic_write(path) as file:
        file.write((json.dumps(document, indent=1) + "\n").encode("utf-8"))


def panoptic_rgb(panoptic):
    """A panoptic map (H, W) (``category * LABEL_DIVISOR + instance``, -1 void) → (segment ids (H, W) int64, the
    COCO panoptic PNG's uint8 (H, W, 3) pixels): segment id = map + 1 (void: 0) = R + 256 G + 256² B."""
    ids = np.asarray(panoptic, dtype=np.int64) + 1
    if ids.size and (ids.min() < 0 or ids.max() > MAX_SEGMENT_ID):
        raise ValueError(f"panoptic_rgb: panoptic values must be in -1..{MAX_SEGMENT_ID - 1}, got "
                         f"{ids.min() - 1}..{ids.max() - 1}")
    return ids, np.stack([ids % 256, ids // 256 % 256, ids // 256 ** 2], axis=-1).astype(np.uint8)


def _bbox(mask):
    """COCO's [x, y, width, height] of a boolean (H, W) mask's pixels."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def segments_info(panoptic, categories, num_stuff):
    """COCO's ``segments_info`` of a panoptic map: one dict per segment, ordered by id (``panoptic_rgb``)."""
    ids = np.asarray(panoptic, dtype=np.int64) + 1
    segments = []
    for segment in np.unique(ids[ids > 0]):
        category, mask = int((segment - 1) // LABEL_DIVISOR), ids == segment
        segments.append({"id": int(segment), "category_id": category, "category": categories[category],
                         "isthing": int(category >= num_stuff), "area": int(mask.sum()), "bbox": _bbox(mask),
                         "iscrowd": 0})
    return segments


def instances_info(result, ids, predictor):
    """One dict per instance id of ``ids`` (``instance_ids`` of ``result``): class, score, box, visible area."""
    instances = []
    for rank, index in enumerate(instance_ranking(result, predictor.score_threshold), start=1):
        label = int(result["labels"][index])
        instances.append({"id": rank, "label": label, "category": predictor.things[label - 1],
                          "category_id": len(predictor.stuff) + label - 1, "score": float(result["scores"][index]),
                          "box": [float(v) for v in result["boxes"][index]], "area": int((ids == rank).sum())})
    return instances


def _instance_overlay(image, ids):
    """uint8 (H, W, 3): the image with instance k blended in the k-th colour of ``colors.palette``."""
    if image.dtype != np.uint8:
        image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return overlay(image, ids.astype(np.int64) - 1, palette(max(int(ids.max(initial=0)), 1)))


def _write_image(predictor, image_path, paths):
    """Predict one image and write its files (``paths``: the plan's, in the order of the suffixes)."""
    image = read_image(image_path)
    result = predictor(image)
    ranking = instance_ranking(result, predictor.score_threshold)
    if len(ranking) > MAX_INSTANCES:
        raise UsageError(f"minseg predict: {image_path} has {len(ranking)} instances scoring at least "
                         f"--score-threshold {predictor.score_threshold:g}, more than a 16-bit PNG holds "
                         f"({MAX_INSTANCES}); raise --score-threshold")
    ids = instance_ids(result, predictor.score_threshold, predictor.mask_threshold)
    instances_png, instances_json, overlay_png, *panoptic_paths = paths
    save_instance_png(ids, instances_png)
    _save_json({"image": image_path.name, "file_name": instances_png.name,
                "score_threshold": predictor.score_threshold,
                "instances": instances_info(result, ids, predictor)}, instances_json)
    if panoptic_paths:
        segment_ids, rgb = panoptic_rgb(result["panoptic"])
        _atomic_save(Image.fromarray(rgb), panoptic_paths[0])
        categories = [{"id": k, "name": name, "isthing": int(k >= len(predictor.stuff))}
                      for k, name in enumerate(predictor.categories)]
        _save_json({"image": image_path.name, "file_name": panoptic_paths[0].name,
                    "segments_info": segments_info(result["panoptic"], predictor.categories, len(predictor.stuff)),
                    "categories": categories}, panoptic_paths[1])
    _atomic_save(Image.fromarray(_instance_overlay(image, ids)), overlay_png)


def predict_instance_files(predictor, plan, progress=True):
    """For each ``(image, *paths)`` of ``plan_outputs`` (with this module's suffixes), write the files of that
    image (module docstring); returns the written instance PNGs' paths."""
    written = []
    for image_path, *paths in tqdm(plan, desc="predict", unit="image", disable=not progress, leave=False):
        try:
            paths[0].parent.mkdir(parents=True, exist_ok=True)
            _write_image(predictor, image_path, paths)
        except OSError as error:  # a full disk: say which file, and what is done
            raise UsageError(f"minseg predict: cannot write {paths[0].parent}/{image_path.stem}_*.* "
                             f"({error.strerror or error}); the files of {len(written)} of {len(plan)} images "
                             "were written before it") from error
        written.append(paths[0])
    return written


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------
def predict_instances(args, run, naming_the_checkpoint):
    """``minseg predict`` on an instance checkpoint whose run description is ``run``; ``naming_the_checkpoint``:
    the command line's context that turns a damaged checkpoint into a mistake in ``--checkpoint``."""
    spec = run.get("model")
    check_instance_flags(args, spec.get("name") if isinstance(spec, dict) else "an instance model")
    panoptic = run.get("task") == "panoptic"
    suffixes = INSTANCE_SUFFIXES + PANOPTIC_SUFFIXES * panoptic
    plan = plan_outputs(image_files(args.images), args.out, overwrite=args.overwrite, suffixes=suffixes)
    check_images([image for image, *_ in plan])
    with naming_the_checkpoint(args.checkpoint):
        predictor = InstancePredictor.from_checkpoint(args.checkpoint, device=args.device,
                                                      score_threshold=args.score_threshold)
    written = predict_instance_files(predictor, plan, progress=args.progress)
    count = f"{len(written)} image{'s' * (len(written) != 1)}"
    what = "instance ids (<stem>_instances.png, 16-bit; .json: each id's class and score)"
    if panoptic:
        what += ", panoptic maps (<stem>_panoptic.png and .json, COCO's panoptic format)"
    print(f"wrote {what} and overlays of {count} to {args.out}/")
    return 0
