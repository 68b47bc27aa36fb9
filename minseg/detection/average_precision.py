"""COCO-style average precision of instance masks (or boxes): AP over the IoU thresholds .50:.05:.95, AP50, AP75.

For one category, the detections of every image are ranked by score. Walking down the ranking, a detection is a
true positive when it matched a ground-truth instance of its image, else a false positive; after the k-th detection

    precision_k = TP_k / (TP_k + FP_k)        recall_k = TP_k / (number of ground-truth instances)

The precision is made monotone (at each recall, the best precision at that recall or beyond) and read at the 101
recalls 0, .01, ..., 1 (the first ranking position reaching that recall; 0 past the last); their mean is the AP at
one IoU threshold. COCO's AP is the mean over the ten thresholds .50, .55, ..., .95 and over the categories that
have ground truth; AP50 and AP75 use the thresholds .5 and .75 alone.

Matching, per image and category, at each threshold: the detections in order of decreasing score, each takes the
ground-truth instance it overlaps most among those not taken yet, if that IoU is at least the threshold. Two kinds
of ground truth are *ignored*: crowd regions ("iscrowd", one region over many objects) and instances whose area is
outside the area range evaluated. A detection prefers an instance that counts to an ignored one; a detection
matched to an ignored one is left out (neither TP nor FP), and ignored ground truth is not in the recall's
denominator. A crowd region's IoU is intersection / (detection area), and a crowd region can absorb many
detections. A detection that matched nothing and whose own area is outside the range is left out too.

What follows pycocotools' ``COCOeval`` to the letter, so that the numbers agree (``benchmarks/instance_metrics.py``
compares them): at most ``max_detections`` (100) detections per image *and category*, the highest scores; ties in
score keep the order the detections came in (images in the order of ``update``); on a tie in IoU the
ground-truth instance listed last wins; precision is TP / (TP + FP + eps) with eps = ``np.spacing(1)``. A
ground-truth instance's area is its mask's pixel count when the target has masks (COCO's "area", also for box
AP), else its box's area; a detection's area is its mask's or its box's. Masks are binarized by
``probability >= mask_threshold``.

Mask IoU between two sets of masks is one matrix product of the flattened masks (``mask_iou``).
"""
import numpy as np

from .. import backend
from ..autograd import Tensor
from ..functional.boxes import box_area, box_intersection

__all__ = ["IOU_THRESHOLDS", "RECALL_THRESHOLDS", "AREA_RANGES", "mask_iou", "match_detections",
           "MeanAveragePrecision"]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
AREA_RANGES = {"all": (0, 1e10), "small": (0, 32 ** 2), "medium": (32 ** 2, 96 ** 2), "large": (96 ** 2, 1e10)}
IOU_TYPES = ("segm", "bbox")


def _numpy(value):
    """A NumPy array of ``value`` (a Tensor's data, a CuPy array copied to the host)."""
    value = value.data if isinstance(value, Tensor) else value
    return np.asarray(backend.to_device(value, "cpu") if hasattr(value, "shape") else value)


def _ratio(numerator, denominator):
    """numerator / denominator, 0 where the denominator is 0 (two empty regions do not overlap)."""
    out = np.zeros(np.broadcast_shapes(numerator.shape, denominator.shape))
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


# ---------------------------------------------------------------------------
# Overlaps
# ---------------------------------------------------------------------------
def _mask_overlaps(masks1, masks2):
    """(areas1 (N,), areas2 (M,), intersections (N, M)) of binary masks: one product of the flattened masks.

    float32 counts whole numbers exactly up to 2**24, so it is used for images with fewer pixels (half the memory
    of float64); the counts are returned as float64.
    """
    pixels = masks1.shape[1] * masks1.shape[2]
    dtype = np.float32 if pixels < 2 ** 24 else np.float64
    flat1 = masks1.reshape(len(masks1), pixels).astype(dtype)
    flat2 = masks2.reshape(len(masks2), pixels).astype(dtype)
    areas1, areas2 = flat1.sum(axis=1, dtype=np.float64), flat2.sum(axis=1, dtype=np.float64)
    return areas1, areas2, (flat1 @ flat2.T).astype(np.float64)


