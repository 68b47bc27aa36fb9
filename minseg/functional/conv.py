"""Convolution and transposed convolution: ``conv2d`` and ``conv_transpose2d``.

Every computation here is im2col (see im2col.py) followed by one or two matrix
products, or for strided input gradients a matrix product followed by col2im:

* ``conv2d_forward``:         y = W2d @ im2col(x)                  (W2d = W.reshape(O, C·kh·kw))
* ``conv2d_backward_weight``: dL/dW = dL/dy @ im2col(x)ᵀ
* ``conv2d_backward_input``:  dL/dx = col2im(W2dᵀ @ dL/dy)

The transposed convolution needs no new arithmetic: it is *defined* as the map whose
matrix is the transpose of the convolution's, so its forward IS
``conv2d_backward_input``, and its backward is ``conv2d_forward`` and
``conv2d_backward_weight`` with the roles of x and y swapped.

One more fact saves work. With stride 1, the input gradient (a transposed
convolution) is itself an ordinary convolution: of dL/dy, padded by d·(k-1) - p,
with the kernel rotated 180° and its two channel axes swapped. Computing it that
way, the same im2col of dL/dy also gives dL/dW, so a stride-1 backward pass builds
one im2col matrix instead of two and needs no col2im (1.4× faster at 8×32×96×128,
1.2× at 8×128×24×32, the same at 8×512×6×8).

On a GPU (CuPy arrays) the three ``conv2d_*`` functions hand over to the CUDA kernels
of the same names in ``minseg.cuda``.
"""
import numpy as np

from ..autograd import Function, as_tensor
from ..backend import get_array_module
from .im2col import col2im, conv_output_size, im2col, workspace

__all__ = ["conv2d", "conv_transpose2d", "Conv2dFunction", "ConvTranspose2dFunction"]

# Images with fewer output pixels than this are stacked side by side into one matrix
# product (``fold_batch``, see im2col.py). Measured on a 2-core machine: at 6×8 pixels
# the per-image products run 1.5-2.5× slower than one big one; from 24×32 pixels on the
# per-image layout is as fast or faster (forward 12.4 vs 13.8 ms at 8×128×24×32) and
# needs no transposes.
FOLD_BATCH_BELOW = 256


def _output_size(x_shape, kernel_size, stride, padding, dilation):
    return tuple(conv_output_size(*args) for args in zip(x_shape[2:], kernel_size, stride, padding, dilation))


def _rows_by_channel(array):
    """(N, C, H, W) -> (C, N·H·W): every channel's values of the whole batch on one row."""
    n, c, h, w = array.shape
    return array.transpose(1, 0, 2, 3).reshape(c, n * h * w)


def _im2col_matmul(source, kernel_size, stride, padding, dilation, weight2d=None, partner=None, rotate=False):
    """col = im2col(source), then the products with col that were asked for (NumPy only).

    weight2d (M, C·kh·kw):  returns ``weight2d @ col`` as images (N, M, Ho, Wo);
    partner (N, P, Ho, Wo): returns ``Σ_n partner[n] @ col[n]ᵀ``, shape (P, C·kh·kw):
                            a weight gradient.
    Returns (images or None, products or None). col lives in the scratch workspace.
    """
    n, c = source.shape[:2]
    rows = c * kernel_size[0] * kernel_size[1]
    ho, wo = _output_size(source.shape, kernel_size, stride, padding, dilation)
    images = products = None
    if ho * wo < FOLD_BATCH_BELOW:
        col = im2col(source, kernel_size, stride, padding, dilation, fold_batch=True, rotate=rotate,
                     out=workspace((rows, n * ho * wo), source.dtype))
        if weight2d is not None:
            images = np.ascontiguousarray((weight2d @ col).reshape(-1, n, ho, wo).transpose(1, 0, 2, 3))
        if partner is not None:
            products = _rows_by_channel(partner) @ col.T
    else:
        col = im2col(source, kernel_size, stride, padding, dilation, rotate=rotate,
                     out=workspace((n, rows, ho * wo), source.dtype))
        if weight2d is not None:
            images = np.matmul(weight2d, col).reshape(n, -1, ho, wo)  # (N, M, Ho·Wo) is already NCHW
        if partner is not None:
            # Computed transposed, (C·kh·kw, P): BLAS runs this orientation faster for
            # these tall col matrices (14 vs 19 ms at 32 channels and 96×128 pixels).
            products = np.matmul(col, partner.reshape(n, -1, ho * wo).transpose(0, 2, 1)).sum(axis=0).T
    return images, products


