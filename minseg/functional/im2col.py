"""im2col and col2im: turning a convolution into one matrix product, and back.

A convolution slides a kh×kw window over the image and, at each output pixel, takes
the dot product of the window with each filter. im2col ("image to columns") copies
every window into one column of a matrix:

    col[(c, i, j), (oh, ow)] = x_padded[c, oh·sh + i·dh, ow·sw + j·dw]

so the whole convolution becomes a single matrix product,

    y[o, (oh, ow)] = Σ_(c,i,j) weight[o, (c, i, j)] · col[(c, i, j), (oh, ow)]
    y = weight.reshape(O, C·kh·kw) @ col,

which a BLAS library computes at close to the machine's peak speed.

col2im is the adjoint (the transpose) of im2col: im2col *copies* each input pixel
into every window that contains it, so col2im *adds* each window entry back onto the
pixel it came from. That is what the convolution's backward pass needs (the gradient
of a copy is a sum), and it is also the forward pass of the transposed convolution.

Both are written once and vectorized: im2col is a single copy out of a strided view
of all windows, col2im a loop over the kh·kw kernel taps in which each tap moves a
whole (N, C, Ho, Wo) block. There is no Python loop over images, pixels or channels.

Two layouts of ``col``; both are the same numbers in a different order:
* per image, ``(N, C·kh·kw, Ho·Wo)``: ``weight2d @ col`` is a batched matmul whose
  result ``(N, O, Ho·Wo)`` is already the NCHW output, no transpose needed;
* ``fold_batch=True``, ``(C·kh·kw, N·Ho·Wo)``: one big matrix. When each image has
  few pixels (deep layers: 6×8), the per-image products are too thin for BLAS to run
  fast and one wide product is quicker, worth transposing the small output
  (``conv_numpy._folds_batch`` chooses; ``benchmarks/layers.py`` measures it).
"""
import threading

import numpy as np

from ..backend import get_array_module

__all__ = ["conv_output_size", "conv2d_output_size", "im2col", "col2im", "workspace"]


def conv_output_size(size, kernel_size, stride, padding, dilation):
    """PyTorch's output length along one axis: ⌊(size + 2p - d(k-1) - 1) / s⌋ + 1."""
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def conv2d_output_size(height_width, kernel_size, stride, padding, dilation):
    """(Ho, Wo): ``conv_output_size`` along both axes; the arguments are (int, int) pairs."""
    return tuple(conv_output_size(*args) for args in zip(height_width, kernel_size, stride, padding, dilation))


