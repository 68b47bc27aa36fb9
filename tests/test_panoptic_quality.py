import numpy as np
import pytest

import minseg
from minseg.detection.panoptic import LABEL_DIVISOR
from minseg.detection.panoptic_quality import PanopticQuality, panoptic_counts, panoptic_quality

STUFF, THING = 0, 1  # one stuff category, one thing category (num_stuff=1, num_things=1)


def segment(category, instance=0):
    return category * LABEL_DIVISOR + instance


# A 4x6 image worked by hand:
#   target: stuff in columns 0-2 (12 px); thing #1 rows 0-1, columns 3-5 (6 px); thing #2 rows 2-3 (6 px).
#   pred:   stuff in columns 0-3 (16 px); thing #7 rows 0-1, columns 4-5 (4 px); thing #8 rows 2-3, column 4
#           (2 px); rows 2-3, column 5 void.
# stuff: IoU 12/16 = .75 > .5, a match.  thing #7 vs #1: IoU 4/6 > .5, a match.  thing #8 vs #2: 2/6, no match:
# one FP and one FN.  things: PQ = (2/3) / (1 + 1/2 + 1/2) = 1/3, SQ = 2/3, RQ = 1/2;  stuff: PQ = SQ = .75, RQ = 1.
TARGET = np.full((4, 6), segment(STUFF))
TARGET[0:2, 3:6] = segment(THING, 1)
TARGET[2:4, 3:6] = segment(THING, 2)
PRED = np.full((4, 6), segment(STUFF))
PRED[0:2, 4:6] = segment(THING, 7)
PRED[2:4, 4] = segment(THING, 8)
PRED[2:4, 5] = -1


def test_the_hand_worked_example():
    tp, fp, fn, iou_sum = panoptic_counts(PRED, TARGET, 2)
    np.testing.assert_array_equal(tp, [1, 1])
    np.testing.assert_array_equal(fp, [0, 1])
    np.testing.assert_array_equal(fn, [0, 1])
    np.testing.assert_allclose(iou_sum, [0.75, 2 / 3])
    results = panoptic_quality(PRED, TARGET, num_things=1, num_stuff=1)
    assert (results["pq_things"], results["sq_things"], results["rq_things"]) == pytest.approx((1 / 3, 2 / 3, 0.5))
    assert (results["pq_stuff"], results["sq_stuff"], results["rq_stuff"]) == pytest.approx((0.75, 0.75, 1.0))
    assert results["pq"] == pytest.approx((1 / 3 + 0.75) / 2) and results["rq"] == pytest.approx(0.75)
    assert results["per_class_pq"] == pytest.approx([0.75, 1 / 3])
    assert panoptic_quality(minseg.Tensor(PRED), TARGET, 1, 1) == results


def test_void_pixels_are_left_out_of_the_iou_and_segments_mostly_on_void_are_not_false_positives():
    target = np.full((2, 6), -1)
    target[:, 0:2] = segment(THING, 1)                   # 4 px
    pred = np.full((2, 6), -1)
    pred[:, 0:3] = segment(THING, 1)                     # 6 px, 2 of them on void: IoU 4 / (4 + 6 - 4 - 2) = 1
    pred[:, 3:6] = segment(THING, 2)                     # wholly on void: not a false positive
    tp, fp, fn, iou_sum = panoptic_counts(pred, target, 2)
    assert (tp[THING], fp[THING], fn[THING], iou_sum[THING]) == (1, 0, 0, pytest.approx(1.0))


def test_a_segment_is_excused_only_when_more_than_half_of_it_is_on_void():
    target = np.full((2, 4), segment(STUFF))
    target[0, 2:4] = -1
    pred = np.full((2, 4), segment(STUFF))              # stuff: 4 of the 6 stuff pixels, a match
    pred[:, 2:4] = segment(THING, 5)                     # 4 px, 2 on void: exactly half, a false positive
    assert panoptic_counts(pred, target, 2)[1].tolist() == [0, 1]
    pred[1, 3] = segment(STUFF)                          # 3 px, 2 on void: excused
    assert panoptic_counts(pred, target, 2)[1].tolist() == [0, 0]


def test_an_iou_of_exactly_one_half_is_not_a_match():
    target = np.full((2, 4), segment(STUFF))
    target[:, 0:2] = segment(THING, 1)                   # 4 px
    pred = np.full((2, 4), segment(STUFF))
    pred[0, 0:2] = segment(THING, 1)                     # 2 px inside it: IoU 2/4
    tp, fp, fn, _ = panoptic_counts(pred, target, 2)
    assert (tp[THING], fp[THING], fn[THING]) == (0, 1, 1)


