import numpy as np
import pytest

import minseg
from minseg.detection.average_precision import (
    AREA_RANGES,
    IOU_THRESHOLDS,
    RECALL_THRESHOLDS,
    MeanAveragePrecision,
    mask_iou,
    match_detections,
)

H, W = 20, 24


def rectangle(y1, x1, y2, x2):
    """A (H, W) uint8 mask covering rows y1..y2-1 and columns x1..x2-1."""
    mask = np.zeros((H, W), np.uint8)
    mask[y1:y2, x1:x2] = 1
    return mask


def box_of(mask):
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]


def instances(masks, labels, scores=None, iscrowd=None):
    """A prediction (with scores) or target dict in minseg's conventions."""
    masks = np.array(masks, np.uint8).reshape(len(masks), H, W)
    out = {"masks": masks, "labels": np.array(labels, np.int64),
           "boxes": np.array([box_of(m) for m in masks], np.float32).reshape(len(masks), 4)}
    if scores is not None:
        out["scores"] = np.array(scores, np.float32)
        out["masks"] = masks.astype(np.float32) * 0.9   # probabilities, binarized at 0.5
    if iscrowd is not None:
        out["iscrowd"] = np.array(iscrowd, np.int64)
    return out


def evaluate(preds, targets, num_classes=2, **options):
    metric = MeanAveragePrecision(num_classes, **options)
    metric.update(preds, targets)
    return metric.compute()


A, B, C = rectangle(0, 0, 10, 10), rectangle(10, 10, 20, 20), rectangle(0, 12, 6, 24)


# ---------------------------------------------------------------------------
# Cases small enough to check on paper
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_perfect_detections_score_one(iou_type):
    target = instances([A, B, C], [1, 2, 1])
    pred = instances([A, B, C], [1, 2, 1], scores=[0.9, 0.8, 0.7])
    results = evaluate([pred], [target], iou_type=iou_type)
    assert results["map"] == results["map_50"] == results["map_75"] == pytest.approx(1.0)
    assert results["map_per_class"] == pytest.approx([1.0, 1.0])


def test_a_false_positive_ranked_between_two_true_positives_gives_the_interpolated_value():
    # ranking TP, FP, TP over 2 instances: recall .5, .5, 1; precision 1, 1/2, 2/3, made monotone 1, 2/3, 2/3.
    # Recalls 0, .01, ..., .5 (51 of the 101) read 1; recalls .51, ..., 1 (50) read 2/3; at every IoU threshold.
    target = instances([A, B], [1, 1])
    pred = instances([A, C, B], [1, 1, 1], scores=[0.9, 0.8, 0.7])
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    results = evaluate([pred], [target], num_classes=1)
    assert results["map"] == pytest.approx(expected) and results["map_50"] == pytest.approx(expected)


def test_a_false_positive_ranked_first_halves_the_precision():
    # ranking FP, TP over 1 instance: precision 0 then 1/2, made monotone 1/2 at every recall
    results = evaluate([instances([C, A], [1, 1], scores=[0.9, 0.8])], [instances([A], [1])], num_classes=1)
    assert results["map"] == pytest.approx(0.5)


def test_the_iou_thresholds_count_where_the_overlap_passes():
    # 62 of the instance's 100 pixels: IoU .62 passes .50, .55, .60 and fails .65 .. .95 -> AP 3/10
    detection = rectangle(0, 0, 6, 10)
    detection[6, :2] = 1
    results = evaluate([instances([detection], [1], scores=[0.9])], [instances([A], [1])], num_classes=1)
    assert mask_iou(detection[None], A[None])[0, 0] == pytest.approx(0.62)
    assert (results["map"], results["map_50"], results["map_75"]) == pytest.approx((0.3, 1.0, 0.0))


