"""batch_norm (minseg/functional/normalization.py): statistics, running averages, train vs eval, gradients."""
import numpy as np
import pytest

import minseg.functional as F
from minseg import Tensor, gradcheck

rng = np.random.default_rng(0)
EPS = 1e-5


def per_channel(values):
    return values.reshape(1, -1, *([1] * 2))


def test_training_normalizes_each_channel_by_its_batch_statistics():
    x = rng.standard_normal((4, 3, 5, 6)) * np.array([1.0, 3.0, 0.5])[None, :, None, None] + 7
    weight, bias = rng.standard_normal(3), rng.standard_normal(3)
    y = F.batch_norm(Tensor(x), None, None, Tensor(weight), Tensor(bias), training=True).numpy()
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))  # biased variance, as PyTorch
    expected = (x - per_channel(mean)) / np.sqrt(per_channel(var) + EPS) * per_channel(weight) + per_channel(bias)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
    plain = F.batch_norm(Tensor(x), None, None, training=True).numpy()
    np.testing.assert_allclose(plain.mean(axis=(0, 2, 3)), 0, atol=1e-10)
    np.testing.assert_allclose(plain.var(axis=(0, 2, 3)), var / (var + EPS), rtol=1e-10)


def test_running_statistics_follow_pytorch_rule_with_unbiased_variance():
    running_mean = np.array([0.5, -1.0], np.float32)
    running_var = np.array([2.0, 1.0], np.float32)
    expected_mean, expected_var = running_mean.astype(np.float64), running_var.astype(np.float64)
    for step in range(3):
        x = rng.standard_normal((3, 2, 4, 5)) * 2 + step
        F.batch_norm(Tensor(x), running_mean, running_var, training=True, momentum=0.3)
        expected_mean = 0.7 * expected_mean + 0.3 * x.mean(axis=(0, 2, 3))
        expected_var = 0.7 * expected_var + 0.3 * x.var(axis=(0, 2, 3), ddof=1)
        np.testing.assert_allclose(running_mean, expected_mean, rtol=1e-6)
        np.testing.assert_allclose(running_var, expected_var, rtol=1e-6)
    assert running_mean.dtype == np.float32 and running_var.dtype == np.float32


def test_running_statistics_held_in_tensors_are_updated_in_place():
    running_mean, running_var = Tensor(np.zeros(3, np.float32)), Tensor(np.ones(3, np.float32))
    mean_array, var_array = running_mean.data, running_var.data
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    F.batch_norm(Tensor(x), running_mean, running_var, training=True)
    assert running_mean.data is mean_array and running_var.data is var_array
    np.testing.assert_allclose(running_mean.numpy(), 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(running_var.numpy(), 0.9 + 0.1 * x.var(axis=(0, 2, 3), ddof=1), rtol=1e-5)


def test_eval_uses_running_statistics_and_leaves_them_alone():
    x = rng.standard_normal((2, 3, 4, 5))
    running_mean, running_var = np.array([0.1, -0.2, 0.3]), np.array([0.5, 2.0, 1.5])
    weight, bias = rng.standard_normal(3), rng.standard_normal(3)
    y = F.batch_norm(Tensor(x), running_mean, running_var, Tensor(weight), Tensor(bias), training=False).numpy()
    expected = ((x - per_channel(running_mean)) / np.sqrt(per_channel(running_var) + EPS) * per_channel(weight)
                + per_channel(bias))
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    np.testing.assert_array_equal(running_mean, [0.1, -0.2, 0.3])
    np.testing.assert_array_equal(running_var, [0.5, 2.0, 1.5])
    # and it differs from training mode, which ignores the running statistics
    y_train = F.batch_norm(Tensor(x), running_mean.copy(), running_var.copy(), Tensor(weight), Tensor(bias),
                           training=True).numpy()
    assert not np.allclose(y, y_train)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 3, 1), (1, 1, 2, 1), (5, 4), (3, 2, 7)])
def test_batch_norm_training_gradcheck(shape):
    x = Tensor(rng.standard_normal(shape) * 2 + 1, requires_grad=True)
    weight = Tensor(rng.standard_normal(shape[1]), requires_grad=True)
    bias = Tensor(rng.standard_normal(shape[1]), requires_grad=True)
    assert gradcheck(lambda t, w, b: F.batch_norm(t, None, None, w, b, training=True), [x, weight, bias])


