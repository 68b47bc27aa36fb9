"""Pooling from a pyramid (minseg/detection/poolers.py): FPN's level of a box by hand, scales, each RoI from its
level compared with plain roi_align, every RoI from every level, gradients into the feature maps."""
from collections import OrderedDict

import numpy as np
import pytest

import minseg.functional as F
from minseg import Tensor
from minseg.detection import LevelMapper, MultiScaleRoIAlign, roi_align_all_levels
from minseg.detection.poolers import infer_scale
from minseg.gradcheck import gradcheck


def square(side, x=0.0, y=0.0):
    return [x, y, x + side, y + side]


def test_level_of_a_box_by_fpn_equation_1():
    mapper = LevelMapper(2, 5)  # levels P2..P5; index 0 is P2
    sides = [224, 223, 112, 448, 56, 1000, 10]  # P4, P3 (just under 224), P3, P5, P2, clamped to P5, to P2
    levels = mapper([np.array([square(s) for s in sides[:3]], np.float32),
                     np.array([square(s) for s in sides[3:]], np.float32)])
    np.testing.assert_array_equal(levels, [2, 1, 1, 3, 0, 3, 0])
    assert levels.dtype == np.int64
    np.testing.assert_array_equal(LevelMapper(2, 5, canonical_scale=16)([np.array([square(16)], np.float32)]), [2])


def test_the_scale_of_a_map_is_the_nearest_power_of_two():
    assert infer_scale((1, 8, 32, 40), (128, 160)) == 0.25
    assert infer_scale((1, 8, 33, 40), (128, 160)) == 0.25  # 33 / 128 rounds to 2^-2
    assert infer_scale((1, 8, 64, 40), (128, 7)) == 0.5  # the height decides


def pyramid(rng, sizes=(16, 8, 4, 2), channels=2, batch=2, dtype=np.float64):
    return OrderedDict((f"p{i + 2}", Tensor(rng.standard_normal((batch, channels, s, s)).astype(dtype),
                                            requires_grad=True)) for i, s in enumerate(sizes))


# Image 32 × 32 with maps at strides 2, 4, 8, 16; canonical_scale 8 spreads these small boxes over all levels.
BOXES = [np.array([square(3, 1, 2), square(9, 4, 4), square(20, 3, 1), [2.5, 3.0, 30.0, 31.0]]),
         np.array([square(5, 20, 20), square(14, 0, 10), [0.0, 0.0, 1.5, 2.5]])]
IMAGE_SHAPES = [(32, 32), (30, 28)]


def pool_level_by_level(features, boxes, output_size, sampling_ratio, canonical_scale):
    """roi_align of each box on the level FPN's equation assigns it, one RoI at a time."""
    rows = []
    for image, image_boxes in enumerate(boxes):
        for box in image_boxes:
            level = int(np.clip(np.floor(4 + np.log2(np.sqrt((box[2] - box[0]) * (box[3] - box[1])) / canonical_scale)
                                         + 1e-6), 1, 4)) - 1
            feature = list(features.values())[level]
            rows.append(F.roi_align(feature, np.array([[image, *box]]), output_size, 2.0 ** -(level + 1),
                                    sampling_ratio).numpy())
    return np.concatenate(rows)


def test_each_roi_is_pooled_from_its_level():
    features = pyramid(np.random.default_rng(0))
    pooler = MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], (3, 2), 2, canonical_scale=8)
    pooled = pooler(features, BOXES, IMAGE_SHAPES)
    assert pooled.shape == (7, 2, 3, 2)
    np.testing.assert_array_equal(np.unique(LevelMapper(1, 4, canonical_scale=8)(BOXES)), [0, 1, 2, 3])  # all used
    np.testing.assert_allclose(pooled.numpy(), pool_level_by_level(features, BOXES, (3, 2), 2, 8), rtol=1e-12)


def test_gradients_reach_every_level_that_pooled_a_roi():
    features = pyramid(np.random.default_rng(1), sizes=(8, 4, 2, 1), channels=1, batch=2)
    pooler = MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 2, -1, canonical_scale=8)
    small_shapes = [(16, 16), (16, 16)]
    boxes = [np.array([square(2, 1, 1), square(6, 2, 3)]), np.array([square(12, 1, 2), square(3, 9, 9)])]
    names = list(features)
    assert gradcheck(lambda *maps: pooler(OrderedDict(zip(names, maps)), boxes, small_shapes),
                     list(features.values()))


def test_every_roi_from_every_level():
    features = pyramid(np.random.default_rng(2))
    pooler = MultiScaleRoIAlign(4, 2, 2)  # the first four maps
    per_level = pooler.forward_all_levels(list(features.values()), BOXES, IMAGE_SHAPES)
    assert len(per_level) == 4
    rois = np.concatenate([np.c_[np.full(len(b), i), b] for i, b in enumerate(BOXES)])
    for level, (feature, pooled) in enumerate(zip(features.values(), per_level)):
        np.testing.assert_array_equal(pooled.numpy(), F.roi_align(feature, rois, 2, 2.0 ** -(level + 1), 2).numpy())
    np.testing.assert_array_equal(
        [p.numpy() for p in roi_align_all_levels(list(features.values()), BOXES, 2, [0.5, 0.25, 0.125, 0.0625], 2)],
        [p.numpy() for p in per_level])


def test_the_maps_are_chosen_by_name_or_position_and_one_map_pools_everything():
    features = pyramid(np.random.default_rng(3))
    rois = np.concatenate([np.c_[np.full(len(b), i), b] for i, b in enumerate(BOXES)])
    only_p3 = MultiScaleRoIAlign(["p3"], 2, 2)(features, BOXES, IMAGE_SHAPES)
    np.testing.assert_array_equal(only_p3.numpy(), F.roi_align(features["p3"], rois, 2, 0.25, 2).numpy())
    by_position = MultiScaleRoIAlign([1], 2, 2)(list(features.values()), BOXES, IMAGE_SHAPES)
    np.testing.assert_array_equal(by_position.numpy(), only_p3.numpy())


def test_bad_arguments_are_reported():
    features = pyramid(np.random.default_rng(4))
    with pytest.raises(ValueError, match=r"MultiScaleRoIAlign: none of featmap_names \['0'\] is among"):
        MultiScaleRoIAlign(["0"], 2, 2)(features, BOXES, IMAGE_SHAPES)
    with pytest.raises(ValueError, match="MultiScaleRoIAlign: featmap_names asks for 5 levels, but only 4"):
        MultiScaleRoIAlign(5, 2, 2)(features, BOXES, IMAGE_SHAPES)
    with pytest.raises(ValueError, match="MultiScaleRoIAlign: image_shapes must list"):
        MultiScaleRoIAlign(4, 2, 2)(features, BOXES, [])


def test_no_boxes_pool_to_an_empty_batch():
    features = pyramid(np.random.default_rng(5))
    empty = [np.zeros((0, 4), np.float32)] * 2
    assert MultiScaleRoIAlign(4, (2, 3), 2)(features, empty, IMAGE_SHAPES).shape == (0, 2, 2, 3)
    assert MultiScaleRoIAlign(["p2"], 2, 2)(features, empty, IMAGE_SHAPES).shape == (0, 2, 2, 2)
