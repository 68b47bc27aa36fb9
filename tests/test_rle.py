"""COCO RLE and polygons: small cases worked out by hand, round trips on random masks, bad input refused.

The expected values follow COCO's definitions (pycocotools' maskApi.c), computed here on paper; the
cross-check against pycocotools itself is benchmarks/coco_rle.py."""
import numpy as np
import pytest

from minseg.data.rle import (
    polygon_to_mask,
    polygons_to_mask,
    rle_counts_to_string,
    rle_decode,
    rle_encode,
    rle_string_to_counts,
)

# A 3x2 mask read column-major: column 0 is 0, 1, 0 and column 1 is 1, 1, 0, so the pixels run
# 0 | 1 | 0 | 1 1 | 0: counts 1, 1, 1, 2, 1.
MASK = np.array([[0, 1], [1, 1], [0, 0]], dtype=np.uint8)
COUNTS = [1, 1, 1, 2, 1]


def test_uncompressed_rle_on_paper():
    assert rle_encode(MASK) == {"counts": COUNTS, "size": [3, 2]}
    np.testing.assert_array_equal(rle_decode({"counts": COUNTS, "size": [3, 2]}), MASK)
    # runs start with 0s: a mask whose first pixel is 1 begins with a count of 0
    assert rle_encode(np.array([[1], [1], [0]]))["counts"] == [0, 2, 1]
    assert rle_encode(np.zeros((2, 2)))["counts"] == [4]
    assert rle_encode(np.ones((2, 2)))["counts"] == [0, 4]
    decoded = rle_decode({"counts": [0, 2, 1], "size": [3, 1]})
    assert decoded.dtype == np.uint8 and decoded.ravel().tolist() == [1, 1, 0]


def test_compressed_strings_on_paper():
    # counts from the third on are stored as differences from the count two before: 1, 1, 1, 2-1, 1-1;
    # each small number is one character, 48 + value
    assert rle_counts_to_string(COUNTS) == "11110"
    assert rle_encode(MASK, compressed=True) == {"counts": "11110", "size": [3, 2]}
    # 100 = 3 * 32 + 4: low 5 bits 4 with the "more" bit 0x20 -> chr(48 + 36) = "T", then 3 -> "3"
    assert rle_counts_to_string([100]) == "T3"
    # a negative difference: 2 - 5 = -3 -> low 5 bits 29 (sign bit 0x10 set), nothing more -> chr(48 + 29) = "M"
    assert rle_counts_to_string([0, 5, 10, 2]) == "05:M"
    assert rle_string_to_counts("05:M") == [0, 5, 10, 2]
    assert rle_string_to_counts(b"T3") == [100]
    mask = rle_decode({"counts": "05:M", "size": [17, 1]})
    assert mask.ravel().tolist() == [1] * 5 + [0] * 10 + [1] * 2


@pytest.mark.parametrize("seed", range(5))
def test_round_trips_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    height, width = rng.integers(1, 30, size=2)
    for density in (0.0, 0.05, 0.5, 0.95, 1.0):
        mask = (rng.random((height, width)) < density).astype(np.uint8)
        plain, compressed = rle_encode(mask), rle_encode(mask, compressed=True)
        assert sum(plain["counts"]) == height * width
        np.testing.assert_array_equal(rle_decode(plain), mask)
        np.testing.assert_array_equal(rle_decode(compressed), mask)
        assert rle_string_to_counts(compressed["counts"]) == plain["counts"]
    big = [0, 70000, 3, 123456, 1, 40]  # counts past several 5-bit groups, differences of both signs
    assert rle_string_to_counts(rle_counts_to_string(big)) == big


def test_polygon_of_a_rectangle_is_the_pixels_whose_centres_it_holds():
    expected = np.zeros((5, 6), dtype=np.uint8)
    expected[1:3, 1:4] = 1  # x in [1, 4], y in [1, 3]: centres 1.5..3.5 across, 1.5..2.5 down
    rectangle = [1, 1, 4, 1, 4, 3, 1, 3]
    np.testing.assert_array_equal(polygon_to_mask(rectangle, 5, 6), expected)
    np.testing.assert_array_equal(polygon_to_mask([1, 1, 1, 3, 4, 3, 4, 1], 5, 6), expected)  # other direction
    single = polygon_to_mask([0.6, 0.6, 2.4, 0.6, 2.4, 2.4, 0.6, 2.4], 4, 4)  # holds only the centre (1.5, 1.5)
    assert np.argwhere(single).tolist() == [[1, 1]]
    clipped = polygon_to_mask([-2, -2, 3, -2, 3, 2, -2, 2], 4, 4)  # partly outside the image
    assert np.argwhere(clipped).tolist() == [[r, c] for r in range(2) for c in range(3)]


def test_polygons_are_united():
    both = polygons_to_mask([[0, 0, 2, 0, 2, 2, 0, 2], [3, 3, 5, 3, 5, 4, 3, 4]], 5, 5)
    expected = np.zeros((5, 5), dtype=np.uint8)
    expected[0:2, 0:2] = 1
    expected[3, 3:5] = 1
    np.testing.assert_array_equal(both, expected)


def test_a_triangle_is_filled_between_its_edges():
    triangle = polygon_to_mask([0, 0, 8, 0, 0, 8], 8, 8)  # the half below the anti-diagonal x + y = 8
    ys, xs = np.mgrid[0:8, 0:8] + 0.5
    inside = xs + ys < 8
    # a pixel whose centre lies on the edge itself may go either way; every other pixel is decided
    decided = np.abs(xs + ys - 8) > 0.5
    np.testing.assert_array_equal(triangle[decided], inside[decided])


@pytest.mark.parametrize("rle, message", [
    ({"counts": [1, 2]}, "rle must be a dict with 'counts' and 'size'"),
    ({"counts": [1, 2], "size": [2]}, r"size must be \[height, width\] of integers >= 0, got \[2\]"),
    ({"counts": [1, 2], "size": [2, 2]}, "counts must sum to height x width = 2 x 2 = 4, got 3"),
    ({"counts": [5, -1], "size": [2, 2]}, "counts must be >= 0, got -1"),
    ({"counts": [1.5, 2.5], "size": [2, 2]}, "counts must be a list of integers or a compressed string"),
    ({"counts": "1 1", "size": [2, 1]}, r"only characters '0'..'o' \(ASCII 48..111\), got ' ' at position 1"),
    ({"counts": "T", "size": [10, 10]}, "ends in the middle of a number"),
    ({"counts": "1\u00e91", "size": [2, 1]}, "got '\u00e9' at position 1"),  # not read as some other character
])
def test_bad_rles_are_refused(rle, message):
    with pytest.raises(ValueError, match=message) as error:
        rle_decode(rle)
    assert str(error.value).startswith("rle_decode: ") and "\n" not in str(error.value)


def test_bad_polygons_and_masks_are_refused():
    with pytest.raises(ValueError, match="polygon_to_mask: polygon must be .* at least 3 finite points, got 4"):
        polygon_to_mask([0, 0, 1, 1], 3, 3)
    with pytest.raises(ValueError, match=r"got 6 numbers \(not all finite\)"):
        polygon_to_mask([0, 0, 1, np.nan, 2, 2], 3, 3)
    with pytest.raises(ValueError, match=r"rle_encode: mask must be 2-D \(H, W\), got shape \(2, 2, 2\)"):
        rle_encode(np.zeros((2, 2, 2)))
