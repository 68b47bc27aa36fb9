"""Panoptic maps: one segment id per pixel, and Panoptic FPN's merge of instances and semantic stuff into one.

A panoptic map is int64 (H, W) with ``category * LABEL_DIVISOR + instance`` per pixel: categories 0..num_stuff-1
are stuff (instance 0: one segment per category), category num_stuff + (label - 1) is thing class ``label``
(instance 1, 2, ...: one segment per object), and -1 is void (unlabelled, or nothing predicted).

``merge_panoptic`` is the heuristic of the Panoptic FPN paper (Kirillov et al. 2019, sec. 3; detectron2 calls it
``combine_semantic_and_instance_outputs``). Instances are pasted in order of decreasing score, each on the pixels
no earlier instance took; an instance whose mask is mostly taken already (more than ``overlap_threshold`` of
it; at 0.5, its visible part is under half) is dropped, and so are instances scoring under ``score_threshold``. Then the
semantic head's stuff fills the pixels still free: its argmax over the stuff classes and the one "things" class,
the "things" class left void (the instance head owns things). A stuff region with fewer than ``stuff_area``
pixels is left void too: small stuff regions are mostly noise, and void costs nothing in PQ where a wrong
segment costs a false positive. The paper's defaults are 0.5, 0.5 and 4096 pixels (for COCO's ~800-pixel
images); scale ``stuff_area`` with the image area for small images.
"""
import numpy as np

from .average_precision import _numpy

__all__ = ["LABEL_DIVISOR", "VOID", "panoptic_from_target", "merge_panoptic"]

LABEL_DIVISOR = 1000
VOID = -1
IGNORE_INDEX = -100  # "semantic" value of unlabelled pixels in a target


def _check_count(value, name, where, lowest):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lowest:
        raise ValueError(f"{where}: {name} must be an integer >= {lowest}, got {value!r}")


def panoptic_from_target(target, num_stuff):
    """The ground-truth panoptic map (H, W) of one image's target dict ("labels", "masks", "semantic").

    Stuff pixels come from "semantic" (its category, instance 0); -100 pixels are void. A thing pixel belongs to
    the instance whose mask covers it and whose category "semantic" shows there, the one listed last when several
    do (drawn on top); instance i of the target (from 0) gets instance id i + 1. A thing pixel no instance claims
    is void.
    """
    where = "panoptic_from_target"
    _check_count(num_stuff, "num_stuff", where, 0)
    semantic = _numpy(target["semantic"]).astype(np.int64)
    labels = _numpy(target["labels"]).astype(np.int64).reshape(-1)
    masks = _numpy(target["masks"]).astype(bool)
    if masks.shape != (len(labels), *semantic.shape):
        raise ValueError(f"{where}: masks must be (N, H, W) with N = {len(labels)} labels and (H, W) = "
                         f"{semantic.shape} as semantic, got {masks.shape}")
    if len(labels) >= LABEL_DIVISOR:
        raise ValueError(f"{where}: an image must have fewer than {LABEL_DIVISOR} instances, got {len(labels)}")
    if labels.size and labels.min() < 1:
        raise ValueError(f"{where}: labels must be thing classes >= 1 (0 is background), got {labels.tolist()}")
    panoptic = np.full(semantic.shape, VOID, np.int64)
    stuff = (semantic >= 0) & (semantic < num_stuff)
    panoptic[stuff] = semantic[stuff] * LABEL_DIVISOR
    for index, (label, mask) in enumerate(zip(labels, masks)):
        category = num_stuff + label - 1
        panoptic[mask & (semantic == category)] = category * LABEL_DIVISOR + index + 1
    return panoptic


def _semantic_ids(semantic, num_stuff, shape, where):
    """Per-pixel semantic class (H, W) from logits (num_stuff + 1, H, W) or from class ids (H, W)."""
    semantic = _numpy(semantic)
    if semantic.ndim == 3 and semantic.shape[0] == num_stuff + 1:
        semantic = semantic.argmax(axis=0)
    if semantic.shape != shape:
        raise ValueError(f"{where}: semantic must be logits ({num_stuff + 1}, H, W) or class ids (H, W) with "
                         f"(H, W) = {shape}, got {semantic.shape}")
    return semantic.astype(np.int64)


def merge_panoptic(instances, semantic, num_stuff, overlap_threshold=0.5, score_threshold=0.5, stuff_area=4096,
                   mask_threshold=0.5):
    """Panoptic FPN's merge (module docstring): the panoptic map (H, W) int64 of one image.

    ``instances``: a dict "masks" (K, H, W) probabilities (or (K, 1, H, W)), "scores" (K,), "labels" (K,) thing
    classes 1..num_things; a mask is the pixels where the probability is >= ``mask_threshold``. ``semantic``:
    the semantic head's logits (num_stuff + 1, H, W) (classes 0..num_stuff-1 stuff, num_stuff "things") or its
    argmax (H, W). Thing segments get instance ids 1, 2, ... in the order they were pasted.
    """
    where = "merge_panoptic"
    _check_count(num_stuff, "num_stuff", where, 0)
    _check_count(stuff_area, "stuff_area", where, 0)
    masks, scores = _numpy(instances["masks"]), _numpy(instances["scores"]).reshape(-1)
    labels = _numpy(instances["labels"]).astype(np.int64).reshape(-1)
    masks = masks.reshape(len(masks), *masks.shape[-2:]) >= mask_threshold
    if not len(masks) == len(scores) == len(labels):
        raise ValueError(f"{where}: instances must have one mask, score and label each, got {len(masks)} masks, "
                         f"{len(scores)} scores and {len(labels)} labels")
    if labels.size and labels.min() < 1:
        raise ValueError(f"{where}: labels must be thing classes >= 1 (0 is background), got {labels.tolist()}")
    semantic = _semantic_ids(semantic, num_stuff, masks.shape[1:], where)
    panoptic = np.full(semantic.shape, VOID, np.int64)
    taken = np.zeros(semantic.shape, bool)
    instance_id = 0
    for k in np.argsort(-scores, kind="stable"):
        if scores[k] < score_threshold:
            break
        visible = masks[k] & ~taken
        area, hidden = masks[k].sum(), (masks[k] & taken).sum()
        if area == 0 or hidden > overlap_threshold * area:
            continue  # mostly hidden behind better-scoring instances
        instance_id += 1
        panoptic[visible] = (num_stuff + labels[k] - 1) * LABEL_DIVISOR + instance_id
        taken |= visible
    for category in range(num_stuff):
        region = (semantic == category) & ~taken
        if region.sum() >= stuff_area:
            panoptic[region] = category * LABEL_DIVISOR
    return panoptic
