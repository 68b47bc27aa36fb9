"""The NumPy fast path of the convolution array functions in conv.py: the same numbers, faster on a CPU.

``conv.py`` shows each array function plainly (``conv2d_forward_plain`` and its two
gradients: im2col, then one matrix product per group) and sends NumPy arrays here.
The functions below compute exactly what those plain versions compute; each speed-up
is one private function whose docstring says what it equals, and
``tests/test_conv_numpy.py`` forces every one of them and compares it with the plain
version. Why each is faster is measured by ``benchmarks/layers.py``.

* ``_cols``: im2col into the scratch workspace (``im2col.workspace``), in the layout
  ``_folds_batch`` picks (per image, or the batch folded into one wide matrix), per image
  a few images (or a band of one image's rows) at a time so that each chunk's col stays
  in the CPU's cache;
* ``_stride_one_gradients``: with stride 1 both gradients of a convolution come from
  one im2col of dL/dy, the input gradient being a convolution with the rotated kernel
  (derived in ``Conv2dFunction``'s docstring);
* ``_conv2d_forward_and_backward_weight``: the transposed convolution's two gradients,
  a convolution's forward and weight gradient of the same input, from one im2col;
* ``_swap_channel_axes``: the kernel-by-kernel transpose that rotated-kernel trick needs.
"""
import numpy as np

from .im2col import _pad, col2im, conv2d_output_size, im2col, workspace

# Images with fewer output pixels than this get the batch-folded col layout (see _folds_batch).
FOLD_BATCH_BELOW = 256
# The per-image col layout is built and used a few images at a time, at most this many bytes of col at once
# (but always at least one image; see _cols).
COL_CHUNK_BYTES = 16 * 2 ** 20


# ---------------------------------------------------------------------------
# Layout helpers
# ---------------------------------------------------------------------------
def _folds_batch(out_hw):
    """Whether col is laid out batch-folded, (C·kh·kw, N·Ho·Wo), rather than per image, (N, C·kh·kw, Ho·Wo).

    Both hold the same numbers. With few output pixels per image (deep layers: 6×8) the
    per-image products are too thin for BLAS to run fast, and one wide product wins
    despite the transposes it needs; from 24×32 pixels on the per-image layout is as
    fast and needs none (``benchmarks/layers.py``, the 6×8 and 24×32 cases).
    """
    return out_hw[0] * out_hw[1] < FOLD_BATCH_BELOW


def _rows_by_channel(array):
    """(N, C, H, W) -> (C, N·H·W): every channel's values of the whole batch on one row."""
    n, c, h, w = array.shape
    return array.transpose(1, 0, 2, 3).reshape(c, n * h * w)