def test_batch_norm_training_gradcheck_without_affine_parameters_and_with_running_stats():
    x = Tensor(rng.standard_normal((2, 3, 3, 4)), requires_grad=True)
    running_mean, running_var = np.zeros(3), np.ones(3)
    assert gradcheck(lambda t: F.batch_norm(t, running_mean, running_var, training=True), [x])


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 1, 1)])
def test_batch_norm_eval_gradcheck(shape):
    channels = shape[1]
    x = Tensor(rng.standard_normal(shape), requires_grad=True)
    weight = Tensor(rng.standard_normal(channels), requires_grad=True)
    bias = Tensor(rng.standard_normal(channels), requires_grad=True)
    running_mean, running_var = rng.standard_normal(channels), rng.uniform(0.5, 2, channels)
    assert gradcheck(lambda t, w, b: F.batch_norm(t, running_mean, running_var, w, b), [x, weight, bias])


def test_eval_gradient_for_weight_alone():
    x = Tensor(rng.standard_normal((2, 2, 3, 3)))
    weight = Tensor(rng.standard_normal(2), requires_grad=True)
    running_mean, running_var = np.array([0.3, -0.1]), np.array([1.5, 0.7])
    assert gradcheck(lambda w: F.batch_norm(x, running_mean, running_var, w, None), [weight])


def test_training_gradient_sums_to_zero_per_channel():
    # The batch mean is subtracted, so shifting a channel's inputs cannot change y: Σ dx = 0.
    x = Tensor(rng.standard_normal((3, 2, 4, 4)), requires_grad=True)
    F.batch_norm(x, None, None, training=True).backward(rng.standard_normal((3, 2, 4, 4)))
    np.testing.assert_allclose(x.grad.sum(axis=(0, 2, 3)), 0, atol=1e-10)


def test_float32_in_float32_out():
    x = Tensor(rng.standard_normal((2, 3, 4, 5)).astype(np.float32), requires_grad=True)
    weight = Tensor(np.ones(3, np.float32), requires_grad=True)
    bias = Tensor(np.zeros(3, np.float32), requires_grad=True)
    for training in (True, False):
        y = F.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32), weight, bias, training=training)
        assert y.dtype == np.float32
        y.backward(np.ones(y.shape, np.float32))
        assert x.grad.dtype == weight.grad.dtype == bias.grad.dtype == np.float32


def test_one_value_per_channel_in_training_raises_but_eval_works():
    x = Tensor(rng.standard_normal((1, 4, 1, 1)))
    with pytest.raises(ValueError, match="more than 1 value per channel when training"):
        F.batch_norm(x, np.zeros(4), np.ones(4), training=True)
    assert F.batch_norm(x, np.zeros(4), np.ones(4), training=False).shape == (1, 4, 1, 1)
    # two values per channel are enough (batch of 2, or one image with 2 pixels)
    F.batch_norm(Tensor(rng.standard_normal((2, 4, 1, 1))), None, None, training=True)
    F.batch_norm(Tensor(rng.standard_normal((1, 4, 1, 2))), None, None, training=True)


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(running_mean=np.zeros(2), running_var=np.ones(3)), ValueError, "running_mean"),
    (dict(running_mean=np.zeros(3), running_var=np.ones(4)), ValueError, "running_var"),
    (dict(running_mean=None, running_var=None, weight=Tensor(np.ones(2))), ValueError, "weight"),
    (dict(running_mean=None, running_var=None, bias=Tensor(np.ones(5))), ValueError, "bias"),
    (dict(running_mean=None, running_var=None, weight=Tensor(np.ones(3, np.float32))), TypeError, "weight"),
    (dict(running_mean=np.zeros(3), running_var=None), ValueError, "running_mean and running_var"),
])
def test_bad_arguments_raise_errors_naming_them(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        F.batch_norm(Tensor(rng.standard_normal((2, 3, 2, 2))), training=True, **kwargs)


def test_eval_without_running_statistics_raises():
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        F.batch_norm(Tensor(np.zeros((2, 3, 2, 2))), None, None, training=False)