def test_detections_on_a_crowd_region_are_neither_right_nor_wrong():
    crowd = rectangle(10, 0, 20, 24)                       # many objects at the bottom, one region
    inside = rectangle(12, 2, 15, 5)                       # IoU with the crowd region 9/240, but all inside it
    target = instances([A, crowd], [1, 1], iscrowd=[0, 1])
    pred = instances([inside, inside, A], [1, 1, 1], scores=[0.95, 0.9, 0.5])
    assert evaluate([pred], [target], num_classes=1)["map"] == pytest.approx(1.0)
    assert mask_iou(inside[None], crowd[None], iscrowd=[True])[0, 0] == pytest.approx(1.0)
    # the same region not marked crowd: the two detections are false positives ranked first, and it is missed
    not_crowd = evaluate([pred], [instances([A, crowd], [1, 1])], num_classes=1)
    assert not_crowd["map"] == pytest.approx(51 / 3 / 101)  # recall .5 at precision 1/3, nothing above it


def test_no_detections_score_zero_and_an_empty_image_changes_nothing():
    target = instances([A], [1])
    empty_pred = instances([], [], scores=[])
    assert evaluate([empty_pred], [target], num_classes=1)["map"] == 0.0
    pred = instances([A], [1], scores=[0.9])
    with_empty = evaluate([pred, empty_pred], [target, instances([], [])], num_classes=1)
    assert with_empty["map"] == pytest.approx(1.0)


def test_classes_without_ground_truth_are_nan_and_left_out_of_the_mean():
    target = instances([A], [1])
    pred = instances([A, B], [1, 2], scores=[0.9, 0.95])   # class 2's detection has nothing to find
    results = evaluate([pred], [target])
    assert results["map"] == pytest.approx(1.0)
    assert results["map_per_class"][0] == pytest.approx(1.0) and np.isnan(results["map_per_class"][1])
    assert np.isnan(evaluate([pred], [instances([], [])])["map"])


def test_area_ranges_ignore_instances_outside_them():
    small = rectangle(0, 0, 4, 4)                         # 16 pixels: COCO's "small" is up to 32 * 32
    target, pred = instances([small], [1]), instances([small], [1], scores=[0.9])
    results = evaluate([pred], [target], num_classes=1, area_ranges=AREA_RANGES)
    assert results["map"] == pytest.approx(1.0) and results["map_small"] == pytest.approx(1.0)
    assert np.isnan(results["map_medium"]) and np.isnan(results["map_large"])
    # a detection outside a range that matched nothing is left out of it: one range (0, 20) keeps only `small`
    pred_with_big = instances([small, A], [1, 1], scores=[0.8, 0.9])
    ranged = evaluate([pred_with_big], [target], num_classes=1, area_ranges={"all": (0, 20)})
    assert ranged["map"] == pytest.approx(1.0)


def test_only_the_best_max_detections_per_image_and_class_count():
    target = instances([A], [1])
    pred = instances([B, C, A], [1, 1, 1], scores=[0.9, 0.8, 0.7])
    assert evaluate([pred], [target], num_classes=1, max_detections=2)["map"] == 0.0
    assert evaluate([pred], [target], num_classes=1, max_detections=3)["map"] == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------
# The pieces against their definitions
# ---------------------------------------------------------------------------
def test_mask_iou_against_a_loop_over_pixels():
    rng = np.random.default_rng(0)
    masks1, masks2 = rng.random((3, 5, 6)) < 0.4, rng.random((4, 5, 6)) < 0.5
    masks2[3] = False
    iscrowd = np.array([False, True, False, True])
    expected = np.zeros((3, 4))
    for i, a in enumerate(masks1):
        for j, b in enumerate(masks2):
            union = a.sum() if iscrowd[j] else (a | b).sum()
            expected[i, j] = (a & b).sum() / union if union else 0.0
    np.testing.assert_allclose(mask_iou(masks1, masks2, iscrowd), expected)
    np.testing.assert_allclose(mask_iou(minseg.Tensor(masks1.astype(np.float32)), masks2, iscrowd), expected)


def test_matching_takes_the_best_free_instance_and_prefers_those_that_count():
    iou = np.array([[0.9, 0.7, 0.0],    # detections by decreasing score
                    [0.8, 0.6, 0.0],
                    [0.0, 0.0, 0.95]])
    matched, ignored = match_detections(iou, np.array([False, False, True]), np.array([False, False, False]),
                                        iou_thresholds=[0.5, 0.65, 0.85])
    np.testing.assert_array_equal(matched, [[1, 1, 1], [1, 0, 1], [1, 0, 1]])  # the 2nd takes instance 1 at .5
    np.testing.assert_array_equal(ignored, [[0, 0, 1], [0, 0, 1], [0, 0, 1]])  # the 3rd found ignored ground truth
    # a tie in IoU goes to the instance listed last (COCOeval's loop), which leaves the first to the next detection
    matched, _ = match_detections(np.array([[0.5, 0.5], [0.9, 0.0]]), np.zeros(2, bool), np.zeros(2, bool), [0.5])
    np.testing.assert_array_equal(matched, [[True, True]])
    # an instance that counts is taken over an ignored one with a higher IoU
    matched, ignored = match_detections(np.array([[0.6, 0.9]]), np.array([False, True]), np.array([False, False]))
    assert matched[0, 0] and not ignored[0, 0]


