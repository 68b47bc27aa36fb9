"""Convolution and transposed convolution: ``conv2d`` and ``conv_transpose2d``.

Both are built on three array functions, each one matrix product around im2col or
col2im (im2col.py), computed per group of channels:

* ``conv2d_forward``:         y = W2d @ im2col(x)                  (W2d = W.reshape(O, C·kh·kw))
* ``conv2d_backward_input``:  grad_x = col2im(W2dᵀ @ grad_y)
* ``conv2d_backward_weight``: grad_weight = grad_y @ im2col(x)ᵀ

and two that return both gradients of one Function, each equal to a pair of the three:
``conv2d_backward`` (the convolution's) and ``conv_transpose2d_backward`` (the
transposed convolution's: ``conv2d_forward`` and ``conv2d_backward_weight`` with the
roles swapped, called by keyword). Why these are the gradients is derived once, in
``Conv2dFunction``'s docstring; why the transposed convolution needs nothing else, in
``ConvTranspose2dFunction``'s.

The ``_plain`` versions below are the whole idea in a few lines each. Each array
function chooses, once per call, who computes: float32 CuPy arrays go to the CUDA
kernels of the same name in ``minseg.cuda``; CuPy arrays of other dtypes (float64,
for gradient checks on a GPU) to the plain versions; NumPy arrays to the function of
the same name in conv_numpy.py, which gives the same numbers as the plain versions,
faster (there, one im2col serves both gradients where it can).
(The per-group CUDA calls and the plain CuPy route are checked without a GPU, by a
stand-in for CuPy in tests/test_conv.py; they have not run on a GPU.)
"""
import numpy as np

from .. import cuda
from ..arguments import pair, positive_int
from ..autograd import Function, as_tensor
from ..backend import get_array_module
from . import conv_numpy
from .im2col import col2im, conv2d_output_size, im2col

__all__ = ["conv2d", "conv_transpose2d", "Conv2dFunction", "ConvTranspose2dFunction"]


