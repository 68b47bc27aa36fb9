"""Boxes (minseg/functional/boxes.py): areas, IoU, clipping and the regression code on hand-computed cases."""
import math

import numpy as np
import pytest

import minseg.functional as F
from minseg import Tensor


def boxes(*rows, dtype=np.float32):
    return np.array(rows, dtype=dtype).reshape(-1, 4)


def test_box_area_is_width_times_height():
    np.testing.assert_array_equal(F.box_area(boxes([0, 0, 2, 3], [1, 1, 1.5, 5])), [6, 2])


def test_box_iou_of_hand_drawn_pairs():
    a = boxes([0, 0, 2, 2], [0, 0, 1, 1])
    b = boxes([1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6])
    iou = F.box_iou(a, b)
    assert iou.shape == (2, 3) and iou.dtype == np.float32
    # [0,0,2,2] and [1,1,3,3] share one unit square of 4 + 4 - 1 = 7; a box inside another: 1/4; apart: 0.
    np.testing.assert_allclose(iou, [[1 / 7, 1, 0], [0, 1 / 4, 0]], rtol=1e-6)


def test_box_iou_matches_a_loop_from_the_definition():
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 20, (6, 2))
    a = np.concatenate([corner, corner + rng.uniform(1, 10, (6, 2))], 1)
    corner = rng.uniform(0, 20, (4, 2))
    b = np.concatenate([corner, corner + rng.uniform(1, 10, (4, 2))], 1)
    expected = np.zeros((6, 4))
    for i in range(6):
        for j in range(4):
            w = max(0.0, min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]))
            h = max(0.0, min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]))
            area_a = (a[i, 2] - a[i, 0]) * (a[i, 3] - a[i, 1])
            area_b = (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1])
            expected[i, j] = w * h / (area_a + area_b - w * h)
    np.testing.assert_allclose(F.box_iou(a, Tensor(b, dtype=np.float64)), expected, rtol=1e-12)


def test_clip_boxes_to_image_clamps_x_to_the_width_and_y_to_the_height():
    clipped = F.clip_boxes_to_image(boxes([-1, -2, 5, 9], [1, 1, 2, 2]), (8, 4))  # size is (height, width)
    np.testing.assert_array_equal(clipped, [[0, 0, 4, 8], [1, 1, 2, 2]])


def test_remove_small_boxes_keeps_boxes_whose_both_sides_reach_min_size():
    keep = F.remove_small_boxes(boxes([0, 0, 2, 2], [0, 0, 1, 5], [0, 0, 5, 0.5], [3, 3, 4, 4]), 1.0)
    np.testing.assert_array_equal(keep, [0, 1, 3])
    assert keep.dtype == np.int64


def test_encode_boxes_by_hand_with_and_without_weights():
    proposal = boxes([0, 0, 10, 10])  # centre (5, 5), 10 x 10
    target = boxes([5, 5, 15, 25])  # centre (10, 15), 10 x 20
    np.testing.assert_allclose(F.encode_boxes(target, proposal), [[0.5, 1.0, 0.0, math.log(2)]], rtol=1e-6)
    np.testing.assert_allclose(F.encode_boxes(target, proposal, (10, 10, 5, 5)), [[5, 10, 0, 5 * math.log(2)]],
                               rtol=1e-6)


@pytest.mark.parametrize("weights", [(1, 1, 1, 1), (10, 10, 5, 5)])
def test_decode_undoes_encode(weights):
    rng = np.random.default_rng(1)
    corner = rng.uniform(0, 50, (7, 2))
    anchors = np.concatenate([corner, corner + rng.uniform(2, 30, (7, 2))], 1)
    corner = rng.uniform(0, 50, (7, 2))
    targets = np.concatenate([corner, corner + rng.uniform(2, 30, (7, 2))], 1)
    codes = F.encode_boxes(targets, anchors, weights)
    np.testing.assert_allclose(F.decode_boxes(codes, anchors, weights), targets, rtol=1e-10, atol=1e-10)
    coder = F.BoxCoder(weights)
    np.testing.assert_allclose(coder.decode_single(coder.encode_single(targets, anchors), anchors), targets,
                               rtol=1e-10, atol=1e-10)


def test_decode_clamps_the_log_scale_and_decodes_one_box_per_class():
    anchor = boxes([0, 0, 16, 16])
    codes = np.array([[0, 0, 0, 0, 1, 0, 100, 0]], np.float32)  # class 0: the anchor; class 1: moved, too wide
    decoded = F.decode_boxes(codes, anchor)
    assert decoded.shape == (1, 8) and decoded.dtype == np.float32
    np.testing.assert_allclose(decoded[0, :4], [0, 0, 16, 16])
    # dw clamped at log(1000/16): the width is 1000, centred on the anchor's centre moved by one width (16).
    np.testing.assert_allclose(decoded[0, 4:], [24 - 500, 0, 24 + 500, 16], rtol=1e-5)


def test_bad_shapes_are_reported_with_the_call_and_what_to_pass():
    with pytest.raises(ValueError, match=r"box_iou: boxes2 must have shape \(N, 4\), got \(3,\)"):
        F.box_iou(boxes([0, 0, 1, 1]), np.zeros(3))
    with pytest.raises(ValueError, match=r"decode_boxes: rel_codes must have shape \(N, 4·k\) with N = 1"):
        F.decode_boxes(np.zeros((2, 4)), boxes([0, 0, 1, 1]))
