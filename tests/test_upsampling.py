"""interpolate (minseg/functional/upsampling.py): hand-worked values of PyTorch's rules, gradient checks, errors."""
import numpy as np
import pytest

import minseg.functional as F
from minseg import Tensor, gradcheck
from minseg.functional import upsampling

rng = np.random.default_rng(0)


def plane(rows):
    """A (1, 1, H, W) float64 tensor from nested lists."""
    return Tensor(np.array(rows, dtype=np.float64)[None, None])


def values(t):
    return t.numpy()[0, 0]


# --- nearest ---------------------------------------------------------------
def test_nearest_doubling_repeats_every_pixel():
    y = F.interpolate(plane([[1, 2], [3, 4]]), scale_factor=2)
    np.testing.assert_array_equal(values(y), [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])


def test_nearest_to_a_size_copies_floor_of_i_times_in_over_out():
    # out 3 from in 2: sources ⌊0·2/3⌋, ⌊1·2/3⌋, ⌊2·2/3⌋ = 0, 0, 1; out 2 from in 5: ⌊0⌋, ⌊2.5⌋ = 0, 2
    y = F.interpolate(plane([[1, 2], [3, 4]]), size=(3, 3))
    np.testing.assert_array_equal(values(y), [[1, 1, 2], [1, 1, 2], [3, 3, 4]])
    y = F.interpolate(plane([[0, 1, 2, 3, 4]]), size=(1, 2))
    np.testing.assert_array_equal(values(y), [[0, 2]])


def test_nearest_with_a_scale_factor_steps_by_its_inverse_as_pytorch():
    # 10 columns × 0.35 → 3 outputs. The step is 1/0.35 = 2.857 (sources 0, 2, 5), not 10/3 (0, 3, 6).
    x = plane([list(range(10))])
    np.testing.assert_array_equal(values(F.interpolate(x, scale_factor=(1, 0.35))), [[0, 2, 5]])
    np.testing.assert_array_equal(values(F.interpolate(x, size=(1, 3))), [[0, 3, 6]])


# --- bilinear ----------------------------------------------------------------
def test_bilinear_align_corners_true_hand_values():
    # s = i·(in − 1)/(out − 1): corners map to corners, the middle is the average.
    y = F.interpolate(plane([[0, 1], [2, 3]]), size=(3, 3), mode="bilinear", align_corners=True)
    np.testing.assert_allclose(values(y), [[0, 0.5, 1], [1, 1.5, 2], [2, 2.5, 3]])
    y = F.interpolate(plane([[0, 10, 20]]), size=(1, 5), mode="bilinear", align_corners=True)
    np.testing.assert_allclose(values(y), [[0, 5, 10, 15, 20]])


