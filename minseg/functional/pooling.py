"""Pooling over kh × kw windows: max and average.

The definition is ``max_pool2d_simple`` / ``avg_pool2d_simple`` below: pad, view every kh × kw window,
reduce it. The Functions compute the same numbers faster (``_max_pool_separable``, ``_sum_pool_separable``):
a 2-D reduction over a window splits into two 1-D ones (the max of a window is the max over its rows of each
row's max), so pooling runs along W, then along H, and each 1-D pass is a loop over the kernel's *taps*: tap j
is the strided view ``x[..., j::stride]`` holding the j-th element of every window at once. A loop over taps is
short (2 or 3 steps) and each step is one whole-array ``maximum`` or ``+``; reducing the windows' two short
axes directly makes NumPy step through them an element at a time.

The backward of each 1-D pass routes the gradient back through the same taps: to the tap that won (max) or to
every tap equally (average). Overlapping windows (stride < kernel) add their contributions; when windows tile
the input exactly (stride == kernel, the common 2 × 2 case) every input element is written once.

Max unpooling (SegNet's decoder) is ``unpooling.py``; pooling to a fixed output size is
``adaptive_pooling.py``. Both share this file's argument checks.
"""
import numpy as np

from ..arguments import pair
from ..autograd import Function, as_tensor
from ..backend import get_array_module
from .im2col import conv_output_size

__all__ = ["max_pool2d", "avg_pool2d"]


# ---------------------------------------------------------------------------
# The definition: every window, reduced
# ---------------------------------------------------------------------------
def _windows_simple(x, kernel_size, stride, padding, fill):
    """(N, C, Ho, Wo, kh, kw): every kh × kw window of x padded with ``fill``, one per output (NumPy arrays)."""
    windows = np.lib.stride_tricks.sliding_window_view(_pad(x, padding, fill), kernel_size, axis=(2, 3))
    return windows[:, :, ::stride[0], ::stride[1]]


def max_pool2d_simple(x, kernel_size, stride, padding):
    """Max pooling as its definition reads; ``MaxPool2dFunction`` computes the same, faster."""
    return _windows_simple(x, kernel_size, stride, padding, -np.inf).max(axis=(4, 5))


def avg_pool2d_simple(x, kernel_size, stride, padding):
    """Average pooling (zero padding counted) as its definition reads; ``AvgPool2dFunction`` is the fast twin."""
    return _windows_simple(x, kernel_size, stride, padding, 0.0).mean(axis=(4, 5))


# ---------------------------------------------------------------------------
# The fast path: taps along one axis, and their adjoint
# ---------------------------------------------------------------------------
def _taps(x, axis, kernel, stride, n_out):
    """Views of ``x`` along ``axis``: tap j holds element ``o*stride + j`` for every window o < n_out."""
    lead = (slice(None),) * axis
    return [x[lead + (slice(j, j + stride * (n_out - 1) + 1, stride),)] for j in range(kernel)]


def _buffer_for_taps(xp, shape, dtype, axis, kernel, stride, n_out):
    """A gradient buffer for the taps' adjoint, and how many leading taps may be written into it, not added.

    Taps j < min(kernel, stride) never overlap; when kernel ≥ stride they cover [0, stride·n_out) exactly,
    so only the elements past it start at zero and the later taps add on top.
    """
    if kernel < stride:  # gaps between windows stay zero
        return xp.zeros(shape, dtype), kernel
    grad_x = xp.empty(shape, dtype)  # no zeroing pass: the first `stride` taps overwrite all of [0, stride·n_out)
    grad_x[(slice(None),) * axis + (slice(stride * n_out, None),)] = 0
    return grad_x, stride


