import numpy as np
import pytest

from minseg.detection.panoptic import LABEL_DIVISOR, merge_panoptic, panoptic_from_target
from minseg.detection.panoptic_quality import panoptic_quality


def mask_of(shape, rows, cols):
    mask = np.zeros(shape, np.float32)
    mask[rows, cols] = 0.9
    return mask


def test_the_ground_truth_map_of_a_target_worked_by_hand():
    # stuff categories 0 and 1, thing labels 1 and 2 (categories 2 and 3); -100 unlabelled
    semantic = np.array([[0, 0, 2, 2, -100],
                         [0, 0, 2, 3, 3],
                         [1, 1, 3, 3, 3],
                         [1, 1, 1, 2, 2]])
    masks = np.zeros((3, 4, 5), np.uint8)
    masks[0, 0:2, 2:4] = 1             # label 1; (1, 3) shows category 3, so not this instance there
    masks[1, 1, 3:5] = masks[1, 2, 2:5] = 1
    masks[2, 2, 4] = 1                 # label 2, listed last: on top of instance 1 at (2, 4)
    target = {"labels": np.array([1, 2, 2]), "masks": masks, "semantic": semantic}
    expected = np.array([[0, 0, 2001, 2001, -1],
                         [0, 0, 2001, 3002, 3002],
                         [1000, 1000, 3002, 3002, 3003],
                         [1000, 1000, 1000, -1, -1]])  # category 2 at (3, 3:5) but no mask: void
    np.testing.assert_array_equal(panoptic_from_target(target, num_stuff=2), expected)
    assert panoptic_from_target(target, num_stuff=2).dtype == np.int64


# A 6x6 image, one stuff category (semantic class 0) and the "things" class 1; thing labels 1 and 2:
#   a: score .9, label 1, rows 0-2 x cols 0-2 (9 px)                 -> pasted first, instance 1
#   b: score .8, label 2, rows 1-3 x cols 1-3 (9 px, 4 under a)      -> 4/9 hidden, pasted on its 5 free pixels
#   c: score .7, label 1, rows 0-2 x cols 1-2 (6 px, all under a)    -> dropped
#   d: score .4, label 1, rows 4-5 x cols 4-5                        -> under the score threshold, dropped
#   e: score .5, label 1, row 5 x cols 0-1                           -> at the score threshold, kept: instance 3
# stuff: the free pixels, minus the "things" class at rows 4-5 x cols 4-5: 36 - 9 - 5 - 2 - 4 = 16 pixels.
SHAPE = (6, 6)
INSTANCES = {
    "masks": np.stack([mask_of(SHAPE, slice(0, 3), slice(0, 3)), mask_of(SHAPE, slice(1, 4), slice(1, 4)),
                       mask_of(SHAPE, slice(0, 3), slice(1, 3)), mask_of(SHAPE, slice(4, 6), slice(4, 6)),
                       mask_of(SHAPE, 5, slice(0, 2))]),
    "scores": np.array([0.9, 0.8, 0.7, 0.4, 0.5], np.float32),
    "labels": np.array([1, 2, 1, 1, 1])}
SEMANTIC = np.zeros(SHAPE, np.int64)
SEMANTIC[4:6, 4:6] = 1


def expected_map(stuff_kept):
    a, b, e = 1 * LABEL_DIVISOR + 1, 2 * LABEL_DIVISOR + 2, 1 * LABEL_DIVISOR + 3
    panoptic = np.full(SHAPE, 0 if stuff_kept else -1)
    panoptic[1:4, 1:4] = b
    panoptic[0:3, 0:3] = a
    panoptic[5, 0:2] = e
    panoptic[4:6, 4:6] = -1
    return panoptic


def test_instances_by_score_the_overlap_rule_and_the_score_threshold():
    merged = merge_panoptic(INSTANCES, SEMANTIC, num_stuff=1, stuff_area=16)
    np.testing.assert_array_equal(merged, expected_map(stuff_kept=True))


def test_stuff_regions_under_the_area_are_void():
    merged = merge_panoptic(INSTANCES, SEMANTIC, num_stuff=1, stuff_area=17)
    np.testing.assert_array_equal(merged, expected_map(stuff_kept=False))
    assert (merge_panoptic(INSTANCES, SEMANTIC, num_stuff=1) == 0).sum() == 0   # the paper's 4096 pixels


