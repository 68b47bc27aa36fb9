"""prelu (minseg/functional/activation.py): paper case, loop reference, gradient checks, properties, errors."""
import numpy as np
import pytest

import minseg.functional as F
from minseg import Tensor, gradcheck

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
                                                ((2, 5, 7), True), ((6,), False)])
def test_forward_matches_the_loop_reference(shape, per_channel):
    x = rng.standard_normal(shape)
    weight = rng.uniform(-0.5, 0.5, shape[1] if per_channel else 1)
    np.testing.assert_array_equal(F.prelu(Tensor(x), Tensor(weight)).numpy(), reference_prelu(x, weight))


@pytest.mark.parametrize("shape, per_channel", [((2, 3, 5, 4), True), ((1, 3, 5, 4), False), ((1, 1, 3, 3), True),
                                                ((3, 4), True), ((2, 5, 7), False), ((6,), False)])
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


def test_keeps_float32():
    x = Tensor(rng.standard_normal((2, 3, 4)).astype(np.float32), requires_grad=True)
    weight = Tensor(np.full(3, 0.25, np.float32), requires_grad=True)
    y = F.prelu(x, weight)
    y.sum().backward()
    assert y.dtype == x.grad.dtype == weight.grad.dtype == np.float32


@pytest.mark.parametrize("x_shape, weight, error, pattern", [
    ((2, 3, 4), np.ones(4), ValueError, r"prelu: weight has 4 slopes but x of shape \(2, 3, 4\)"),
    ((5,), np.ones(5), ValueError, "does not have that many channels in dim 1"),
    ((2, 3), np.ones((3, 1)), ValueError, "prelu: weight must be 1-D"),
    ((2, 3), np.ones(3, np.float32), TypeError, "prelu: x is float64 but weight is float32"),
])
def test_bad_arguments_are_named(x_shape, weight, error, pattern):
    with pytest.raises(error, match=pattern):
        F.prelu(Tensor(np.ones(x_shape)), Tensor(weight))
