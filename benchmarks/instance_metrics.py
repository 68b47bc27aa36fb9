"""minseg's instance metrics next to the references: COCO AP against pycocotools, PQ against a plain re-derivation.

    python benchmarks/instance_metrics.py                  # 40 images, seed 0
    python benchmarks/instance_metrics.py --images 200 --seeds 0 1 2

Average precision: random ground truth (rectangles and ellipses of 4 categories, one category never in the
ground truth, some crowd regions, images with no instances, with no detections, or with neither) and random
detections (shifted, grown or shrunk copies of the ground truth with a wrong label now and then, plus strays,
and one image with more than 100 detections of one category) go through ``MeanAveragePrecision`` and through
pycocotools' ``COCOeval``, for masks (segm) and for boxes (bbox). Printed per metric: AP, AP50, AP75, AP
small / medium / large, the per-category APs, both values and the largest |difference|; once with random
scores, once "tied" (scores rounded to one decimal, some ground-truth instances listed twice, and one image
where a tie in IoU changes the result: ``iou_tie_image``), where the order of ties decides.

Panoptic quality: panopticapi is not on PyPI (it installs from its GitHub repository only), so the reference here
is ``reference_pq``, a segment-by-segment loop over Python dicts written from the paper and panopticapi's
description (void handling included), against ``PanopticQuality`` on random panoptic maps.

pycocotools is needed for the AP half (``pip install pycocotools``); minseg never imports it.
"""
import argparse
import contextlib
import io

import numpy as np

from minseg.detection.average_precision import AREA_RANGES, MeanAveragePrecision
from minseg.detection.panoptic import LABEL_DIVISOR
from minseg.detection.panoptic_quality import PanopticQuality

NUM_CLASSES = 4  # class 4 never appears in the ground truth, only among the detections


