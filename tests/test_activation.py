"""prelu (minseg/functional/activation.py): paper case, loop reference, gradient checks, properties, errors."""
import numpy as np
import pytest

import minseg.functional as F
from minseg import Tensor, backend, gradcheck
from minseg.functional.activation import _slope_factor, _sum_per_channel_of_product

rng = np.random.default_rng(0)


def reference_prelu(x, weight):
    """Element by element from the definition: x if x > 0 else a_c · x, c the element's dim-1 index."""
    y = np.empty_like(x)
    for index in np.ndindex(x.shape):
        slope = weight[0] if weight.size == 1 else weight[index[1]]
        y[index] = x[index] if x[index] > 0 else slope * x[index]
    return y


def test_a_case_small_enough_to_check_on_paper():
    x = Tensor(np.array([[[-2.0, 3.0]], [[0.0, -1.0]]]).reshape(2, 1, 2))  # (N=2, C=1, 2)
    y = F.prelu(x, Tensor(np.array([0.25])))
    np.testing.assert_array_equal(y.numpy(), [[[-0.5, 3.0]], [[0.0, -0.25]]])


@pytest.mark.parametrize("shape, per_channel", [((2, 3, 5, 4), True), ((1, 3, 5, 4), False), ((3, 4), True),
                                                ((2, 5, 7), True), ((6,), False), ((), False),
                                                ((2, 3, 2, 3, 2), True)])
def test_forward_matches_the_loop_reference(shape, per_channel):
    x = rng.standard_normal(shape)
    weight = rng.uniform(-0.5, 0.5, shape[1] if per_channel else 1)
    np.testing.assert_array_equal(F.prelu(Tensor(x), Tensor(weight)).numpy(), reference_prelu(x, weight))


@pytest.mark.parametrize("shape, per_channel", [((2, 3, 5, 4), True), ((1, 3, 5, 4), False), ((1, 1, 3, 3), True),
                                                ((3, 4), True), ((2, 5, 7), False), ((6,), False), ((), False),
                                                ((1, 2, 3, 1, 2), True)])
def test_gradients_of_x_and_the_slopes(shape, per_channel):
    x = rng.standard_normal(shape)
    x[np.abs(x) < 1e-3] = 0.5  # keep central differences away from the kink at 0
    weight = Tensor(rng.uniform(-0.5, 0.5, shape[1] if per_channel else 1), requires_grad=True)
    assert gradcheck(F.prelu, [Tensor(x, requires_grad=True), weight])


def test_slope_one_is_the_identity_and_slope_zero_is_relu():
    x = Tensor(rng.standard_normal((2, 3, 4, 4)))
    np.testing.assert_array_equal(F.prelu(x, Tensor(np.ones(3))).numpy(), x.numpy())
    np.testing.assert_array_equal(F.prelu(x, Tensor(np.zeros(1))).numpy(), F.relu(x).numpy())


def test_the_slope_gradient_sums_grad_times_x_over_the_negative_elements_of_its_channel():
    x = Tensor(rng.standard_normal((2, 3, 4, 4)), requires_grad=True)
    weight = Tensor(np.full(3, 0.1), requires_grad=True)
    grad_y = rng.standard_normal(x.shape)
    F.prelu(x, weight).backward(grad_y)
    negative = x.numpy() <= 0
    np.testing.assert_allclose(weight.grad, (grad_y * x.numpy() * negative).sum(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(x.grad, np.where(negative, 0.1 * grad_y, grad_y), rtol=1e-12)


def where_reference(x, weight, grad_y):
    """y, grad_x and grad_weight written with masks and selects, straight from the docstring's table."""
    slope = weight.reshape((1, -1) + (1,) * (x.ndim - 2)) if weight.size > 1 else weight.reshape(())
    positive = x > 0
    y = np.where(positive, x, slope * x)
    grad_x = np.where(positive, grad_y, slope * grad_y)
    per_element = np.where(positive, 0, grad_y * x)
    summed = tuple(d for d in range(x.ndim) if d != 1) if weight.size > 1 else None
    grad_weight = np.sum(per_element, axis=summed).reshape(weight.shape)
    return y, grad_x, grad_weight


def float32_with_exact_zeros(shape):
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::5] = 0.0
    x.reshape(-1)[2::7] = -0.0
    return x


@pytest.mark.parametrize("shape, per_channel", [((4, 16, 12, 10), True), ((3, 7, 5, 9), False), ((1, 5, 13), True),
                                                ((6, 4), True), ((11,), False), ((), False),
                                                ((2, 3, 4, 3, 5), True)])
def test_products_match_the_mask_and_select_reference_in_float32_with_exact_zeros(shape, per_channel):
    x = float32_with_exact_zeros(shape)
    weight = rng.uniform(-0.5, 1.5, shape[1] if per_channel else 1).astype(np.float32)
    grad_y = rng.standard_normal(shape).astype(np.float32)
    x_tensor, weight_tensor = Tensor(x, requires_grad=True), Tensor(weight, requires_grad=True)
    y = F.prelu(x_tensor, weight_tensor)
    y.backward(grad_y)
    expected_y, expected_grad_x, expected_grad_weight = where_reference(x, weight, grad_y)
    # Each element of y and grad_x is the same single product either way: equal to the bit, signed zeros too.
    np.testing.assert_array_equal(y.numpy(), expected_y)
    np.testing.assert_array_equal(np.signbit(y.numpy()), np.signbit(expected_y))
    np.testing.assert_array_equal(x_tensor.grad, expected_grad_x)
    # grad_weight is a sum: only the order of the additions differs.
    assert weight_tensor.grad.dtype == np.float32 and weight_tensor.grad.shape == weight.shape
    np.testing.assert_allclose(weight_tensor.grad, expected_grad_weight, rtol=1e-5, atol=1e-5)


def test_the_slope_factor_is_one_where_x_is_positive_and_the_channel_slope_elsewhere_zero_included():
    x = float32_with_exact_zeros((3, 4, 5, 6))
    weight = rng.uniform(-0.5, 1.5, 4).astype(np.float32)
    factor = _slope_factor(x, weight)
    assert factor.dtype == np.float32 and factor.shape == x.shape
    np.testing.assert_array_equal(factor, np.where(x > 0, 1.0, weight[None, :, None, None]).astype(np.float32))
    shared = _slope_factor(x[0, 0, 0], np.array([0.3], np.float32))
    np.testing.assert_array_equal(shared, np.where(x[0, 0, 0] > 0, 1.0, np.float32(0.3)))
    # An infinite slope must not turn the positive side's factor into 0·inf = NaN.
    infinite = np.array([np.inf, -np.inf, 2.0, 0.5], np.float32)
    np.testing.assert_array_equal(_slope_factor(x, infinite),
                                  np.where(x > 0, 1.0, infinite[None, :, None, None]).astype(np.float32))
    assert _slope_factor(np.float32(-2.0) * np.ones((), np.float32), np.array([0.3], np.float32)).shape == ()


@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (2, 5), (2, 3, 4, 2, 3), (0, 3, 4), (2, 3, 0, 5)])
def test_the_per_channel_sum_of_a_product_matches_a_plain_sum(shape, contiguous):
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    if not contiguous:  # strided views, as a gradient arriving from a slice or a transpose may be
        a, b = np.swapaxes(np.swapaxes(a, 0, -1).copy(), 0, -1), b[..., ::-1]
    summed = tuple(d for d in range(len(shape)) if d != 1)
    np.testing.assert_allclose(_sum_per_channel_of_product(a, b, shape[1]), (a * b).sum(axis=summed), rtol=1e-12)
    shared = _sum_per_channel_of_product(a, b, 1)
    assert shared.shape == (1,)
    np.testing.assert_allclose(shared, [(a * b).sum()], rtol=1e-12)


