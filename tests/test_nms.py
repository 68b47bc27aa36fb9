"""Non-maximum suppression (minseg/functional/nms.py): a handmade set, ties, the threshold, a loop reference from
the definition, and per-category suppression."""
import numpy as np
import pytest

import minseg.functional as F


def boxes(*rows):
    return np.array(rows, dtype=np.float32).reshape(-1, 4)


def nms_reference(b, scores, threshold):
    """The definition, one pair at a time: a box survives unless a kept, better box overlaps it by IoU > threshold."""
    def iou(p, q):
        w = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
        h = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
        union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - w * h
        return w * h / union

    keep = []
    for i in sorted(range(len(b)), key=lambda i: (-scores[i], i)):
        if all(iou(b[i], b[j]) <= threshold for j in keep):
            keep.append(i)
    return keep


def random_boxes(rng, n, spread=40.0):
    corner = rng.uniform(0, spread, (n, 2))
    return np.concatenate([corner, corner + rng.uniform(1, 20, (n, 2))], 1)


def test_a_handmade_set():
    b = boxes([0, 0, 10, 10],     # 0: overlaps 1 by 81 / 119 = 0.68
              [1, 1, 11, 11],     # 1
              [20, 20, 30, 30],   # 2: alone
              [0, 0, 10, 9],      # 3: inside 0 (IoU 0.9), suppressed by 0
              [21, 20, 31, 30])   # 4: overlaps 2 by 90 / 110 = 0.82, scores higher, so it suppresses 2
    scores = np.array([0.9, 0.8, 0.5, 0.7, 0.6], np.float32)
    keep = F.nms(b, scores, 0.5)
    np.testing.assert_array_equal(keep, [0, 4])
    assert keep.dtype == np.int64
    np.testing.assert_array_equal(F.nms(b, scores, 0.85), [0, 1, 4, 2])  # 0.68 and 0.82 are allowed now, 0.9 not
    np.testing.assert_array_equal(F.nms(b, scores, 0.95), [0, 1, 3, 4, 2])  # everything, by decreasing score


def test_an_overlap_equal_to_the_threshold_is_kept():
    b = boxes([0, 0, 2, 1], [0, 0, 1, 1])  # IoU exactly 1/2
    scores = np.array([0.9, 0.8], np.float32)
    np.testing.assert_array_equal(F.nms(b, scores, 0.5), [0, 1])
    np.testing.assert_array_equal(F.nms(b, scores, 0.49), [0])


def test_equal_scores_are_visited_in_index_order():
    b = boxes([0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [50, 50, 60, 60])
    scores = np.array([0.5, 0.5, 0.7, 0.7], np.float32)
    np.testing.assert_array_equal(F.nms(b, scores, 0.5), [2, 0])


def test_nms_matches_the_definition_on_random_boxes():
    rng = np.random.default_rng(0)
    for threshold in (0.1, 0.3, 0.5, 0.7):
        b = random_boxes(rng, 60)
        scores = rng.random(60)
        np.testing.assert_array_equal(F.nms(b, scores, threshold), nms_reference(b, scores, threshold))


def test_batched_nms_suppresses_only_within_a_category():
    b = boxes([0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10])
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    np.testing.assert_array_equal(F.batched_nms(b, scores, np.array([0, 0, 1]), 0.5), [0, 2])
    np.testing.assert_array_equal(F.batched_nms(b, scores, np.array([0, 1, 2]), 0.5), [0, 1, 2])


def test_batched_nms_equals_nms_per_category_merged_by_score():
    rng = np.random.default_rng(1)
    b, scores, idxs = random_boxes(rng, 80), rng.random(80), rng.integers(0, 4, 80)
    expected = []
    for category in range(4):
        members = np.nonzero(idxs == category)[0]
        expected += members[nms_reference(b[members], scores[members], 0.4)].tolist()
    expected.sort(key=lambda i: -scores[i])
    np.testing.assert_array_equal(F.batched_nms(b, scores, idxs, 0.4), expected)


def test_no_boxes_keep_nothing():
    for keep in (F.nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5),
                 F.batched_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), 0.5)):
        assert keep.shape == (0,) and keep.dtype == np.int64


def test_a_score_per_box_is_required():
    with pytest.raises(ValueError, match=r"nms: scores must have shape \(N,\) = \(2,\), one per box, got \(3,\)"):
        F.nms(boxes([0, 0, 1, 1], [0, 0, 2, 2]), np.zeros(3), 0.5)
    with pytest.raises(ValueError, match=r"batched_nms: idxs must have shape \(N,\) = \(1,\)"):
        F.batched_nms(boxes([0, 0, 1, 1]), np.zeros(1), np.zeros(2), 0.5)


def test_empty_boxes_do_not_suppress_each_other():
    # Their IoU is 0 / 0 (nan), which is not above any threshold: torchvision keeps them all as well.
    b = boxes([0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 5])
    np.testing.assert_array_equal(F.nms(b, np.array([0.9, 0.8, 0.7], np.float32), 0.5), [0, 1, 2])
