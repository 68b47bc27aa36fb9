"""Pooling (minseg/functional/pooling.py, unpooling.py, adaptive_pooling.py): loop references, float64 gradient
checks, unpooling, errors."""
import numpy as np
import pytest

import minseg.functional as F
from minseg import Tensor, backend, gradcheck, nn
from minseg.functional.pooling import _pad, avg_pool2d_simple, max_pool2d_simple

rng = np.random.default_rng(0)


def rand(*shape, requires_grad=False):
    return Tensor(rng.standard_normal(shape), requires_grad=requires_grad)


def loop_pool(x, kernel, stride, padding, kind):
    """Window by window, as a textbook writes it: returns (values, flat indices of the first maximum)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, w = x.shape
    fill = -np.inf if kind == "max" else 0.0
    padded = np.full((n, c, h + 2 * ph, w + 2 * pw), fill)
    padded[:, :, ph:ph + h, pw:pw + w] = x
    inside_mask = np.zeros((h + 2 * ph, w + 2 * pw), bool)
    inside_mask[ph:ph + h, pw:pw + w] = True
    out_h, out_w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    values, indices = np.zeros((n, c, out_h, out_w)), np.zeros((n, c, out_h, out_w), np.int64)
    for b in range(n):
        for ch in range(c):
            for i in range(out_h):
                for j in range(out_w):
                    window = padded[b, ch, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    if kind == "avg":
                        values[b, ch, i, j] = window.mean()
                        continue
                    if kind == "avg of the inside":  # count_include_pad=False: the padding is not counted
                        inside = inside_mask[i * sh:i * sh + kh, j * sw:j * sw + kw]
                        values[b, ch, i, j] = window[inside].mean()
                        continue
                    r, q = np.unravel_index(np.argmax(window), window.shape)  # argmax: first maximum
                    values[b, ch, i, j] = window[r, q]
                    indices[b, ch, i, j] = (i * sh + r - ph) * w + (j * sw + q - pw)
    return values, indices


# (input shape, kernel, stride, padding): odd sizes, batch 1, overlapping and tiling windows,
# rectangular kernels, padding, and inputs whose last rows/columns no window reaches.
WINDOW_CASES = [
    ((2, 3, 6, 8), (2, 2), (2, 2), (0, 0)),
    ((1, 2, 7, 9), (2, 2), (2, 2), (0, 0)),
    ((2, 2, 7, 6), (3, 3), (2, 2), (1, 1)),
    ((1, 3, 5, 5), (3, 3), (1, 1), (1, 1)),
    ((2, 1, 6, 7), (3, 2), (1, 2), (1, 0)),
    ((1, 2, 9, 5), (3, 3), (3, 3), (0, 1)),
    ((2, 2, 4, 6), (2, 3), (1, 1), (0, 0)),
    ((1, 1, 3, 3), (1, 1), (2, 2), (0, 0)),
]


@pytest.mark.parametrize("shape, kernel, stride, padding", WINDOW_CASES)
def test_max_pool2d_values_and_indices_match_a_loop_reference(shape, kernel, stride, padding):
    x = rng.standard_normal(shape)
    y, indices = F.max_pool2d(Tensor(x), kernel, stride, padding, return_indices=True)
    expected, expected_indices = loop_pool(x, kernel, stride, padding, "max")
    np.testing.assert_array_equal(y.numpy(), expected)
    np.testing.assert_array_equal(indices.numpy(), expected_indices)
    assert indices.dtype == np.int64


@pytest.mark.parametrize("shape, kernel, stride, padding", WINDOW_CASES)
def test_simple_versions_match_the_loop_reference_and_the_fast_functions(shape, kernel, stride, padding):
    x = rng.standard_normal(shape)
    expected_max, _ = loop_pool(x, kernel, stride, padding, "max")
    np.testing.assert_array_equal(max_pool2d_simple(x, kernel, stride, padding), expected_max)
    np.testing.assert_array_equal(F.max_pool2d(Tensor(x), kernel, stride, padding).numpy(),
                                  max_pool2d_simple(x, kernel, stride, padding))
    expected_avg = loop_pool(x, kernel, stride, padding, "avg")[0]
    np.testing.assert_allclose(avg_pool2d_simple(x, kernel, stride, padding), expected_avg, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(F.avg_pool2d(Tensor(x), kernel, stride, padding).numpy(),
                               avg_pool2d_simple(x, kernel, stride, padding), rtol=1e-12, atol=1e-12)


def test_max_pool2d_ties_among_three_or_more_taps_keep_the_first():
    # A 3-wide window of equal values, then a later larger one: exercises every step of the running max.
    x = np.array([[[[2.0, 2.0, 2.0, 1.0, 3.0, 3.0]]]])
    y, indices = F.max_pool2d(Tensor(x), (1, 3), return_indices=True)
    np.testing.assert_array_equal(y.numpy().ravel(), [2.0, 3.0])
    np.testing.assert_array_equal(indices.numpy().ravel(), [0, 4])


@pytest.mark.parametrize("shape, kernel, stride, padding", WINDOW_CASES[:5])
def test_max_pool2d_ties_go_to_the_first_maximum_in_row_major_order(shape, kernel, stride, padding):
    x = rng.integers(0, 3, size=shape).astype(np.float64)  # many equal values in every window
    _, indices = F.max_pool2d(Tensor(x), kernel, stride, padding, return_indices=True)
    np.testing.assert_array_equal(indices.numpy(), loop_pool(x, kernel, stride, padding, "max")[1])


def test_max_pool2d_tie_on_an_anti_diagonal_picks_the_upper_right_element():
    # Row-major order reaches (0, 1) before (1, 0); a column-first max would pick (1, 0).
    x = np.array([[[[0.0, 5.0], [5.0, 1.0]]]])
    _, indices = F.max_pool2d(Tensor(x), 2, return_indices=True)
    assert indices.numpy().item() == 1


@pytest.mark.parametrize("shape, kernel, stride, padding", WINDOW_CASES)
def test_max_pool2d_gradcheck(shape, kernel, stride, padding):
    x = rand(*shape, requires_grad=True)
    assert gradcheck(lambda t: F.max_pool2d(t, kernel, stride, padding), [x])


def test_max_pool2d_gradient_goes_to_the_maximum_only():
    x = Tensor(np.array([[[[1.0, 7.0, 2.0, 0.0], [3.0, 4.0, 9.0, 8.0]]]]), requires_grad=True)
    F.max_pool2d(x, 2).backward(np.array([[[[10.0, 20.0]]]]))
    np.testing.assert_array_equal(x.grad, [[[[0, 10, 0, 0], [0, 0, 20, 0]]]])


def test_max_pool2d_kernel_of_256_or_more_taps_keeps_winners_in_int32():
    # 257 taps do not fit a uint8 winner; the int32 path must give the loop reference's values and indices.
    x = rng.standard_normal((1, 2, 2, 260))
    y, indices = F.max_pool2d(Tensor(x), (1, 257), 1, return_indices=True)
    expected, expected_indices = loop_pool(x, (1, 257), (1, 1), (0, 0), "max")
    np.testing.assert_array_equal(y.numpy(), expected)
    np.testing.assert_array_equal(indices.numpy(), expected_indices)


@pytest.mark.parametrize("padding", [(0, 0), (1, 0), (0, 1), (2, 1)])
def test_pad_fills_only_a_border_of_the_value_around_x(padding):
    x = rng.standard_normal((2, 3, 4, 5))
    expected = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2), constant_values=-np.inf)
    np.testing.assert_array_equal(_pad(x, padding, -np.inf), expected)


@pytest.mark.parametrize("shape, kernel, stride, padding", WINDOW_CASES)
def test_buffers_left_unzeroed_are_fully_written(shape, kernel, stride, padding, monkeypatch):
    # The fast paths skip zeroing where every element gets written; with np.empty handing out NaN, any element
    # they missed would show up in the values or gradients.
    x, grad_y = rng.standard_normal(shape), None
    results = []
    for nan_empty in (False, True):
        if nan_empty:
            monkeypatch.setattr(np, "empty", lambda shape, dtype=float: np.full(shape, np.nan, dtype))
        row = []
        for pool in (F.max_pool2d, F.avg_pool2d):
            x_tensor = Tensor(x, requires_grad=True)
            y = pool(x_tensor, kernel, stride, padding)
            grad_y = rng.standard_normal(y.shape) if grad_y is None else grad_y
            y.backward(grad_y)
            row += [y.numpy(), x_tensor.grad]
        results.append(row)
    for plain, with_nan in zip(*results):
        np.testing.assert_array_equal(with_nan, plain)


@pytest.mark.parametrize("shape, kernel, stride, padding", WINDOW_CASES)
def test_avg_pool2d_matches_a_loop_reference_counting_padding(shape, kernel, stride, padding):
    x = rng.standard_normal(shape)
    y = F.avg_pool2d(Tensor(x), kernel, stride, padding)
    np.testing.assert_allclose(y.numpy(), loop_pool(x, kernel, stride, padding, "avg")[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, kernel, stride, padding", WINDOW_CASES)
def test_avg_pool2d_gradcheck(shape, kernel, stride, padding):
    x = rand(*shape, requires_grad=True)
    assert gradcheck(lambda t: F.avg_pool2d(t, kernel, stride, padding), [x])


@pytest.mark.parametrize("shape, kernel, stride, padding", WINDOW_CASES)
def test_avg_pool2d_without_the_padding_matches_a_loop_reference_and_gradcheck(shape, kernel, stride, padding):
    x = rng.standard_normal(shape)
    y = F.avg_pool2d(Tensor(x), kernel, stride, padding, count_include_pad=False)
    np.testing.assert_allclose(y.numpy(), loop_pool(x, kernel, stride, padding, "avg of the inside")[0],
                               rtol=1e-12, atol=1e-12)
    x = Tensor(x, requires_grad=True)
    assert gradcheck(lambda t: F.avg_pool2d(t, kernel, stride, padding, count_include_pad=False), [x])


def test_avg_pool2d_without_the_padding_keeps_a_constant_image_constant():
    x = Tensor(np.full((1, 1, 4, 5), 7.0))
    np.testing.assert_allclose(nn.AvgPool2d(3, 1, 1, count_include_pad=False)(x).numpy(), 7.0, rtol=1e-12)
    assert F.avg_pool2d(x, 3, 1, 1).numpy()[0, 0, 0, 0] == pytest.approx(7.0 * 4 / 9)


@pytest.mark.parametrize("shape, kernel, stride, padding", [
    ((2, 3, 6, 8), 2, 2, 0), ((1, 2, 7, 9), 2, 2, 0), ((2, 2, 7, 6), 3, 2, 1), ((1, 1, 9, 7), (3, 2), (3, 2), 0)])
def test_max_unpool2d_puts_each_maximum_back_where_it_came_from(shape, kernel, stride, padding):
    x = rng.standard_normal(shape)
    y, indices = F.max_pool2d(Tensor(x), kernel, stride, padding, return_indices=True)
    restored = F.max_unpool2d(y, indices, kernel, stride, padding, output_size=shape[2:]).numpy()
    assert restored.shape == shape
    expected = np.zeros(shape)
    n, c = shape[:2]
    flat = expected.reshape(n, c, -1)
    for b in range(n):
        for ch in range(c):
            flat[b, ch, indices.numpy()[b, ch].ravel()] = x.reshape(n, c, -1)[b, ch, indices.numpy()[b, ch].ravel()]
    np.testing.assert_array_equal(restored, expected)
    # each maximum sits at its place in x, every other element is zero
    kept = restored != 0
    np.testing.assert_array_equal(restored[kept], x[kept])
    assert kept.sum() == len(np.unique(indices.numpy().reshape(n * c, -1) + np.arange(n * c)[:, None] * 10**6))


def test_max_unpool2d_default_output_size_follows_pytorch_formula():
    x = rand(1, 2, 3, 4)
    indices = Tensor(np.zeros((1, 2, 3, 4), np.int64))
    assert F.max_unpool2d(x, indices, 2).shape == (1, 2, 6, 8)  # (H - 1)·s - 2p + k
    assert F.max_unpool2d(x, indices, 3, 2, 1).shape == (1, 2, 5, 7)
    assert F.max_unpool2d(x, indices, 2, output_size=(1, 2, 7, 9)).shape == (1, 2, 7, 9)


@pytest.mark.parametrize("shape, kernel, stride, padding", [
    ((2, 3, 7, 6), 2, 2, 0), ((1, 1, 5, 5), 2, 2, 0), ((2, 2, 7, 6), 2, 2, 1), ((1, 3, 9, 7), (3, 2), (3, 2), 0)])
def test_max_unpool2d_gradcheck_flows_to_x_only(shape, kernel, stride, padding):
    x = rng.standard_normal(shape)
    y, indices = F.max_pool2d(Tensor(x), kernel, stride, padding, return_indices=True)
    # Any values may be unpooled, not just the pooled ones. Windows that do not overlap: with overlap two
    # outputs may share an index, and which value lands there is unspecified (as in PyTorch).
    values = rand(*y.shape, requires_grad=True)
    assert gradcheck(lambda v: F.max_unpool2d(v, indices, kernel, stride, padding, output_size=shape[2:]), [values])
    assert not indices.requires_grad


def loop_adaptive(x, out_h, out_w):
    n, c, h, w = x.shape
    y = np.zeros((n, c, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            r0, r1 = (i * h) // out_h, -(-((i + 1) * h) // out_h)
            c0, c1 = (j * w) // out_w, -(-((j + 1) * w) // out_w)
            y[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return y


@pytest.mark.parametrize("shape, output_size, expected_hw", [
    ((2, 3, 7, 9), (3, 4), (3, 4)), ((1, 2, 6, 6), 1, (1, 1)), ((2, 1, 5, 8), (5, 3), (5, 3)),
    ((1, 2, 6, 10), (4, None), (4, 10)), ((1, 1, 3, 2), (5, 7), (5, 7)), ((1, 2, 12, 8), 6, (6, 6))])
def test_adaptive_avg_pool2d_matches_pytorch_bins_and_gradcheck(shape, output_size, expected_hw):
    x = rand(*shape, requires_grad=True)
    y = F.adaptive_avg_pool2d(x, output_size)
    assert y.shape == shape[:2] + expected_hw
    np.testing.assert_allclose(y.numpy(), loop_adaptive(x.numpy(), *expected_hw), rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda t: F.adaptive_avg_pool2d(t, output_size), [x])


def test_adaptive_avg_pool2d_hand_values_with_overlapping_bins():
    # H = 3 into 2 bins: rows [0, 2) and [1, 3) — the middle row belongs to both.
    x = np.arange(3.0).reshape(1, 1, 3, 1)
    np.testing.assert_allclose(F.adaptive_avg_pool2d(Tensor(x), (2, 1)).numpy().ravel(), [0.5, 1.5])


@pytest.mark.parametrize("pool", [
    lambda t: F.max_pool2d(t, 2), lambda t: F.max_pool2d(t, 3, 2, 1), lambda t: F.avg_pool2d(t, 2),
    lambda t: F.avg_pool2d(t, 3, 1, 1), lambda t: F.adaptive_avg_pool2d(t, (2, 3))])
def test_float32_in_float32_out_forward_and_backward(pool):
    x = Tensor(rng.standard_normal((2, 3, 7, 8)).astype(np.float32), requires_grad=True)
    y = pool(x)
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


def test_max_unpool2d_float32():
    x = Tensor(rng.standard_normal((1, 2, 6, 6)).astype(np.float32))
    y, indices = F.max_pool2d(x, 2, return_indices=True)
    values = Tensor(y.numpy(), requires_grad=True)
    z = F.max_unpool2d(values, indices, 2)
    z.sum().backward()
    assert z.dtype == np.float32 and values.grad.dtype == np.float32


def test_arguments_take_pytorchs_keyword_names():
    x = rand(1, 2, 6, 6)
    y, indices = F.max_pool2d(input=x, kernel_size=2, stride=2, padding=0, return_indices=True)
    np.testing.assert_array_equal(y.numpy(), F.max_pool2d(x, 2).numpy())
    np.testing.assert_array_equal(F.avg_pool2d(input=x, kernel_size=3, stride=1, padding=1).numpy(),
                                  F.avg_pool2d(x, 3, 1, 1).numpy())
    np.testing.assert_array_equal(F.max_unpool2d(input=y, indices=indices, kernel_size=2, output_size=(6, 6)).numpy(),
                                  F.max_unpool2d(y, indices, 2).numpy())
    np.testing.assert_array_equal(F.adaptive_avg_pool2d(input=x, output_size=3).numpy(),
                                  F.adaptive_avg_pool2d(x, 3).numpy())
    np.testing.assert_array_equal(max_pool2d_simple(x.numpy(), kernel_size=(2, 2), stride=(2, 2), padding=(0, 0)),
                                  y.numpy())


@pytest.mark.parametrize("call, error, pattern", [
    (lambda x: F.max_pool2d(x, 9), ValueError, "kernel_size"),
    (lambda x: F.avg_pool2d(x, (2, 10), padding=(0, 1)), ValueError, "kernel_size"),
    (lambda x: F.max_pool2d(x, 2, padding=-1), ValueError, "padding"),
    (lambda x: F.max_pool2d(x, 2, padding=2), ValueError, "padding"),
    (lambda x: F.avg_pool2d(x, 3, padding=2), ValueError, "padding"),
    (lambda x: F.max_pool2d(x, 2, stride=0), ValueError, "stride"),
    (lambda x: F.max_pool2d(x, 0), ValueError, "kernel_size"),
    (lambda x: F.max_pool2d(x, 2.5), TypeError, "kernel_size"),
    (lambda x: F.avg_pool2d(x, (2, 2, 2)), TypeError, "kernel_size"),
    (lambda x: F.max_pool2d(x[0], 2), ValueError, "input must be 4-D"),
    (lambda x: F.adaptive_avg_pool2d(x, 0), ValueError, "output_size"),
    (lambda x: F.adaptive_avg_pool2d(x, (1, 2, 3)), ValueError, "output_size"),
])
def test_bad_arguments_raise_errors_naming_them(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(rand(1, 2, 6, 7))


def test_max_unpool2d_bad_indices_and_output_size_raise():
    x = rand(1, 2, 3, 3)
    good = Tensor(np.zeros((1, 2, 3, 3), np.int64))
    with pytest.raises(ValueError, match="indices has shape"):
        F.max_unpool2d(x, Tensor(np.zeros((1, 2, 3, 2), np.int64)), 2)
    with pytest.raises(TypeError, match="indices must be integers"):
        F.max_unpool2d(x, Tensor(np.zeros((1, 2, 3, 3))), 2)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 36\) .* got values in \[36, 36\]"):
        F.max_unpool2d(x, Tensor(np.full((1, 2, 3, 3), 36, np.int64)), 2)
    negative = np.zeros((1, 2, 3, 3), np.int64)
    negative[0, 1, 2, 2] = -1
    with pytest.raises(ValueError, match=r"got values in \[-1, 0\]"):
        F.max_unpool2d(x, Tensor(negative), 2)
    # int8 -1 is 255 as a byte; an output plane of 30 x 30 > 255 must still reject it.
    with pytest.raises(ValueError, match=r"got values in \[-1, 0\]"):
        F.max_unpool2d(rand(1, 2, 3, 3), Tensor(negative.astype(np.int8)), 10)
    with pytest.raises(ValueError, match="output_size"):
        F.max_unpool2d(x, good, 2, output_size=(8, 6))


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cupy_available(), reason="needs CuPy and an NVIDIA GPU")
@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 2, 1), ((3, 2), 1, (1, 0))])
def test_pool_and_unpool_on_gpu_match_numpy(kernel, stride, padding):
    x = rng.standard_normal((2, 3, 7, 8)).astype(np.float32)
    results = []
    for device in ("cpu", "cuda"):
        x_tensor = Tensor(x, requires_grad=True).to(device)
        y, indices = F.max_pool2d(x_tensor, kernel, stride, padding, return_indices=True)
        values = Tensor(y.numpy() * 2, requires_grad=True).to(device)
        restored = F.max_unpool2d(values, indices, kernel, stride, padding, output_size=(7, 8))
        (y.sum() + F.avg_pool2d(x_tensor, kernel, stride, padding).sum() + restored.sum()).backward()
        assert x_tensor.grad is not None and values.grad is not None and indices.device == device
        results.append([y.numpy(), indices.numpy(), restored.numpy(), backend.to_device(x_tensor.grad, "cpu"),
                        backend.to_device(values.grad, "cpu")])
    for on_cpu, on_gpu in zip(*results):
        np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-6, atol=1e-6)
    with pytest.raises(RuntimeError, match="max_unpool2d: all tensors must be on the same device"):
        F.max_unpool2d(values, indices.to("cpu"), kernel, stride, padding, output_size=(7, 8))