# ---------------------------------------------------------------------------
# The plain convolution: im2col and one matrix product per group (any array module)
# ---------------------------------------------------------------------------
def conv2d_forward_plain(x, weight, stride, padding, dilation, groups=1):
    """y = W2d @ im2col(x) for each group; x (N, C, H, W), weight (O, C/groups, kh, kw) -> y (N, O, Ho, Wo)."""
    n, o = x.shape[0], weight.shape[0]
    ho, wo = conv2d_output_size(x.shape[2:], weight.shape[2:], stride, padding, dilation)
    col = im2col(x, weight.shape[2:], stride, padding, dilation).reshape(n, groups, -1, ho * wo)
    return (weight.reshape(groups, o // groups, -1) @ col).reshape(n, o, ho, wo)


def conv2d_backward_input_plain(grad_y, weight, x_shape, stride, padding, dilation, groups=1):
    """grad_x = col2im(W2dᵀ @ grad_y) for each group."""
    n, o, ho, wo = grad_y.shape
    weight_t = weight.reshape(groups, o // groups, -1).transpose(0, 2, 1)
    grad_col = weight_t @ grad_y.reshape(n, groups, o // groups, ho * wo)
    return col2im(grad_col.reshape(n, -1, ho * wo), x_shape, weight.shape[2:], stride, padding, dilation)


def conv2d_backward_weight_plain(x, grad_y, weight_shape, stride, padding, dilation, groups=1):
    """grad_weight = Σ_n grad_y[n] @ im2col(x)[n]ᵀ for each group, shaped (O, C/groups, kh, kw)."""
    n, o, ho, wo = grad_y.shape
    col = im2col(x, weight_shape[2:], stride, padding, dilation).reshape(n, groups, -1, ho * wo)
    grad_weight = grad_y.reshape(n, groups, o // groups, ho * wo) @ col.transpose(0, 1, 3, 2)
    return grad_weight.sum(axis=0).reshape(weight_shape)


# ---------------------------------------------------------------------------
# The array functions: the one place that chooses NumPy, CUDA kernels or plain CuPy
# ---------------------------------------------------------------------------
def _by_group(array, axis, groups):
    """``array`` cut into ``groups`` equal parts along ``axis`` (views)."""
    size = array.shape[axis] // groups
    return [array[(slice(None),) * axis + (slice(g * size, (g + 1) * size),)] for g in range(groups)]


def _joined(parts, axis):
    """The per-group results of the CUDA kernels (one call per group) side by side along ``axis``."""
    return parts[0] if len(parts) == 1 else get_array_module(parts[0]).concatenate(parts, axis=axis)


def conv2d_forward(x, weight, stride, padding, dilation, groups=1):
    """y = conv2d(x, weight) without bias: ``conv2d_forward_plain``'s numbers (CUDA: one kernel call per group)."""
    if get_array_module(x) is np:
        return conv_numpy.conv2d_forward(x, weight, stride, padding, dilation, groups)
    if x.dtype != np.float32:
        return conv2d_forward_plain(x, weight, stride, padding, dilation, groups)
    return _joined([cuda.conv2d_forward(x_group, weight_group, stride, padding, dilation) for x_group, weight_group
                    in zip(_by_group(x, 1, groups), _by_group(weight, 0, groups))], axis=1)


def conv2d_backward_input(grad_y, weight, x_shape, stride, padding, dilation, groups=1):
    """grad_x for y = conv2d(x, weight): ``conv2d_backward_input_plain``'s numbers (CUDA: a call per group)."""
    if get_array_module(grad_y) is np:
        return conv_numpy.conv2d_backward_input(grad_y, weight, x_shape, stride, padding, dilation, groups)
    if grad_y.dtype != np.float32:
        return conv2d_backward_input_plain(grad_y, weight, x_shape, stride, padding, dilation, groups)
    group_shape = (x_shape[0], x_shape[1] // groups, *x_shape[2:])
    return _joined([cuda.conv2d_backward_input(grad_y_group, weight_group, group_shape, stride, padding, dilation)
                    for grad_y_group, weight_group in zip(_by_group(grad_y, 1, groups), _by_group(weight, 0, groups))],
                   axis=1)


def conv2d_backward_weight(x, grad_y, weight_shape, stride, padding, dilation, groups=1):
    """grad_weight for y = conv2d(x, weight): ``conv2d_backward_weight_plain``'s numbers (CUDA: a call per group)."""
    if get_array_module(x) is np:
        return conv_numpy.conv2d_backward_weight(x, grad_y, weight_shape, stride, padding, dilation, groups)
    if x.dtype != np.float32:
        return conv2d_backward_weight_plain(x, grad_y, weight_shape, stride, padding, dilation, groups)
    group_shape = (weight_shape[0] // groups, *weight_shape[1:])
    return _joined([cuda.conv2d_backward_weight(x_group, grad_y_group, group_shape, stride, padding, dilation)
                    for x_group, grad_y_group in zip(_by_group(x, 1, groups), _by_group(grad_y, 1, groups))], axis=0)


def conv2d_backward(grad_y, x, weight, x_shape, weight_shape, stride, padding, dilation, groups=1):
    """Both gradients of y = conv2d(x, weight): (grad_x, grad_weight).

    Equals (conv2d_backward_input(grad_y, weight, x_shape, ...), conv2d_backward_weight(x,
    grad_y, weight_shape, ...)); weight = None skips grad_x and x = None skips grad_weight
    (each gradient reads only the other input). One call for both because on NumPy at
    stride 1 both come from one im2col of grad_y (conv_numpy.py).
    """
    if get_array_module(grad_y) is np:
        return conv_numpy.conv2d_backward(grad_y, x, weight, x_shape, weight_shape, stride, padding, dilation, groups)
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return (None if weight is None else conv2d_backward_input(grad_y, weight, x_shape, **geometry),
            None if x is None else conv2d_backward_weight(x, grad_y, weight_shape, **geometry))


def conv_transpose2d_backward(grad_y, x, weight, weight_shape, stride, padding, dilation, groups=1):
    """Both gradients of y = conv_transpose2d(x, weight): (grad_x, grad_weight), the convolution's roles swapped.

    Equals (conv2d_forward(x=grad_y, weight=weight, ...), conv2d_backward_weight(x=grad_y,
    grad_y=x, ...)), as derived in ``ConvTranspose2dFunction``'s docstring; weight = None
    skips grad_x and x = None skips grad_weight. One call for both because on NumPy both
    products read the same im2col of grad_y, built once (conv_numpy.py).
    """
    if get_array_module(grad_y) is np:
        return conv_numpy.conv_transpose2d_backward(grad_y, x, weight, weight_shape, stride, padding, dilation, groups)
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return (None if weight is None else conv2d_forward(x=grad_y, weight=weight, **geometry),
            None if x is None else conv2d_backward_weight(x=grad_y, grad_y=x, weight_shape=weight_shape, **geometry))


def conv_transpose2d_output_size(height_width, kernel_size, stride, padding, output_padding, dilation):
    """(Ho, Wo) of a transposed convolution: (H - 1)·s - 2p + d·(k - 1) + output_padding + 1 per axis."""
    return tuple((size - 1) * s - 2 * p + d * (k - 1) + op + 1 for size, k, s, p, op, d
                 in zip(height_width, kernel_size, stride, padding, output_padding, dilation))


# ---------------------------------------------------------------------------
# The Functions
# ---------------------------------------------------------------------------
class Conv2dFunction(Function):
    """y[n, o, oh, ow] = b[o] + Σ_(c,i,j) W[o, c, i, j] · x_padded[n, g·C/G + c, oh·sh + i·dh, ow·sw + j·dw].

    (o in group g = o // (O/G); c runs over that group's C/G input channels.) Per
    group, y = W2d @ col + b with col = im2col(x), linear in col and in W, so
        grad_col    = W2dᵀ @ grad_y, and grad_x = col2im(grad_col): col copies each
                      pixel into every window holding it, and a copy's gradient is the
                      sum of its copies' gradients    (conv2d_backward_input);
        grad_weight = Σ_n grad_y[n] @ col[n]ᵀ         (conv2d_backward_weight);
        grad_bias   = grad_y summed over n, oh, ow (b is added to every output pixel).
    ``conv2d_backward`` returns the first two from one call. With stride 1 (and padding
    ≤ d·(k-1)) grad_x is itself a convolution: pixel q of x reached y[q + p - (i, j)·d]
    through tap (i, j), so grad_x[q] collects grad_y[q + p - (i, j)·d] · W[:, :, i, j];
    that is a convolution of grad_y padded by d·(k-1) - p with the kernel rotated 180°
    and its two channel axes swapped, and its im2col gives grad_weight too
    (conv_numpy._stride_one_gradients). Only the gradients asked for are computed.
    """

    def __init__(self, stride, padding, dilation, groups):
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups

    def forward(self, x, weight, bias=None):
        # We keep x, not its im2col matrix: col holds kh·kw times the memory of x until
        # backward, and the stride-1 backward reads x, not col(x).
        self.x_shape, self.weight_shape = x.shape, weight.shape
        self.x = x if self.needs_input_grad[1] else None
        self.weight = weight if self.needs_input_grad[0] else None
        y = conv2d_forward(x, weight, self.stride, self.padding, self.dilation, self.groups)
        if bias is not None:
            y += bias.reshape(1, -1, 1, 1)
        return y

    def backward(self, grad_y):
        grad_x, grad_weight = conv2d_backward(grad_y, self.x, self.weight, self.x_shape, self.weight_shape,
                                              self.stride, self.padding, self.dilation, self.groups)
        if len(self.needs_input_grad) == 2:
            return grad_x, grad_weight
        return grad_x, grad_weight, (grad_y.sum(axis=(0, 2, 3)) if self.needs_input_grad[2] else None)


class ConvTranspose2dFunction(Function):
    """y = Aᵀ·x + b: the transposed convolution, weight W of shape (C_in, C_out/groups, kh, kw).

    A convolution with weight W (read as (O, C/G, kh, kw) with O = C_in) maps y-sized
    images to x-sized ones by a (huge, sparse) matrix A; the transposed convolution
    multiplies by Aᵀ. Aᵀ·v is exactly the convolution's input gradient, and Aᵀ's
    transpose is A, so, with the convolution's argument names:

        forward:      y           = conv2d_backward_input(grad_y=x, weight=W, x_shape=y_shape)
        backward:     grad_x      = conv2d_forward(x=grad_y, weight=W)          (multiply by A)
                      grad_weight = conv2d_backward_weight(x=grad_y, grad_y=x)  (the convolution's
                                    weight gradient, its input and output gradient swapped)
                      grad_bias   = grad_y summed over n, h, w.

    ``conv_transpose2d_backward`` returns grad_x and grad_weight from one call. Each
    input pixel "stamps" its weighted kernel onto the output at stride s; where stamps
    overlap they add up.
    """

    def __init__(self, stride, padding, output_padding, dilation, groups):
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.output_padding = output_padding

    def forward(self, x, weight, bias=None):
        n, _, h, w = x.shape
        out_hw = conv_transpose2d_output_size((h, w), weight.shape[2:], self.stride, self.padding,
                                              self.output_padding, self.dilation)
        self.y_shape = (n, weight.shape[1] * self.groups, *out_hw)
        self.x_shape, self.weight_shape = x.shape, weight.shape
        x = self._pad_to_conv_output(x)
        self.x = x if self.needs_input_grad[1] else None
        self.weight = weight if self.needs_input_grad[0] else None
        y = conv2d_backward_input(grad_y=x, weight=weight, x_shape=self.y_shape, stride=self.stride,
                                  padding=self.padding, dilation=self.dilation, groups=self.groups)
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
        conv_hw = conv2d_output_size(self.y_shape[2:], self.weight_shape[2:], self.stride, self.padding,
                                     self.dilation)
        if conv_hw == (h, w):
            return x
        padded = get_array_module(x).zeros((n, c, *conv_hw), dtype=x.dtype)
        padded[:, :, :h, :w] = x
        return padded

    def backward(self, grad_y):
        grad_x, grad_weight = conv_transpose2d_backward(grad_y, self.x, self.weight, self.weight_shape,
                                                        self.stride, self.padding, self.dilation, self.groups)
        if grad_x is not None and grad_x.shape != self.x_shape:  # drop the rows _pad_to_conv_output added
            h, w = self.x_shape[2:]
            grad_x = grad_x[:, :, :h, :w].copy()
        if len(self.needs_input_grad) == 2:
            return grad_x, grad_weight
        return grad_x, grad_weight, (grad_y.sum(axis=(0, 2, 3)) if self.needs_input_grad[2] else None)


# ---------------------------------------------------------------------------
# Public functions: argument checks, then the Function
# ---------------------------------------------------------------------------
def _check_arrays(where, x, weight, bias, groups, in_channel_axis):
    """input (N, C, H, W) floating point; weight 4-D with C input channels (C/groups on axis 1); bias one per output."""
    layout = ("(out_channels, in_channels/groups, kH, kW)" if in_channel_axis == 1
              else "(in_channels, out_channels/groups, kH, kW)")
    if x.ndim != 4:
        raise ValueError(f"{where}: input must be 4-D (N, C, H, W), got shape {x.shape}")
    if weight.ndim != 4:
        raise ValueError(f"{where}: weight must be 4-D {layout}, got shape {weight.shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"{where}: input must be floating point, got dtype {x.dtype}")
    if weight.dtype != x.dtype:
        raise TypeError(f"{where}: weight is {weight.dtype} but input is {x.dtype}; convert one with .astype() first")
    if x.shape[1] % groups:
        raise ValueError(f"{where}: input's {x.shape[1]} channels must be divisible by groups, got groups={groups}")
    per_group = in_channel_axis == 1 and groups > 1
    if weight.shape[in_channel_axis] * (groups if in_channel_axis == 1 else 1) != x.shape[1]:
        raise ValueError(f"{where}: weight has {weight.shape[in_channel_axis]} input channels"
                         f"{f' per group (groups={groups})' if per_group else ''} but input has {x.shape[1]} "
                         f"(weight layout {layout})")
    out_channels = weight.shape[0] if in_channel_axis == 1 else weight.shape[1] * groups
    if bias is not None:
        if bias.shape != (out_channels,):
            raise ValueError(f"{where}: bias must have shape ({out_channels},), one per output channel, "
                             f"got {bias.shape}")
        if bias.dtype != x.dtype:
            raise TypeError(f"{where}: bias is {bias.dtype} but input is {x.dtype}")


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (PyTorch's cross-correlation) of input (N, C, H, W) with weight (O, C/groups, kH, kW).

    Output (N, O, Ho, Wo), Ho = ⌊(H + 2·padding - dilation·(kH-1) - 1) / stride⌋ + 1.
    stride, padding, dilation: an int or an (int, int) pair. dilation > 1 spreads the
    kernel taps apart (DeepLab's atrous convolution). groups splits the channels into
    that many independent convolutions: output channel o reads only the C/groups input
    channels of group o // (O/groups). groups = C is a depthwise convolution.
    """
    x, weight = as_tensor(input), as_tensor(weight)
    bias = None if bias is None else as_tensor(bias)
    groups = positive_int("conv2d", "groups", groups)
    _check_arrays("conv2d", x, weight, bias, groups, in_channel_axis=1)
    if weight.shape[0] % groups:
        raise ValueError(f"conv2d: weight's {weight.shape[0]} output channels must be divisible by groups, "
                         f"got groups={groups}")
    stride, padding, dilation = (pair("conv2d", name, value, minimum) for name, value, minimum in
                                 (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)))
    for axis, name in ((2, "height"), (3, "width")):
        span = dilation[axis - 2] * (weight.shape[axis] - 1) + 1
        padded = x.shape[axis] + 2 * padding[axis - 2]
        if span > padded:
            raise ValueError(f"conv2d: weight's kernel spans {span} pixels in {name} (kernel {weight.shape[axis]}, "
                             f"dilation {dilation[axis - 2]}), more than the padded input's {padded} "
                             f"(input {x.shape[axis]} + 2·padding {padding[axis - 2]})")
    function = Conv2dFunction(stride, padding, dilation, groups)
    return function(x, weight) if bias is None else function(x, weight, bias)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """Transposed convolution of input (N, C_in, H, W) with weight (C_in, C_out/groups, kH, kW).

    Output (N, C_out, Ho, Wo), Ho = (H-1)·stride - 2·padding + dilation·(kH-1) + output_padding + 1.
    output_padding (smaller than stride or dilation) adds rows/columns at the bottom/right,
    picking one of the input sizes that a stride-s convolution maps to the same H.
    groups: as in ``conv2d``, C_in and C_out split into that many independent parts
    (PyTorch's positional order puts groups before dilation: pass both by name).
    """
    x, weight = as_tensor(input), as_tensor(weight)
    bias = None if bias is None else as_tensor(bias)
    groups = positive_int("conv_transpose2d", "groups", groups)
    _check_arrays("conv_transpose2d", x, weight, bias, groups, in_channel_axis=0)
    stride, padding, output_padding, dilation = (
        pair("conv_transpose2d", name, value, minimum) for name, value, minimum in
        (("stride", stride, 1), ("padding", padding, 0), ("output_padding", output_padding, 0),
         ("dilation", dilation, 1)))
    for op, s, d in zip(output_padding, stride, dilation):
        if op >= s and op >= d:
            raise ValueError(f"conv_transpose2d: output_padding must be smaller than either stride or dilation, "
                             f"got output_padding={output_padding}, stride={stride}, dilation={dilation}")
    out_hw = conv_transpose2d_output_size(x.shape[2:], weight.shape[2:], stride, padding, output_padding, dilation)
    for size, name, axis in zip(out_hw, ("height", "width"), (2, 3)):
        if size < 1:
            raise ValueError(f"conv_transpose2d: output {name} would be {size}: padding {padding[axis - 2]} is too "
                             f"large for input's {name} {x.shape[axis]} with kernel {weight.shape[axis]}, stride "
                             f"{stride[axis - 2]}, dilation {dilation[axis - 2]}")
    function = ConvTranspose2dFunction(stride, padding, output_padding, dilation, groups)
    return function(x, weight) if bias is None else function(x, weight, bias)
