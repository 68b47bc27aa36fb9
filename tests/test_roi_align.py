"""RoIAlign (minseg/functional/roi_align.py): maps whose pooled values are known, a point-by-point loop reference
written from torchvision's definition, float64 gradient checks over awkward geometry, a property, errors."""
import math

import numpy as np
import pytest

import minseg.functional as F
from minseg import Tensor
from minseg.gradcheck import gradcheck


def bilinear_reference(plane, y, x):
    """One sample, as torchvision's kernel reads it: 0 outside [-1, size]; clamped to the map; four neighbours."""
    height, width = plane.shape
    if y < -1 or y > height or x < -1 or x > width:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * plane[y0, x0] + (1 - ly) * lx * plane[y0, x1]
            + ly * (1 - lx) * plane[y1, x0] + ly * lx * plane[y1, x1])


def roi_align_reference(x, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """Bin by bin, sample by sample: the mean of the bilinear samples on each bin's grid."""
    out_h, out_w = output_size
    y = np.zeros((len(rois), x.shape[1], out_h, out_w))
    offset = 0.5 if aligned else 0.0
    for k, (b, x1, y1, x2, y2) in enumerate(rois):
        x1, y1, x2, y2 = (v * spatial_scale - offset for v in (x1, y1, x2, y2))
        roi_w, roi_h = (x2 - x1, y2 - y1) if aligned else (max(x2 - x1, 1.0), max(y2 - y1, 1.0))
        bin_h, bin_w = roi_h / out_h, roi_w / out_w
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / out_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / out_w)
        count = max(grid_h * grid_w, 1)
        for c in range(x.shape[1]):
            for i in range(out_h):
                for j in range(out_w):
                    total = sum(bilinear_reference(x[int(b), c], y1 + i * bin_h + (iy + 0.5) * bin_h / grid_h,
                                                   x1 + j * bin_w + (ix + 0.5) * bin_w / grid_w)
                                for iy in range(grid_h) for ix in range(grid_w))
                    y[k, c, i, j] = total / count
    return y


def rois(*rows):
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


# Boxes inside, partly outside, sub-pixel, larger than the map, entirely outside, upside down (x2 < x1: one pixel
# without alignment, no samples with it).
AWKWARD_ROIS = rois([0, 1.0, 0.5, 4.2, 3.7],
                    [1, -2.0, -1.5, 3.0, 2.5],
                    [0, 3.3, 2.1, 3.6, 2.2],
                    [1, -3.0, -4.0, 12.0, 9.0],
                    [0, 5.5, 4.0, 9.0, 8.0],
                    [1, 20.0, 20.0, 25.0, 26.0],
                    [0, 4.0, 3.0, 2.0, 1.5])


def test_a_linear_map_pools_to_the_bin_centres():
    # x[h, w] = w + 10 h: bilinear sampling is exact on it, and a bin's samples are symmetric about its centre.
    plane = np.arange(8)[None, :] + 10.0 * np.arange(8)[:, None]
    x = Tensor(plane[None, None], dtype=np.float32)
    box = rois([0, 1, 2, 5, 6])  # columns 1..5, rows 2..6: bins 2 pixels wide
    # aligned=True moves the box by half a pixel: bin centres at 1.5, 3.5 (columns) and 2.5, 4.5 (rows).
    expected = np.array([1.5, 3.5])[None, :] + 10 * np.array([2.5, 4.5])[:, None]
    np.testing.assert_allclose(F.roi_align(x, box, 2, aligned=True).numpy()[0, 0], expected, rtol=1e-6)
    expected = np.array([2.0, 4.0])[None, :] + 10 * np.array([3.0, 5.0])[:, None]
    np.testing.assert_allclose(F.roi_align(x, box, 2, aligned=False).numpy()[0, 0], expected, rtol=1e-6)
    # spatial_scale: the same box given in coordinates of an image twice as large.
    np.testing.assert_allclose(F.roi_align(x, box * [1, 2, 2, 2, 2], 2, spatial_scale=0.5).numpy()[0, 0], expected,
                               rtol=1e-6)


