"""nn.Linear: y = x Wᵀ + b against a loop, PyTorch's initialization bounds, gradients through matmul and add."""
import math

import numpy as np
import pytest

import minseg
from minseg import Tensor, nn


def test_linear_matches_a_loop():
    layer = nn.Linear(3, 2)
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    w, b = layer.weight.numpy(), layer.bias.numpy()
    expected = [[sum(x[n, i] * w[o, i] for i in range(3)) + b[o] for o in range(2)] for n in range(4)]
    np.testing.assert_allclose(layer(Tensor(x)).numpy(), expected, rtol=1e-5)
    assert nn.Linear(3, 2, bias=False)(Tensor(x)).shape == (4, 2)


def test_linear_initialization_bounds_and_state_dict_names():
    minseg.manual_seed(0)
    layer = nn.Linear(100, 50)
    bound = 1 / math.sqrt(100)
    assert np.abs(layer.weight.numpy()).max() <= bound and np.abs(layer.bias.numpy()).max() <= bound
    assert np.abs(layer.weight.numpy()).max() > 0.9 * bound
    assert list(layer.state_dict()) == ["weight", "bias"] and layer.weight.shape == (50, 100)


def test_linear_gradients():
    layer = nn.Linear(3, 2)
    layer.weight.data = layer.weight.data.astype(np.float64)
    layer.bias.data = layer.bias.data.astype(np.float64)
    x = Tensor(np.random.default_rng(1).standard_normal((4, 3)), requires_grad=True)
    minseg.gradcheck(lambda a, w, b: layer(a), [x, layer.weight, layer.bias])


def test_linear_says_to_flatten():
    with pytest.raises(ValueError, match=r"Linear: input must have shape \(N, 3\), got \(2, 3, 1\); flatten"):
        nn.Linear(3, 2)(Tensor(np.zeros((2, 3, 1), np.float32)))