# ---------------------------------------------------------------------------
# Random instances
# ---------------------------------------------------------------------------
def random_shape(rng, height, width):
    """A (H, W) bool rectangle or ellipse of random size and place."""
    h, w = rng.integers(6, height * 3 // 4), rng.integers(6, width * 3 // 4)
    y, x = rng.integers(0, height - h), rng.integers(0, width - w)
    mask = np.zeros((height, width), bool)
    if rng.random() < 0.5:
        mask[y:y + h, x:x + w] = True
    else:
        rows, cols = np.ogrid[:height, :width]
        mask[((rows - y - h / 2) / (h / 2)) ** 2 + ((cols - x - w / 2) / (w / 2)) ** 2 <= 1] = True
    return mask


def box_of(mask):
    """[x1, y1, x2, y2] in pixel-edge coordinates (minseg's convention)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def perturbed(rng, mask):
    """The mask moved by a few pixels and grown or shrunk by one, never empty."""
    moved = np.roll(mask, (rng.integers(-2, 3), rng.integers(-2, 3)), axis=(0, 1))
    grown = moved.copy()
    if rng.random() < 0.5:
        grown[1:] |= moved[:-1]
        grown[:, 1:] |= moved[:, :-1]
    else:
        grown[1:] &= moved[:-1]
        grown[:, 1:] &= moved[:, :-1]
    return grown if grown.any() else mask


def random_image(rng, index, tied=False):
    """(target, prediction) dicts of one image in minseg's conventions; ``tied``: scores rounded to one decimal
    (ties in score within and across images) and some ground-truth instances listed twice (ties in IoU)."""
    height, width = [(48, 64), (64, 64), (192, 176)][index % 3]
    kind = index % 7  # 0: no ground truth, 1: no detections, 2: neither, 3: over 100 detections of class 1
    num_gt = 0 if kind in (0, 2) else rng.integers(1, 7)
    gt_masks = [random_shape(rng, height, width) for _ in range(num_gt)]
    if tied and num_gt > 1:
        gt_masks[-1] = gt_masks[0]
    gt_labels = rng.integers(1, NUM_CLASSES, num_gt)              # 1..NUM_CLASSES-1
    crowd = rng.random(num_gt) < 0.15
    dt_masks, dt_labels, strays = [], [], 0
    if kind not in (1, 2):
        for mask, label in zip(gt_masks, gt_labels):
            for _ in range(rng.integers(0, 3)):
                dt_masks.append(perturbed(rng, mask))
                dt_labels.append(label if rng.random() < 0.85 else rng.integers(1, NUM_CLASSES + 1))
        strays = 120 if kind == 3 else rng.integers(0, 4)
        for _ in range(strays):
            dt_masks.append(random_shape(rng, height, width))
            dt_labels.append(1 if kind == 3 else rng.integers(1, NUM_CLASSES + 1))
    probabilities = [np.where(m, rng.uniform(0.5, 1.0, m.shape), rng.uniform(0.0, 0.5, m.shape)) for m in dt_masks]
    target = {"labels": np.asarray(gt_labels, np.int64), "iscrowd": crowd.astype(np.int64),
              "masks": np.array(gt_masks, np.uint8).reshape(num_gt, height, width),
              "boxes": np.array([box_of(m) for m in gt_masks], np.float32).reshape(num_gt, 4)}
    shifts = rng.integers(-2, 3, (len(dt_masks), 4)).astype(np.float32)  # detection boxes: mask boxes, jittered
    dt_boxes = np.array([box_of(m) for m in dt_masks], np.float32).reshape(-1, 4) + shifts.reshape(-1, 4)
    dt_boxes[:, 2:] = np.maximum(dt_boxes[:, 2:], dt_boxes[:, :2] + 1)
    copies = len(dt_masks) - strays  # copies of the ground truth tend to score higher than strays
    scores = np.concatenate([rng.uniform(0.3, 1.0, copies), rng.uniform(0.0, 0.7, strays)]).astype(np.float32)
    scores = np.round(scores, 1) if tied else scores
    pred = {"labels": np.asarray(dt_labels, np.int64), "scores": scores,
            "masks": np.array(probabilities, np.float32).reshape(len(dt_masks), height, width), "boxes": dt_boxes}
    return target, pred


def iou_tie_image():
    """One image where a tie in IoU decides: the first detection overlaps two instances at IoU .5 each and takes
    the one listed last, which leaves the first instance to the second detection (IoU .9)."""
    masks = np.zeros((4, 4, 24), bool)
    masks[0, :, 0:10] = masks[1, :, 10:20] = masks[2, :, 0:20] = masks[3, :, 0:9] = True
    target = {"labels": np.array([2, 2]), "iscrowd": np.zeros(2, np.int64), "masks": masks[:2].astype(np.uint8),
              "boxes": np.array([box_of(m) for m in masks[:2]], np.float32)}
    pred = {"labels": np.array([2, 2]), "scores": np.array([0.9, 0.8], np.float32),
            "masks": masks[2:].astype(np.float32), "boxes": np.array([box_of(m) for m in masks[2:]], np.float32)}
    return target, pred


# ---------------------------------------------------------------------------
# pycocotools
# ---------------------------------------------------------------------------
def xywh(box):
    return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]


def coco_eval(images, iou_type):
    """pycocotools' stats and per-category AP for the images [(target, pred), ...]."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rle(mask):
        return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))

    dataset = {"images": [], "annotations": [], "categories": [{"id": k} for k in range(1, NUM_CLASSES + 1)]}
    results = []
    for image_id, (target, pred) in enumerate(images, start=1):
        height, width = target["masks"].shape[1:] if len(target["masks"]) else pred["masks"].shape[1:]
        dataset["images"].append({"id": image_id, "height": int(height), "width": int(width)})
        for mask, box, label, crowd in zip(target["masks"], target["boxes"], target["labels"], target["iscrowd"]):
            dataset["annotations"].append({"id": len(dataset["annotations"]) + 1, "image_id": image_id,
                                           "category_id": int(label), "segmentation": rle(mask),
                                           "area": float(mask.sum()), "bbox": xywh(box), "iscrowd": int(crowd)})
        for probability, box, label, score in zip(pred["masks"], pred["boxes"], pred["labels"], pred["scores"]):
            region = {"segmentation": rle(probability >= 0.5)} if iou_type == "segm" else {"bbox": xywh(box)}
            results.append({"image_id": image_id, "category_id": int(label), "score": float(score), **region})
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO()
        ground_truth.dataset = dataset
        ground_truth.createIndex()
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(results), iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    precision = evaluation.eval["precision"][:, :, :, 0, -1]  # (T, R, K) at area "all", 100 detections
    per_class = [float(p[p > -1].mean()) if (p > -1).any() else float("nan") for p in precision.transpose(2, 0, 1)]
    names = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large"]
    return {**dict(zip(names, map(float, evaluation.stats[:6]))), "map_per_class": per_class}


def ours(images, iou_type):
    metric = MeanAveragePrecision(NUM_CLASSES, iou_type=iou_type, area_ranges=AREA_RANGES)
    for target, pred in images:
        metric.update(pred, target)
    return metric.compute()


def compare_ap(images, case):
    """Print the table; return the largest |difference| (pycocotools gives -1 where minseg gives NaN)."""
    largest = 0.0
    print(f"{'case':7} {'type':5} {'metric':16} {'minseg':>12} {'pycocotools':>12} {'|diff|':>9}")
    for iou_type in ("segm", "bbox"):
        mine, theirs = ours(images, iou_type), coco_eval(images, iou_type)
        rows = [(name, mine[name], theirs[name]) for name in theirs if name != "map_per_class"]
        rows += [(f"AP class {k + 1}", a, b) for k, (a, b) in
                 enumerate(zip(mine["map_per_class"], theirs["map_per_class"]))]
        for name, a, b in rows:
            b = float("nan") if b == -1 else b
            both_nan = np.isnan(a) and np.isnan(b)
            diff = 0.0 if both_nan else abs(a - b)
            largest = max(largest, diff if not np.isnan(diff) else np.inf)
            print(f"{case:7} {iou_type:5} {name:16} {a:12.9f} {b:12.9f} {diff:9.1e}")
    return largest


