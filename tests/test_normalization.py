"""batch_norm and group_norm (minseg/functional/normalization.py): statistics, train vs eval, gradients."""
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


# --- group_norm ------------------------------------------------------------------------
def loop_group_norm(x, num_groups, weight, bias, eps=EPS):
    """Sample by sample, group by group, from the definition: biased variance, then a per-channel affine map."""
    y = np.empty_like(x)
    size = x.shape[1] // num_groups
    for n in range(x.shape[0]):
        for g in range(num_groups):
            group = x[n, g * size:(g + 1) * size]
            y[n, g * size:(g + 1) * size] = (group - group.mean()) / np.sqrt(group.var() + eps)
    channel = (1, -1) + (1,) * (x.ndim - 2)
    return y * weight.reshape(channel) + bias.reshape(channel)


def test_group_norm_by_hand():
    # one group of 1, 2, 3, 4: mean 2.5, variance 1.25; the second channel is scaled by 2 and shifted by 1
    x = np.array([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    y = F.group_norm(Tensor(x), 1, Tensor(np.array([1.0, 2.0])), Tensor(np.array([0.0, 1.0]))).numpy()
    z = (np.array([1.0, 2.0, 3.0, 4.0]) - 2.5) / np.sqrt(1.25 + EPS)
    np.testing.assert_allclose(y.ravel(), [z[0], z[1], 2 * z[2] + 1, 2 * z[3] + 1], rtol=1e-12)


# (shape, num_groups): one group, two, one channel per group (instance norm), 3 groups of 3 channels,
# batch 1, odd pixel counts, inputs without (or with a long) spatial axis
GROUP_CASES = [((2, 6, 5, 3), 1), ((2, 6, 5, 3), 2), ((2, 6, 3, 4), 6), ((1, 9, 3, 5), 3), ((3, 4, 1, 1), 2),
               ((2, 6, 7), 3), ((4, 6), 2)]


@pytest.mark.parametrize("shape, num_groups", GROUP_CASES)
def test_group_norm_matches_a_loop_reference(shape, num_groups):
    x = rng.standard_normal(shape) * 3 + 2
    weight, bias = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    y = F.group_norm(Tensor(x), num_groups, Tensor(weight), Tensor(bias)).numpy()
    np.testing.assert_allclose(y, loop_group_norm(x, num_groups, weight, bias), rtol=1e-10, atol=1e-10)
    plain = F.group_norm(Tensor(x), num_groups).numpy()
    np.testing.assert_allclose(plain, loop_group_norm(x, num_groups, np.ones(shape[1]), np.zeros(shape[1])),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape, num_groups", GROUP_CASES)
def test_group_norm_gradcheck_with_affine(shape, num_groups):
    x = Tensor(rng.standard_normal(shape) * 2 + 1, requires_grad=True)
    weight = Tensor(rng.standard_normal(shape[1]), requires_grad=True)
    bias = Tensor(rng.standard_normal(shape[1]), requires_grad=True)
    assert gradcheck(lambda t, w, b: F.group_norm(t, num_groups, w, b), [x, weight, bias])


@pytest.mark.parametrize("shape, num_groups", [((1, 6, 3, 5), 3), ((2, 4, 3, 3), 1), ((1, 5, 2, 3), 5)])
def test_group_norm_gradcheck_without_affine_and_for_parameters_alone(shape, num_groups):
    x = Tensor(rng.standard_normal(shape), requires_grad=True)
    assert gradcheck(lambda t: F.group_norm(t, num_groups), [x])
    weight = Tensor(rng.standard_normal(shape[1]), requires_grad=True)
    fixed_x = Tensor(x.numpy())
    assert gradcheck(lambda w: F.group_norm(fixed_x, num_groups, w, None), [weight])


def test_group_norm_never_looks_across_the_batch_and_its_gradient_sums_to_zero_per_group():
    x = rng.standard_normal((3, 6, 4, 5))
    together = F.group_norm(Tensor(x), 2).numpy()
    for n in range(3):
        np.testing.assert_allclose(together[n:n + 1], F.group_norm(Tensor(x[n:n + 1]), 2).numpy(), rtol=1e-12)
    # shifting a group's inputs by a constant cannot change y, so each group's input gradient sums to zero
    t = Tensor(x, requires_grad=True)
    F.group_norm(t, 2, Tensor(rng.standard_normal(6))).backward(rng.standard_normal(x.shape))
    np.testing.assert_allclose(t.grad.reshape(3, 2, -1).sum(axis=2), 0, atol=1e-10)


def test_group_norm_float32_in_float32_out():
    x = Tensor(rng.standard_normal((2, 4, 3, 5)).astype(np.float32), requires_grad=True)
    weight = Tensor(np.ones(4, np.float32), requires_grad=True)
    bias = Tensor(np.zeros(4, np.float32), requires_grad=True)
    y = F.group_norm(x, 2, weight, bias)
    assert y.dtype == np.float32
    y.backward(np.ones(y.shape, np.float32))
    assert x.grad.dtype == weight.grad.dtype == bias.grad.dtype == np.float32


@pytest.mark.parametrize("call, error, pattern", [
    (lambda x: F.group_norm(x, 4), ValueError, r"divisible by num_groups, got 6 channels .* num_groups=4"),
    (lambda x: F.group_norm(x, 0), ValueError, "num_groups must be a positive int"),
    (lambda x: F.group_norm(x, 2.0), ValueError, "num_groups must be a positive int"),
    (lambda x: F.group_norm(x, 2, Tensor(np.ones(4))), ValueError, "weight has shape"),
    (lambda x: F.group_norm(x, 2, None, Tensor(np.ones(6, np.float32))), TypeError, "bias is float32"),
    (lambda x: F.group_norm(x[0, 0, 0], 1), ValueError, "input must have a channel axis"),
])
def test_group_norm_bad_arguments_raise_errors_naming_them(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(Tensor(rng.standard_normal((2, 6, 3, 3))))
