"""dropout (minseg/functional/dropout.py): inverted scaling, drop rate, eval identity, gradients, seeding."""
import numpy as np
import pytest

import minseg
import minseg.functional as F
from minseg import Tensor, gradcheck

rng = np.random.default_rng(0)


def test_training_zeroes_about_p_and_scales_the_rest_by_one_over_one_minus_p():
    x = rng.uniform(1, 2, size=(4, 8, 32, 32))  # never zero, so a zero in y means "dropped"
    y = F.dropout(Tensor(x), p=0.3).numpy()
    dropped = y == 0
    assert abs(dropped.mean() - 0.3) < 0.01  # 32768 draws: the standard error is 0.0025
    np.testing.assert_allclose(y[~dropped], x[~dropped] / 0.7, rtol=1e-12)


def test_expectation_is_preserved():
    x = np.full((200_000,), 2.0)
    assert abs(F.dropout(Tensor(x), p=0.6).numpy().mean() - 2.0) < 0.03


def test_eval_and_p_zero_return_the_input_unchanged():
    x = Tensor(rng.standard_normal((2, 3, 4)))
    np.testing.assert_array_equal(F.dropout(x, p=0.5, training=False).numpy(), x.numpy())
    np.testing.assert_array_equal(F.dropout(x, p=0.0).numpy(), x.numpy())


def test_p_one_drops_everything_without_nans():
    x = Tensor(rng.standard_normal((3, 5)), requires_grad=True)
    y = F.dropout(x, p=1.0)
    np.testing.assert_array_equal(y.numpy(), 0)
    y.backward(np.ones((3, 5)))
    np.testing.assert_array_equal(x.grad, 0)


def test_gradient_uses_the_same_mask_and_scale():
    x = Tensor(rng.uniform(1, 2, size=(5, 7)), requires_grad=True)
    y = F.dropout(x, p=0.4)
    grad = rng.standard_normal((5, 7))
    y.backward(grad)
    kept = y.numpy() != 0
    np.testing.assert_allclose(x.grad, np.where(kept, grad / 0.6, 0.0), rtol=1e-12)


@pytest.mark.parametrize("drop", [F.dropout, F.dropout2d])
def test_gradcheck_with_a_fixed_mask(drop):
    x = Tensor(rng.standard_normal((3, 4, 3, 5)), requires_grad=True)

    def fixed_mask_dropout(t):
        minseg.manual_seed(7)  # every evaluation draws the same mask
        return drop(t, p=0.35)
    assert gradcheck(fixed_mask_dropout, [x])


def test_masks_are_repeatable_with_manual_seed_and_fresh_on_every_call():
    x = Tensor(np.ones((64, 64)))
    minseg.manual_seed(123)
    first, second = F.dropout(x).numpy(), F.dropout(x).numpy()
    minseg.manual_seed(123)
    np.testing.assert_array_equal(F.dropout(x).numpy(), first)
    assert not np.array_equal(first, second)


def test_float32_in_float32_out():
    x = Tensor(rng.standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    y = F.dropout(x, p=0.25)
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_p_outside_zero_one_raises_naming_p(p):
    with pytest.raises(ValueError, match="p is a probability"):
        F.dropout(Tensor(np.ones(3)), p=p)


# --- dropout2d ---------------------------------------------------------------------
def test_dropout2d_zeroes_whole_channels_about_p_of_them_and_scales_the_rest():
    x = rng.uniform(1, 2, size=(64, 50, 3, 5))  # never zero, so a zero in y means "dropped"
    y = F.dropout2d(Tensor(x), p=0.3).numpy()
    dropped = (y == 0).reshape(64, 50, -1)
    assert np.all(dropped.all(axis=2) | ~dropped.any(axis=2))  # each map all dropped or all kept
    rate = dropped.all(axis=2).mean()
    assert abs(rate - 0.3) < 0.04  # 3200 channels: the standard error is 0.008
    kept = ~dropped.all(axis=2)
    np.testing.assert_allclose(y[kept], x[kept] / 0.7, rtol=1e-12)


def test_dropout2d_draws_per_sample_and_per_channel():
    y = F.dropout2d(Tensor(np.ones((200, 2, 2, 2))), p=0.5).numpy()[:, :, 0, 0] != 0
    # the same channel is dropped in some samples and kept in others, and channels of one sample differ
    assert 0.35 < y[:, 0].mean() < 0.65 and 0.35 < y[:, 1].mean() < 0.65
    assert 0.3 < np.mean(y[:, 0] != y[:, 1]) < 0.7


def test_dropout2d_expectation_is_preserved():
    x = np.full((500, 40, 2, 2), 2.0)
    assert abs(F.dropout2d(Tensor(x), p=0.6).numpy().mean() - 2.0) < 0.05


def test_dropout2d_gradient_uses_the_same_channel_mask_and_scale():
    x = Tensor(rng.standard_normal((3, 4, 3, 5)), requires_grad=True)
    y = F.dropout2d(x, p=0.4)
    grad = rng.standard_normal(x.shape)
    y.backward(grad)
    kept = (y.numpy() != 0).any(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(x.grad, np.where(kept, grad / 0.6, 0.0), rtol=1e-12)


def test_dropout2d_eval_p_zero_and_p_one():
    x = Tensor(rng.standard_normal((2, 3, 4, 4)), requires_grad=True)
    np.testing.assert_array_equal(F.dropout2d(x, p=0.5, training=False).numpy(), x.numpy())
    np.testing.assert_array_equal(F.dropout2d(x, p=0.0).numpy(), x.numpy())
    y = F.dropout2d(x, p=1.0)
    np.testing.assert_array_equal(y.numpy(), 0)
    y.backward(np.ones(x.shape))
    np.testing.assert_array_equal(x.grad, 0)


def test_dropout2d_float32_and_bad_arguments():
    x = Tensor(rng.standard_normal((2, 3, 4, 4)).astype(np.float32), requires_grad=True)
    y = F.dropout2d(x, p=0.25)
    y.sum().backward()
    assert y.dtype == np.float32 and x.grad.dtype == np.float32
    with pytest.raises(ValueError, match="dropout2d: p is a probability"):
        F.dropout2d(x, p=1.5)
    with pytest.raises(ValueError, match=r"dropout2d: input must be 4-D \(N, C, H, W\), got shape \(3, 4, 4\)"):
        F.dropout2d(x[0], p=0.5)
