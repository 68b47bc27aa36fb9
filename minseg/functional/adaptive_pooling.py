"""Adaptive average pooling: average to a fixed output size whatever the input size (PSPNet's pyramid).

PyTorch's bins may differ in size and overlap, so this is no window with a stride: averaging a rectangle of
bins is a product with one small matrix per axis (``AdaptiveAvgPool2dFunction``).
"""
import numpy as np

from ..autograd import Function, as_tensor
from ..backend import get_array_module
from .pooling import _check_4d

__all__ = ["adaptive_avg_pool2d"]


# ---------------------------------------------------------------------------
# PyTorch's bins as a matrix
# ---------------------------------------------------------------------------
def _bin_average_matrix(n_in, n_out):
    """(n_out, n_in) matrix whose row i averages input positions [⌊i·n_in/n_out⌋, ⌈(i+1)·n_in/n_out⌉)."""
    i = np.arange(n_out)
    start = (i * n_in) // n_out
    end = -((-(i + 1) * n_in) // n_out)  # ceiling division in integers
    position = np.arange(n_in)
    inside = (position >= start[:, None]) & (position < end[:, None])
    return inside / (end - start)[:, None]


# ---------------------------------------------------------------------------
# Function
# ---------------------------------------------------------------------------
class AdaptiveAvgPool2dFunction(Function):
    """y = A_h · x · A_wᵀ for each (n, c) plane, where A's row i averages input bin i.

    PyTorch's bins: output i averages input positions [⌊i·H/out⌋, ⌈(i+1)·H/out⌉), so
    bins may differ in size and overlap. Averaging a rectangle is averaging its rows
    then its columns, hence the two small matrices. Being linear, the backward is
    multiplication by the transposes: grad_x = A_hᵀ · grad_y · A_w.
    """

    def __init__(self, output_size):
        self.output_size = output_size

    def forward(self, x):
        xp = get_array_module(x)
        (h, w), (out_h, out_w) = x.shape[2:], self.output_size
        self.rows = xp.asarray(_bin_average_matrix(h, out_h), dtype=x.dtype)
        self.cols = xp.asarray(_bin_average_matrix(w, out_w), dtype=x.dtype)
        return self.rows @ (x @ self.cols.T)

    def backward(self, grad_y):
        return self.rows.T @ (grad_y @ self.cols)


# ---------------------------------------------------------------------------
# Public function: argument checks, then one Function
# ---------------------------------------------------------------------------
def adaptive_avg_pool2d(input, output_size):
    """Average pooling to a fixed output size (PSPNet's pyramid): PyTorch's bins.

    ``output_size`` is an int or an (H, W) pair; None in the pair keeps that input size.
    """
    input = as_tensor(input)
    _check_4d(input, "adaptive_avg_pool2d")
    sizes = (output_size, output_size) if not isinstance(output_size, (tuple, list)) else tuple(output_size)
    if len(sizes) != 2:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be an int or a pair, got {output_size!r}")
    sizes = tuple(input.shape[2 + a] if s is None else s for a, s in enumerate(sizes))
    if not all(isinstance(s, (int, np.integer)) and s >= 1 for s in sizes):
        raise ValueError(f"adaptive_avg_pool2d: output_size must hold positive ints (or None), got {output_size!r}")
    return AdaptiveAvgPool2dFunction(tuple(int(s) for s in sizes))(input)