def test_bilinear_align_corners_false_hand_values():
    # in 2 → out 4: s = (i + ½)/2 − ½ = −¼ (clamped to 0), ¼, ¾, 1¼ (right neighbour clamped to the edge).
    y = F.interpolate(plane([[0, 1], [2, 3]]), scale_factor=2, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(values(y), [[0, 0.25, 0.75, 1], [0.5, 0.75, 1.25, 1.5],
                                           [1.5, 1.75, 2.25, 2.5], [2, 2.25, 2.75, 3]])
    # in 4 → out 2: s = (i + ½)·2 − ½ = ½, 2½: averages of neighbours.
    y = F.interpolate(plane([[0, 1, 2, 3]]), size=(1, 2), mode="bilinear")
    np.testing.assert_allclose(values(y), [[0.5, 2.5]])
    # in 4 → out 3: s = (i + ½)·4/3 − ½ = 1/6, 3/2, 17/6.
    y = F.interpolate(plane([[0, 1, 2, 3]]), size=(1, 3), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(values(y), [[1 / 6, 1.5, 17 / 6]])


def test_same_size_is_a_copy_even_with_a_scale_factor():
    x = Tensor(rng.standard_normal((1, 2, 5, 7)))
    for mode in ("nearest", "bilinear"):
        np.testing.assert_array_equal(F.interpolate(x, scale_factor=1.1, mode=mode).numpy(), x.numpy())
        np.testing.assert_array_equal(F.interpolate(x, size=(5, 7), mode=mode).numpy(), x.numpy())


def test_bilinear_preserves_constants_and_linear_ramps_with_align_corners():
    ramp = np.add.outer(np.arange(4.0), 2 * np.arange(6.0))  # f(r, c) = r + 2c
    y = F.interpolate(plane(ramp), size=(7, 11), mode="bilinear", align_corners=True)
    r, c = np.meshgrid(np.linspace(0, 3, 7), np.linspace(0, 5, 11), indexing="ij")
    np.testing.assert_allclose(values(y), r + 2 * c, atol=1e-12)
    const = F.interpolate(plane(np.full((3, 5), 2.5)), size=(8, 4), mode="bilinear")
    np.testing.assert_allclose(values(const), 2.5)


# --- the definition, and the fast path against it ---------------------------------
def loop_bilinear(x, out_h, out_w, align_corners):
    """Pixel by pixel from PyTorch's rule: the source coordinate, its two neighbours per axis, four weights."""
    def source(i, n_in, n_out):
        if n_in == n_out:
            return float(i)
        if align_corners:
            return i * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        return max((i + 0.5) * n_in / n_out - 0.5, 0.0)

    n, c, h, w = x.shape
    y = np.zeros((n, c, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            s, t = source(i, h, out_h), source(j, w, out_w)
            top, left = min(int(np.floor(s)), h - 1), min(int(np.floor(t)), w - 1)
            bottom, right = min(top + 1, h - 1), min(left + 1, w - 1)
            a, b = s - top, t - left
            y[:, :, i, j] = ((1 - a) * ((1 - b) * x[:, :, top, left] + b * x[:, :, top, right])
                             + a * ((1 - b) * x[:, :, bottom, left] + b * x[:, :, bottom, right]))
    return y


AWKWARD_SIZES = [((1, 2, 5, 7), (11, 3)), ((2, 1, 9, 4), (4, 9)), ((1, 3, 3, 8), (3, 17)), ((2, 2, 6, 6), (1, 1))]


@pytest.mark.parametrize("shape, size", AWKWARD_SIZES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_matches_a_pixel_loop_on_both_fast_paths(shape, size, align_corners, fast_path):
    x = rng.standard_normal(shape)
    y = F.interpolate(Tensor(x), size=size, mode="bilinear", align_corners=align_corners).numpy()
    np.testing.assert_allclose(y, loop_bilinear(x, *size, align_corners), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, size", AWKWARD_SIZES)
@pytest.mark.parametrize("mode, align_corners", [("nearest", None), ("bilinear", False), ("bilinear", True)])
def test_fast_paths_equal_resample_simple_forward_and_backward(shape, size, mode, align_corners, fast_path):
    x = Tensor(rng.standard_normal(shape), requires_grad=True)
    y = F.interpolate(x, size=size, mode=mode, align_corners=align_corners)
    rows, cols = y.creator.rows, y.creator.cols  # the sampling matrices (backward releases the node)
    grad_y = rng.standard_normal(y.shape)
    y.backward(grad_y)
    np.testing.assert_allclose(y.numpy(), upsampling.resample_simple(x.numpy(), rows, cols), rtol=1e-12, atol=1e-12)
    # the backward is the adjoint: ⟨A_h x A_wᵀ, g⟩ = ⟨x, A_hᵀ g A_w⟩ for every x and g
    np.testing.assert_allclose(x.grad, upsampling.resample_simple(grad_y, rows.T, cols.T), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.sum(y.numpy() * grad_y), np.sum(x.numpy() * x.grad), rtol=1e-12)


# --- gradients and dtypes ------------------------------------------------------
RESIZE_CASES = [
    dict(scale_factor=2), dict(size=(7, 4)), dict(size=(2, 3)), dict(scale_factor=(1.5, 0.6)),
    dict(size=(1, 9)), dict(scale_factor=3),
]
MODES = [("nearest", None), ("bilinear", False), ("bilinear", True)]


@pytest.fixture(params=["dense", "taps"])
def fast_path(request, monkeypatch):
    """Run the test once with the dense product along every axis, once with the gathers (taps)."""
    monkeypatch.setattr(upsampling, "DENSE_UP_TO", 10**9 if request.param == "dense" else 0)
    return request.param


@pytest.mark.parametrize("resize", RESIZE_CASES)
@pytest.mark.parametrize("mode, align_corners", MODES)
def test_interpolate_gradcheck(resize, mode, align_corners, fast_path):
    x = Tensor(rng.standard_normal((2, 2, 5, 6)), requires_grad=True)
    assert gradcheck(lambda t: F.interpolate(t, mode=mode, align_corners=align_corners, **resize), [x])


@pytest.mark.parametrize("mode, align_corners", MODES)
def test_interpolate_gradcheck_batch_one_single_pixel_and_single_row(mode, align_corners, fast_path):
    for shape in [(1, 1, 1, 1), (1, 3, 1, 4)]:
        x = Tensor(rng.standard_normal(shape), requires_grad=True)
        assert gradcheck(lambda t: F.interpolate(t, size=(3, 5), mode=mode, align_corners=align_corners), [x])


@pytest.mark.parametrize("mode, align_corners", MODES)
def test_float32_in_float32_out(mode, align_corners):
    x = Tensor(rng.standard_normal((2, 3, 5, 4)).astype(np.float32), requires_grad=True)
    y = F.interpolate(x, scale_factor=2, mode=mode, align_corners=align_corners)
    assert y.shape == (2, 3, 10, 8) and y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


def test_nearest_upsampling_gradient_sums_each_block():
    x = Tensor(np.zeros((1, 1, 2, 2)), requires_grad=True)
    grad = np.arange(16.0).reshape(1, 1, 4, 4)
    F.interpolate(x, scale_factor=2).backward(grad)
    np.testing.assert_array_equal(x.grad[0, 0], [[0 + 1 + 4 + 5, 2 + 3 + 6 + 7], [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]])


# --- errors ----------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(), ValueError, "size or scale_factor"),
    (dict(size=4, scale_factor=2), ValueError, "size or scale_factor"),
    (dict(size=2, align_corners=True), ValueError, "align_corners"),
    (dict(size=2, mode="bicubic"), ValueError, "mode"),
    (dict(size=(0, 3)), ValueError, "size"),
    (dict(size=(2, 3, 4)), ValueError, "size"),
    (dict(scale_factor=-1), ValueError, "scale_factor"),
    (dict(scale_factor=0.1), ValueError, "scale_factor"),
])
def test_bad_arguments_raise_errors_naming_them(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        F.interpolate(Tensor(rng.standard_normal((1, 1, 4, 5))), **kwargs)


def test_non_4d_input_raises():
    with pytest.raises(ValueError, match="input must be 4-D"):
        F.interpolate(Tensor(np.zeros((3, 4, 5))), size=2)