def _stride_one_backward_is_a_convolution(stride, padding, dilation, kernel_size):
    # Padding d·(k-1) - p must not be negative.
    return stride == (1, 1) and all(p <= d * (k - 1) for p, d, k in zip(padding, dilation, kernel_size))


def _swap_channel_axes(weight):
    """(A, B, kh, kw) -> (B, A, kh, kw) as a new contiguous array.

    Each kh×kw kernel stays in one piece, so we let NumPy move whole kernels: viewed
    as one opaque item of kh·kw floats, the swap is a plain 2-D transpose (2× faster
    than moving single floats for 512×512 3×3 weights).
    """
    a, b, kh, kw = weight.shape
    kernel = np.dtype((np.void, kh * kw * weight.itemsize))
    kernels = np.ascontiguousarray(weight).reshape(a, b * kh * kw).view(kernel)  # (A, B) kernels
    return np.ascontiguousarray(kernels.T).view(weight.dtype).reshape(b, a, kh, kw)


def _conv2d_backward_stride_one(grad_y, weight_shape, weight, x, padding, dilation):
    """Both gradients of a stride-1 convolution from one im2col of grad_y (NumPy only).

    Pass weight = None or x = None when dL/dx or dL/dW is not wanted.

    Pixel x[q] reached y[q + p - (i, j)·d] through tap (i, j). Pad grad_y by
    d·(k-1) - p and take its windows over x's grid, each rotated 180°: row (o, i, j)
    of that col holds, for every x pixel, the gradient that tap (i, j) of filter o
    sent back to it. Hence
        dL/dx = W_swapped2d @ col   (W with its channel axes swapped: a convolution
                                     of grad_y with the rotated kernel)
        dL/dW = x @ colᵀ            (each weight meets x[q] and that gradient)
    """
    o, c, kh, kw = weight_shape
    rotated_padding = tuple(d * (k - 1) - p for d, k, p in zip(dilation, (kh, kw), padding))
    grad_x, products = _im2col_matmul(grad_y, (kh, kw), (1, 1), rotated_padding, dilation, rotate=True,
                                      weight2d=None if weight is None else _swap_channel_axes(weight).reshape(c, -1),
                                      partner=x)
    grad_weight = None if x is None else _swap_channel_axes(products.reshape(c, o, kh, kw))
    return grad_x, grad_weight


# ---------------------------------------------------------------------------
# The three array functions (NumPy here; CUDA kernels for CuPy arrays)
# ---------------------------------------------------------------------------
def conv2d_forward(x, weight, stride, padding, dilation):
    """y[n, o] = Σ_c Σ_(i,j) W[o, c, i, j] · x_padded[n, c, oh·s + i·d, ow·s + j·d]  (no bias).

    x (N, C, H, W), weight (O, C, kh, kw) -> y (N, O, Ho, Wo). As a matrix product:
    y = W.reshape(O, C·kh·kw) @ im2col(x).
    """
    if get_array_module(x) is not np:
        from .. import cuda
        return cuda.conv2d_forward(x, weight, stride, padding, dilation)
    o = weight.shape[0]
    return _im2col_matmul(x, weight.shape[2:], stride, padding, dilation, weight2d=weight.reshape(o, -1))[0]


def conv2d_backward_input(grad_y, weight, x_shape, stride, padding, dilation):
    """dL/dx = col2im(W.reshape(O, C·kh·kw)ᵀ @ dL/dy).

    y = W2d @ col is linear in col, so dL/dcol = W2dᵀ @ dL/dy; col is x copied into
    every window, so each pixel's gradient is the sum over the windows holding it:
    col2im. This is also the transposed convolution of grad_y with W. (With stride 1
    it is computed as a convolution with the rotated kernel instead: see the top.)
    """
    if get_array_module(grad_y) is not np:
        from .. import cuda
        return cuda.conv2d_backward_input(grad_y, weight, x_shape, stride, padding, dilation)
    n, o, ho, wo = grad_y.shape
    _, c, kh, kw = weight.shape
    if _stride_one_backward_is_a_convolution(stride, padding, dilation, (kh, kw)):
        return _conv2d_backward_stride_one(grad_y, weight.shape, weight, None, padding, dilation)[0]
    rows = c * kh * kw
    weight2d_t = weight.reshape(o, rows).T
    fold = ho * wo < FOLD_BATCH_BELOW
    if fold:
        grad_col = np.matmul(weight2d_t, _rows_by_channel(grad_y), out=workspace((rows, n * ho * wo), grad_y.dtype))
    else:
        grad_col = np.matmul(weight2d_t, grad_y.reshape(n, o, ho * wo), out=workspace((n, rows, ho * wo), grad_y.dtype))
    return col2im(grad_col, x_shape, (kh, kw), stride, padding, dilation, fold_batch=fold)


