"""Dropout: zero random activations during training so no unit can rely on another.

``dropout`` drops single elements; ``dropout2d`` (spatial dropout) drops whole channels of a sample,
since neighbouring pixels of a feature map are so correlated that dropping single ones hardly
regularizes a convolution. Both are one ``DropoutFunction`` whose mask has a different shape.
"""
import numpy as np

from .. import backend
from ..autograd import Function, as_tensor
from ..random import generator

__all__ = ["dropout", "dropout2d"]


class DropoutFunction(Function):
    """y = x · m / (1 − p), with m ~ Bernoulli(1 − p) drawn afresh on every call, broadcast against x.

    "Inverted" dropout: dividing the kept values by 1 − p keeps E[y] = x, so evaluation
    can use the network unchanged. y is linear in x with the same mask, so
    grad_x = grad_y · m / (1 − p). The mask has x's shape (``dropout``) or one entry per
    sample and channel, (N, C, 1, 1) (``dropout2d``).
    """

    def __init__(self, p, mask_shape):
        self.p, self.mask_shape = p, mask_shape

    def forward(self, x):
        # Drawn on the CPU from minseg's one generator (repeatable with minseg.manual_seed),
        # then moved to x's device.
        keep = generator().random(self.mask_shape, dtype=np.float32) >= self.p
        keep = backend.to_device(keep, backend.device_of(x))
        # p == 1 drops everything; 1/(1 − p) would be inf, and 0 · inf is NaN.
        scale = x.dtype.type(0.0 if self.p == 1 else 1.0 / (1.0 - self.p))
        if keep.size < x.size:  # one entry per channel: held scaled, in x's dtype, so y is one product
            self.mask, self.scale = keep * scale, None
        else:  # x's own size: held as bool (one byte per element, not four), scaled after
            self.mask, self.scale = keep, scale
        return self._apply_mask(x)

    def _apply_mask(self, array):
        """array · m / (1 − p): the forward of x, and the backward of grad_y (y is linear in x)."""
        out = array * self.mask
        if self.scale is not None:
            out *= self.scale
        return out

    def backward(self, grad_y):
        return self._apply_mask(grad_y)


def _check_p(where, p):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{where}: p is a probability and must be between 0 and 1, got {p}")
    return float(p)


def dropout(input, p=0.5, training=True):
    """During training, zero each element with probability ``p`` and scale the rest by 1/(1 − p).

    With training=False (evaluation) or p == 0, returns input unchanged.
    """
    p = _check_p("dropout", p)
    input = as_tensor(input)
    if not training or p == 0:
        return input
    return DropoutFunction(p, input.shape)(input)


def dropout2d(input, p=0.5, training=True):
    """During training, zero each (sample, channel) map of an (N, C, H, W) input with probability ``p``.

    The maps kept are scaled by 1/(1 − p), as ``torch.nn.functional.dropout2d``. With training=False
    (evaluation) or p == 0, returns input unchanged.
    """
    p = _check_p("dropout2d", p)
    input = as_tensor(input)
    if input.ndim != 4:
        raise ValueError(f"dropout2d: input must be 4-D (N, C, H, W), got shape {input.shape}; "
                         f"dropout drops single elements of any shape")
    if not training or p == 0:
        return input
    return DropoutFunction(p, input.shape[:2] + (1, 1))(input)
