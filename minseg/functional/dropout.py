"""Dropout: zero random activations during training so no unit can rely on another."""
import numpy as np

from .. import backend
from ..autograd import Function, as_tensor
from ..random import generator

__all__ = ["dropout"]


class Dropout(Function):
    """y = x · m / (1 − p), with m[i] ~ Bernoulli(1 − p) drawn afresh on every call.

    "Inverted" dropout: dividing the kept values by 1 − p keeps E[y] = x, so evaluation
    can use the network unchanged. y is linear in x with the same mask, so
    dx = gy · m / (1 − p).
    """

    def __init__(self, p):
        self.p = p

    def forward(self, x):
        # Drawn on the CPU from minseg's one generator (repeatable with minseg.manual_seed),
        # then moved to x's device; a bool mask costs one byte per element.
        keep = generator().random(x.shape, dtype=np.float32) >= self.p
        self.keep = backend.to_device(keep, backend.device_of(x))
        # p == 1 drops everything; 1/(1 − p) would be inf, and 0 · inf is NaN.
        self.scale = x.dtype.type(0.0 if self.p == 1 else 1.0 / (1.0 - self.p))
        y = x * self.keep
        y *= self.scale
        return y

    def backward(self, grad_y):
        grad_x = grad_y * self.keep
        grad_x *= self.scale
        return grad_x


def dropout(x, p=0.5, training=True):
    """During training, zero each element with probability ``p`` and scale the rest by 1/(1 − p).

    With training=False (evaluation) or p == 0, returns x unchanged.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p is a probability and must be between 0 and 1, got {p}")
    x = as_tensor(x)
    if not training or p == 0:
        return x
    return Dropout(float(p))(x)