def conv2d_backward_weight(x, grad_y, weight_shape, stride, padding, dilation):
    """dL/dW = Σ_n dL/dy[n] @ im2col(x)[n]ᵀ, reshaped to (O, C, kh, kw).

    Each weight multiplies one row of col in every image and every output pixel, so
    its gradient sums dL/dy · col over all of them: one more matrix product.
    """
    if get_array_module(x) is not np:
        from .. import cuda
        return cuda.conv2d_backward_weight(x, grad_y, weight_shape, stride, padding, dilation)
    _, products = _im2col_matmul(x, weight_shape[2:], stride, padding, dilation, partner=grad_y)
    return np.ascontiguousarray(products).reshape(weight_shape)


# ---------------------------------------------------------------------------
# The Functions
# ---------------------------------------------------------------------------
class Conv2dFunction(Function):
    """y[n, o, oh, ow] = b[o] + Σ_(c,i,j) W[o, c, i, j] · x_padded[n, c, oh·sh + i·dh, ow·sw + j·dw].

    Computed as y = W.reshape(O, C·kh·kw) @ im2col(x) + b: one matrix product.
    Backward, from the same product: dL/dx = col2im(W2dᵀ @ dL/dy) (a copy's gradient is
    a sum), dL/dW = dL/dy @ im2col(x)ᵀ, and dL/db = dL/dy summed over n, oh, ow (b is
    added to every output pixel). With stride 1 both dL/dx and dL/dW come from one
    im2col of dL/dy instead (see the module docstring). Only the gradients asked for
    are computed.
    """

    def __init__(self, stride, padding, dilation):
        self.stride, self.padding, self.dilation = stride, padding, dilation

    def forward(self, x, weight, bias=None):
        # We keep x, not its im2col matrix: col holds kh·kw = 9 times the memory of x
        # until backward (measured: +0.88 GB for the 18 3×3 convolutions of a UNet at
        # batch 8 and 96×128 pixels), and the stride-1 backward reads x, not col(x).
        # Only a strided convolution's backward rebuilds col (one more im2col).
        self.x_shape, self.weight_shape = x.shape, weight.shape
        self.x = x if self.needs_input_grad[1] else None
        self.weight = weight if self.needs_input_grad[0] else None
        y = conv2d_forward(x, weight, self.stride, self.padding, self.dilation)
        if bias is not None:
            y += bias.reshape(1, -1, 1, 1)
        return y

    def backward(self, grad_y):
        args = self.stride, self.padding, self.dilation
        wants = self.needs_input_grad
        if get_array_module(grad_y) is np and _stride_one_backward_is_a_convolution(*args, self.weight_shape[2:]):
            grad_x, grad_weight = _conv2d_backward_stride_one(grad_y, self.weight_shape, self.weight, self.x,
                                                              self.padding, self.dilation)
        else:
            grad_x = conv2d_backward_input(grad_y, self.weight, self.x_shape, *args) if wants[0] else None
            grad_weight = conv2d_backward_weight(self.x, grad_y, self.weight_shape, *args) if wants[1] else None
        if len(wants) == 2:
            return grad_x, grad_weight
        return grad_x, grad_weight, (grad_y.sum(axis=(0, 2, 3)) if wants[2] else None)


