"""Panoptic quality (Kirillov et al. 2019, "Panoptic Segmentation"): PQ = SQ × RQ, things and stuff reported apart.

A segment is one region of a panoptic map (``minseg.detection.panoptic``: category · LABEL_DIVISOR + instance,
-1 void). In each image, a predicted and a ground-truth segment of the same category *match* when their IoU is
over 0.5; over 0.5 makes the matching unique (two segments cannot both overlap one by more than half), so no
assignment problem is solved. Per category, over all images:

    TP = matched pairs      FP = unmatched predicted segments      FN = unmatched ground-truth segments
    SQ = (sum of the IoUs of the matched pairs) / TP            (segmentation quality: how well matches overlap)
    RQ = TP / (TP + FP/2 + FN/2)                                 (recognition quality: an F1 score)
    PQ = SQ × RQ = (sum of IoUs) / (TP + FP/2 + FN/2)

Void pixels (-1 in the ground truth: unlabelled) are nobody's fault, as in the paper and panopticapi: a predicted
segment's pixels on void are left out of its IoU (its area minus them), and an unmatched predicted segment that
lies more than half on void is not counted as a false positive. Void in a prediction is simply no segment.

A category is averaged only where it occurred (TP + FP + FN > 0); its per-category values are NaN otherwise. As in
panopticapi, SQ of a category that occurred but has no match is 0. Because TP, FP, FN and the IoU sums of images
add, ``PanopticQuality`` accumulates them image by image and computes at the end. Crowd regions are not modelled:
mark them void in the ground truth.
"""
import numpy as np

from .average_precision import _numpy
from .panoptic import LABEL_DIVISOR

__all__ = ["panoptic_counts", "PanopticQuality", "panoptic_quality"]

VOID = -1


def _check_map(panoptic, num_categories, where, name):
    if panoptic.size and (panoptic.min() < VOID or panoptic.max() >= num_categories * LABEL_DIVISOR):
        bad = np.unique(panoptic[(panoptic < VOID) | (panoptic >= num_categories * LABEL_DIVISOR)])[:5].tolist()
        raise ValueError(f"{where}: {name} must hold category * {LABEL_DIVISOR} + instance with a category in "
                         f"0..{num_categories - 1}, or -1 for void, got values {bad}; build it with "
                         f"merge_panoptic or panoptic_from_target")