# Large NumPy arrays come from the operating system as fresh pages, and touching each
# page for the first time costs time, which a new col matrix would pay on every call.
# The im2col matrix (and the padded copy of x it is read from) is needed only during
# one call, so convolutions reuse scratch buffers instead. Nothing
# that lives in them ever leaves the function that filled it (callers get fresh
# arrays). Each grows to the largest size seen and stays allocated;
# ``workspace.release()`` gives the memory back. One set of buffers per thread (a threading.local),
# so threads running convolutions at the same time (minseg.distributed.ThreadGroup's ranks) never
# overwrite each other's.
class _Workspace(threading.local):
    def __init__(self):
        self.buffers = {}

    def __call__(self, shape, dtype, name="col"):
        """An uninitialised C-contiguous NumPy array of ``shape`` and ``dtype`` in scratch buffer ``name``."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        buffer = self.buffers.get(name)
        if buffer is None or buffer.size < nbytes:
            self.buffers.pop(name, None)  # free the old buffer before taking a bigger one
            self.buffers[name] = np.empty(nbytes, np.uint8)
        return self.buffers[name][:nbytes].view(dtype).reshape(shape)

    def release(self):
        self.buffers.clear()


workspace = _Workspace()


def _pad(x, padding):
    """x with ``padding`` = (ph, pw) zeros around its two spatial axes (x itself when there are none).

    The result is scratch memory (NumPy) or a new array (CuPy): read it, don't keep it.
    """
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    n, c, h, w = x.shape
    shape = (n, c, h + 2 * ph, w + 2 * pw)
    if get_array_module(x) is not np:
        padded = get_array_module(x).zeros(shape, dtype=x.dtype)
    else:
        padded = workspace(shape, x.dtype, name="padded")
        padded[:, :, :ph], padded[:, :, ph + h:] = 0, 0  # the border; the inside is overwritten below
        padded[:, :, :, :pw], padded[:, :, :, pw + w:] = 0, 0
    padded[:, :, ph:ph + h, pw:pw + w] = x
    return padded


def _windows(x_padded, kernel_size, stride, dilation, out_size):
    """A read-only view ``(N, C, kh, kw, Ho, Wo)`` of every window; no data is copied.

    Element [n, c, i, j, oh, ow] is x_padded[n, c, oh·sh + i·dh, ow·sw + j·dw]: moving
    one step along i moves dh rows, along oh moves sh rows, and so on. Those are just
    strides, so the six-dimensional "array of windows" is the same memory seen
    differently (``as_strided``).
    """
    xp = get_array_module(x_padded)
    n, c = x_padded.shape[:2]
    row, col = x_padded.strides[2:]
    # (Works for CuPy arrays too. We only ever read it: the windows overlap, so writing
    # through this view would change several entries at once.)
    return xp.lib.stride_tricks.as_strided(
        x_padded, shape=(n, c, *kernel_size, *out_size),
        strides=(*x_padded.strides[:2], row * dilation[0], col * dilation[1], row * stride[0], col * stride[1]))


def im2col(x, kernel_size, stride, padding, dilation, fold_batch=False, rotate=False, out=None):
    """Every convolution window of x (N, C, H, W) as a column.

    Returns ``(N, C·kh·kw, Ho·Wo)`` or, with ``fold_batch``, ``(C·kh·kw, N·Ho·Wo)``
    (see the module docstring). Rows are ordered (c, i, j), matching
    ``weight.reshape(O, C·kh·kw)``; (Ho, Wo) follow PyTorch's formula. The arguments
    are (int, int) pairs. ``rotate``: each window turned 180°, so row (c, i, j) holds
    tap (kh-1-i, kw-1-j) (what a convolution with a rotated kernel reads; see conv.py).
    ``out``: an array to fill instead of a new one.
    """
    n, c, h, w = x.shape
    out_size = conv2d_output_size((h, w), kernel_size, stride, padding, dilation)
    kh, kw = kernel_size
    ho, wo = out_size
    if kernel_size == (1, 1) and stride == (1, 1) and padding == (0, 0) and not fold_batch:
        # A 1×1 convolution's windows are the pixels themselves (and rotating them changes nothing).
        return x.reshape(n, c, h * w)

    windows = _windows(_pad(x, padding), kernel_size, stride, dilation, out_size)
    if rotate:
        windows = windows[:, :, ::-1, ::-1]  # still a view: the tap strides just turn negative
    if fold_batch:
        shape, windows = (c, kh, kw, n, ho, wo), windows.transpose(1, 2, 3, 0, 4, 5)
    else:
        shape = (n, c, kh, kw, ho, wo)
    xp = get_array_module(x)
    col = xp.empty(shape, dtype=x.dtype) if out is None else out.reshape(shape)
    col[...] = windows  # the one copy: each input pixel lands in every window that holds it
    return col.reshape((c * kh * kw, n * ho * wo) if fold_batch else (n, c * kh * kw, ho * wo))


def col2im(col, x_shape, kernel_size, stride, padding, dilation, fold_batch=False):
    """The adjoint of ``im2col``: add every column entry back onto the pixel it was copied from.

    col is what ``im2col`` returns for an input of ``x_shape`` = (N, C, H, W) with the
    same arguments. Returns a new (N, C, H, W) array; pixels that lie in no window
    (cut off by the stride) get 0.
    """
    xp = get_array_module(col)
    n, c, h, w = x_shape
    kh, kw = kernel_size
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    ho, wo = conv2d_output_size((h, w), kernel_size, stride, padding, dilation)
    # An image-ordered view (N, C, kh, kw, Ho, Wo) of col, whichever layout it has.
    if fold_batch:
        col6 = col.reshape(c, kh, kw, n, ho, wo).transpose(3, 0, 1, 2, 4, 5)
    else:
        col6 = col.reshape(n, c, kh, kw, ho, wo)
    hp, wp = h + 2 * ph, w + 2 * pw

    # Windows that tile the image exactly (kernel 2, stride 2) hold every pixel once:
    # then there is nothing to add, and each tap is a plain copy into fresh memory.
    tiles = (sh, sw) == (kh, kw) and (dh, dw) == (1, 1) and (hp, wp) == (ho * kh, wo * kw)
    x_padded = (xp.empty if tiles else xp.zeros)((n, c, hp, wp), dtype=col.dtype)
    for i in range(kh):
        for j in range(kw):
            # Tap (i, j) of every window, all images and channels at once.
            rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
            if tiles:
                x_padded[:, :, rows, cols] = col6[:, :, i, j]
            else:
                x_padded[:, :, rows, cols] += col6[:, :, i, j]
    if ph == 0 and pw == 0:
        return x_padded
    return xp.ascontiguousarray(x_padded[:, :, ph:ph + h, pw:pw + w])