class ConvTranspose2dFunction(Function):
    """The transposed convolution: y = convᵀ(x, W) + b, weight W of shape (C_in, C_out, kh, kw).

    A convolution maps y-sized images to x-sized ones by a (huge, sparse) matrix A;
    the transposed convolution multiplies by Aᵀ instead. Aᵀ·v is exactly what the
    convolution's backward computes for its input gradient, so

        forward:   y = conv2d_backward_input(x, W)      (W2dᵀ @ x, then col2im)
        backward:  dL/dx = conv2d_forward(dL/dy, W)      (the transpose of Aᵀ is A)
                   dL/dW = conv2d_backward_weight(dL/dy, x)   (x and y swap roles)
                   dL/db = dL/dy summed over n, h, w.

    On the CPU both backward products share one im2col of dL/dy.
    Each input pixel "stamps" its weighted kernel onto the output at stride s; where
    stamps overlap they add up. Output size: (H-1)·s - 2p + d·(k-1) + output_padding + 1.
    """

    def __init__(self, stride, padding, output_padding, dilation):
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.output_padding = output_padding

    def forward(self, x, weight, bias=None):
        n, _, h, w = x.shape
        _, c_out, kh, kw = weight.shape
        out_hw = [(size - 1) * s - 2 * p + d * (k - 1) + op + 1 for size, k, s, p, d, op
                  in zip((h, w), (kh, kw), self.stride, self.padding, self.dilation, self.output_padding)]
        self.y_shape = (n, c_out, *out_hw)
        self.x_shape, self.weight_shape = x.shape, weight.shape
        x = self._pad_to_conv_output(x)
        self.x = x if self.needs_input_grad[1] else None
        self.weight = weight if self.needs_input_grad[0] else None
        y = conv2d_backward_input(x, weight, self.y_shape, self.stride, self.padding, self.dilation)
        if bias is not None:
            y += bias.reshape(1, -1, 1, 1)
        return y

    def _pad_to_conv_output(self, x):
        """x with zero rows/columns appended so that conv(y) has exactly x's shape.

        Only when output_padding >= stride (allowed if it is < dilation): then the
        convolution of a y-sized image has more output pixels than x; the extra y
        rows receive only the bias, which zeros in x express exactly.
        """
        n, c, h, w = x.shape
        conv_hw = _output_size(self.y_shape, self.weight_shape[2:], self.stride, self.padding, self.dilation)
        if conv_hw == (h, w):
            return x
        padded = get_array_module(x).zeros((n, c, *conv_hw), dtype=x.dtype)
        padded[:, :, :h, :w] = x
        return padded

    def backward(self, grad_y):
        args = self.stride, self.padding, self.dilation
        wants = self.needs_input_grad
        if get_array_module(grad_y) is np:
            c_in = self.weight_shape[0]
            grad_x, products = _im2col_matmul(grad_y, self.weight_shape[2:], *args,
                                              weight2d=self.weight.reshape(c_in, -1) if wants[0] else None,
                                              partner=self.x if wants[1] else None)
            grad_weight = np.ascontiguousarray(products).reshape(self.weight_shape) if wants[1] else None
        else:
            grad_x = conv2d_forward(grad_y, self.weight, *args) if wants[0] else None
            grad_weight = conv2d_backward_weight(grad_y, self.x, self.weight_shape, *args) if wants[1] else None
        if wants[0] and grad_x.shape != self.x_shape:  # drop the rows _pad_to_conv_output added
            h, w = self.x_shape[2:]
            grad_x = get_array_module(grad_x).ascontiguousarray(grad_x[:, :, :h, :w])
        if len(wants) == 2:
            return grad_x, grad_weight
        return grad_x, grad_weight, (grad_y.sum(axis=(0, 2, 3)) if wants[2] else None)