def test_a_constant_map_pools_to_the_constant_inside_and_zero_far_outside():
    x = Tensor(np.full((1, 2, 6, 6), 3.0, np.float32))
    y = F.roi_align(x, rois([0, 0.5, 0.5, 5.0, 5.5], [0, -0.9, -0.9, 5.9, 5.9], [0, 10, 10, 14, 14]), (2, 3))
    assert y.shape == (3, 2, 2, 3) and y.dtype == np.float32
    np.testing.assert_allclose(y.numpy()[0], 3.0, rtol=1e-6)
    np.testing.assert_allclose(y.numpy()[1], 3.0, rtol=1e-6)  # samples within [-1, 6] read the clamped border
    np.testing.assert_array_equal(y.numpy()[2], 0.0)


@pytest.mark.parametrize("output_size, spatial_scale, sampling_ratio, aligned", [
    ((2, 3), 1.0, -1, False), ((2, 3), 1.0, -1, True), ((3, 1), 0.5, 2, False), ((1, 4), 0.5, 2, True),
    ((2, 2), 2.0, 1, False), ((4, 3), 1.0, 0, True)])
def test_forward_matches_the_loop_reference(output_size, spatial_scale, sampling_ratio, aligned):
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 7))
    expected = roi_align_reference(x, AWKWARD_ROIS, output_size, spatial_scale, sampling_ratio, aligned)
    y = F.roi_align(Tensor(x), AWKWARD_ROIS, output_size, spatial_scale, sampling_ratio, aligned)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("output_size, spatial_scale, sampling_ratio, aligned", [
    ((2, 3), 1.0, -1, False), ((3, 2), 1.0, -1, True), ((2, 2), 0.5, 2, False), ((1, 3), 0.5, 2, True)])
def test_gradcheck(output_size, spatial_scale, sampling_ratio, aligned):
    x = Tensor(np.random.default_rng(1).standard_normal((2, 2, 5, 7)), requires_grad=True)
    assert gradcheck(lambda t: F.roi_align(t, AWKWARD_ROIS, output_size, spatial_scale, sampling_ratio, aligned),
                     [x])


def test_each_bin_of_a_box_inside_the_map_hands_on_all_of_its_gradient():
    # Inside the map every sample's bilinear weights sum to 1 and each bin averages its samples, so the input
    # gradient sums to the sum of the upstream gradient.
    rng = np.random.default_rng(2)
    x = Tensor(rng.standard_normal((1, 2, 9, 9)), requires_grad=True)
    y = F.roi_align(x, rois([0, 1.2, 0.7, 7.4, 6.1], [0, 2, 2, 3, 3]), (3, 2), sampling_ratio=-1)
    grad = rng.standard_normal(y.shape)
    y.backward(grad)
    np.testing.assert_allclose(x.grad.sum(axis=(0, 2, 3)), grad.sum(axis=(0, 2, 3)), rtol=1e-12)


def test_a_list_of_per_image_boxes_equals_batch_indexed_rois():
    x = Tensor(np.random.default_rng(3).standard_normal((2, 2, 6, 6)))
    per_image = [np.array([[0.5, 1, 4, 5]]), np.array([[1, 1, 3, 3], [0, 2, 5, 4]])]
    indexed = rois([0, 0.5, 1, 4, 5], [1, 1, 1, 3, 3], [1, 0, 2, 5, 4])
    np.testing.assert_array_equal(F.roi_align(x, per_image, 2).numpy(), F.roi_align(x, indexed, 2).numpy())
    assert F.roi_align(x, np.zeros((0, 5)), 2).shape == (0, 2, 2, 2)


def test_bad_arguments_are_reported():
    x = Tensor(np.zeros((2, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"roi_align: input must be 4-D \(N, C, H, W\), got shape \(1, 4, 4\)"):
        F.roi_align(Tensor(np.zeros((1, 4, 4), np.float32)), rois([0, 0, 0, 1, 1]), 2)
    with pytest.raises(ValueError, match=r"roi_align: boxes must have shape \(N, 5\), got \(1, 4\)"):
        F.roi_align(x, np.zeros((1, 4)), 2)
    with pytest.raises(ValueError, match=r"roi_align: boxes must start with a batch index in 0..1"):
        F.roi_align(x, rois([2, 0, 0, 1, 1]), 2)
    with pytest.raises(ValueError, match=r"roi_align: output_size must be at least 1, got 0"):
        F.roi_align(x, rois([0, 0, 0, 1, 1]), 0)
    with pytest.raises(TypeError, match=r"roi_align: sampling_ratio must be an int"):
        F.roi_align(x, rois([0, 0, 0, 1, 1]), 2, sampling_ratio=1.5)