def _max_along(x, axis, kernel, stride, n_out):
    """Max over each window along ``axis``, and which tap won it (the first one, on ties, as PyTorch)."""
    xp = get_array_module(x)
    taps = _taps(x, axis, kernel, stride, n_out)
    if kernel == 1:
        return taps[0].copy(), xp.zeros(taps[0].shape, xp.uint8)
    beats = taps[1] > taps[0]  # strictly greater: an equal later tap does not take over
    # A bool is a 0/1 byte, so viewing it as uint8 is free where astype would be one more pass.
    winner = beats.view(xp.uint8) if kernel < 256 else beats.astype(xp.int32)
    best = xp.maximum(taps[0], taps[1])  # the running max, updated in place
    for j, tap in enumerate(taps[2:], start=2):
        beats = tap > best
        xp.maximum(best, tap, out=best)
        # j only grows, so the last tap that beat the running max is the winner. (A masked copy, copyto(where=),
        # reads as one pass but runs element by element; the product and the max are vectorized.)
        xp.maximum(winner, beats * winner.dtype.type(j), out=winner)
    return best, winner


def _max_along_backward(grad_max, winner, axis, kernel, stride, size):
    """Adjoint of ``_max_along``: each window's gradient goes to the element that won it."""
    xp = get_array_module(grad_max)
    shape = grad_max.shape[:axis] + (size,) + grad_max.shape[axis + 1:]
    n_out = grad_max.shape[axis]
    grad_x, n_written = _buffer_for_taps(xp, shape, grad_max.dtype, axis, kernel, stride, n_out)
    routed = None if n_written == kernel else xp.empty_like(grad_max)  # one scratch buffer for the added taps
    for j, tap in enumerate(_taps(grad_x, axis, kernel, stride, n_out)):
        if j < n_written:  # no earlier tap wrote here: write, don't add
            xp.multiply(grad_max, winner == j, out=tap)
        else:
            xp.multiply(grad_max, winner == j, out=routed)
            tap += routed
    return grad_x


def _sum_along(x, axis, kernel, stride, n_out):
    """Sum over each window along ``axis``."""
    taps = _taps(x, axis, kernel, stride, n_out)
    total = taps[0].copy() if kernel == 1 else taps[0] + taps[1]
    for tap in taps[2:]:
        total += tap
    return total


def _sum_along_backward(grad_sum, axis, kernel, stride, size):
    """Adjoint of ``_sum_along``: every element of a window receives the window's gradient."""
    xp = get_array_module(grad_sum)
    n_out = grad_sum.shape[axis]
    shape = grad_sum.shape[:axis] + (size,) + grad_sum.shape[axis + 1:]
    grad_x, n_written = _buffer_for_taps(xp, shape, grad_sum.dtype, axis, kernel, stride, n_out)
    for j, tap in enumerate(_taps(grad_x, axis, kernel, stride, n_out)):
        if j < n_written:
            tap[...] = grad_sum
        else:
            tap += grad_sum
    return grad_x


def _max_pool_separable(padded, kernel, stride, out_hw):
    """``max_pool2d_simple`` of the (already padded) input, and each window's winning column and row tap.

    A max along W over each window's columns, then a max along H over those row maxima.
    """
    row_max, col_winner = _max_along(padded, 3, kernel[1], stride[1], out_hw[1])
    y, row_winner = _max_along(row_max, 2, kernel[0], stride[0], out_hw[0])
    return y, col_winner, row_winner


def _max_pool_separable_backward(grad_y, col_winner, row_winner, kernel, stride, padded_hw):
    """Adjoint of ``_max_pool_separable``: the two 1-D passes' adjoints, in reverse order."""
    grad_row_max = _max_along_backward(grad_y, row_winner, 2, kernel[0], stride[0], padded_hw[0])
    return _max_along_backward(grad_row_max, col_winner, 3, kernel[1], stride[1], padded_hw[1])


def _sum_pool_separable(padded, kernel, stride, out_hw):
    """The sum over every window of the (already padded) input: a sum along W, then along H."""
    row_sum = _sum_along(padded, 3, kernel[1], stride[1], out_hw[1])
    return _sum_along(row_sum, 2, kernel[0], stride[0], out_hw[0])


def _sum_pool_separable_backward(grad_y, kernel, stride, padded_hw):
    """Adjoint of ``_sum_pool_separable``: every element of a window receives the window's gradient."""
    grad_row_sum = _sum_along_backward(grad_y, 2, kernel[0], stride[0], padded_hw[0])
    return _sum_along_backward(grad_row_sum, 3, kernel[1], stride[1], padded_hw[1])