# ---------------------------------------------------------------------------
# Public functions: argument checks, then the Function
# ---------------------------------------------------------------------------
def _pair(value, name, fn_name):
    """An int or a pair of ints as an (int, int) tuple."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else value
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair)):
        raise TypeError(f"{fn_name}: {name} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_tensors(fn_name, x, weight, bias, in_channel_axis):
    if x.ndim != 4:
        raise ValueError(f"{fn_name}: x must be 4-D (N, C, H, W), got shape {x.shape}")
    layout = "(out_channels, in_channels, kH, kW)" if in_channel_axis == 1 else "(in_channels, out_channels, kH, kW)"
    if weight.ndim != 4:
        raise ValueError(f"{fn_name}: weight must be 4-D {layout}, got shape {weight.shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"{fn_name}: x must be floating point, got dtype {x.dtype}")
    if weight.dtype != x.dtype:
        raise TypeError(f"{fn_name}: weight is {weight.dtype} but x is {x.dtype}; convert one with .astype() first")
    if weight.shape[in_channel_axis] != x.shape[1]:
        raise ValueError(f"{fn_name}: weight has {weight.shape[in_channel_axis]} input channels "
                         f"but x has {x.shape[1]} (weight layout {layout})")
    if bias is not None:
        out_channels = weight.shape[1 - in_channel_axis]
        if bias.shape != (out_channels,):
            raise ValueError(f"{fn_name}: bias must have shape ({out_channels},), one per output channel, "
                             f"got {bias.shape}")
        if bias.dtype != x.dtype:
            raise TypeError(f"{fn_name}: bias is {bias.dtype} but x is {x.dtype}")


def _check_geometry(fn_name, stride, padding, dilation):
    if min(stride) < 1:
        raise ValueError(f"{fn_name}: stride must be positive, got {stride}")
    if min(dilation) < 1:
        raise ValueError(f"{fn_name}: dilation must be positive, got {dilation}")
    if min(padding) < 0:
        raise ValueError(f"{fn_name}: padding must be non-negative, got {padding}")


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """2-D convolution (PyTorch's cross-correlation) of x (N, C, H, W) with weight (O, C, kH, kW).

    Output (N, O, Ho, Wo), Ho = ⌊(H + 2·padding - dilation·(kH-1) - 1) / stride⌋ + 1.
    stride, padding, dilation: an int or an (int, int) pair. dilation > 1 spreads the
    kernel taps apart (DeepLab's atrous convolution).
    """
    x, weight = as_tensor(x), as_tensor(weight)
    bias = None if bias is None else as_tensor(bias)
    _check_tensors("conv2d", x, weight, bias, in_channel_axis=1)
    stride, padding, dilation = (_pair(v, name, "conv2d") for v, name in
                                 ((stride, "stride"), (padding, "padding"), (dilation, "dilation")))
    _check_geometry("conv2d", stride, padding, dilation)
    for axis, name in ((2, "height"), (3, "width")):
        span = dilation[axis - 2] * (weight.shape[axis] - 1) + 1
        padded = x.shape[axis] + 2 * padding[axis - 2]
        if span > padded:
            raise ValueError(f"conv2d: weight's kernel spans {span} pixels in {name} (kernel {weight.shape[axis]}, "
                             f"dilation {dilation[axis - 2]}), more than the padded input's {padded} "
                             f"(x {x.shape[axis]} + 2·padding {padding[axis - 2]})")
    function = Conv2dFunction(stride, padding, dilation)
    return function(x, weight) if bias is None else function(x, weight, bias)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, dilation=1):
    """Transposed convolution of x (N, C_in, H, W) with weight (C_in, C_out, kH, kW).

    Output (N, C_out, Ho, Wo), Ho = (H-1)·stride - 2·padding + dilation·(kH-1) + output_padding + 1.
    output_padding (smaller than stride or dilation) adds rows/columns at the bottom/right,
    picking one of the input sizes that a stride-s convolution maps to the same H.
    """
    x, weight = as_tensor(x), as_tensor(weight)
    bias = None if bias is None else as_tensor(bias)
    _check_tensors("conv_transpose2d", x, weight, bias, in_channel_axis=0)
    stride, padding, output_padding, dilation = (
        _pair(v, name, "conv_transpose2d") for v, name in
        ((stride, "stride"), (padding, "padding"), (output_padding, "output_padding"), (dilation, "dilation")))
    _check_geometry("conv_transpose2d", stride, padding, dilation)
    for op, s, d in zip(output_padding, stride, dilation):
        if op < 0 or (op >= s and op >= d):
            raise ValueError(f"conv_transpose2d: output_padding must be non-negative and smaller than either "
                             f"stride or dilation, got output_padding={output_padding}, stride={stride}, "
                             f"dilation={dilation}")
    for axis, name in ((2, "height"), (3, "width")):
        k = weight.shape[axis]
        s, p, d, op = stride[axis - 2], padding[axis - 2], dilation[axis - 2], output_padding[axis - 2]
        size = (x.shape[axis] - 1) * s - 2 * p + d * (k - 1) + op + 1
        if size < 1:
            raise ValueError(f"conv_transpose2d: output {name} would be {size}: padding {p} is too large "
                             f"for x's {name} {x.shape[axis]} with kernel {k}, stride {s}, dilation {d}")
    function = ConvTranspose2dFunction(stride, padding, output_padding, dilation)
    return function(x, weight) if bias is None else function(x, weight, bias)
