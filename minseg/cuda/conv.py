"""Convolution on the GPU: ``kernels/conv2d.cu``'s three GEMMs behind the three functions of
``functional/conv.py`` of the same names and arguments (its NumPy twin: read the two side by side).

Each function checks its arrays, allocates the output (or writes into ``out=``), plans the launch
(``plan.py``) and launches. All arrays are float32 CuPy arrays; inputs that are not C-contiguous are
copied to be. stride, padding and dilation are ``(int, int)`` pairs (an int means both). No bias: the
callers add it.
"""
import math

import numpy as np

from ..arguments import pair
from .launch import _MAX_ELEMENTS, _check_array, _cupy, _launch, _multiprocessor_count, _output
from .plan import plan_conv_gemm, plan_stride_phases


# --- argument checks ---------------------------------------------------------------------------
def _conv_geometry(where, x_shape, weight_shape, stride, padding, dilation):
    """The 15 ints every conv2d kernel takes, after checking that they describe a convolution."""
    N, C, H, W = (int(v) for v in x_shape)
    O, weight_channels, KH, KW = (int(v) for v in weight_shape)
    if weight_channels != C:
        raise ValueError(f"{where}: weight has {weight_channels} input channels but x has {C}")
    (sh, sw), (ph, pw), (dh, dw) = (pair(where, "stride", stride, 1), pair(where, "padding", padding, 0),
                                    pair(where, "dilation", dilation, 1))
    OH = (H + 2 * ph - dh * (KH - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (KW - 1) - 1) // sw + 1
    if OH <= 0 or OW <= 0:
        raise ValueError(f"{where}: the {KH}x{KW} kernel (dilation {(dh, dw)}) does not fit the "
                         f"{H}x{W} input with padding {(ph, pw)}: output would be {OH}x{OW}")
    return (N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw)


# --- convolution: three GEMMs, one plan ---------------------------------------------------------
def _conv_gemm(gemm, a, b, out, geometry, rows, cols, depth, tile, split_k):
    """Launch conv2d_<gemm>_<tile> writing ``out``; with K split, through a workspace and split_k_sum."""
    cupy = _cupy()
    if out.data.ptr % 16:  # the kernels store four floats at a time
        raise ValueError(f"conv2d_{gemm}: out must start on a 16-byte boundary (fresh CuPy arrays do); "
                         "got a view into the middle of another array")
    tile, (tiles, splits), threads, k_per_split = plan_conv_gemm(
        gemm, rows, cols, depth, _multiprocessor_count(a.device.id), tile, split_k)
    if splits > 1 and splits * out.size > _MAX_ELEMENTS:
        raise ValueError(f"conv2d_{gemm}: the split-K workspace would have {splits * out.size} elements, more "
                         f"than {_MAX_ELEMENTS}; pass a smaller split_k")
    with a.device:
        target = out if splits == 1 else cupy.empty((splits,) + tuple(out.shape), dtype=np.float32)
    args = (a, b, target) + tuple(np.int32(v) for v in geometry) + (np.int32(k_per_split),)
    _launch("conv2d", f"conv2d_{gemm}_{tile}", (tiles, splits, 1), (threads, 1, 1), args)
    if splits > 1:
        blocks = min(math.ceil(out.size / 256), 65535)
        _launch("conv2d", "split_k_sum", (blocks, 1, 1), (256, 1, 1),
                (target, out, np.int32(out.size), np.int32(splits)))
    return out


def _stride_covers_kernel_exactly(geometry):
    """True when stride == kernel size and dilation 1: every output pixel gets at most one tap."""
    KH, KW, sh, sw, dh, dw = geometry[5], geometry[6], geometry[9], geometry[10], geometry[13], geometry[14]
    return (sh, sw) == (KH, KW) and (dh, dw) == (1, 1)


def _backward_input_as_gemm(grad_y, weight, out, geometry, tile, split_k):
    """conv2d_backward_input when stride == kernel (UNet's 2x2 up-sampling): one plain GEMM and a scatter.

    Input pixel (h, w) = (oh*sh - ph + r, ow*sw - pw + s) gets exactly one tap, so
        cols[n, (c, r, s), oh, ow] = sum_o weight[o, c, r, s] * grad_y[n, o, oh, ow]
    is a 1x1 convolution of grad_y with weight viewed as (C*KH*KW, O), and grad_x is cols with (r, s)
    interleaved into (oh, ow), cropped by the padding (zero where no tap lands). The implicit GEMM would
    instead visit KH*KW taps per pixel of which one hits.
    """
    cupy = _cupy()
    N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw = geometry[:13]
    with grad_y.device:
        weight_1x1 = cupy.ascontiguousarray(weight.reshape(O, C * KH * KW).T).reshape(C * KH * KW, O, 1, 1)
        cols = conv2d_forward(grad_y, weight_1x1, 1, 0, 1, tile=tile, split_k=split_k)
        full = cols.reshape(N, C, KH, KW, OH, OW).transpose(0, 1, 4, 2, 5, 3).reshape(N, C, OH * KH, OW * KW)
        rows, columns = max(0, min(H, OH * KH - ph)), max(0, min(W, OW * KW - pw))  # where some tap lands
        if rows < H or columns < W:
            out.fill(0)
        out[:, :, :rows, :columns] = full[:, :, ph:ph + rows, pw:pw + columns]
    return out


def _backward_input_by_phases(grad_y, weight, out, geometry, tile, split_k):
    """conv2d_backward_input for a stride other than the kernel: one stride-1 transposed convolution per
    stride phase, each doing only the taps that land.

    The input rows h with the same (h + ph) mod sh are reached by the same taps r, those with the same
    (r*dh) mod sh (``plan.plan_stride_phases`` derives it), and likewise along w. So for each pair of
    phases, grad_x[:, :, h0::sh, w0::sw] is conv2d_backward_input at stride 1 of grad_y with the
    sub-kernel weight[:, :, taps_h, taps_w] (its own dilation and offset), and zero where no tap lands.
    The implicit GEMM would instead walk all KH*KW taps for every pixel, of which about one in sh*sw hits.
    The offset can be negative: the kernel then simply finds no output row above the image.
    """
    cupy = _cupy()
    N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw = geometry
    with grad_y.device:
        for row in plan_stride_phases(H, KH, sh, ph, dh):
            for col in plan_stride_phases(W, KW, sw, pw, dw):
                target = out[:, :, row.start::sh, col.start::sw]
                if not row.taps or not col.taps:
                    target.fill(0)
                    continue
                sub_weight = cupy.ascontiguousarray(weight[:, :, row.taps.start::row.taps.step,
                                                           col.taps.start::col.taps.step])
                phase = cupy.empty((N, C, row.count, col.count), dtype=np.float32)
                phase_geometry = (N, C, row.count, col.count, O, len(row.taps), len(col.taps), OH, OW, 1, 1,
                                  row.offset, col.offset, row.dilation, col.dilation)
                _conv_gemm("backward_input", grad_y, sub_weight, phase, phase_geometry, N * row.count * col.count,
                           C, O * len(row.taps) * len(col.taps), tile, split_k)
                target[...] = phase
    return out


def conv2d_forward(x, weight, stride, padding, dilation, *, out=None, tile=None, split_k=None):
    """y (N, O, OH, OW) = the convolution of x (N, C, H, W) with weight (O, C, KH, KW), no bias.

    ``out``: write into this float32 array instead of a new one. ``tile`` (a CONV_TILES name)
    and ``split_k`` override the automatic choice (for tests and tuning).
    """
    where = "conv2d_forward"
    x = _check_array(where, "x", x, np.float32, ndim=4)
    weight = _check_array(where, "weight", weight, np.float32, ndim=4)
    geometry = _conv_geometry(where, x.shape, weight.shape, stride, padding, dilation)
    N, C, H, W, O, KH, KW, OH, OW = geometry[:9]
    out = _output(where, out, (N, O, OH, OW), x)
    if out.size == 0:
        return out
    return _conv_gemm("forward", x, weight, out, geometry, N * OH * OW, O, C * KH * KW, tile, split_k)


def conv2d_backward_input(grad_y, weight, x_shape, stride, padding, dilation, *, out=None, tile=None,
                          split_k=None):
    """grad_x (x_shape) = d(sum(grad_y * conv2d(x, weight)))/dx: the transposed convolution of grad_y.

    Also the forward of ``conv_transpose2d`` (with x_shape its output shape).
    """
    where = "conv2d_backward_input"
    grad_y = _check_array(where, "grad_y", grad_y, np.float32, ndim=4)
    weight = _check_array(where, "weight", weight, np.float32, ndim=4)
    if len(x_shape) != 4:
        raise ValueError(f"{where}: x_shape must be (N, C, H, W), got {tuple(x_shape)}")
    geometry = _conv_geometry(where, x_shape, weight.shape, stride, padding, dilation)
    N, C, H, W, O, KH, KW, OH, OW = geometry[:9]
    if tuple(grad_y.shape) != (N, O, OH, OW):
        raise ValueError(f"{where}: grad_y has shape {tuple(grad_y.shape)} but a convolution of {tuple(x_shape)} "
                         f"with weight {tuple(weight.shape)} gives {(N, O, OH, OW)}")
    out = _output(where, out, (N, C, H, W), grad_y)
    if out.size == 0:
        return out
    if _stride_covers_kernel_exactly(geometry):
        return _backward_input_as_gemm(grad_y, weight, out, geometry, tile, split_k)
    if geometry[9] > 1 or geometry[10] > 1:  # (sh, sw)
        return _backward_input_by_phases(grad_y, weight, out, geometry, tile, split_k)
    return _conv_gemm("backward_input", grad_y, weight, out, geometry, N * H * W, C, O * KH * KW, tile, split_k)


def conv2d_backward_weight(x, grad_y, weight_shape, stride, padding, dilation, *, out=None, tile=None,
                           split_k=None):
    """grad_weight (weight_shape) = d(sum(grad_y * conv2d(x, weight)))/dweight.

    Also the weight gradient of ``conv_transpose2d``, called with x and y swapped.
    """
    where = "conv2d_backward_weight"
    x = _check_array(where, "x", x, np.float32, ndim=4)
    grad_y = _check_array(where, "grad_y", grad_y, np.float32, ndim=4)
    if len(weight_shape) != 4:
        raise ValueError(f"{where}: weight_shape must be (O, C, KH, KW), got {tuple(weight_shape)}")
    geometry = _conv_geometry(where, x.shape, weight_shape, stride, padding, dilation)
    N, C, H, W, O, KH, KW, OH, OW = geometry[:9]
    if tuple(grad_y.shape) != (N, O, OH, OW):
        raise ValueError(f"{where}: grad_y has shape {tuple(grad_y.shape)} but a convolution of {tuple(x.shape)} "
                         f"with a {tuple(weight_shape)} weight gives {(N, O, OH, OW)}")
    out = _output(where, out, (O, C, KH, KW), x)
    if out.size == 0:
        return out
    return _conv_gemm("backward_weight", x, grad_y, out, geometry, O, C * KH * KW, N * OH * OW, tile, split_k)