def test_thresholds_are_cocos():
    assert len(IOU_THRESHOLDS) == 10 and IOU_THRESHOLDS[0] == 0.5 and IOU_THRESHOLDS[-1] == pytest.approx(0.95)
    assert len(RECALL_THRESHOLDS) == 101 and RECALL_THRESHOLDS[50] == 0.5


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_image_by_image_equals_all_at_once(iou_type):
    rng = np.random.default_rng(1)
    shapes = [A, B, C, rectangle(3, 3, 12, 15), rectangle(5, 0, 18, 8)]
    targets, preds = [], []
    for _ in range(4):
        chosen = rng.choice(len(shapes), 3, replace=False)
        targets.append(instances([shapes[i] for i in chosen], rng.integers(1, 3, 3)))
        preds.append(instances([shapes[i] for i in rng.choice(len(shapes), 4)], rng.integers(1, 3, 4),
                               scores=rng.random(4)))
    metric = MeanAveragePrecision(2, iou_type=iou_type)
    for pred, target in zip(preds, targets):
        metric.update(pred, target)
    assert metric.compute() == evaluate(preds, targets, iou_type=iou_type)
    metric.reset()
    assert np.isnan(metric.compute()["map"]) and "images=0" in repr(metric)


def test_rectangles_score_the_same_as_masks_and_as_boxes():
    target = instances([A, B, rectangle(3, 3, 12, 15)], [1, 1, 2])
    pred = instances([rectangle(1, 0, 10, 11), B, rectangle(4, 3, 12, 14), C], [1, 1, 2, 2],
                     scores=[0.9, 0.4, 0.7, 0.8])
    assert evaluate([pred], [target], iou_type="segm") == evaluate([pred], [target], iou_type="bbox")


# ---------------------------------------------------------------------------
# Bad arguments
# ---------------------------------------------------------------------------
def test_bad_arguments_name_the_call_and_what_to_do():
    with pytest.raises(ValueError, match=r"MeanAveragePrecision: num_classes must be a positive integer, got 0"):
        MeanAveragePrecision(0)
    with pytest.raises(ValueError, match=r"iou_type must be one of \('segm', 'bbox'\), got 'mask'"):
        MeanAveragePrecision(2, iou_type="mask")
    metric = MeanAveragePrecision(2)
    with pytest.raises(ValueError, match=r"target labels must be thing classes in 1\.\.2 \(0 is background\), "
                                         r"got \[0, 1\]"):
        metric.update(instances([A], [1], scores=[0.5]), instances([A, B], [0, 1]))
    with pytest.raises(ValueError, match=r"preds and targets must list the same images, got 2 predictions"):
        metric.update([instances([A], [1], scores=[0.5])] * 2, [instances([A], [1])])
    with pytest.raises(ValueError, match=r"a pred dict must have 'scores', one per label \(1\)"):
        metric.update(instances([A], [1]), instances([A], [1]))
    with pytest.raises(ValueError, match=r"a target dict must have 'labels' and 'masks' for iou_type='segm'"):
        metric.update(instances([A], [1], scores=[0.5]), {"labels": np.array([1])})
    with pytest.raises(ValueError, match=r"a target's 'iscrowd' must have one flag per label \(1\), got 2"):
        metric.update(instances([A], [1], scores=[0.5]), instances([A], [1], iscrowd=[0, 1]))
    with pytest.raises(ValueError, match=r"mask_iou: masks1 and masks2 must be \(N, H, W\) and \(M, H, W\)"):
        mask_iou(np.zeros((1, 4, 4)), np.zeros((1, 4, 5)))
