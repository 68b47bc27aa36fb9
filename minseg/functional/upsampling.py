"""Resizing feature maps: nearest-neighbour and bilinear ``interpolate``, with PyTorch's sampling rules.

Both modes are separable and linear: every output row is a weighted mix of at most two
input rows (bilinear) or a copy of one (nearest), and likewise for columns. So a
resize is y = A_h · x · A_wᵀ for each (n, c) plane, with small sampling matrices A
whose rows hold one or two nonzero weights: ``resample_simple`` is exactly that
product, and ``ResampleFunction`` (its docstring has the derivative) computes the same
one axis at a time with ``_product_along``.
"""
import math

import numpy as np

from ..autograd import Function, as_tensor
from ..backend import get_array_module

__all__ = ["interpolate"]


# ---------------------------------------------------------------------------
# Sampling rules (PyTorch's, including its float32 arithmetic for the indices)
# ---------------------------------------------------------------------------
def _nearest_matrix(n_in, n_out, scale_factor):
    """Output i copies input ⌊i · n_in / n_out⌋ (or ⌊i / scale_factor⌋ when a scale was given)."""
    dst = np.arange(n_out)
    if n_out == n_in:
        src = dst
    elif n_out == 2 * n_in:
        src = dst // 2
    else:
        # PyTorch computes this in float32; so do we, or a few outputs would pick a neighbour.
        step = np.float32(1.0 / scale_factor) if scale_factor else np.float32(n_in) / np.float32(n_out)
        src = np.minimum(np.floor(dst.astype(np.float32) * step).astype(np.int64), n_in - 1)
    matrix = np.zeros((n_out, n_in))
    matrix[dst, src] = 1.0
    return matrix


def _bilinear_matrix(n_in, n_out, scale_factor, align_corners, dtype):
    """Output i mixes the two inputs around its source coordinate s, weighted 1 − (s − ⌊s⌋) and s − ⌊s⌋.

    align_corners=True:  s = i · (n_in − 1)/(n_out − 1): the corner pixels' centres line up.
    align_corners=False: s = (i + ½) · n_in/n_out − ½, clamped at 0: the corner pixels' edges
    line up (the scale is 1/scale_factor when one was given).
    """
    if n_out == n_in:  # PyTorch copies an axis whose size does not change, whatever the scale_factor
        return np.eye(n_in)
    dtype = np.dtype(dtype).type
    dst = np.arange(n_out, dtype=dtype)
    if align_corners:
        step = dtype(n_in - 1) / dtype(n_out - 1) if n_out > 1 else dtype(0)
        src = dst * step
    else:
        step = dtype(1.0 / scale_factor) if scale_factor else dtype(n_in) / dtype(n_out)
        src = np.maximum((dst + dtype(0.5)) * step - dtype(0.5), dtype(0))
    left = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    right = np.minimum(left + 1, n_in - 1)
    right_weight = np.clip(src - left, 0, 1).astype(np.float64)
    matrix = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(matrix, (rows, left), 1 - right_weight)  # add: left and right coincide at the last input
    np.add.at(matrix, (rows, right), right_weight)
    return matrix


def resample_simple(x, rows, cols):
    """y = A_h · x · A_wᵀ for every (n, c) plane of x (NumPy), as the definition reads; rows = A_h, cols = A_w."""
    return rows.astype(x.dtype) @ x @ cols.T.astype(x.dtype)


# ---------------------------------------------------------------------------
# The fast path: one axis at a time, a dense product or one gather per tap
# ---------------------------------------------------------------------------
# Along an axis of at most this many inputs, a resize is one dense matrix product. It does n_in
# multiply-adds per output where bilinear needs two, but BLAS runs them on every core at full vector
# width, while the gathers below run on one core and each pass over the output reads and writes memory;
# past a few hundred inputs the wasted multiply-adds cost more. benchmarks/layers.py ("bilinear x2")
# times a short axis against PyTorch.
DENSE_UP_TO = 256


def _taps(matrix, dtype):
    """A sparse matrix as "taps": y[i] = Σ_t weight_t[i] · x[index_t[i]] reproduces y = matrix @ x.

    Tap t holds every row's t-th nonzero; rows with fewer nonzeros are padded with weight 0.
    Weight None means all ones (a pure gather, nothing to multiply).
    """
    rows, columns = np.nonzero(matrix)  # row-major: each row's nonzeros are consecutive
    per_row = np.bincount(rows, minlength=matrix.shape[0])
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    count = max(int(per_row.max()), 1)
    index = np.zeros((matrix.shape[0], count), np.int64)
    weight = np.zeros((matrix.shape[0], count))
    index[rows, slot], weight[rows, slot] = columns, matrix[rows, columns]
    return [(index[:, t], None if np.all(weight[:, t] == 1) else weight[:, t].astype(dtype))
            for t in range(count)]


def _gather(x, index, axis, out):
    """out = x[..., index, ...] along ``axis``; a strided copy when index steps evenly (e.g. every 2nd)."""
    xp = get_array_module(x)
    step = int(index[1] - index[0]) if len(index) > 1 else 1
    if step > 0 and np.all(np.diff(index) == step):
        lead = (slice(None),) * axis
        out[...] = x[lead + (slice(int(index[0]), int(index[-1]) + 1, step),)]
    elif xp is np:  # mode="clip" lets NumPy write straight into out ("raise" buffers); the indices are valid
        np.take(x, index, axis=axis, out=out, mode="clip")
    else:
        xp.take(x, xp.asarray(index), axis=axis, out=out)
    return out


