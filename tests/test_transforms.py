"""Joint augmentations keep every image pixel on top of its own label."""
import numpy as np
import pytest

from minseg.data import Compose, RandomCrop, RandomHorizontalFlip, RandomScale, RandomVerticalFlip

HEIGHT, WIDTH = 13, 17
# Class k is painted in COLOURS[k]; every colour is nonzero in some channel, so fill=0 stays unique.
COLOURS = np.array([[220, 20, 60], [0, 128, 64], [70, 70, 250], [250, 170, 30], [128, 64, 128]], np.uint8)


def painted_pair(seed=0, size=(HEIGHT, WIDTH)):
    """A random label map in 3x3-pixel blocks and the image that shows class k in COLOURS[k]."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, len(COLOURS), size=(-(-size[0] // 3), -(-size[1] // 3)))
    label = np.repeat(np.repeat(blocks, 3, axis=0), 3, axis=1)[:size[0], :size[1]].astype(np.int64)
    return COLOURS[label], label


def position_pair(size=(HEIGHT, WIDTH)):
    """An image whose pixel (r, c) reads (r, c, 1) and a random label: shows where a pixel came from."""
    rows, cols = np.indices(size)
    image = np.stack([rows, cols, np.ones(size, int)], axis=-1).astype(np.uint8)
    label = np.random.default_rng(1).integers(0, 5, size=size).astype(np.int64)
    return image, label


def test_flip_with_p_one_mirrors_both_and_p_zero_keeps_both():
    image, label = painted_pair()
    rng = np.random.default_rng(0)
    flipped_image, flipped_label = RandomHorizontalFlip(p=1.0)(image, label, rng)
    np.testing.assert_array_equal(flipped_image[:, 0], image[:, WIDTH - 1])
    np.testing.assert_array_equal(flipped_label[4], label[4, ::-1])
    same_image, same_label = RandomHorizontalFlip(p=0.0)(image, label, rng)
    np.testing.assert_array_equal(same_image, image)
    np.testing.assert_array_equal(same_label, label)


def test_flip_moves_image_and_label_together():
    image, label = painted_pair()
    flip = RandomHorizontalFlip()
    rng = np.random.default_rng(0)
    flips = 0
    for _ in range(200):
        out_image, out_label = flip(image, label, rng)
        np.testing.assert_array_equal(out_image, COLOURS[out_label])
        flips += not np.array_equal(out_label, label)
    assert 70 < flips < 130  # about half of 200 with p=0.5


def test_crop_cuts_the_same_window_from_both():
    image, label = position_pair()
    crop = RandomCrop((5, 8))
    rng = np.random.default_rng(0)
    tops, lefts = set(), set()
    for _ in range(300):
        out_image, out_label = crop(image, label, rng)
        assert out_image.shape == (5, 8, 3) and out_label.shape == (5, 8)
        top, left = int(out_image[0, 0, 0]), int(out_image[0, 0, 1])
        np.testing.assert_array_equal(out_image, image[top:top + 5, left:left + 8])
        np.testing.assert_array_equal(out_label, label[top:top + 5, left:left + 8])
        tops.add(top)
        lefts.add(left)
    assert tops == set(range(HEIGHT - 5 + 1)) and lefts == set(range(WIDTH - 8 + 1))


def test_crop_padding_fills_image_and_label_apart():
    image, label = position_pair()
    crop = RandomCrop((HEIGHT, WIDTH), padding=3, fill=0, label_fill=-100)
    rng = np.random.default_rng(2)
    for _ in range(50):
        out_image, out_label = crop(image, label, rng)
        padded = out_image[..., 2] == 0
        assert np.all(out_label[padded] == -100) and np.all(out_image[padded] == 0)
        rows, cols = out_image[~padded, 0], out_image[~padded, 1]
        np.testing.assert_array_equal(out_label[~padded], label[rows, cols])


def test_crop_larger_than_image_needs_padding():
    image, label = position_pair()
    with pytest.raises(ValueError, match="size 16x17 is larger"):
        RandomCrop((16, 17))(image, label, np.random.default_rng(0))
    out_image, out_label = RandomCrop((16, 20), pad_if_needed=True)(image, label, np.random.default_rng(0))
    assert out_image.shape == (16, 20, 3)
    # 3 extra rows split 1 above / 2 below, 3 extra columns 1 left / 2 right.
    np.testing.assert_array_equal(out_label[1:14, 1:18], label)
    assert np.all(out_label[0] == -100) and np.all(out_label[:, 18:] == -100)


def test_scale_up_by_two_is_nearest_for_labels_and_keeps_size():
    image, label = painted_pair(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        out_image, out_label = RandomScale(scale=(2.0, 2.0))(image, label, rng)
        assert out_image.shape == image.shape and out_label.shape == label.shape
        assert out_image.dtype == np.uint8 and out_label.dtype == np.int64
        # Each pixel of the label twice the size is one source pixel; find the window's offset.
        upsampled = np.repeat(np.repeat(label, 2, axis=0), 2, axis=1)
        matches = [(top, left) for top in range(HEIGHT + 1) for left in range(WIDTH + 1)
                   if np.array_equal(upsampled[top:top + HEIGHT, left:left + WIDTH], out_label)]
        assert matches
        # Where bilinear interpolation left a pure class colour, it is the label's class.
        exact = np.all(out_image[:, :, None, :] == COLOURS[None, None], axis=-1)  # (H, W, classes)
        pure = exact.any(axis=-1)
        assert pure.mean() > 0.3  # 3x3 blocks grow to 6x6; bilinear blends a pixel at each edge
        np.testing.assert_array_equal(exact.argmax(axis=-1)[pure], out_label[pure])


def test_scale_down_pads_label_with_fill():
    image, label = painted_pair(seed=4, size=(12, 16))
    out_image, out_label = RandomScale(scale=(0.5, 0.5), label_fill=-100)(image, label, np.random.default_rng(0))
    assert out_label.shape == (12, 16)
    padded = out_label == -100
    assert padded.sum() == 12 * 16 - 6 * 8
    assert np.all(out_image[padded] == 0) and np.all(out_image[~padded].max(axis=-1) > 0)
    # The 6x8 shrunken label is nearest-neighbour: pixel (i, j) comes from (2i + 1, 2j + 1).
    rows, cols = np.nonzero(~padded)
    shrunk = out_label[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    np.testing.assert_array_equal(shrunk, label[1::2, 1::2])


def test_compose_applies_in_order_with_one_generator():
    image, label = position_pair()
    augment = Compose([RandomHorizontalFlip(p=1.0), RandomCrop(6), RandomScale((0.8, 1.3))])
    out_image, out_label = augment(image, label, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    expected = image, label
    for transform in augment.transforms:
        expected = transform(*expected, rng)
    np.testing.assert_array_equal(out_image, expected[0])
    np.testing.assert_array_equal(out_label, expected[1])
    assert out_image.shape == (6, 6, 3)
    again = augment(image, label, np.random.default_rng(7))
    np.testing.assert_array_equal(again[1], out_label)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="p must be"):
        RandomHorizontalFlip(p=1.5)
    with pytest.raises(ValueError, match="size"):
        RandomCrop(0)
    with pytest.raises(ValueError, match="padding"):
        RandomCrop(4, padding=-1)
    with pytest.raises(ValueError, match="scale"):
        RandomScale(scale=(1.5, 0.5))
    with pytest.raises(TypeError, match="callable"):
        Compose([RandomCrop(4), "flip"])
    with pytest.raises(ValueError, match="same height and width"):
        RandomHorizontalFlip()(np.zeros((4, 5, 3), np.uint8), np.zeros((5, 4), np.int64), np.random.default_rng(0))


def test_vertical_flip_moves_image_and_label_together():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    label = rng.integers(0, 3, size=(5, 4))
    flipped_image, flipped_label = RandomVerticalFlip(p=1.0)(image, label, rng)
    np.testing.assert_array_equal(flipped_image, image[::-1])
    np.testing.assert_array_equal(flipped_label, label[::-1])
    kept_image, kept_label = RandomVerticalFlip(p=0.0)(image, label, rng)
    np.testing.assert_array_equal(kept_image, image)
    with pytest.raises(ValueError, match=r"RandomVerticalFlip: p must be in \[0, 1\], got 2"):
        RandomVerticalFlip(p=2)
