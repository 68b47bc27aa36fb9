"""Reductions over ``dim`` (``sum``, ``mean``, ``max``), with PyTorch's ``dim`` and ``keepdim``.

A reduction's gradient is grad_y broadcast back over the reduced axes: to every element for a sum (scaled by
1/n for a mean), to the maximal element for a max.
"""
import numpy as np

from .. import backend
from ..autograd import Function

__all__ = ["sum", "mean", "max", "SumFunction", "MeanFunction", "MaxFunction"]


# ---------------------------------------------------------------------------
# The reduced axes
# ---------------------------------------------------------------------------
def _normalize_dims(dim, ndim, op_name):
    """``dim`` (None, an int or a tuple, as PyTorch) as a tuple of non-negative axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    for d in dims:
        if not -ndim <= d < ndim:
            raise ValueError(f"{op_name}: dim {d} is out of range for a tensor with {ndim} dimensions; "
                             f"use a dim in [{-ndim}, {ndim - 1}]")
    return tuple(d % ndim for d in dims)


def _expand_reduced(grad_y, axes, keepdims):
    """Re-insert the reduced axes as size 1, so grad_y broadcasts against the input."""
    if keepdims:
        return grad_y
    shape = list(grad_y.shape)
    for a in sorted(axes):
        shape.insert(a, 1)
    return grad_y.reshape(shape)


# ---------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------
class _ReductionFunction(Function):
    """What the reductions share: the (normalized) axes they reduce and whether those stay as size 1."""

    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims


class SumFunction(_ReductionFunction):
    """y = Σ x over ``axes``.  Every summed element gets the same gradient: grad_y broadcast back."""

    def forward(self, x):
        self.shape = x.shape
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, grad_y):
        xp = backend.get_array_module(grad_y)
        return xp.broadcast_to(_expand_reduced(grad_y, self.axes, self.keepdims), self.shape).copy()


class MeanFunction(SumFunction):
    """y = (1/n) Σ x over ``axes``.  The sum scaled by 1/n, so every averaged element gets grad_y / n."""

    def forward(self, x):
        self.shape = x.shape
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, grad_y):
        count = int(np.prod([self.shape[a] for a in self.axes]))
        return super().backward(grad_y / grad_y.dtype.type(count))


class MaxFunction(_ReductionFunction):
    """y = max x over ``axes``.  Only the maximal element moves y: it gets grad_y (ties share it equally)."""

    def forward(self, x):
        self.x = x
        self.y = x.max(axis=self.axes, keepdims=True)
        return self.y if self.keepdims else self.y.reshape([n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, grad_y):
        is_max = (self.x == self.y).astype(grad_y.dtype)
        is_max /= is_max.sum(axis=self.axes, keepdims=True)
        return _expand_reduced(grad_y, self.axes, self.keepdims) * is_max


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------
def sum(x, dim=None, keepdim=False):
    return SumFunction(_normalize_dims(dim, x.ndim, "sum"), keepdim)(x)


def mean(x, dim=None, keepdim=False):
    return MeanFunction(_normalize_dims(dim, x.ndim, "mean"), keepdim)(x)


def max(x, dim=None, keepdim=False):
    return MaxFunction(_normalize_dims(dim, x.ndim, "max"), keepdim)(x)