def _apply_taps(x, taps, axis):
    """y = A @ x along ``axis`` for A given as taps: one gather (and multiply) per tap."""
    xp = get_array_module(x)
    shape = x.shape[:axis] + (len(taps[0][0]),) + x.shape[axis + 1:]
    y = xp.empty(shape, x.dtype)
    scratch = xp.empty_like(y) if len(taps) > 1 else None  # holds the second and later taps
    for t, (index, weight) in enumerate(taps):
        term = y if t == 0 else scratch
        _gather(x, index, axis, out=term)
        if weight is not None:
            term *= xp.asarray(weight).reshape((-1, 1) if axis == 2 else (-1,))
        if t > 0:
            y += term
    return y


def _product_along(x, matrix, axis):
    """``matrix @ x`` along ``axis`` (2 for H, 3 for W) of an (N, C, H, W) array; ``matrix`` is (out, in).

    Each axis of ``resample_simple``'s product, alone. A pure copy (every row a single 1: nearest
    forward, an unchanged size) is a gather; a short axis (up to ``DENSE_UP_TO`` inputs) is the dense
    product itself; a long one applies the matrix's nonzeros as taps, one gather and multiply-add each.
    """
    is_copy = np.all((matrix == 0) | (matrix == 1)) and np.all(matrix.sum(axis=1) == 1)
    if is_copy or matrix.shape[1] > DENSE_UP_TO:
        return _apply_taps(x, _taps(matrix, x.dtype), axis)
    dense = get_array_module(x).asarray(matrix, dtype=x.dtype)
    return x @ dense.T if axis == 3 else dense @ x


class ResampleFunction(Function):
    """y = A_h · x · A_wᵀ per (n, c) plane, with A_h, A_w the sampling matrices of the mode.

    Linear in x, so the backward is the adjoint: grad_x = A_hᵀ · grad_y · A_w, the same
    products with the transposed matrices (each input collects the outputs that read it).
    """

    def __init__(self, rows, cols):
        self.rows, self.cols = rows, cols  # float64 NumPy (out, in) matrices

    def forward(self, x):
        return _product_along(_product_along(x, self.cols, 3), self.rows, 2)

    def backward(self, grad_y):
        grad_width_resized = _product_along(grad_y, self.cols.T, 3)  # the gradient for x · A_wᵀ
        return _product_along(grad_width_resized, self.rows.T, 2)


# ---------------------------------------------------------------------------
# Public function
# ---------------------------------------------------------------------------
def _output_size(input, size, scale_factor):
    """(out_h, out_w) and the per-axis scale factors (None when size was given), as PyTorch."""
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size or scale_factor, got "
                         f"size={size!r}, scale_factor={scale_factor!r}")
    in_hw = input.shape[2:]
    if size is not None:
        sizes = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
        if len(sizes) != 2 or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in sizes):
            raise ValueError(f"interpolate: size must be a positive int or a pair of them, got {size!r}")
        return tuple(int(s) for s in sizes), (None, None)
    factors = (scale_factor, scale_factor) if np.isscalar(scale_factor) else tuple(scale_factor)
    if len(factors) != 2 or not all(np.isscalar(f) and f > 0 for f in factors):
        raise ValueError(f"interpolate: scale_factor must be a positive number or a pair of them, "
                         f"got {scale_factor!r}")
    sizes = tuple(int(math.floor(n * float(f))) for n, f in zip(in_hw, factors))
    if min(sizes) < 1:
        raise ValueError(f"interpolate: scale_factor {scale_factor!r} shrinks an input of size {in_hw} "
                         f"to {sizes}, which is empty")
    return sizes, tuple(float(f) for f in factors)


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """Resize (N, C, H, W) maps to ``size`` or by ``scale_factor`` (``torch.nn.functional.interpolate``).

    mode "nearest": output i copies input ⌊i · in/out⌋ (PyTorch's legacy 'nearest').
    mode "bilinear": see ``_bilinear_matrix``; align_corners defaults to False.
    When scale_factor is given, the sampling uses 1/scale_factor as the step, as PyTorch does.
    """
    input = as_tensor(input)
    if input.ndim != 4:
        raise ValueError(f"interpolate: input must be 4-D (N, C, H, W), got shape {input.shape}")
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"interpolate: mode must be 'nearest' or 'bilinear', got {mode!r}")
    if mode == "nearest" and align_corners is not None:
        raise ValueError("interpolate: align_corners can only be set with mode='bilinear' "
                         f"(it has no meaning for 'nearest'), got align_corners={align_corners!r}")
    if input.dtype.kind != "f":
        raise TypeError(f"interpolate: input must be floating point, got dtype {input.dtype}")
    (out_h, out_w), (factor_h, factor_w) = _output_size(input, size, scale_factor)
    h, w = input.shape[2:]
    if mode == "nearest":
        rows, cols = _nearest_matrix(h, out_h, factor_h), _nearest_matrix(w, out_w, factor_w)
    else:
        align_corners = bool(align_corners)
        rows = _bilinear_matrix(h, out_h, factor_h, align_corners, input.dtype)
        cols = _bilinear_matrix(w, out_w, factor_w, align_corners, input.dtype)
    return ResampleFunction(rows, cols)(input)
