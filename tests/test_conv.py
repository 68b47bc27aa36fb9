"""Tests for minseg/functional/conv.py: conv2d and conv_transpose2d, forward and backward.

Forward values are compared with direct loop implementations written here from the
definitions (no im2col); gradients with central differences in float64. Every test
that computes runs under both im2col layouts (per image, and batch folded into one
matrix), which the code picks by image size.
"""
import itertools

import numpy as np
import pytest

import minseg
import minseg.functional as F
from minseg import Tensor, gradcheck
from minseg.functional import conv as conv_module
from minseg.functional import conv_numpy


@pytest.fixture(params=["per_image", "fold_batch"])
def layout(request, monkeypatch):
    """Run the test once with each col layout, whatever the image size."""
    monkeypatch.setattr(conv_numpy, "FOLD_BATCH_BELOW", 0 if request.param == "per_image" else 10 ** 9)
    return request.param


def rand(rng, *shape):
    return rng.standard_normal(shape)


# ---------------------------------------------------------------------------
# Reference implementations straight from the definitions
# ---------------------------------------------------------------------------
def naive_conv2d(x, weight, bias, stride, padding, dilation, groups=1):
    """y[n, o, oh, ow] = b[o] + Σ_c,i,j W[o, c, i, j] · x_padded[n, g·C/G + c, oh·sh + i·dh, ow·sw + j·dw].

    g = o // (O/G) is output channel o's group; c runs over its C/G input channels.
    """
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    n, _, h, w = x.shape
    o, c_group, kh, kw = weight.shape
    x_padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    # Count the window positions that fit, rather than trusting a formula.
    ho = sum(1 for top in range(0, x_padded.shape[2], sh) if top + dh * (kh - 1) < x_padded.shape[2])
    wo = sum(1 for left in range(0, x_padded.shape[3], sw) if left + dw * (kw - 1) < x_padded.shape[3])
    y = np.zeros((n, o, ho, wo))
    for b, out_c, oh, ow in itertools.product(range(n), range(o), range(ho), range(wo)):
        first = out_c // (o // groups) * c_group
        window = x_padded[b, first:first + c_group, oh * sh:oh * sh + dh * (kh - 1) + 1:dh,
                          ow * sw:ow * sw + dw * (kw - 1) + 1:dw]
        y[b, out_c, oh, ow] = np.sum(window * weight[out_c]) + (0 if bias is None else bias[out_c])
    return y


def naive_conv_transpose2d(x, weight, bias, stride, padding, output_padding, dilation, groups=1):
    """Every input pixel stamps its value times the kernel onto the output, s pixels apart; overlaps add.

    With groups, input channel c stamps only onto the C_out/G output channels of its group c // (C_in/G).
    """
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    n, c_in, h, w = x.shape
    _, c_group, kh, kw = weight.shape
    canvas = np.zeros((n, c_group * groups, (h - 1) * sh + dh * (kh - 1) + 1 + oph,
                       (w - 1) * sw + dw * (kw - 1) + 1 + opw))
    for b, c, r, col, i, j in itertools.product(range(n), range(c_in), range(h), range(w), range(kh), range(kw)):
        first = c // (c_in // groups) * c_group
        canvas[b, first:first + c_group, r * sh + i * dh, col * sw + j * dw] += x[b, c, r, col] * weight[c, :, i, j]
    y = canvas[:, :, ph:canvas.shape[2] - ph, pw:canvas.shape[3] - pw]  # padding removes a border
    return y + (0 if bias is None else bias.reshape(1, -1, 1, 1))


# (kernel, stride, padding, dilation): square and non-square, 1×1, overlapping and tiling windows
FORWARD_CASES = [((3, 3), (1, 1), (1, 1), (1, 1)), ((1, 1), (1, 1), (0, 0), (1, 1)), ((2, 3), (2, 1), (1, 0), (1, 2)),
                 ((3, 2), (3, 2), (2, 1), (2, 1)), ((2, 2), (2, 2), (0, 0), (1, 1)), ((3, 3), (2, 2), (0, 1), (1, 1))]