def _pad(x, padding, value):
    """``x`` with ``padding`` = (ph, pw) rows/columns of ``value`` on each side (x itself when zero)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    xp = get_array_module(x)
    n, c, h, w = x.shape
    padded = xp.empty((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    padded[:, :, ph:ph + h, pw:pw + w] = x
    # Only the border is filled: filling the whole array first would write the interior twice.
    padded[:, :, :ph], padded[:, :, ph + h:] = value, value
    padded[:, :, ph:ph + h, :pw], padded[:, :, ph:ph + h, pw + w:] = value, value
    return padded


def _unpad(grad_padded, padding, x_shape):
    """The gradient for the unpadded input, from one for the padded input's first rows.

    ``grad_padded`` may stop short of the last padded rows (no window reached them):
    those rows get zero gradient.
    """
    ph, pw = padding
    h, w = x_shape[2:]
    inside = grad_padded[:, :, ph:ph + h, pw:pw + w]
    if inside.shape[2] == h:
        return inside
    grad_x = get_array_module(grad_padded).zeros(x_shape, grad_padded.dtype)
    grad_x[:, :, :inside.shape[2]] = inside
    return grad_x


def _pooled_size(x_shape, kernel, stride, padding):
    """(Ho, Wo) = ⌊(H + 2p − k) / s⌋ + 1 along each axis: the convolution's size rule without dilation."""
    return tuple(conv_output_size(x_shape[2 + a], kernel[a], stride[a], padding[a], 1) for a in range(2))


def _rows_used(out_h, kernel, stride):
    """Rows of the padded input that some window reaches; rows past the last window never matter."""
    return (out_h - 1) * stride[0] + kernel[0]


# ---------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------
class MaxPool2dFunction(Function):
    """y[n,c,i,j] = max of the kh × kw window at (i·sh − ph, j·sw − pw); padding counts as −∞.

    Only the winning element moves y, so backward hands each window's gradient to its
    winner (first maximum in row-major order, as PyTorch), through the max along W and
    the max along H (``_max_pool_separable``) in reverse.
    """

    def __init__(self, kernel_size, stride, padding, return_indices):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.return_indices = return_indices

    def forward(self, x):
        out_hw = _pooled_size(x.shape, self.kernel_size, self.stride, self.padding)
        padded = _pad(x, self.padding, -np.inf)
        self.padded_hw = (_rows_used(out_hw[0], self.kernel_size, self.stride), padded.shape[3])
        y, self.col_winner, self.row_winner = _max_pool_separable(
            padded[:, :, :self.padded_hw[0]], self.kernel_size, self.stride, out_hw)
        self.x_shape = x.shape
        if not self.return_indices:
            return y
        return y, self._flat_indices()

    def _flat_indices(self):
        """Each maximum's position as a flat index into its (unpadded) H × W plane, as PyTorch."""
        xp = get_array_module(self.row_winner)
        (kh, _), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        out_h, out_w = self.row_winner.shape[2:]
        width = self.x_shape[3]
        # The winning column is the one that won within the winning row (tap i of col_winner is window row i).
        win_col = xp.zeros(self.row_winner.shape, self.col_winner.dtype)
        for i, col_winner_of_row_i in enumerate(_taps(self.col_winner, 2, kh, sh, out_h)):
            win_col += (self.row_winner == i) * col_winner_of_row_i  # vectorized, unlike a masked copy
        # index = window origin + offset inside the window. The offset (< kh·W) fits int32 and the origins are one
        # plane's worth, so the only full-size int64 pass is the final sum.
        offset = xp.multiply(self.row_winner, width, dtype=xp.int32 if kh * width < 2**31 else xp.int64)
        offset += win_col
        origin = (xp.arange(out_h) * sh - ph).reshape(-1, 1) * width + (xp.arange(out_w) * sw - pw)
        return xp.add(offset, origin, dtype=xp.int64)

    def backward(self, grad_y, *unused_grad_indices):
        grad_padded = _max_pool_separable_backward(grad_y, self.col_winner, self.row_winner, self.kernel_size,
                                                   self.stride, self.padded_hw)
        return (_unpad(grad_padded, self.padding, self.x_shape),)