def _box_overlaps(boxes1, boxes2):
    """(areas1 (N,), areas2 (M,), intersections (N, M)) of [x1, y1, x2, y2] boxes."""
    return box_area(boxes1), box_area(boxes2), box_intersection(boxes1, boxes2)


def _iou(areas_dt, areas_gt, intersections, iscrowd):
    """(D, G) IoU; for a crowd column the denominator is the detection's area alone."""
    unions = areas_dt[:, None] + areas_gt[None, :] - intersections
    unions = np.where(iscrowd[None, :], areas_dt[:, None], unions)
    return _ratio(intersections, unions)


def mask_iou(masks1, masks2, iscrowd=None):
    """(N, M) float64 IoU between binary masks (N, H, W) and (M, H, W): |A ∩ B| / |A ∪ B|, 0 when both are empty.

    Where ``iscrowd[j]`` is true, column j is |A ∩ B| / |A| (COCO's IoU with a crowd region).
    """
    masks1, masks2 = _numpy(masks1).astype(bool), _numpy(masks2).astype(bool)
    if masks1.ndim != 3 or masks2.ndim != 3 or masks1.shape[1:] != masks2.shape[1:]:
        raise ValueError(f"mask_iou: masks1 and masks2 must be (N, H, W) and (M, H, W) with the same H, W, got "
                         f"{masks1.shape} and {masks2.shape}")
    iscrowd = np.zeros(len(masks2), bool) if iscrowd is None else _numpy(iscrowd).astype(bool)
    return _iou(*_mask_overlaps(masks1, masks2), iscrowd)


# ---------------------------------------------------------------------------
# Matching one image's detections of one category
# ---------------------------------------------------------------------------
def _best_match(iou_row, threshold, available, gt_ignore):
    """The ground truth a detection takes, -1 if none: among the available ones with IoU >= ``threshold``, those
    that count before ignored ones, then the highest IoU, the last one listed on a tie."""
    candidates = available & (iou_row >= threshold)
    if not candidates.any():
        return -1
    counting = candidates & ~gt_ignore
    if counting.any():
        candidates = counting
    return np.flatnonzero(candidates & (iou_row == iou_row[candidates].max()))[-1]


def match_detections(iou, gt_ignore, gt_crowd, iou_thresholds=IOU_THRESHOLDS):
    """COCO's greedy matching; ``iou`` is (D, G) with the detections sorted by decreasing score.

    Returns (matched, ignored), bool (T, D) for the T thresholds: ``matched`` where the detection took a ground
    truth, ``ignored`` where that ground truth is ignored (``gt_ignore``). Crowd regions (``gt_crowd``) stay
    available after a match. A threshold of 1 is read as 1 - 1e-10, as COCO does.
    """
    order = np.argsort(gt_ignore, kind="stable")  # instances that count first, as COCOeval lists them
    iou, gt_ignore, gt_crowd = iou[:, order], gt_ignore[order], gt_crowd[order]
    matched = np.zeros((len(iou_thresholds), len(iou)), bool)
    ignored = np.zeros_like(matched)
    for t, threshold in enumerate(iou_thresholds):
        taken = np.zeros(len(gt_ignore), bool)
        for d in range(len(iou)):
            g = _best_match(iou[d], min(threshold, 1 - 1e-10), ~taken | gt_crowd, gt_ignore)
            if g >= 0:
                matched[t, d], ignored[t, d], taken[g] = True, gt_ignore[g], True
    return matched, ignored


