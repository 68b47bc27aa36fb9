"""Parameter initializations in ``torch.nn.init``'s names (``from minseg.nn import init``).

Each function fills a Tensor in place, draws from minseg's generator (``minseg.manual_seed`` repeats them) and
returns the Tensor, so a layer's ``reset_parameters`` or a model's init reads as PyTorch's does.
"""
import math

import numpy as np

from ..random import generator

__all__ = ["calculate_gain", "calculate_fan_in_and_fan_out", "uniform_", "normal_", "zeros_", "ones_",
           "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_"]


def calculate_gain(nonlinearity, param=None):
    """The factor that keeps a layer's output variance through ``nonlinearity``: √2 for ReLU, √(2 / (1 + a²)) for a
    leaky ReLU with negative slope a (``param``, default 0.01).

    A ReLU zeroes half of a symmetric input, halving its second moment; gain² = 2 makes up for it.
    """
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        a = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + a * a))
    raise ValueError(f"calculate_gain: nonlinearity must be 'relu' or 'leaky_relu', got {nonlinearity!r}; "
                     f"these are the ones minseg's initializations use")


def calculate_fan_in_and_fan_out(tensor):
    """(fan_in, fan_out) of a weight (O, C, kh, kw, ...): (C·kh·kw, O·kh·kw), as PyTorch counts them.

    For a convolution, fan_in is how many inputs one output sums over; PyTorch reads dimensions 0 and 1 as they
    stand, so a transposed convolution's weight (in, out/groups, kh, kw) gets fan_in = out/groups·kh·kw.
    """
    if tensor.ndim < 2:
        raise ValueError(f"calculate_fan_in_and_fan_out: tensor must have at least 2 dimensions, got shape "
                         f"{tensor.shape}; fans are defined for weights, not biases")
    receptive_field = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive_field, tensor.shape[0] * receptive_field


def uniform_(tensor, a=0.0, b=1.0):
    """tensor ← values drawn from U(a, b), in the tensor's dtype."""
    tensor.data = generator().uniform(a, b, size=tensor.shape).astype(tensor.dtype)
    return tensor


def normal_(tensor, mean=0.0, std=1.0):
    """tensor ← values drawn from N(mean, std²), in the tensor's dtype."""
    tensor.data = generator().normal(mean, std, size=tensor.shape).astype(tensor.dtype)
    return tensor


def zeros_(tensor):
    """tensor ← 0."""
    tensor.data = np.zeros_like(tensor.data)
    return tensor


def ones_(tensor):
    """tensor ← 1."""
    tensor.data = np.ones_like(tensor.data)
    return tensor


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """tensor ← U(−b, b) with b = gain · √(3 / fan), gain = ``calculate_gain(nonlinearity, a)``.

    Kaiming (He) initialization keeps each layer's output variance near its input's: Var(w) = gain² / fan, and
    U(−b, b) has variance b²/3. ``mode="fan_in"`` keeps the forward's scale, ``"fan_out"`` the backward's.
    PyTorch's convolutions use a = √5, which makes b exactly 1/√fan_in.
    """
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming_uniform_: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan = calculate_fan_in_and_fan_out(tensor)[0 if mode == "fan_in" else 1]
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """tensor ← N(0, std²) with std = gain / √fan: the same variance as ``kaiming_uniform_``, drawn from a Gaussian.

    Mask R-CNN's heads use it with ``mode="fan_out", nonlinearity="relu"``.
    """
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming_normal_: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan = calculate_fan_in_and_fan_out(tensor)[0 if mode == "fan_in" else 1]
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan))


def xavier_uniform_(tensor, gain=1.0):
    """tensor ← U(−b, b) with b = gain · √(6 / (fan_in + fan_out)).

    Xavier (Glorot) initialization: Var(w) = gain² · 2 / (fan_in + fan_out), a compromise between keeping the
    forward's scale (fan_in) and the backward's (fan_out) for a layer without a ReLU after it.
    """
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)