# ---------------------------------------------------------------------------
# Panoptic quality
# ---------------------------------------------------------------------------
def random_panoptic(rng, num_stuff, num_things, height=40, width=48):
    """A ground-truth map and a prediction resembling it, with void in both."""
    target = np.full((height, width), -1, np.int64)
    for category in range(num_stuff):
        target[random_shape(rng, height, width)] = category * LABEL_DIVISOR
    for instance in range(1, rng.integers(1, 6)):
        target[random_shape(rng, height, width)] = (num_stuff + rng.integers(num_things)) * LABEL_DIVISOR + instance
    pred = target.copy()
    for value in np.unique(target[target >= 0]):
        pred[perturbed(rng, target == value)] = value
    for instance in range(50, 50 + rng.integers(0, 3)):                     # strays
        pred[random_shape(rng, height, width)] = (num_stuff + rng.integers(num_things)) * LABEL_DIVISOR + instance
    pred[rng.random(pred.shape) < 0.02] = -1
    return pred, target


def reference_pq(pairs, num_stuff, num_things):
    """PQ, SQ, RQ (all, things, stuff) by a loop over segments, from the paper's definitions."""
    stats = {c: [0, 0, 0, 0.0] for c in range(num_stuff + num_things)}       # tp, fp, fn, iou sum
    for pred, target in pairs:
        gt_segments = {int(v): target == v for v in np.unique(target) if v != -1}
        pred_segments = {int(v): pred == v for v in np.unique(pred) if v != -1}
        void = target == -1
        matched_gt, matched_pred = set(), set()
        for g, gmask in gt_segments.items():
            for p, pmask in pred_segments.items():
                if g // LABEL_DIVISOR != p // LABEL_DIVISOR:
                    continue
                intersection = int((gmask & pmask).sum())
                union = int((gmask | (pmask & ~void)).sum())
                if intersection / union > 0.5:
                    stats[g // LABEL_DIVISOR][0] += 1
                    stats[g // LABEL_DIVISOR][3] += intersection / union
                    matched_gt.add(g)
                    matched_pred.add(p)
        for g in gt_segments.keys() - matched_gt:
            stats[g // LABEL_DIVISOR][2] += 1
        for p in pred_segments.keys() - matched_pred:
            if (pred_segments[p] & void).sum() / pred_segments[p].sum() <= 0.5:
                stats[p // LABEL_DIVISOR][1] += 1
    results = {}
    for suffix, categories in (("", range(num_stuff + num_things)), ("_things", range(num_stuff, num_stuff +
                                                                                           num_things)),
                               ("_stuff", range(num_stuff))):
        pq, sq, rq = [], [], []
        for c in categories:
            tp, fp, fn, iou = stats[c]
            if tp + fp + fn == 0:
                continue
            pq.append(iou / (tp + fp / 2 + fn / 2))
            sq.append(iou / tp if tp else 0.0)
            rq.append(tp / (tp + fp / 2 + fn / 2))
        for name, values in (("pq", pq), ("sq", sq), ("rq", rq)):
            results[name + suffix] = float(np.mean(values)) if values else float("nan")
    return results


def compare_pq(rng, num_images, num_stuff=3, num_things=3):
    pairs = [random_panoptic(rng, num_stuff, num_things) for _ in range(num_images)]
    metric = PanopticQuality(num_things, num_stuff)
    for pred, target in pairs:
        metric.update(pred, target)
    mine, theirs = metric.compute(), reference_pq(pairs, num_stuff, num_things)
    print(f"{'metric':12} {'minseg':>12} {'reference':>12} {'|diff|':>9}")
    largest = 0.0
    for name, b in theirs.items():
        diff = abs(mine[name] - b)
        largest = max(largest, diff)
        print(f"{name:12} {mine[name]:12.9f} {b:12.9f} {diff:9.1e}")
    return largest


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    worst_ap = worst_pq = 0.0
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        for case in ("random", "tied"):
            images = [random_image(rng, index, tied=case == "tied") for index in range(args.images)]
            images += [iou_tie_image()] if case == "tied" else []
            crowd = sum(int(t["iscrowd"].sum()) for t, _ in images)
            print(f"\nseed {seed}, {case}: {args.images} images, {sum(len(t['labels']) for t, _ in images)} "
                  f"ground-truth instances ({crowd} crowd), {sum(len(p['labels']) for _, p in images)} detections")
            worst_ap = max(worst_ap, compare_ap(images, case))
        print()
        worst_pq = max(worst_pq, compare_pq(rng, args.images))
    print(f"\nmax |diff|: AP vs pycocotools {worst_ap:.1e}, PQ vs the reference loop {worst_pq:.1e}")


if __name__ == "__main__":
    main()