# ---------------------------------------------------------------------------
# Precision at the 101 recalls
# ---------------------------------------------------------------------------
def _precision_at_recalls(true_positive, false_positive, num_gt):
    """(101,) interpolated precision of one ranking (bool arrays in rank order) with ``num_gt`` instances."""
    tp, fp = np.cumsum(true_positive, dtype=np.float64), np.cumsum(false_positive, dtype=np.float64)
    recall = tp / num_gt
    precision = tp / (tp + fp + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the best precision at this recall or beyond
    positions = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
    reached = positions < len(precision)
    out = np.zeros(len(RECALL_THRESHOLDS))
    out[reached] = precision[positions[reached]]
    return out


def _class_average_precision(records, num_gt):
    """(T,) AP of one category and area range at each threshold, NaN without ground truth that counts.

    ``records``: one (scores, matched (T, D), ignored (T, D)) per image, each image's detections sorted by score.
    """
    if num_gt == 0:
        return np.full(len(IOU_THRESHOLDS), np.nan)
    if not records:
        return np.zeros(len(IOU_THRESHOLDS))
    scores = np.concatenate([scores for scores, _, _ in records])
    order = np.argsort(-scores, kind="stable")
    matched = np.concatenate([matched for _, matched, _ in records], axis=1)[:, order]
    ignored = np.concatenate([ignored for _, _, ignored in records], axis=1)[:, order]
    return np.array([_precision_at_recalls(m & ~i, ~m & ~i, num_gt).mean() for m, i in zip(matched, ignored)])


# ---------------------------------------------------------------------------
# Reading one image's dicts
# ---------------------------------------------------------------------------
def _read_instances(instances, iou_type, mask_threshold, where, name):
    """labels (N,), regions (bool masks or float64 boxes), region areas (N,), and the dict's other arrays."""
    if not isinstance(instances, dict):
        raise TypeError(f"{where}: each {name} must be a dict with 'labels' and 'masks' or 'boxes', got "
                        f"{type(instances).__name__}")
    key = "masks" if iou_type == "segm" else "boxes"
    if key not in instances or "labels" not in instances:
        raise ValueError(f"{where}: a {name} dict must have 'labels' and '{key}' for iou_type={iou_type!r}, got "
                         f"keys {sorted(instances)}")
    labels = _numpy(instances["labels"]).astype(np.int64).reshape(-1)
    regions = _numpy(instances[key])
    if iou_type == "segm":
        regions = regions.reshape(len(regions), *regions.shape[-2:]) >= mask_threshold
        areas = regions.sum(axis=(1, 2)).astype(np.float64)
    else:
        regions = regions.astype(np.float64).reshape(-1, 4)
        areas = (regions[:, 2] - regions[:, 0]) * (regions[:, 3] - regions[:, 1])
    if len(regions) != len(labels):
        raise ValueError(f"{where}: a {name} dict has {len(labels)} labels but {len(regions)} {key}; give one "
                         f"label per instance")
    return labels, regions, areas


class MeanAveragePrecision:
    """COCO's mask AP (``iou_type="segm"``) or box AP (``"bbox"``), accumulated image by image.

    ``update(preds, targets)`` takes lists of per-image dicts (or one dict each), torchvision's words:
    a prediction has "labels" (K,), "scores" (K,) and "masks" (K, H, W) probabilities (or "boxes" (K, 4)); a
    target has "labels" (N,), "masks" (N, H, W) of 0/1 (or "boxes") and optionally "iscrowd" (N,). Labels are
    thing classes 1..num_classes. ``area_ranges``: name -> (lowest, highest) area, default {"all": any area};
    pass ``AREA_RANGES`` for COCO's small, medium and large too. ``compute()`` gives the metrics of every image
    since the last ``reset()``.
    """

    def __init__(self, num_classes, iou_type="segm", area_ranges=None, max_detections=100, mask_threshold=0.5):
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"MeanAveragePrecision: num_classes must be a positive integer, got {num_classes!r}")
        if iou_type not in IOU_TYPES:
            raise ValueError(f"MeanAveragePrecision: iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
        area_ranges = {"all": AREA_RANGES["all"]} if area_ranges is None else dict(area_ranges)
        if not area_ranges:
            raise ValueError("MeanAveragePrecision: area_ranges must name at least one range, got {}; leave it None "
                             "for all areas")
        if isinstance(max_detections, bool) or not isinstance(max_detections, (int, np.integer)) or max_detections < 1:
            raise ValueError(f"MeanAveragePrecision: max_detections must be a positive integer, got "
                             f"{max_detections!r}")
        self.num_classes, self.iou_type, self.area_ranges = num_classes, iou_type, area_ranges
        self.max_detections, self.mask_threshold = max_detections, mask_threshold
        self.reset()

    def reset(self):
        """Forget every image seen."""
        self._records = {(k, name): [] for k in range(self.num_classes) for name in self.area_ranges}
        self._num_gt = {key: 0 for key in self._records}
        self.num_images = 0

    def _check_labels(self, labels, name):
        if labels.size and (labels.min() < 1 or labels.max() > self.num_classes):
            raise ValueError(f"MeanAveragePrecision.update: {name} labels must be thing classes in "
                             f"1..{self.num_classes} (0 is background), got {np.unique(labels).tolist()}")

    def update(self, preds, targets):
        """Add images: ``preds`` and ``targets`` are lists of per-image dicts of the same length (or one dict)."""
        if isinstance(preds, dict) and isinstance(targets, dict):
            preds, targets = [preds], [targets]
        if len(preds) != len(targets):
            raise ValueError(f"MeanAveragePrecision.update: preds and targets must list the same images, got "
                             f"{len(preds)} predictions and {len(targets)} targets")
        for pred, target in zip(preds, targets):
            self._update_image(pred, target)

    def _update_image(self, pred, target):
        where = "MeanAveragePrecision.update"
        dt_labels, dt_regions, dt_areas = _read_instances(pred, self.iou_type, self.mask_threshold, where, "pred")
        gt_labels, gt_regions, gt_areas = _read_instances(target, self.iou_type, 0.5, where, "target")
        if "scores" not in pred or len(_numpy(pred["scores"]).reshape(-1)) != len(dt_labels):
            raise ValueError(f"{where}: a pred dict must have 'scores', one per label ({len(dt_labels)})")
        self._check_labels(dt_labels, "pred")
        self._check_labels(gt_labels, "target")
        if self.iou_type == "segm" and dt_regions.shape[1:] != gt_regions.shape[1:]:
            raise ValueError(f"{where}: pred and target masks must have the same (H, W), got "
                             f"{dt_regions.shape[1:]} and {gt_regions.shape[1:]}")
        scores = _numpy(pred["scores"]).reshape(-1)
        crowd = _numpy(target.get("iscrowd", np.zeros(len(gt_labels)))).reshape(-1).astype(bool)
        if len(crowd) != len(gt_labels):
            raise ValueError(f"{where}: a target's 'iscrowd' must have one flag per label ({len(gt_labels)}), got "
                             f"{len(crowd)}")
        if "masks" in target:  # COCO's annotation area is the mask's, for box AP too
            gt_areas = _read_instances(target, "segm", 0.5, where, "target")[2]
        for label in np.union1d(dt_labels, gt_labels):
            d = np.flatnonzero(dt_labels == label)
            d = d[np.argsort(-scores[d], kind="stable")][:self.max_detections]
            g = np.flatnonzero(gt_labels == label)
            overlaps = _mask_overlaps if self.iou_type == "segm" else _box_overlaps
            iou = _iou(*overlaps(dt_regions[d], gt_regions[g]), crowd[g])
            for name, (lowest, highest) in self.area_ranges.items():
                gt_ignore = crowd[g] | (gt_areas[g] < lowest) | (gt_areas[g] > highest)
                matched, ignored = match_detections(iou, gt_ignore, crowd[g])
                ignored |= ~matched & ((dt_areas[d] < lowest) | (dt_areas[d] > highest))
                self._records[label - 1, name].append((scores[d], matched, ignored))
                self._num_gt[label - 1, name] += int((~gt_ignore).sum())
        self.num_images += 1

    def compute(self):
        """A dict of floats and lists: "map" (AP over .50:.95), "map_50", "map_75", "map_per_class" (index i is
        label i + 1, NaN for a class without ground truth) for the area range "all", and "map_<name>" for every
        other range. Means leave out the classes without ground truth; NaN when no class has any."""
        results = {}
        t50, t75 = (int(np.flatnonzero(np.isclose(IOU_THRESHOLDS, t))[0]) for t in (0.5, 0.75))
        for name in self.area_ranges:
            per_class = np.stack([_class_average_precision(self._records[k, name], self._num_gt[k, name])
                                  for k in range(self.num_classes)])                  # (K, T)
            present = ~np.isnan(per_class[:, 0])
            means = per_class[present].mean(axis=0) if present.any() else np.full(len(IOU_THRESHOLDS), np.nan)
            if name == "all":
                results.update(map=float(means.mean()), map_50=float(means[t50]), map_75=float(means[t75]),
                               map_per_class=per_class.mean(axis=1).tolist())
            else:
                results[f"map_{name}"] = float(means.mean())
        return results

    def __repr__(self):
        return (f"MeanAveragePrecision(num_classes={self.num_classes}, iou_type={self.iou_type!r}, "
                f"area_ranges={list(self.area_ranges)}, images={self.num_images})")
