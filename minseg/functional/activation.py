"""Activations with learned parameters: PReLU (He et al., 2015), ENet's activation.

The parameter-free activations (``relu``, ``sigmoid``, ``tanh``, ``softmax``) are basic
ops in ``minseg/ops.py``; this file holds the ones a layer trains.
"""
from .. import backend
from ..autograd import Function, as_tensor

__all__ = ["prelu"]


def _channel_view(weight, ndim):
    """weight (C,) or (1,) viewed as (1, C, 1, ...) so it broadcasts along dim 1 of an ndim-d input."""
    return weight.reshape((1, weight.size) + (1,) * (ndim - 2)) if ndim >= 2 else weight


def _sum_per_channel(values, num_parameters):
    """Σ over every dim but dim 1 as a (C,) array, or over everything as (1,) when the slope is shared."""
    if num_parameters == 1:
        return values.sum().reshape(1)
    return values.sum(axis=(0,) + tuple(range(2, values.ndim)))


# ---------------------------------------------------------------------------
# Function
# ---------------------------------------------------------------------------
class PReLUFunction(Function):
    """y = x where x > 0, a_c · x elsewhere (a_c the slope of x's channel c, or one shared a).

    dy/dx = 1 where x > 0 and a_c elsewhere; dy/da_c = x where x ≤ 0 and 0 elsewhere, and
    a_c is shared by every element of channel c (of every sample), so its gradient sums
    grad_y · x over the non-positive elements of that channel. At x = 0 the slope taken is
    a_c, as PyTorch.
    """

    def forward(self, x, weight):
        xp = backend.get_array_module(x)
        self.x, self.weight = x, weight
        self.positive = x > 0
        return xp.where(self.positive, x, x * _channel_view(weight, x.ndim))

    def backward(self, grad_y):
        xp = backend.get_array_module(grad_y)
        grad_x = grad_weight = None
        if self.needs_input_grad[0]:
            grad_x = xp.where(self.positive, grad_y, grad_y * _channel_view(self.weight, grad_y.ndim))
        if self.needs_input_grad[1]:
            grad_weight = _sum_per_channel(xp.where(self.positive, 0, grad_y * self.x), self.weight.size)
        return grad_x, grad_weight


# ---------------------------------------------------------------------------
# Public function
# ---------------------------------------------------------------------------
def prelu(x, weight):
    """PReLU as ``torch.nn.functional.prelu``: max(0, x) + weight · min(0, x), weight (1,) or (C,).

    A (C,) weight holds one slope per channel of dim 1 (x must then have C channels); a (1,)
    weight is one slope shared by every element.
    """
    x, weight = as_tensor(x), as_tensor(weight)
    if weight.ndim != 1:
        raise ValueError(f"prelu: weight must be 1-D, (1,) or (channels,), got shape {weight.shape}")
    if weight.shape[0] != 1:
        if x.ndim < 2 or x.shape[1] != weight.shape[0]:
            raise ValueError(f"prelu: weight has {weight.shape[0]} slopes but x of shape {x.shape} does not have "
                             f"that many channels in dim 1; use one slope per channel or a single shared one, "
                             f"weight of shape (1,)")
    if x.dtype != weight.dtype:
        raise TypeError(f"prelu: x is {x.dtype} but weight is {weight.dtype}; convert one with .astype() first")
    return PReLUFunction()(x, weight)