def test_only_the_gradients_asked_for_are_computed_and_they_are_right():
    x, weight, grad_y = rng.standard_normal((2, 3, 4)), rng.uniform(-0.5, 0.5, 3), rng.standard_normal((2, 3, 4))
    _, expected_grad_x, expected_grad_weight = where_reference(x, weight, grad_y)
    frozen_slopes = Tensor(x, requires_grad=True)
    F.prelu(frozen_slopes, Tensor(weight)).backward(grad_y)
    np.testing.assert_allclose(frozen_slopes.grad, expected_grad_x, rtol=1e-12)
    slopes_only = Tensor(weight, requires_grad=True)
    F.prelu(Tensor(x), slopes_only).backward(grad_y)
    np.testing.assert_allclose(slopes_only.grad, expected_grad_weight, rtol=1e-12)


def test_keeps_float32():
    x = Tensor(rng.standard_normal((2, 3, 4)).astype(np.float32), requires_grad=True)
    weight = Tensor(np.full(3, 0.25, np.float32), requires_grad=True)
    y = F.prelu(x, weight)
    y.sum().backward()
    assert y.dtype == x.grad.dtype == weight.grad.dtype == np.float32


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cupy_available(), reason="needs CuPy and an NVIDIA GPU")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, per_channel", [((3, 5, 7, 9), True), ((2, 4, 6), False), ((5, 3), True)])
def test_prelu_on_gpu_matches_numpy(shape, per_channel, dtype):
    x = float32_with_exact_zeros(shape).astype(dtype)
    weight = rng.uniform(-0.5, 1.5, shape[1] if per_channel else 1).astype(dtype)
    grad_y = rng.standard_normal(shape).astype(dtype)
    results = []
    for device in ("cpu", "cuda"):
        x_tensor = Tensor(x, requires_grad=True).to(device)
        weight_tensor = Tensor(weight, requires_grad=True).to(device)
        y = F.prelu(x_tensor, weight_tensor)
        y.backward(Tensor(grad_y).to(device))
        assert y.device == device and y.dtype == x_tensor.grad.dtype == weight_tensor.grad.dtype == dtype
        results.append([y.numpy(), backend.to_device(x_tensor.grad, "cpu"),
                        backend.to_device(weight_tensor.grad, "cpu")])
    for on_cpu, on_gpu in zip(*results):
        np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


@pytest.mark.parametrize("x_shape, weight, error, pattern", [
    ((2, 3, 4), np.ones(4), ValueError, r"prelu: weight has 4 slopes but input of shape \(2, 3, 4\)"),
    ((5,), np.ones(5), ValueError, "does not have that many channels in dim 1"),
    ((2, 3), np.ones((3, 1)), ValueError, "prelu: weight must be 1-D"),
    ((2, 3), np.ones(3, np.float32), TypeError, "prelu: input is float64 but weight is float32"),
])
def test_bad_arguments_are_named(x_shape, weight, error, pattern):
    with pytest.raises(error, match=pattern):
        F.prelu(Tensor(np.ones(x_shape)), Tensor(weight))
