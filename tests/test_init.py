"""nn.init (minseg/nn/init.py): PyTorch's gains, fans and bounds; in-place fills from minseg's generator."""
import math

import numpy as np
import pytest

import minseg
from minseg import Tensor
from minseg.nn import init


def weight(*shape):
    return Tensor(np.empty(shape, np.float32))


def test_gain_is_sqrt2_for_relu_and_shrinks_with_the_leaky_slope():
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu", 0) == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(1 / math.sqrt(3))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01 ** 2)))


def test_fans_of_a_conv_weight_count_the_kernel():
    assert init.calculate_fan_in_and_fan_out(weight(32, 16, 3, 3)) == (16 * 9, 32 * 9)
    assert init.calculate_fan_in_and_fan_out(weight(5, 7)) == (7, 5)


def test_kaiming_uniform_bound_is_gain_times_sqrt_3_over_fan():
    for a, nonlinearity, mode, fan, bound in [(math.sqrt(5), "leaky_relu", "fan_in", 9 * 64, 1 / math.sqrt(9 * 64)),
                                              (0, "relu", "fan_in", 9 * 64, math.sqrt(6 / (9 * 64))),
                                              (0, "relu", "fan_out", 9 * 128, math.sqrt(6 / (9 * 128)))]:
        w = init.kaiming_uniform_(weight(128, 64, 3, 3), a=a, mode=mode, nonlinearity=nonlinearity)
        assert fan in init.calculate_fan_in_and_fan_out(w)
        values = w.numpy()
        assert values.dtype == np.float32
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.99 * bound
        assert abs(values.std() - bound / math.sqrt(3)) < 0.02 * bound  # U(−b, b) has std b/√3


def test_normal_and_kaiming_normal_draw_the_stated_spread():
    w = init.normal_(weight(200, 100), mean=1.0, std=0.01)
    assert w.dtype == np.float32 and abs(w.numpy().mean() - 1.0) < 1e-3 and abs(w.numpy().std() - 0.01) < 1e-3
    w = init.kaiming_normal_(weight(128, 64, 3, 3), mode="fan_out", nonlinearity="relu")
    assert abs(w.numpy().std() - math.sqrt(2 / (128 * 9))) < 0.02 * math.sqrt(2 / (128 * 9))
    with pytest.raises(ValueError, match=r"kaiming_normal_: mode must be 'fan_in' or 'fan_out', got 'fan'"):
        init.kaiming_normal_(weight(2, 2), mode="fan")


def test_xavier_uniform_bound_uses_both_fans():
    w = init.xavier_uniform_(weight(32, 16, 3, 3), gain=2.0)
    bound = 2.0 * math.sqrt(6 / (16 * 9 + 32 * 9))
    assert np.abs(w.numpy()).max() <= bound and np.abs(w.numpy()).max() > 0.99 * bound


def test_fills_are_in_place_and_repeat_under_manual_seed():
    w = weight(4, 3)
    assert init.uniform_(w, -2.0, 3.0) is w and w.numpy().min() >= -2.0 and w.numpy().max() < 3.0
    minseg.manual_seed(7)
    first = init.uniform_(weight(4, 3)).numpy()
    minseg.manual_seed(7)
    assert np.array_equal(init.uniform_(weight(4, 3)).numpy(), first)
    assert np.array_equal(init.zeros_(w).numpy(), np.zeros((4, 3), np.float32))
    assert np.array_equal(init.ones_(w).numpy(), np.ones((4, 3), np.float32))


def test_bad_arguments_name_the_call():
    with pytest.raises(ValueError, match=r"calculate_gain: nonlinearity must be 'relu' or 'leaky_relu', got 'tanh'"):
        init.calculate_gain("tanh")
    with pytest.raises(ValueError, match=r"kaiming_uniform_: mode must be 'fan_in' or 'fan_out', got 'fan'"):
        init.kaiming_uniform_(weight(2, 2), mode="fan")
    with pytest.raises(ValueError, match=r"calculate_fan_in_and_fan_out: tensor must have at least 2 dimensions"):
        init.kaiming_uniform_(weight(3))
