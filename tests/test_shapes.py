"""ShapesDataset: seeded, the targets agree with each other and with the image, occlusion as documented."""
import numpy as np
import pytest

from minseg.data.shapes import ShapesDataset, _shape_masks, _visible, _visible_enough, masks_to_boxes


def loop_boxes(masks):
    """Boxes from the definition: the first and one past the last column and row holding a mask pixel."""
    boxes = []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return np.array(boxes, dtype=np.float32).reshape(-1, 4)


def test_masks_to_boxes_on_paper():
    mask = np.zeros((1, 6, 7), dtype=np.uint8)
    mask[0, 1:4, 2:5] = 1  # rows 1..3, columns 2..4
    mask[0, 5, 2] = 1      # and one pixel at row 5
    np.testing.assert_array_equal(masks_to_boxes(mask), [[2, 1, 5, 6]])
    assert masks_to_boxes(np.zeros((2, 4, 4))).tolist() == [[0, 0, 0, 0]] * 2
    assert masks_to_boxes(np.zeros((0, 4, 4))).shape == (0, 4)


def test_class_attributes():
    assert ShapesDataset.things == ("circle", "square", "triangle")
    assert ShapesDataset.num_things == 3 and ShapesDataset.num_stuff == len(ShapesDataset.stuff) == 2
    assert ShapesDataset.categories == ShapesDataset.stuff + ShapesDataset.things


def test_items_have_the_conventions_types_and_shapes():
    image, target = ShapesDataset(4, size=(48, 64), seed=3)[1]
    n = len(target["labels"])
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert target["boxes"].shape == (n, 4) and target["boxes"].dtype == np.float32
    assert target["labels"].dtype == np.int64 and set(target["labels"]) <= {1, 2, 3}
    assert target["masks"].shape == (n, 48, 64) and target["masks"].dtype == np.uint8
    assert set(np.unique(target["masks"])) <= {0, 1}
    assert target["semantic"].shape == (48, 64) and target["semantic"].dtype == np.int64


def test_same_seed_and_index_give_the_same_item_in_any_order():
    ds = ShapesDataset(10, seed=7)
    forward = [ds[i] for i in range(10)]
    backward = [ShapesDataset(10, seed=7)[i] for i in reversed(range(10))][::-1]
    for (image_a, target_a), (image_b, target_b) in zip(forward, backward):
        np.testing.assert_array_equal(image_a, image_b)
        for key in target_a:
            np.testing.assert_array_equal(target_a[key], target_b[key])
    np.testing.assert_array_equal(ds[-1][0], ds[9][0])
    assert not np.array_equal(ds[0][0], ShapesDataset(10, seed=8)[0][0])
    assert not np.array_equal(ds[0][0], ds[1][0])


@pytest.mark.parametrize("seed", [0, 1])
def test_targets_agree_with_each_other(seed):
    ds = ShapesDataset(30, size=(64, 64), num_instances=(0, 6), seed=seed, min_area=20)
    counts = []
    for index in range(len(ds)):
        image, target = ds[index]
        masks, labels, semantic = target["masks"].astype(bool), target["labels"], target["semantic"]
        counts.append(len(labels))
        np.testing.assert_array_equal(target["boxes"], loop_boxes(masks))  # boxes are the masks' extents
        assert (masks.sum(axis=0) <= 1).all()                               # visible parts never overlap
        assert (masks.sum(axis=(1, 2)) >= 20).all()                         # occluded ones were dropped
        for mask, label in zip(masks, labels):                              # semantic: the thing's category
            assert (semantic[mask] == ds.num_stuff + label - 1).all()
        stuff = ~masks.any(axis=0)
        assert set(np.unique(semantic[stuff])) <= {0, 1}                    # elsewhere sky or ground
        assert (semantic[stuff] == 0).any() or (semantic[stuff] == 1).any()
    assert max(counts) > 1 and min(counts) <= 1