@pytest.mark.parametrize("kernel, stride, padding, dilation", FORWARD_CASES)
def test_conv2d_forward_matches_direct_loops(layout, kernel, stride, padding, dilation):
    rng = np.random.default_rng(1)
    x, weight, bias = rand(rng, 2, 3, 7, 9), rand(rng, 4, 3, *kernel), rand(rng, 4)
    expected = naive_conv2d(x, weight, bias, stride, padding, dilation)
    y = F.conv2d(Tensor(x), Tensor(weight), Tensor(bias), stride, padding, dilation)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-12)
    # Strided views (a transposed image, a sliced weight) give the same result.
    x_view = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    weight_view = np.repeat(weight, 2, axis=1)[:, ::2]
    y = F.conv2d(Tensor(x_view), Tensor(weight_view), Tensor(bias), stride, padding, dilation)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kernel, stride, padding, dilation", FORWARD_CASES)
@pytest.mark.parametrize("extra_rows", [0, 1])
def test_conv_transpose2d_forward_matches_direct_loops(layout, kernel, stride, padding, dilation, extra_rows):
    rng = np.random.default_rng(2)
    output_padding = (extra_rows * (stride[0] - 1), 0)
    x, weight, bias = rand(rng, 2, 3, 4, 5), rand(rng, 3, 2, *kernel), rand(rng, 2)
    y = F.conv_transpose2d(Tensor(x), Tensor(weight), Tensor(bias), stride, padding, output_padding, dilation)
    expected = naive_conv_transpose2d(x, weight, bias, stride, padding, output_padding, dilation)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_conv2d_hand_computed_example():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    weight = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])  # x[r, c] - x[r+1, c+1] = -5 everywhere
    y = F.conv2d(x, weight, stride=2)
    np.testing.assert_array_equal(y.numpy(), np.full((1, 1, 2, 2), -5.0))
    y = F.conv_transpose2d(np.ones((1, 1, 1, 1)), weight, stride=2, output_padding=1)
    np.testing.assert_array_equal(y.numpy()[0, 0], [[1, 0, 0], [0, -1, 0], [0, 0, 0]])


# ---------------------------------------------------------------------------
# Gradients: one float64 gradcheck per Function, over a grid of geometries and groupings
# ---------------------------------------------------------------------------
GRID = list(itertools.product([1, 2, (2, 1)], [0, 1, (2, 0)], [1, (1, 2)]))
# (groups, in_channels, out_channels): plain, two groups, depthwise, depthwise with channel multiplier 2
GROUPINGS = [(1, 3, 2), (2, 4, 6), (4, 4, 4), (3, 3, 6)]
GROUP_GEOMETRIES = [(1, 1, 1), (2, 1, 1), ((2, 1), (0, 2), (1, 2)), (1, 2, 2), (1, 0, 1)]


def _valid_output_padding(stride, dilation, output_padding):
    """PyTorch's rule, per axis: output_padding < stride or output_padding < dilation."""
    pairs = (np.broadcast_to(v, 2) for v in (output_padding, stride, dilation))
    return all(op < s or op < d for op, s, d in zip(*pairs))