def panoptic_counts(pred, target, num_categories):
    """TP, FP, FN (int64) and the sum of matched IoUs (float64), each (num_categories,), of one image.

    ``pred`` and ``target``: (H, W) panoptic maps. Every pair of segments is counted at once: entry [g, p] of a
    table of co-occurrences is the number of pixels in ground-truth segment g and predicted segment p.
    """
    pred, target = _numpy(pred).astype(np.int64), _numpy(target).astype(np.int64)
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"panoptic_counts: pred and target must be (H, W) maps of one shape, got {pred.shape} and "
                         f"{target.shape}")
    _check_map(pred, num_categories, "panoptic_counts", "pred")
    _check_map(target, num_categories, "panoptic_counts", "target")
    gt_ids, gt_index = np.unique(target, return_inverse=True)
    pred_ids, pred_index = np.unique(pred, return_inverse=True)
    overlap = np.bincount(gt_index.ravel() * len(pred_ids) + pred_index.ravel(),
                          minlength=len(gt_ids) * len(pred_ids)).reshape(len(gt_ids), len(pred_ids))
    on_void = overlap[0] if gt_ids[0] == VOID else np.zeros(len(pred_ids), np.int64)  # pred pixels on void
    gt_real, pred_real = gt_ids != VOID, pred_ids != VOID
    gt_area, pred_area = overlap.sum(axis=1), overlap.sum(axis=0)
    same_category = (gt_ids[:, None] // LABEL_DIVISOR) == (pred_ids[None, :] // LABEL_DIVISOR)
    union = gt_area[:, None] + (pred_area - on_void)[None, :] - overlap
    iou = np.where(same_category & gt_real[:, None] & pred_real[None, :], overlap / np.maximum(union, 1), 0.0)
    match = iou > 0.5
    gt_matched, pred_matched = match.any(axis=1), match.any(axis=0)
    false_positive = pred_real & ~pred_matched & (on_void <= 0.5 * pred_area)

    def per_category(segment_ids, weights=None):
        return np.bincount(segment_ids // LABEL_DIVISOR, weights, minlength=num_categories)[:num_categories]

    g, p = np.nonzero(match)
    return (per_category(gt_ids[g]).astype(np.int64), per_category(pred_ids[false_positive]).astype(np.int64),
            per_category(gt_ids[gt_real & ~gt_matched]).astype(np.int64),
            per_category(gt_ids[g], iou[g, p]).astype(np.float64))


def _quality(tp, fp, fn, iou_sum):
    """Per-category (pq, sq, rq), NaN where the category did not occur (TP + FP + FN = 0)."""
    occurred = tp + fp + fn > 0
    denominator = tp + 0.5 * fp + 0.5 * fn
    pq, sq, rq = (np.full(len(tp), np.nan) for _ in range(3))
    pq[occurred] = iou_sum[occurred] / denominator[occurred]
    rq[occurred] = tp[occurred] / denominator[occurred]
    sq[occurred] = np.where(tp[occurred] > 0, iou_sum[occurred] / np.maximum(tp[occurred], 1), 0.0)
    return pq, sq, rq


def _nanmean(values):
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else float("nan")


class PanopticQuality:
    """Accumulates TP, FP, FN and IoU sums per category; ``compute()`` gives PQ, SQ, RQ.

    Categories follow minseg's panoptic convention: 0..num_stuff-1 are stuff, num_stuff..num_stuff+num_things-1
    are things. ``update(pred, target)`` takes panoptic maps (H, W) or batches (N, H, W).
    """

    def __init__(self, num_things, num_stuff):
        for name, value in (("num_things", num_things), ("num_stuff", num_stuff)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"PanopticQuality: {name} must be an integer >= 0, got {value!r}")
        if num_things + num_stuff == 0:
            raise ValueError("PanopticQuality: num_things + num_stuff must be at least 1, got 0 and 0")
        self.num_things, self.num_stuff = num_things, num_stuff
        self.reset()

    @property
    def num_categories(self):
        return self.num_stuff + self.num_things

    def reset(self):
        """Forget every image seen."""
        self.true_positive = np.zeros(self.num_categories, np.int64)
        self.false_positive = np.zeros(self.num_categories, np.int64)
        self.false_negative = np.zeros(self.num_categories, np.int64)
        self.iou_sum = np.zeros(self.num_categories, np.float64)

    def update(self, pred, target):
        """Add the segments of one image (H, W) or of a batch (N, H, W), each image matched on its own."""
        pred, target = _numpy(pred), _numpy(target)
        if pred.shape != target.shape or pred.ndim not in (2, 3):
            raise ValueError(f"PanopticQuality.update: pred and target must be panoptic maps (H, W) or (N, H, W) "
                             f"of one shape, got {pred.shape} and {target.shape}")
        for one_pred, one_target in zip(pred.reshape(-1, *pred.shape[-2:]), target.reshape(-1, *target.shape[-2:])):
            tp, fp, fn, iou_sum = panoptic_counts(one_pred, one_target, self.num_categories)
            self.true_positive += tp
            self.false_positive += fp
            self.false_negative += fn
            self.iou_sum += iou_sum

    def compute(self):
        """A dict: "pq", "sq", "rq" over every category that occurred, the same with "_things" and "_stuff" over
        those groups, and "per_class_pq", "per_class_sq", "per_class_rq" (lists indexed by category, NaN where the
        category did not occur)."""
        pq, sq, rq = _quality(self.true_positive, self.false_positive, self.false_negative, self.iou_sum)
        groups = {"": slice(None), "_things": slice(self.num_stuff, None), "_stuff": slice(0, self.num_stuff)}
        results = {}
        for suffix, part in groups.items():
            for name, values in (("pq", pq), ("sq", sq), ("rq", rq)):
                results[name + suffix] = _nanmean(values[part])
        results.update(per_class_pq=pq.tolist(), per_class_sq=sq.tolist(), per_class_rq=rq.tolist())
        return results

    def __repr__(self):
        return (f"PanopticQuality(num_things={self.num_things}, num_stuff={self.num_stuff}, "
                f"matches={int(self.true_positive.sum())})")


def panoptic_quality(pred, target, num_things, num_stuff):
    """``PanopticQuality(num_things, num_stuff)`` over one image or batch: the dict of ``compute()``."""
    metric = PanopticQuality(num_things, num_stuff)
    metric.update(pred, target)
    return metric.compute()