def test_segments_of_different_categories_never_match():
    target = np.full((3, 3), segment(STUFF))
    pred = np.full((3, 3), segment(THING, 1))
    tp, fp, fn, _ = panoptic_counts(pred, target, 2)
    assert (tp.tolist(), fp.tolist(), fn.tolist()) == ([0, 0], [0, 1], [1, 0])
    results = panoptic_quality(pred, target, 1, 1)
    assert results["pq"] == results["sq"] == results["rq"] == 0.0


def test_categories_that_never_occur_are_nan_and_left_out():
    target = np.where(TARGET >= LABEL_DIVISOR, TARGET + 2 * LABEL_DIVISOR, TARGET)  # things as category 3
    results = panoptic_quality(target, target, num_things=2, num_stuff=2)  # categories 1 (stuff), 2 unused
    assert results["per_class_pq"][0] == results["per_class_pq"][3] == 1.0
    assert np.isnan(results["per_class_pq"][1]) and np.isnan(results["per_class_pq"][2])
    assert results["pq"] == results["pq_things"] == results["pq_stuff"] == 1.0
    only_stuff = panoptic_quality(np.zeros((2, 2), np.int64), np.zeros((2, 2), np.int64), 1, 1)
    assert only_stuff["pq_stuff"] == 1.0 and np.isnan(only_stuff["pq_things"])


def reference_counts(pred, target, num_categories):
    """TP, FP, FN, IoU sum by a loop over every pair of segments, from the definitions."""
    tp, fp, fn, iou_sum = (np.zeros(num_categories) for _ in range(4))
    void = target == -1
    gts, preds = [v for v in np.unique(target) if v >= 0], [v for v in np.unique(pred) if v >= 0]
    matched_gt, matched_pred = set(), set()
    for g in gts:
        for p in preds:
            gmask, pmask = target == g, (pred == p) & ~void
            iou = (gmask & pmask).sum() / (gmask | pmask).sum()
            if g // LABEL_DIVISOR == p // LABEL_DIVISOR and iou > 0.5:
                tp[g // LABEL_DIVISOR] += 1
                iou_sum[g // LABEL_DIVISOR] += iou
                matched_gt.add(g)
                matched_pred.add(p)
    for g in set(gts) - matched_gt:
        fn[g // LABEL_DIVISOR] += 1
    for p in set(preds) - matched_pred:
        if ((pred == p) & void).sum() <= 0.5 * (pred == p).sum():
            fp[p // LABEL_DIVISOR] += 1
    return tp, fp, fn, iou_sum


@pytest.mark.parametrize("seed", range(5))
def test_counts_against_a_loop_over_segment_pairs(seed):
    rng = np.random.default_rng(seed)
    target = segment(rng.integers(0, 3, (12, 12)), rng.integers(0, 3, (12, 12)))
    target[rng.random(target.shape) < 0.1] = -1
    pred = target.copy()
    flip = rng.random(pred.shape) < 0.3
    pred[flip] = segment(rng.integers(0, 3, flip.sum()), rng.integers(0, 3, flip.sum()))
    for ours, theirs in zip(panoptic_counts(pred, target, 3), reference_counts(pred, target, 3)):
        np.testing.assert_allclose(ours, theirs)


def test_images_add_and_a_batch_equals_its_images():
    second = np.rot90(TARGET).copy()
    metric = PanopticQuality(num_things=1, num_stuff=1)
    metric.update(PRED, TARGET)
    metric.update(second, second)
    batch = PanopticQuality(num_things=1, num_stuff=1)
    batch.update(np.stack([PRED, TARGET]), np.stack([TARGET, TARGET]))  # the same segments, other shapes
    assert metric.true_positive.tolist() == [2, 3] and metric.false_positive.tolist() == [0, 1]
    assert batch.compute() == metric.compute()
    metric.reset()
    assert metric.true_positive.sum() == 0 and "matches=0" in repr(metric)


def test_bad_arguments_name_the_call_and_what_to_do():
    with pytest.raises(ValueError, match=r"PanopticQuality: num_things must be an integer >= 0, got -1"):
        PanopticQuality(-1, 2)
    with pytest.raises(ValueError, match=r"PanopticQuality.update: pred and target must be panoptic maps"):
        PanopticQuality(1, 1).update(PRED, TARGET[:2])
    with pytest.raises(ValueError, match=r"panoptic_counts: target must hold category \* 1000 \+ instance with a "
                                         r"category in 0\.\.1, or -1 for void, got values \[-100\]"):
        panoptic_counts(PRED, np.where(TARGET == 0, -100, TARGET), 2)
    with pytest.raises(ValueError, match=r"pred must hold category \* 1000 \+ instance .* got values \[2000\]"):
        panoptic_counts(np.full_like(PRED, 2000), TARGET, 2)
