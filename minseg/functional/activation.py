"""Activations with learned parameters: PReLU (He et al., 2015), ENet's activation.

The parameter-free activations (``relu``, ``sigmoid``, ``tanh``, ``softmax``) are basic
ops in ``minseg/ops/activation.py``; this file holds the ones a layer trains.
"""
import math

from .. import backend
from ..autograd import Function, as_tensor

__all__ = ["prelu"]


def _channel_view(weight, ndim):
    """weight (C,) or (1,) viewed as (1, C, 1, ...) so it broadcasts along dim 1 of an ndim-d input.

    Below 2-D there is no channel dim and the slope is shared: (1,) for a 1-D input, () for a 0-d one, so
    that the result keeps x's shape.
    """
    return weight.reshape(((1, weight.size) + (1,) * (ndim - 2)) if ndim >= 2 else (1,) * ndim)


def _slope_factor(x, weight):
    """dy/dx of PReLU: 1 where x > 0, the slope a_c of x's channel elsewhere, in x's dtype and shape.

    Equals ``where(x > 0, 1, a)``, computed as a·[x ≤ 0] + [x > 0] because arithmetic on the 0/1 masks is
    vectorized and a three-array select is not. Each step is exact for a finite a (a·1 = a, a·0 = 0, then
    0 + 1 or a + 0); an infinite slope (0·inf is NaN) takes the select.
    """
    xp = backend.get_array_module(x)
    slope = _channel_view(weight, x.ndim)
    positive = x > 0
    if not bool(xp.isfinite(weight).all()):
        return xp.where(positive, x.dtype.type(1), slope)
    factor = xp.asarray(xp.multiply(~positive, slope, dtype=x.dtype))  # asarray: a 0-d x gives a scalar
    factor += positive
    return factor


def _sum_per_channel_of_product(a, b, num_parameters):
    """Σ a · b over every dim but dim 1, as a (C,) array, or over everything as (1,) when the slope is shared.

    Equals ``(a * b).sum(axis=(0, 2, 3, ...))``. Viewed as (N, C, rest) (free for contiguous arrays),
    ``einsum`` multiplies and adds in one pass with each (n, c) row as its contiguous inner loop: no product
    array is written, and no reduction strides across channels (which NumPy does slowly).
    """
    xp = backend.get_array_module(a)
    if num_parameters == 1:
        return xp.einsum("i,i->", a.reshape(-1), b.reshape(-1)).reshape(1)
    rows = (a.shape[0], a.shape[1], math.prod(a.shape[2:]))  # not -1, which an empty array cannot resolve
    return xp.einsum("ncl,ncl->c", a.reshape(rows), b.reshape(rows))


# ---------------------------------------------------------------------------
# Function
# ---------------------------------------------------------------------------
class PReLUFunction(Function):
    """y = x where x > 0, a_c · x elsewhere (a_c the slope of x's channel c, or one shared a).

    dy/dx = 1 where x > 0 and a_c elsewhere; dy/da_c = x where x ≤ 0 and 0 elsewhere, and
    a_c is shared by every element of channel c (of every sample), so its gradient sums
    grad_y · x over the non-positive elements of that channel. At x = 0 the slope taken is
    a_c, as PyTorch.

    forward keeps f = dy/dx (``_slope_factor``, one array in x's dtype: four times a bool
    mask's memory) because it is also backward's factor for grad_x, and x, which the graph
    holds anyway, for grad_a.
    """

    def forward(self, x, weight):
        factor = _slope_factor(x, weight)
        self.factor = factor if self.needs_input_grad[0] else None
        self.x = x if self.needs_input_grad[1] else None
        self.num_parameters = weight.size
        # y = x · f rather than where(x > 0, x, a · x): one product instead of a product and a three-array
        # select, and the same f then makes grad_x = grad_y · f one product too.
        return x * factor

    def backward(self, grad_y):
        xp = backend.get_array_module(grad_y)
        grad_x = grad_weight = None
        if self.needs_input_grad[0]:
            grad_x = grad_y * self.factor
        if self.needs_input_grad[1]:
            # grad_y · min(x, 0) is grad_y · x where x ≤ 0 and 0 elsewhere, without a mask or a select.
            grad_weight = _sum_per_channel_of_product(grad_y, xp.minimum(self.x, 0), self.num_parameters)
        return grad_x, grad_weight


# ---------------------------------------------------------------------------
# Public function
# ---------------------------------------------------------------------------
def prelu(input, weight):
    """PReLU as ``torch.nn.functional.prelu``: max(0, x) + weight · min(0, x) for x in input, weight (1,) or (C,).

    A (C,) weight holds one slope per channel of dim 1 (input must then have C channels); a (1,)
    weight is one slope shared by every element.
    """
    input, weight = as_tensor(input), as_tensor(weight)
    if weight.ndim != 1:
        raise ValueError(f"prelu: weight must be 1-D, (1,) or (channels,), got shape {weight.shape}")
    if weight.shape[0] != 1:
        if input.ndim < 2 or input.shape[1] != weight.shape[0]:
            raise ValueError(f"prelu: weight has {weight.shape[0]} slopes but input of shape {input.shape} does not "
                             f"have that many channels in dim 1; use one slope per channel or a single shared one, "
                             f"weight of shape (1,)")
    if input.dtype != weight.dtype:
        raise TypeError(f"prelu: input is {input.dtype} but weight is {weight.dtype}; "
                        f"convert one with .astype() first")
    return PReLUFunction()(input, weight)