def test_sky_lies_above_ground_in_every_column():
    _, target = ShapesDataset(1, num_instances=0, seed=5)[0]
    semantic = target["semantic"]
    assert len(target["labels"]) == 0 and target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 128, 128)
    for column in semantic.T:  # 0 (sky) then 1 (ground): never a sky pixel below a ground pixel
        assert (np.diff(column) >= 0).all()


def test_a_later_shape_occludes_an_earlier_one_and_a_hidden_one_is_dropped():
    shapes = np.zeros((3, 8, 8), dtype=bool)
    shapes[0, 0:6, 0:6] = True  # big square, drawn first
    shapes[1, 2:4, 2:4] = True  # small square inside it, drawn second: fully visible
    shapes[2, 0:3, 0:8] = True  # a band on top: covers rows 0..2 of both
    visible = _visible(shapes)
    np.testing.assert_array_equal(visible[2], shapes[2])
    np.testing.assert_array_equal(visible[1], shapes[1] & ~shapes[2])  # row 3 only: 2 pixels
    np.testing.assert_array_equal(visible[0], shapes[0] & ~shapes[1] & ~shapes[2])
    assert visible[1].sum() == 2 and visible[0].sum() == 3 * 6 - 2  # rows 3..5, less the small one's 2
    np.testing.assert_array_equal(_visible_enough(shapes, 3), [True, False, True])


def test_shapes_follow_their_definitions():
    """Pixel (x, y) belongs to a shape when its centre (x + 0.5, y + 0.5) lies inside it."""
    masks = _shape_masks(np.array([1, 2, 3]), np.array([[8.0, 8.0], [8.0, 8.0], [8.0, 9.0]]),
                         np.array([3.0, 2.5, 5.0]), 16, 16)
    ys, xs = np.mgrid[0:16, 0:16] + 0.5
    np.testing.assert_array_equal(masks[0], (xs - 8) ** 2 + (ys - 8) ** 2 <= 9)
    np.testing.assert_array_equal(masks[1], (np.abs(xs - 8) <= 2.5) & (np.abs(ys - 8) <= 2.5))
    assert masks[1].sum() == 6 * 6  # columns and rows 5..10: centres 5.5 .. 10.5
    triangle = masks[2]  # pointing up: one pixel wide at the top, widest at the bottom, left-right symmetric
    rows = np.flatnonzero(triangle.any(axis=1))
    widths = triangle[rows].sum(axis=1)
    assert (np.diff(widths) >= 0).all() and widths[-1] > 3 * widths[0]
    np.testing.assert_array_equal(triangle[:, :8], triangle[:, 8:][:, ::-1])


def test_the_image_shows_each_thing_in_one_colour_and_the_stuff_textured():
    image, target = ShapesDataset(1, size=(96, 96), num_instances=3, seed=11)[0]
    for mask in target["masks"].astype(bool):
        assert image[mask].astype(float).std(axis=0).max() < 20  # a flat colour with a little noise
    sky, ground = target["semantic"] == 0, target["semantic"] == 1
    assert image[sky][:, 2].mean() > image[ground][:, 2].mean() + 40  # sky is bluer than ground


@pytest.mark.parametrize("kwargs, message", [
    ({"length": -1}, "length must be an integer >= 0, got -1"),
    ({"length": 2, "num_instances": (3, 1)}, "num_instances must be an int or a range (low, high) with low <= high"),
    ({"length": 2, "size": (8, 64)}, "size must be an integer >= 16, got 8"),
    ({"length": 2, "radius": (5, 2)}, "radius must be a range (low, high) with 0 < low <= high"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ShapesDataset(**kwargs)


def test_bad_indices_are_refused():
    ds = ShapesDataset(3)
    with pytest.raises(IndexError, match="ShapesDataset: index 3 is out of range for 3 images"):
        ds[3]
    with pytest.raises(TypeError, match="ShapesDataset: index must be an integer, got 1.0"):
        ds[1.0]