def _cols(source, kernel_size, stride, padding, dilation, rotate=False):
    """Yield (images, out_rows, col, folded): im2col of ``source[images]`` for output rows ``out_rows``, chunk by chunk.

    Each col equals the columns of ``im2col(source[images], kernel_size, stride, padding,
    dilation, rotate=rotate)`` that belong to output rows ``out_rows``, or its batch-folded
    twin when ``folded`` (then ``images`` is the whole batch and ``out_rows`` all rows, in one
    chunk). A chunk's col is written by im2col and read straight back by the matrix product;
    when it is small enough to stay in the CPU's cache in between, that round trip skips main
    memory, which the whole batch's col (kh·kw times the input) would not (``benchmarks/layers.py``).
    So per image the batch comes in chunks of as many images as fit in ``COL_CHUNK_BYTES``, and
    an image whose col alone is bigger (a 7×7 kernel at full resolution) in bands of output
    rows that fit. The workspace is reused by the next chunk and by the next convolution: use
    each col before taking the next.
    """
    n, c = source.shape[:2]
    (ho, wo), (kh, kw) = conv2d_output_size(source.shape[2:], kernel_size, stride, padding, dilation), kernel_size
    rows, row_bytes = c * kh * kw, c * kh * kw * wo * source.itemsize
    all_rows = slice(0, ho)
    if _folds_batch((ho, wo)):
        out = workspace((rows, n * ho * wo), source.dtype)
        yield slice(0, n), all_rows, im2col(source, kernel_size, stride, padding, dilation, True, rotate, out), True
        return
    images_per_chunk = COL_CHUNK_BYTES // (row_bytes * ho)
    if images_per_chunk >= 1:
        for start in range(0, n, images_per_chunk):
            images = slice(start, min(start + images_per_chunk, n))
            out = workspace((images.stop - start, rows, ho * wo), source.dtype)
            yield images, all_rows, im2col(source[images], kernel_size, stride, padding, dilation, False, rotate,
                                           out), False
        return
    rows_per_band = max(1, COL_CHUNK_BYTES // row_bytes)
    for image in range(n):
        # The padded image, cut into overlapping slabs: the padded rows that one band of output rows reads.
        padded = _pad(source[image:image + 1], padding)
        for top in range(0, ho, rows_per_band):
            out_rows = slice(top, min(top + rows_per_band, ho))
            slab = padded[:, :, top * stride[0]:(out_rows.stop - 1) * stride[0] + dilation[0] * (kh - 1) + 1]
            out = workspace((1, rows, (out_rows.stop - top) * wo), source.dtype)
            yield slice(image, image + 1), out_rows, im2col(slab, kernel_size, stride, (0, 0), dilation, False,
                                                            rotate, out), False


def _weight_times_col(weight, col, folded, out):
    """out = weight_g @ col_g for every group g, written into the images ``out`` (N, G·M, Ho, Wo).

    weight (G, M, K); col in either layout, its G·K rows grouped like the channels.
    """
    n, _, ho, wo = out.shape
    groups = weight.shape[0]
    if folded:
        y = np.matmul(weight, col.reshape(groups, -1, n * ho * wo))  # (G, M, N·Ho·Wo)
        out[...] = y.reshape(-1, n, ho, wo).transpose(1, 0, 2, 3)
    else:  # (N, G, M, Ho·Wo) is NCHW; for a band of rows (see _cols) too, whose rows are whole and adjacent
        np.matmul(weight, col.reshape(n, groups, -1, ho * wo), out=out.reshape(n, groups, -1, ho * wo))


def _products_with_col(images, col, folded, groups):
    """Σ_n images_g[n] @ col_g[n]ᵀ for every group g, shape (G, M, K): a weight gradient's product.

    images (N, G·M, Ho, Wo); col in either layout, with G·K rows.
    """
    n, m, ho, wo = images.shape
    if folded:
        return np.matmul(_rows_by_channel(images).reshape(groups, m // groups, -1),
                         col.reshape(groups, -1, n * ho * wo).transpose(0, 2, 1))
    # Computed transposed, (G, K, M): BLAS runs this orientation faster for these tall col
    # matrices (benchmarks/layers.py, the fwd+bwd rows).
    per_image = np.matmul(col.reshape(n, groups, -1, ho * wo),
                          images.reshape(n, groups, m // groups, ho * wo).transpose(0, 1, 3, 2))
    return per_image.sum(axis=0).transpose(0, 2, 1)


def _sum_of_products(total, images, col, folded, groups):
    """total + ``_products_with_col(images, col, folded, groups)``: the weight-gradient sum, one chunk more.

    ``total`` is None for the first chunk (and then the chunk's products are returned); later chunks are added
    into it in place.
    """
    products = _products_with_col(images, col, folded, groups)
    if total is None:
        return np.ascontiguousarray(products)
    total += products
    return total


def _swap_channel_axes(weight):
    """(G, A, B, kh, kw) -> (G, B, A, kh, kw) as a new contiguous array: ``weight.swapaxes(1, 2)``.

    Each kh×kw kernel stays in one piece, so NumPy moves whole kernels: viewed as one
    opaque item of kh·kw floats, the swap is a transpose of (A, B) items, cheaper than
    moving single floats.
    """
    groups, a, b, kh, kw = weight.shape
    kernel = np.dtype((np.void, kh * kw * weight.itemsize))
    kernels = np.ascontiguousarray(weight).reshape(groups, a, b * kh * kw).view(kernel)  # (G, A, B) kernels
    return np.ascontiguousarray(kernels.transpose(0, 2, 1)).view(weight.dtype).reshape(groups, b, a, kh, kw)


# ---------------------------------------------------------------------------
# The speed-ups of the backward passes
# ---------------------------------------------------------------------------
def _stride_one_applies(stride, padding, dilation, kernel_size):
    """Stride 1 and padding ≤ d·(k-1), so that the rotated convolution's padding d·(k-1) - p is not negative."""
    return tuple(stride) == (1, 1) and all(p <= d * (k - 1) for p, d, k in zip(padding, dilation, kernel_size))


def _stride_one_gradients(grad_y, x, weight, weight_shape, padding, dilation, groups):
    """(conv2d_backward_input_plain(...), conv2d_backward_weight_plain(...)) at stride 1, from one im2col of grad_y.

    x = None skips grad_weight, weight = None skips grad_x. col holds the windows of
    grad_y padded by d·(k-1) - p, each rotated 180°: row (o, i, j), column q is the
    gradient that tap (i, j) of filter o sent back to pixel q of x (why, in
    ``Conv2dFunction``'s docstring). Hence grad_x = W_swapped @ col, a convolution
    with the rotated kernel, and grad_weight = swap(x @ colᵀ).
    """
    o, c_group, kh, kw = weight_shape
    n, _, ho, wo = grad_y.shape
    rotated_padding = tuple(d * (k - 1) - p for d, k, p in zip(dilation, (kh, kw), padding))
    grad_x = products = None
    if weight is not None:
        swapped = _swap_channel_axes(weight.reshape(groups, o // groups, c_group, kh, kw)).reshape(groups, c_group, -1)
        x_hw = conv2d_output_size((ho, wo), (kh, kw), (1, 1), rotated_padding, dilation)
        grad_x = np.empty((n, c_group * groups, *x_hw), grad_y.dtype)
    for images, out_rows, col, folded in _cols(grad_y, (kh, kw), (1, 1), rotated_padding, dilation, rotate=True):
        if weight is not None:
            _weight_times_col(swapped, col, folded, grad_x[images, :, out_rows])
        if x is not None:
            products = _sum_of_products(products, x[images, :, out_rows], col, folded, groups)  # (G, C/G, O/G·kh·kw)
    if x is None:
        return grad_x, None
    return grad_x, _swap_channel_axes(products.reshape(groups, c_group, o // groups, kh, kw)).reshape(weight_shape)


def _conv2d_forward_and_backward_weight(x, weight, grad_y, weight_shape, stride, padding, dilation, groups):
    """(conv2d_forward(x, weight, ...), conv2d_backward_weight(x, grad_y, weight_shape, ...)) from one im2col of x.

    Both products read the same windows of x, so each chunk of col is built once and used twice.
    """
    o = weight_shape[0]
    y = np.empty((x.shape[0], o, *conv2d_output_size(x.shape[2:], weight_shape[2:], stride, padding, dilation)),
                 x.dtype)
    weight_by_group, products = weight.reshape(groups, o // groups, -1), None
    for images, out_rows, col, folded in _cols(x, weight_shape[2:], stride, padding, dilation):
        _weight_times_col(weight_by_group, col, folded, y[images, :, out_rows])
        products = _sum_of_products(products, grad_y[images, :, out_rows], col, folded, groups)
    return y, products.reshape(weight_shape)


# ---------------------------------------------------------------------------
# The array functions, NumPy's fast versions (same names and arguments as conv.py's)
# ---------------------------------------------------------------------------
def conv2d_forward(x, weight, stride, padding, dilation, groups):
    """Equals ``conv2d_forward_plain``: y = W2d @ im2col(x) per group, col in the workspace."""
    o, _, kh, kw = weight.shape
    y = np.empty((x.shape[0], o, *conv2d_output_size(x.shape[2:], (kh, kw), stride, padding, dilation)), x.dtype)
    weight_by_group = weight.reshape(groups, o // groups, -1)
    for images, out_rows, col, folded in _cols(x, (kh, kw), stride, padding, dilation):
        _weight_times_col(weight_by_group, col, folded, y[images, :, out_rows])
    return y


def conv2d_backward_input(grad_y, weight, x_shape, stride, padding, dilation, groups):
    """Equals ``conv2d_backward_input_plain``: col2im(W2dᵀ @ grad_y) per group; at stride 1, no col2im.

    When the windows tile x (kernel = stride: the UNet's transposed convolution) col2im
    is only a reordering (see im2col.col2im).
    """
    n, o, ho, wo = grad_y.shape
    kernel_size = weight.shape[2:]
    if _stride_one_applies(stride, padding, dilation, kernel_size):
        return _stride_one_gradients(grad_y, None, weight, weight.shape, padding, dilation, groups)[0]
    weight_t = weight.reshape(groups, o // groups, -1).transpose(0, 2, 1)  # (G, C/G·kh·kw, O/G)
    rows = weight_t.shape[1]
    folded = _folds_batch((ho, wo))
    if folded:
        grad_col = np.matmul(weight_t, _rows_by_channel(grad_y).reshape(groups, o // groups, -1),
                             out=workspace((groups, rows, n * ho * wo), grad_y.dtype))
    else:
        grad_col = np.matmul(weight_t, grad_y.reshape(n, groups, o // groups, ho * wo),
                             out=workspace((n, groups, rows, ho * wo), grad_y.dtype))
    return col2im(grad_col, x_shape, kernel_size, stride, padding, dilation, fold_batch=folded)


def conv2d_backward_weight(x, grad_y, weight_shape, stride, padding, dilation, groups):
    """Equals ``conv2d_backward_weight_plain``: Σ_n grad_y[n] @ im2col(x)[n]ᵀ per group, col in the workspace."""
    products = None
    for images, out_rows, col, folded in _cols(x, weight_shape[2:], stride, padding, dilation):
        products = _sum_of_products(products, grad_y[images, :, out_rows], col, folded, groups)
    return products.reshape(weight_shape)


def conv2d_backward(grad_y, x, weight, x_shape, weight_shape, stride, padding, dilation, groups):
    """Equals conv.py's ``conv2d_backward``; with stride 1 both gradients come from one im2col of grad_y."""
    if _stride_one_applies(stride, padding, dilation, weight_shape[2:]):
        return _stride_one_gradients(grad_y, x, weight, weight_shape, padding, dilation, groups)
    grad_x = None if weight is None else conv2d_backward_input(grad_y, weight, x_shape, stride, padding, dilation,
                                                                groups)
    grad_weight = None if x is None else conv2d_backward_weight(x, grad_y, weight_shape, stride, padding, dilation,
                                                                 groups)
    return grad_x, grad_weight


def conv_transpose2d_backward(grad_y, x, weight, weight_shape, stride, padding, dilation, groups):
    """Equals conv.py's ``conv_transpose2d_backward``; with both gradients wanted, from one im2col of grad_y."""
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    if weight is None or x is None:
        return (None if weight is None else conv2d_forward(x=grad_y, weight=weight, **geometry),
                None if x is None else conv2d_backward_weight(x=grad_y, grad_y=x, weight_shape=weight_shape,
                                                              **geometry))
    return _conv2d_forward_and_backward_weight(x=grad_y, weight=weight, grad_y=x, weight_shape=weight_shape,
                                               **geometry)
