"""Anchors (minseg/detection/anchors.py): cell anchors and their positions for configurations worked out by hand."""
import numpy as np
import pytest

from minseg.detection import AnchorGenerator
from minseg.detection.anchors import cell_anchors


def test_cell_anchors_keep_the_area_and_round_like_torchvision():
    # ratio = height / width: 0.5 gives 32·√2 ≈ 45.25 wide and 22.63 high; halves rounded to whole pixels.
    np.testing.assert_array_equal(cell_anchors((32,), (0.5, 1.0, 2.0)),
                                  [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]])
    np.testing.assert_array_equal(cell_anchors((3, 5), (1.0,)), [[-2, -2, 2, 2], [-2, -2, 2, 2]])  # .5 to even
    # Several sizes and ratios: the ratio varies slowest.
    np.testing.assert_array_equal(cell_anchors((16, 32), (1.0, 4.0)),
                                  [[-8, -8, 8, 8], [-16, -16, 16, 16], [-4, -16, 4, 16], [-8, -32, 8, 32]])


def test_anchors_of_one_level_by_hand():
    generator = AnchorGenerator(sizes=((32,),), aspect_ratios=((1.0, 2.0),))
    anchors = generator(np.zeros((2, 3, 64, 64), np.float32), [np.zeros((2, 8, 2, 2), np.float32)])
    assert len(anchors) == 2  # one array per image
    stride = 32  # 64 // 2
    expected = []
    for y in (0, stride):  # positions in row-major order, the cell anchors at each
        for x in (0, stride):
            expected += [[x - 16, y - 16, x + 16, y + 16], [x - 11, y - 23, x + 11, y + 23]]
    np.testing.assert_array_equal(anchors[0], expected)
    np.testing.assert_array_equal(anchors[1], expected)
    assert anchors[0].dtype == np.float32


def test_levels_follow_each_other_with_their_own_strides_and_sizes():
    generator = AnchorGenerator(sizes=((16,), (32,), (64,)), aspect_ratios=((0.5, 1.0, 2.0),) * 3)
    assert generator.num_anchors_per_location() == [3, 3, 3]
    maps = [np.zeros((1, 4, 12 // s, 20 // s), np.float64) for s in (2, 4, 6)]
    anchors = generator(np.zeros((1, 3, 12, 20)), maps)[0]
    counts = [6 * 10 * 3, 3 * 5 * 3, 2 * 3 * 3]
    assert anchors.shape == (sum(counts), 4) and anchors.dtype == np.float64
    last_level = anchors[counts[0] + counts[1]:]
    np.testing.assert_array_equal(last_level[-3:], cell_anchors((64,), (0.5, 1.0, 2.0)) + [12, 6, 12, 6])
    # A bare tuple of sizes means one size per level, and one tuple of ratios is shared by every level.
    shorthand = AnchorGenerator(sizes=(16, 32, 64), aspect_ratios=(0.5, 1.0, 2.0))
    np.testing.assert_array_equal(shorthand(np.zeros((1, 3, 12, 20)), maps)[0], anchors)


def test_mismatched_levels_are_reported():
    with pytest.raises(ValueError, match="AnchorGenerator: sizes and aspect_ratios must have one entry per"):
        AnchorGenerator(sizes=((32,), (64,)), aspect_ratios=((1.0,),) * 3)
    with pytest.raises(ValueError, match="AnchorGenerator: got 1 feature maps for 2 levels"):
        AnchorGenerator(sizes=((32,), (64,)))(np.zeros((1, 3, 8, 8)), [np.zeros((1, 1, 2, 2))])
