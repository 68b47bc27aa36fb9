"""``Linear``: the fully connected layer, y = x Wᵀ + b, as ``torch.nn.Linear``.

Segmentation networks are convolutional end to end, but a detector's box head is not: each region's
pooled features (C × 7 × 7) are flattened and go through fully connected layers (Fast R-CNN's "two MLP
head"). The layer is two Functions of ``minseg.ops``, a matrix product and a broadcast addition, so
its gradient is theirs.
"""
import math

import numpy as np

from ..arguments import positive_int
from . import init
from .module import Module, Parameter

__all__ = ["Linear"]


class Linear(Module):
    """y = x Wᵀ + b for x (N, in_features): weight (out_features, in_features), bias (out_features,).

    Initialized as PyTorch: W and b ~ U(±1/√in_features) (``kaiming_uniform_`` with a = √5).
    """

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = positive_int("Linear", "in_features", in_features)
        self.out_features = positive_int("Linear", "out_features", out_features)
        self.weight = Parameter(np.empty((out_features, in_features), np.float32))
        self.bias = Parameter(np.empty(out_features, np.float32)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"Linear: input must have shape (N, {self.in_features}), got {x.shape}; flatten "
                             f"the features first (x.flatten(1))")
        y = x @ self.weight.T
        return y if self.bias is None else y + self.bias

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
