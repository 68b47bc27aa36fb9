"""Tests for F.point_sample (PointRend's bilinear point sampler, grid_sample's align_corners=False rule)."""
import math

import numpy as np
import pytest

from minseg import Tensor
from minseg.functional.point_sample import PointSampleFunction, point_sample
from minseg.gradcheck import gradcheck


def loop_reference(x, points):
    """grid_sample(bilinear, zeros padding, align_corners=False) written out point by point.

    grid g = 2·point − 1 ∈ [−1, 1]; the pixel coordinate is ((g + 1)·W − 1)/2; each of the four pixels around
    it contributes (1 − |distance along x|)(1 − |distance along y|) if it lies inside the map, else nothing.
    """
    n_images, channels, height, width = x.shape
    y = np.zeros((n_images, channels, points.shape[1]))
    for n in range(n_images):
        for p, (px, py) in enumerate(points[n]):
            u = ((2 * px - 1 + 1) * width - 1) / 2
            v = ((2 * py - 1 + 1) * height - 1) / 2
            for i in (math.floor(v), math.floor(v) + 1):
                for j in (math.floor(u), math.floor(u) + 1):
                    if 0 <= i < height and 0 <= j < width:
                        y[n, :, p] += (1 - abs(u - j)) * (1 - abs(v - i)) * x[n, :, i, j]
    return y


def border_points(rng, n_images, count):
    """Random points, some slightly outside [0, 1], plus the corners, edges and pixel centres exactly."""
    points = rng.uniform(-0.15, 1.15, (n_images, count, 2))
    special = [[0, 0], [1, 1], [0, 1], [1, 0], [0.5, 0], [0, 0.5], [1, 0.5], [0.5, 1], [1.2, 0.5], [-0.3, -0.3]]
    points[:, :min(count, len(special))] = special[:count]
    return points


def test_pixel_centres_return_the_pixel_on_paper():
    # A 2x2 map; the centre of pixel (i, j) is ((j + 1/2)/2, (i + 1/2)/2); the middle of the map averages all four.
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    points = np.array([[[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75], [0.5, 0.5], [0.0, 0.25]]])
    y = point_sample(Tensor(x), points).numpy()
    # The last point is on the left edge, half a pixel left of pixel (0, 0)'s centre: half of it, half zero.
    np.testing.assert_allclose(y[0, 0], [1, 2, 3, 4, 2.5, 0.5])


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 2, 5, 7), (3, 4, 6, 3), (2, 3, 9, 1)])
def test_forward_matches_the_grid_sample_loop_reference(shape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    points = border_points(rng, shape[0], 23)
    np.testing.assert_allclose(point_sample(Tensor(x), points).numpy(), loop_reference(x, points), atol=1e-12)


def test_float32_in_float32_out():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    points = rng.uniform(0, 1, (2, 6, 2)).astype(np.float32)
    y = point_sample(Tensor(x), points)
    assert y.dtype == np.float32 and y.shape == (2, 3, 6)
    np.testing.assert_allclose(y.numpy(), loop_reference(x.astype(np.float64), points.astype(np.float64)),
                               atol=1e-5)


@pytest.mark.parametrize("shape, count", [((1, 1, 1, 1), 3), ((1, 2, 5, 7), 17), ((2, 3, 3, 4), 12),
                                          ((1, 2, 1, 6), 11)])
def test_gradcheck_with_points_on_borders_and_outside(shape, count):
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal(shape), requires_grad=True)
    points = border_points(rng, shape[0], count)
    assert gradcheck(lambda t: point_sample(t, points), [x])


def test_point_sample_is_the_function_checked_above():
    x = Tensor(np.zeros((1, 1, 2, 2)), requires_grad=True)
    assert isinstance(point_sample(x, np.zeros((1, 1, 2))).creator, PointSampleFunction)


def test_gradient_is_the_adjoint_of_the_forward():
    # y = A x for a sparse A; the backward applies Aᵀ: ⟨A x, g⟩ = ⟨x, Aᵀ g⟩ for any x and g.
    rng = np.random.default_rng(4)
    x = Tensor(rng.standard_normal((2, 3, 6, 5)), requires_grad=True)
    points = border_points(rng, 2, 40)
    points[:, 20:] = points[:, :20]  # repeated points must add their gradients, not overwrite them
    g = rng.standard_normal((2, 3, 40))
    point_sample(x, points).backward(g)
    np.testing.assert_allclose(np.sum(point_sample(x.detach(), points).numpy() * g), np.sum(x.data * x.grad))


def test_no_gradient_reaches_pixels_that_no_point_touches():
    x = Tensor(np.ones((1, 1, 4, 4)), requires_grad=True)
    point_sample(x, np.array([[[0.125, 0.125]]])).sum().backward()  # exactly pixel (0, 0)'s centre
    expected = np.zeros((1, 1, 4, 4))
    expected[0, 0, 0, 0] = 1
    np.testing.assert_array_equal(x.grad, expected)


@pytest.mark.parametrize("x_shape, points_shape, message", [
    ((2, 3, 4), (2, 5, 2), "input must be 4-D"),
    ((2, 3, 4, 4), (2, 5, 3), r"points must have shape \(N, P, 2\) = \(2, P, 2\)"),
    ((2, 3, 4, 4), (1, 5, 2), r"points must have shape"),
    ((2, 3, 4, 4), (2, 5), r"points must have shape"),
])
def test_bad_shapes_are_named(x_shape, points_shape, message):
    with pytest.raises(ValueError, match="point_sample: " + message):
        point_sample(Tensor(np.zeros(x_shape)), np.zeros(points_shape))


def test_bad_dtypes_are_named():
    with pytest.raises(TypeError, match="point_sample: input must be floating point"):
        point_sample(Tensor(np.zeros((1, 1, 2, 2), np.int64)), np.zeros((1, 1, 2)))
    with pytest.raises(TypeError, match="point_sample: points must be floating-point"):
        point_sample(Tensor(np.zeros((1, 1, 2, 2))), np.zeros((1, 1, 2), np.int64))