class AvgPool2dFunction(Function):
    """y[n,c,i,j] = (1 / kh·kw) Σ over the window; zero padding counts (count_include_pad=True).

    Each window element contributes 1/(kh·kw) of y, so backward spreads grad_y/(kh·kw)
    evenly over the window, summing where windows overlap.
    """

    def __init__(self, kernel_size, stride, padding):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        out_hw = _pooled_size(x.shape, self.kernel_size, self.stride, self.padding)
        padded = _pad(x, self.padding, 0)
        self.padded_hw = (_rows_used(out_hw[0], self.kernel_size, self.stride), padded.shape[3])
        y = _sum_pool_separable(padded[:, :, :self.padded_hw[0]], self.kernel_size, self.stride, out_hw)
        y *= x.dtype.type(1.0 / (self.kernel_size[0] * self.kernel_size[1]))
        self.x_shape = x.shape
        return y

    def backward(self, grad_y):
        grad_y = grad_y * grad_y.dtype.type(1.0 / (self.kernel_size[0] * self.kernel_size[1]))
        grad_padded = _sum_pool_separable_backward(grad_y, self.kernel_size, self.stride, self.padded_hw)
        return _unpad(grad_padded, self.padding, self.x_shape)


# ---------------------------------------------------------------------------
# Public functions: argument checks, then one Function each
# ---------------------------------------------------------------------------
def _check_4d(input, op_name):
    if input.ndim != 4:
        raise ValueError(f"{op_name}: input must be 4-D (N, C, H, W), got shape {input.shape}")


def _window_pairs(kernel_size, stride, padding, op_name):
    """(kernel, stride, padding) as pairs; stride defaults to the kernel size."""
    kernel = pair(op_name, "kernel_size", kernel_size, 1)
    stride = kernel if stride is None else pair(op_name, "stride", stride, 1)
    return kernel, stride, pair(op_name, "padding", padding, 0)


def _window_arguments(input, kernel_size, stride, padding, op_name):
    """Validated (kernel, stride, padding) pairs; the output size must come out at least 1."""
    _check_4d(input, op_name)
    kernel, stride, padding = _window_pairs(kernel_size, stride, padding, op_name)
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise ValueError(f"{op_name}: padding {padding} should be at most half of kernel_size {kernel}")
    for axis, name in ((0, "height"), (1, "width")):
        padded = input.shape[2 + axis] + 2 * padding[axis]
        if kernel[axis] > padded:
            raise ValueError(f"{op_name}: kernel_size {kernel} is larger than the padded input "
                             f"({name} {padded} = {input.shape[2 + axis]} + 2·{padding[axis]})")
    return kernel, stride, padding


def max_pool2d(input, kernel_size, stride=None, padding=0, return_indices=False):
    """Max over kh × kw windows (stride defaults to kernel_size; padding is −∞).

    With ``return_indices`` also returns, for each output, the flat index of its maximum
    within the input's H × W plane (int64, as PyTorch) — what ``max_unpool2d`` needs.
    Output size: ⌊(H + 2p − k) / s⌋ + 1.
    """
    input = as_tensor(input)
    kernel, stride, padding = _window_arguments(input, kernel_size, stride, padding, "max_pool2d")
    return MaxPool2dFunction(kernel, stride, padding, bool(return_indices))(input)


def avg_pool2d(input, kernel_size, stride=None, padding=0, count_include_pad=True):
    """Mean over kh × kw windows (stride defaults to kernel_size; zero padding is counted).

    ``count_include_pad=False`` divides each window's sum by the number of input pixels in it instead, so a border
    output is the mean of what it covers (Inception's pooling branches): the counted mean times kh·kw / inside,
    where inside/(kh·kw) is the same pooling of an all-ones image, a constant.
    """
    input = as_tensor(input)
    kernel, stride, padding = _window_arguments(input, kernel_size, stride, padding, "avg_pool2d")
    y = AvgPool2dFunction(kernel, stride, padding)(input)
    if count_include_pad or padding == (0, 0):
        return y
    ones = get_array_module(input.data).ones((1, 1) + input.shape[2:], input.dtype)
    return y / AvgPool2dFunction(kernel, stride, padding).forward(ones)