# (x shape, weight shape, options): odd sizes, non-square kernels; the grouped cases with batch 2, so that the
# weight gradient's sum over the batch is checked for every grouping
CONV2D_GRADCHECK_CASES = (
    [((1, 2, 7, 8), (3, 2, 2, 3), dict(stride=s, padding=p, dilation=d)) for s, p, d in GRID]
    + [((2, c_in, 7, 5), (c_out, c_in // g, 3, 2), dict(stride=s, padding=p, dilation=d, groups=g))
       for g, c_in, c_out in GROUPINGS for s, p, d in GROUP_GEOMETRIES]
    + [((2, 3, 4, 6), (2, 3, 2, 2), dict(stride=2))])  # windows that tile the image: col2im is one reordering copy
CONV_TRANSPOSE2D_GRADCHECK_CASES = (
    [((2, 3, 3, 5), (3, 2, 3, 2), dict(stride=s, padding=p, output_padding=op, dilation=d))
     for (s, p, d), op in itertools.product(GRID, [0, 1, (1, 0)]) if _valid_output_padding(s, d, op)]
    + [((1, c_in, 3, 4), (c_in, c_out // g, 2, 3), dict(stride=s, padding=p, dilation=d, groups=g))
       for g, c_in, c_out in GROUPINGS for s, p, d in [(1, 0, 1), (2, 1, 1), ((2, 1), (1, 0), (1, 2))]]
    + [((1, 4, 3, 5), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1, groups=2))]  # grouped, output_padding
    + [((2, 2, 4, 3), (2, 3, 2, 2), dict(stride=1, output_padding=1, dilation=2)),  # output_padding beyond stride
       ((2, 3, 4, 6), (3, 2, 2, 2), dict(stride=2))])  # the UNet decoder's upsampling: windows that tile


@pytest.mark.parametrize("x_shape, weight_shape, options", CONV2D_GRADCHECK_CASES)
def test_conv2d_gradcheck(layout, x_shape, weight_shape, options):
    rng = np.random.default_rng(3)
    x, weight, bias = (Tensor(rand(rng, *s), requires_grad=True) for s in [x_shape, weight_shape, weight_shape[:1]])
    assert gradcheck(lambda a, w, b: F.conv2d(a, w, b, **options), [x, weight, bias])


@pytest.mark.parametrize("x_shape, weight_shape, options", CONV_TRANSPOSE2D_GRADCHECK_CASES)
def test_conv_transpose2d_gradcheck(layout, x_shape, weight_shape, options):
    rng = np.random.default_rng(4)
    bias_shape = (weight_shape[1] * options.get("groups", 1),)
    x, weight, bias = (Tensor(rand(rng, *s), requires_grad=True) for s in [x_shape, weight_shape, bias_shape])
    assert gradcheck(lambda a, w, b: F.conv_transpose2d(a, w, b, **options), [x, weight, bias])


def test_conv_transpose2d_output_padding_beyond_stride_gives_rows_of_bias_only(layout):
    # output_padding 1 >= stride 1 is allowed because it is < dilation 2; the extra
    # output row and column then receive the bias only.
    rng = np.random.default_rng(5)
    x, weight, bias = rand(rng, 2, 2, 4, 3), rand(rng, 2, 3, 2, 2), rand(rng, 3)
    y = F.conv_transpose2d(x, weight, bias, stride=1, output_padding=1, dilation=2).numpy()
    assert y.shape == (2, 3, 4 - 1 + 2 + 1 + 1, 3 - 1 + 2 + 1 + 1)
    np.testing.assert_allclose(y, naive_conv_transpose2d(x, weight, bias, (1, 1), (0, 0), (1, 1), (2, 2)),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y[:, :, -1], np.broadcast_to(bias[:, None], (2, 3, y.shape[3])), rtol=1e-12)


@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
@pytest.mark.parametrize("stride", [1, 2])  # stride 1 takes the NumPy path's one-im2col backward
def test_only_the_gradients_asked_for_are_computed_and_equal_the_full_ones(layout, op, stride):
    rng = np.random.default_rng(6)
    x, weight = rand(rng, 2, 4, 5, 5), rand(rng, 4, 4, 3, 3)
    y_shape = getattr(F, op)(x, weight, stride=stride, padding=1).shape
    grad_y = rand(rng, *y_shape)
    full = [Tensor(x, requires_grad=True), Tensor(weight, requires_grad=True)]
    getattr(F, op)(*full, stride=stride, padding=1).backward(grad_y)
    for wanted in (0, 1):
        tensors = [Tensor(a, requires_grad=i == wanted) for i, a in enumerate((x, weight))]
        getattr(F, op)(*tensors, stride=stride, padding=1).backward(grad_y)
        assert tensors[1 - wanted].grad is None
        np.testing.assert_allclose(tensors[wanted].grad, full[wanted].grad, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# Grouped and depthwise convolution
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("groups, c_in, c_out", GROUPINGS)
@pytest.mark.parametrize("stride, padding, dilation", GROUP_GEOMETRIES)
def test_grouped_conv2d_forward_matches_direct_loops(layout, groups, c_in, c_out, stride, padding, dilation):
    rng = np.random.default_rng(20)
    x, weight, bias = rand(rng, 2, c_in, 7, 6), rand(rng, c_out, c_in // groups, 3, 2), rand(rng, c_out)
    pairs = [tuple(np.broadcast_to(v, 2)) for v in (stride, padding, dilation)]
    y = F.conv2d(x, weight, bias, stride, padding, dilation, groups=groups)
    np.testing.assert_allclose(y.numpy(), naive_conv2d(x, weight, bias, *pairs, groups=groups),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("groups, c_in, c_out", GROUPINGS)
@pytest.mark.parametrize("stride, padding, dilation", [(1, 0, 1), (2, 1, 1), ((2, 1), (1, 0), (1, 2))])
def test_grouped_conv_transpose2d_forward_matches_direct_loops(layout, groups, c_in, c_out, stride, padding,
                                                              dilation):
    rng = np.random.default_rng(22)
    x, weight, bias = rand(rng, 1, c_in, 3, 4), rand(rng, c_in, c_out // groups, 2, 3), rand(rng, c_out)
    y = F.conv_transpose2d(x, weight, bias, stride, padding, dilation=dilation, groups=groups)
    pairs = [tuple(np.broadcast_to(v, 2)) for v in (stride, padding, 0, dilation)]
    np.testing.assert_allclose(y.numpy(), naive_conv_transpose2d(x, weight, bias, *pairs, groups),
                               rtol=1e-10, atol=1e-12)


def test_groups_are_independent_convolutions():
    """Grouped = the groups' convolutions side by side; a depthwise one touches each channel alone."""
    rng = np.random.default_rng(23)
    x, weight = rand(rng, 2, 4, 6, 6), rand(rng, 6, 2, 3, 3)
    y = F.conv2d(x, weight, padding=1, groups=2).numpy()
    halves = [F.conv2d(x[:, 2 * g:2 * g + 2], weight[3 * g:3 * g + 3], padding=1).numpy() for g in range(2)]
    np.testing.assert_allclose(y, np.concatenate(halves, axis=1), rtol=1e-12)
    depthwise = rand(rng, 4, 1, 3, 3)
    x_one_channel = np.zeros_like(x)
    x_one_channel[:, 1] = x[:, 1]
    y = F.conv2d(x_one_channel, depthwise, padding=1, groups=4).numpy()
    assert np.abs(y[:, [0, 2, 3]]).max() == 0 and np.abs(y[:, 1]).max() > 0


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("stride, padding, dilation", [(1, 1, 1), (2, 1, 1), ((3, 2), (0, 2), (2, 1)), (2, 0, 2)])
def test_conv_transpose_is_adjoint_of_conv(layout, stride, padding, dilation):
    """⟨conv2d(x, W), y⟩ = ⟨x, conv_transpose2d(y, W)⟩: the transposed convolution multiplies by Aᵀ."""
    rng = np.random.default_rng(8)
    x, weight = rand(rng, 2, 3, 11, 10), rand(rng, 4, 3, 3, 2)
    conv_x = F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation).numpy()
    y = rand(rng, *conv_x.shape)
    # output_padding restores the rows a strided convolution drops, so the shapes match x.
    (sh, sw), (ph, pw), (dh, dw) = (np.broadcast_to(v, 2) for v in (stride, padding, dilation))
    output_padding = ((11 + 2 * ph - dh * 2 - 1) % sh, (10 + 2 * pw - dw - 1) % sw)
    transposed_y = F.conv_transpose2d(y, weight, stride=stride, padding=padding, output_padding=output_padding,
                                      dilation=dilation).numpy()
    assert transposed_y.shape == x.shape
    np.testing.assert_allclose(np.sum(conv_x * y), np.sum(x * transposed_y), rtol=1e-12)


@pytest.mark.parametrize("size, kernel, stride, padding, dilation",
                         [(7, 3, 1, 1, 1), (8, 3, 2, 1, 1), (9, 2, 3, 0, 1), (10, 3, 1, 2, 3), (5, 5, 1, 0, 1)])
def test_output_shapes_follow_pytorch_formulas(size, kernel, stride, padding, dilation):
    x = np.zeros((1, 1, size, size + 1), np.float32)
    weight = np.zeros((1, 1, kernel, kernel), np.float32)
    conv_size = lambda n: (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1  # noqa: E731
    assert F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation).shape == \
        (1, 1, conv_size(size), conv_size(size + 1))
    op = stride - 1
    transpose_size = lambda n: (n - 1) * stride - 2 * padding + dilation * (kernel - 1) + op + 1  # noqa: E731
    assert F.conv_transpose2d(x, weight, stride=stride, padding=padding, output_padding=op, dilation=dilation).shape \
        == (1, 1, transpose_size(size), transpose_size(size + 1))


@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
@pytest.mark.parametrize("stride", [1, 2])
def test_float32_stays_float32(layout, op, stride):
    rng = np.random.default_rng(9)
    x = Tensor(rng.standard_normal((2, 4, 6, 7), dtype=np.float32), requires_grad=True)
    weight = Tensor(rng.standard_normal((4, 4, 3, 3), dtype=np.float32), requires_grad=True)
    bias = Tensor(rng.standard_normal(4, dtype=np.float32), requires_grad=True)
    y = getattr(F, op)(x, weight, bias, stride=stride, padding=1)
    assert y.dtype == np.float32
    y.backward(np.ones(y.shape, np.float32))
    assert x.grad.dtype == weight.grad.dtype == bias.grad.dtype == np.float32
    reference = getattr(F, op)(x.data.astype(np.float64), weight.data.astype(np.float64),
                               bias.data.astype(np.float64), stride=stride, padding=1)
    np.testing.assert_allclose(y.numpy(), reference.numpy(), rtol=1e-4, atol=1e-4)


def test_pair_arguments_equal_int_arguments():
    rng = np.random.default_rng(10)
    x, weight = rand(rng, 1, 2, 9, 9), rand(rng, 3, 2, 3, 3)
    np.testing.assert_array_equal(F.conv2d(x, weight, stride=2, padding=1, dilation=2).numpy(),
                                  F.conv2d(x, weight, stride=(2, 2), padding=[1, 1], dilation=(2, 2)).numpy())


# ---------------------------------------------------------------------------
# Bad arguments: the message names the argument
# ---------------------------------------------------------------------------
X = np.zeros((2, 3, 8, 8), np.float32)
W = np.zeros((4, 3, 3, 3), np.float32)


@pytest.mark.parametrize("call, error, message", [
    (lambda: F.conv2d(X, np.zeros((4, 16, 3, 3), np.float32)), ValueError,
     "weight has 16 input channels but input has 3"),
    (lambda: F.conv2d(X[0], W), ValueError, "conv2d: input must be 4-D"),
    (lambda: F.conv2d(X, W[0]), ValueError, "weight must be 4-D"),
    (lambda: F.conv2d(X, np.zeros((4, 3, 11, 3), np.float32)), ValueError,
     "weight's kernel spans 11 pixels in height"),
    (lambda: F.conv2d(X, W, dilation=(1, 5)), ValueError, "weight's kernel spans 11 pixels in width"),
    (lambda: F.conv2d(X, W, padding=-1), ValueError, "conv2d: padding must be at least 0, got -1"),
    (lambda: F.conv2d(X, W, stride=0), ValueError, "conv2d: stride must be at least 1, got 0"),
    (lambda: F.conv2d(X, W, dilation=(1, 0)), ValueError, r"conv2d: dilation must be at least 1, got \(1, 0\)"),
    (lambda: F.conv2d(X, W, stride=(1, 2, 3)), TypeError, "stride must be an int or a pair"),
    (lambda: F.conv2d(X, W, padding=1.5), TypeError, "padding must be an int or a pair"),
    (lambda: F.conv2d(X, W.astype(np.float64)), TypeError, "weight is float64 but input is float32"),
    (lambda: F.conv2d(X.astype(np.int64), W), TypeError, "input must be floating point"),
    (lambda: F.conv2d(X, W, np.zeros(3, np.float32)), ValueError, r"bias must have shape \(4,\)"),
    (lambda: F.conv2d(X, W, np.zeros(4)), TypeError, "bias is float64 but input is float32"),
    (lambda: F.conv_transpose2d(X, np.zeros((16, 4, 3, 3), np.float32)), ValueError,
     "weight has 16 input channels but input has 3"),
    (lambda: F.conv_transpose2d(X, W.transpose(1, 0, 2, 3), stride=2, output_padding=2), ValueError,
     "output_padding must be smaller than either stride or dilation"),
    (lambda: F.conv_transpose2d(X, W.transpose(1, 0, 2, 3), output_padding=-1), ValueError,
     "output_padding must be at least 0"),
    (lambda: F.conv_transpose2d(X, W.transpose(1, 0, 2, 3), output_padding=1), ValueError, "output_padding"),
    (lambda: F.conv_transpose2d(X, W.transpose(1, 0, 2, 3), padding=6), ValueError, "output height would be -2"),
    (lambda: F.conv_transpose2d(X, W.transpose(1, 0, 2, 3), padding=-1), ValueError, "padding must be at least 0"),
    (lambda: F.conv2d(X, W, groups=2), ValueError,
     "conv2d: input's 3 channels must be divisible by groups, got groups=2"),
    (lambda: F.conv2d(np.zeros((2, 6, 8, 8), np.float32), np.zeros((4, 3, 3, 3), np.float32), groups=3),
     ValueError, "weight has 3 input channels per group \\(groups=3\\) but input has 6"),
    (lambda: F.conv2d(np.zeros((2, 6, 8, 8), np.float32), np.zeros((4, 2, 3, 3), np.float32), groups=3),
     ValueError, "conv2d: weight's 4 output channels must be divisible by groups, got groups=3"),
    (lambda: F.conv2d(X, W, groups=0), ValueError, "conv2d: groups must be a positive int, got 0"),
    (lambda: F.conv_transpose2d(np.zeros((2, 4, 8, 8), np.float32), np.zeros((5, 2, 3, 3), np.float32), groups=2),
     ValueError, "conv_transpose2d: weight has 5 input channels but input has 4"),
    (lambda: F.conv_transpose2d(X, W.transpose(1, 0, 2, 3), groups=2), ValueError,
     "conv_transpose2d: input's 3 channels must be divisible by groups"),
])
def test_bad_arguments_raise_errors_naming_them(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_conv_on_a_tensor_graph_trains_like_a_layer():
    # conv2d accepts Tensors produced by other ops and passes gradients through them.
    rng = np.random.default_rng(11)
    x = Tensor(rand(rng, 2, 2, 6, 6), requires_grad=True)
    weight = Tensor(rand(rng, 2, 2, 3, 3), requires_grad=True)
    F.conv2d((x * 2.0).relu(), weight, padding=1).relu().sum().backward()
    # the same chain by hand: conv2d's gradients at its own input h, then through h = relu(2x)
    h = Tensor(np.maximum(2.0 * x.data, 0), requires_grad=True)
    conv_weight = Tensor(weight.data, requires_grad=True)
    y = F.conv2d(h, conv_weight, padding=1)
    y.backward((y.data > 0).astype(np.float64))
    np.testing.assert_allclose(x.grad, 2.0 * (x.data > 0) * h.grad, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(weight.grad, conv_weight.grad, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# The GPU route (no GPU here): float32 CuPy arrays go to minseg.cuda's kernels, others to the plain path
# ---------------------------------------------------------------------------
class _FakeGPUArrayModule:
    """Stands in for cupy: conv.py sends arrays whose module is not numpy to minseg.cuda or the plain path."""
    zeros = staticmethod(np.zeros)
    ascontiguousarray = staticmethod(np.ascontiguousarray)
    concatenate = staticmethod(np.concatenate)


@pytest.fixture
def fake_gpu(monkeypatch):
    """conv.py believes every array is a CuPy array; minseg.cuda's kernels are recorded, then run the plain code."""
    import minseg.cuda
    calls = []

    def recorded(name):
        plain = getattr(conv_module, name + "_plain")

        def kernel(*args):
            calls.append((name, tuple(a.shape if hasattr(a, "shape") else a for a in args[:3])))
            return plain(*args)
        return kernel

    for name in ("conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight"):
        monkeypatch.setattr(minseg.cuda, name, recorded(name))
    monkeypatch.setattr(conv_module, "get_array_module", lambda *arrays: _FakeGPUArrayModule)
    return calls


def _results(op, dtype, x, weight, bias, grad_y, **options):
    """y and the three gradients, computed in ``dtype``."""
    tensors = [Tensor(a.astype(dtype), requires_grad=True) for a in (x, weight, bias)]
    y = op(*tensors, **options)
    y.backward(grad_y.astype(dtype))
    return [y.data] + [t.grad for t in tensors]


@pytest.mark.parametrize("op, weight_shape, options, y_shape, expected", [
    ("conv2d", (4, 3, 3, 2), dict(padding=1), (2, 4, 5, 7),
     {("conv2d_forward", ((2, 3, 5, 6), (4, 3, 3, 2), (1, 1))),
      ("conv2d_backward_input", ((2, 4, 5, 7), (4, 3, 3, 2), (2, 3, 5, 6))),
      ("conv2d_backward_weight", ((2, 3, 5, 6), (2, 4, 5, 7), (4, 3, 3, 2)))}),
    # forward = the convolution's input gradient; backward swaps x and y
    ("conv_transpose2d", (3, 4, 2, 2), dict(stride=2), (2, 4, 10, 12),
     {("conv2d_backward_input", ((2, 3, 5, 6), (3, 4, 2, 2), (2, 4, 10, 12))),
      ("conv2d_forward", ((2, 4, 10, 12), (3, 4, 2, 2), (2, 2))),
      ("conv2d_backward_weight", ((2, 4, 10, 12), (2, 3, 5, 6), (3, 4, 2, 2)))}),
    # one kernel call per group, on that group's channels
    ("conv2d", (4, 1, 3, 3), dict(padding=1, groups=3), (2, 4, 5, 6), None),
])
def test_float32_gpu_arrays_go_to_the_cuda_kernels_with_the_right_roles(fake_gpu, op, weight_shape, options,
                                                                        y_shape, expected):
    rng = np.random.default_rng(13)
    if options.get("groups"):  # 3 groups need channels divisible by 3
        weight_shape = (6, 1, 3, 3)
    x, weight, bias = rand(rng, 2, 3, 5, 6), rand(rng, *weight_shape), rand(rng, weight_shape[0])
    if op == "conv_transpose2d":
        bias = rand(rng, weight_shape[1])
    grad_y = rand(rng, *(y_shape[:1] + (len(bias),) + y_shape[2:]))
    on_gpu = _results(getattr(F, op), np.float32, x, weight, bias, grad_y, **options)
    if expected is not None:
        assert set(fake_gpu) == expected
    else:  # groups=3: three calls of each kernel, each with one input channel and two output channels
        assert sorted(fake_gpu) == sorted(
            [("conv2d_forward", ((2, 1, 5, 6), (2, 1, 3, 3), (1, 1)))] * 3
            + [("conv2d_backward_input", ((2, 2, 5, 6), (2, 1, 3, 3), (2, 1, 5, 6)))] * 3
            + [("conv2d_backward_weight", ((2, 1, 5, 6), (2, 2, 5, 6), (2, 1, 3, 3)))] * 3)
    with pytest.MonkeyPatch.context() as undo:
        undo.setattr(conv_module, "get_array_module", minseg.backend.get_array_module)
        on_cpu = _results(getattr(F, op), np.float32, x, weight, bias, grad_y, **options)
    for gpu_result, cpu_result in zip(on_gpu, on_cpu):
        np.testing.assert_allclose(gpu_result, cpu_result, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op, options", [("conv2d", dict(stride=(2, 1), padding=1)), ("conv2d", dict(padding=1)),
                                         ("conv_transpose2d", dict(stride=2)), ("conv_transpose2d", dict(padding=1))])
@pytest.mark.parametrize("groups", [1, 2])
def test_float64_gpu_arrays_take_the_plain_path_not_the_kernels(fake_gpu, op, options, groups):
    rng = np.random.default_rng(14)
    x, weight, bias = rand(rng, 2, 4, 5, 6), rand(rng, 4, 4 // groups, 3, 2), rand(rng, 4 // groups * groups)
    if op == "conv_transpose2d":
        bias = rand(rng, weight.shape[1] * groups)
    y_shape = getattr(F, op)(x, weight, bias, groups=groups, **options).shape  # the fake GPU's plain forward
    grad_y = rand(rng, *y_shape)
    on_gpu = _results(getattr(F, op), np.float64, x, weight, bias, grad_y, groups=groups, **options)
    assert fake_gpu == []  # float64: no kernel was called
    with pytest.MonkeyPatch.context() as undo:
        undo.setattr(conv_module, "get_array_module", minseg.backend.get_array_module)
        on_cpu = _results(getattr(F, op), np.float64, x, weight, bias, grad_y, groups=groups, **options)
    for gpu_result, cpu_result in zip(on_gpu, on_cpu):
        np.testing.assert_allclose(gpu_result, cpu_result, rtol=1e-12, atol=1e-12)