def test_a_lower_overlap_threshold_drops_more():
    merged = merge_panoptic(INSTANCES, SEMANTIC, num_stuff=1, stuff_area=0, overlap_threshold=0.4)
    assert (merged == 2 * LABEL_DIVISOR + 2).sum() == 0     # b is 4/9 hidden: over 0.4
    assert (merged == 1 * LABEL_DIVISOR + 2).sum() == 2     # e became instance 2
    everything = merge_panoptic(INSTANCES, SEMANTIC, num_stuff=1, stuff_area=0, score_threshold=0.0)
    assert (everything // LABEL_DIVISOR == 1).sum() == 9 + 2 + 4   # d pasted too


def test_logits_and_their_argmax_merge_the_same():
    logits = np.stack([SEMANTIC == 0, SEMANTIC == 1]).astype(np.float32) * 3.0 - 1.0
    np.testing.assert_array_equal(merge_panoptic(INSTANCES, logits, num_stuff=1, stuff_area=16),
                                  merge_panoptic(INSTANCES, SEMANTIC, num_stuff=1, stuff_area=16))


def test_no_instances_leaves_stuff_and_void():
    empty = {"masks": np.zeros((0, *SHAPE), np.float32), "scores": np.zeros(0), "labels": np.zeros(0, np.int64)}
    merged = merge_panoptic(empty, SEMANTIC, num_stuff=1, stuff_area=0)
    np.testing.assert_array_equal(merged, np.where(SEMANTIC == 0, 0, -1))


def test_merging_a_targets_own_instances_gives_its_ground_truth_map():
    semantic = np.array([[0, 0, 1, 1],        # num_stuff=1: category 1 is label 1, category 2 is label 2
                         [2, 2, 1, 1],
                         [0, 2, 2, 0],
                         [0, 2, 2, 0]])
    masks = np.zeros((3, 4, 4), np.uint8)
    masks[0, 0:2, 2:4] = masks[1, 1, 0:2] = masks[2, 2:4, 1:3] = 1
    target = {"labels": np.array([1, 2, 2]), "masks": masks, "semantic": semantic}
    truth = panoptic_from_target(target, num_stuff=1)
    assert np.unique(truth).tolist() == [0, 1001, 2002, 2003]
    instances = {"masks": masks.astype(np.float32), "scores": np.array([0.9, 0.8, 0.7]), "labels": target["labels"]}
    merged = merge_panoptic(instances, np.minimum(semantic, 1), num_stuff=1, stuff_area=0)
    np.testing.assert_array_equal(merged, truth)
    assert panoptic_quality(merged, truth, num_things=2, num_stuff=1)["pq"] == 1.0


def test_bad_arguments_name_the_call_and_what_to_do():
    with pytest.raises(ValueError, match=r"merge_panoptic: semantic must be logits \(2, H, W\) or class ids "
                                         r"\(H, W\) with \(H, W\) = \(6, 6\), got \(3, 6, 6\)"):
        merge_panoptic(INSTANCES, np.zeros((3, 6, 6)), num_stuff=1)
    with pytest.raises(ValueError, match=r"merge_panoptic: instances must have one mask, score and label each"):
        merge_panoptic({**INSTANCES, "scores": np.ones(2)}, SEMANTIC, num_stuff=1)
    with pytest.raises(ValueError, match=r"merge_panoptic: labels must be thing classes >= 1"):
        merge_panoptic({**INSTANCES, "labels": np.zeros(5, np.int64)}, SEMANTIC, num_stuff=1)
    with pytest.raises(ValueError, match=r"merge_panoptic: stuff_area must be an integer >= 0, got -1"):
        merge_panoptic(INSTANCES, SEMANTIC, num_stuff=1, stuff_area=-1)
    with pytest.raises(ValueError, match=r"panoptic_from_target: masks must be \(N, H, W\) with N = 1 labels"):
        panoptic_from_target({"labels": np.array([1]), "masks": np.zeros((2, 6, 6)), "semantic": SEMANTIC}, 1)
