"""Tests for minseg/functional/conv_numpy.py: every NumPy speed-up, forced, against conv.py's plain versions.

The plain versions (im2col and one matrix product per group) are checked against loop
references and by gradient checks in test_conv.py; here each fast path is made to run
(the layout by FOLD_BATCH_BELOW, the chunks of images by COL_CHUNK_BYTES, the shortcuts by
choosing shapes that take them) and must give the same numbers.
"""
import numpy as np
import pytest

from minseg.functional import conv, conv_numpy
from minseg.functional.im2col import conv2d_output_size, im2col, workspace


@pytest.fixture(params=["per_image", "one_row_at_a_time", "fold_batch"])
def layout(request, monkeypatch):
    """The col layouts: per image (the whole batch in one chunk, or bands of one output row) and batch-folded."""
    monkeypatch.setattr(conv_numpy, "FOLD_BATCH_BELOW", 10 ** 9 if request.param == "fold_batch" else 0)
    monkeypatch.setattr(conv_numpy, "COL_CHUNK_BYTES", 1 if request.param == "one_row_at_a_time" else 2 ** 62)
    return request.param


def arrays(seed, x_shape, weight_shape, y_shape=None):
    rng = np.random.default_rng(seed)
    x, weight = rng.standard_normal(x_shape), rng.standard_normal(weight_shape)
    return (x, weight) if y_shape is None else (x, weight, rng.standard_normal(y_shape))


# (x shape, weight shape, stride, padding, dilation, groups)
CASES = [((2, 4, 7, 6), (6, 2, 3, 3), (1, 1), (1, 1), (1, 1), 2),        # stride 1: the rotated-kernel backward
         ((1, 3, 9, 8), (3, 1, 3, 2), (1, 1), (2, 0), (2, 1), 3),        # depthwise, dilated
         ((2, 3, 7, 9), (4, 3, 2, 3), (2, 1), (1, 0), (1, 2), 1),        # strided: col2im
         ((2, 4, 6, 8), (4, 2, 2, 2), (2, 2), (0, 0), (1, 1), 2),        # windows tile the image, grouped
         ((1, 2, 5, 5), (3, 2, 3, 3), (1, 1), (3, 3), (1, 1), 1),        # stride 1, padding > k-1: no shortcut
         ((2, 2, 7, 8), (4, 1, 3, 3), (2, 1), (1, 2), (1, 2), 2)]        # depthwise, multiplier 2, strided


def _y_shape(x_shape, weight_shape, stride, padding, dilation):
    return (x_shape[0], weight_shape[0], *conv2d_output_size(x_shape[2:], weight_shape[2:], stride, padding, dilation))


@pytest.mark.parametrize("x_shape, weight_shape, stride, padding, dilation, groups", CASES)
def test_each_array_function_equals_its_plain_version(layout, x_shape, weight_shape, stride, padding, dilation,
                                                       groups):
    y_shape = _y_shape(x_shape, weight_shape, stride, padding, dilation)
    x, weight, grad_y = arrays(0, x_shape, weight_shape, y_shape)
    geometry = stride, padding, dilation, groups
    np.testing.assert_allclose(conv_numpy.conv2d_forward(x, weight, *geometry),
                               conv.conv2d_forward_plain(x, weight, *geometry), rtol=1e-12, atol=1e-12)
    grad_x = conv.conv2d_backward_input_plain(grad_y, weight, x_shape, *geometry)
    grad_weight = conv.conv2d_backward_weight_plain(x, grad_y, weight_shape, *geometry)
    np.testing.assert_allclose(conv_numpy.conv2d_backward_input(grad_y, weight, x_shape, *geometry), grad_x,
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv_numpy.conv2d_backward_weight(x, grad_y, weight_shape, *geometry), grad_weight,
                               rtol=1e-12, atol=1e-12)
    both = conv_numpy.conv2d_backward(grad_y, x, weight, x_shape, weight_shape, *geometry)
    np.testing.assert_allclose(both[0], grad_x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(both[1], grad_weight, rtol=1e-12, atol=1e-12)
    assert conv_numpy.conv2d_backward(grad_y, None, weight, x_shape, weight_shape, *geometry)[1] is None
    assert conv_numpy.conv2d_backward(grad_y, x, None, x_shape, weight_shape, *geometry)[0] is None
    # the transposed convolution's backward, whose grad_y plays the convolution's x and whose x its grad_y:
    # both gradients from one im2col, or one of them alone
    transposed = conv_numpy.conv_transpose2d_backward(grad_y=x, x=grad_y, weight=weight, weight_shape=weight_shape,
                                                      stride=stride, padding=padding, dilation=dilation, groups=groups)
    np.testing.assert_allclose(transposed[0], conv.conv2d_forward_plain(x, weight, *geometry), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(transposed[1], grad_weight, rtol=1e-12, atol=1e-12)
    assert conv_numpy.conv_transpose2d_backward(x, None, weight, weight_shape, *geometry)[1] is None
    np.testing.assert_allclose(conv_numpy.conv_transpose2d_backward(x, grad_y, None, weight_shape, *geometry)[1],
                               grad_weight, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("x_shape, weight_shape, stride, padding, dilation, groups",
                         [case for case in CASES if conv_numpy._stride_one_applies(*case[2:5], case[1][2:])])
def test_stride_one_gradients_from_one_im2col_equal_the_plain_gradients(layout, x_shape, weight_shape, stride,
                                                                        padding, dilation, groups):
    y_shape = _y_shape(x_shape, weight_shape, stride, padding, dilation)
    x, weight, grad_y = arrays(1, x_shape, weight_shape, y_shape)
    grad_x, grad_weight = conv_numpy._stride_one_gradients(grad_y, x, weight, weight_shape, padding, dilation, groups)
    geometry = stride, padding, dilation, groups
    np.testing.assert_allclose(grad_x, conv.conv2d_backward_input_plain(grad_y, weight, x_shape, *geometry),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_weight, conv.conv2d_backward_weight_plain(x, grad_y, weight_shape, *geometry),
                               rtol=1e-12, atol=1e-12)


def test_the_cases_above_take_every_path():
    """The grid must reach the stride-1 path and the general col2im path, depthwise ones among them."""
    applies = [conv_numpy._stride_one_applies(stride, padding, dilation, weight_shape[2:])
               for _, weight_shape, stride, padding, dilation, _ in CASES]
    depthwise = [groups > 1 and weight_shape[1] == 1 for _, weight_shape, *_, groups in CASES]
    assert applies == [True, True, False, False, False, False]
    assert depthwise == [False, True, False, False, False, True]


def test_cols_come_in_chunks_of_whole_images_or_bands_of_rows_that_fit_the_budget(monkeypatch):
    x = np.random.default_rng(4).standard_normal((5, 2, 16, 17))  # 16×17 = 272 output pixels: per image
    row_bytes = 2 * 3 * 3 * 17 * x.itemsize  # one output row's columns
    whole = im2col(x, (3, 3), (1, 1), (1, 1), (1, 1)).reshape(5, 18, 16, 17)
    for budget, chunks in ((2 ** 62, [(5, 16)]), (2 * 16 * row_bytes, [(2, 16)] * 2 + [(1, 16)]),
                           (16 * row_bytes, [(1, 16)] * 5), (7 * row_bytes, [(1, 7), (1, 7), (1, 2)] * 5)):
        monkeypatch.setattr(conv_numpy, "COL_CHUNK_BYTES", budget)
        sizes = []
        for images, rows, col, folded in conv_numpy._cols(x, (3, 3), (1, 1), (1, 1), (1, 1)):
            # each col before the next: they share the workspace
            np.testing.assert_array_equal(col, whole[images, :, rows].reshape(col.shape))
            sizes.append((images.stop - images.start, rows.stop - rows.start))
            assert not folded
        assert sizes == chunks


@pytest.mark.parametrize("budget_rows", [2 * 9, 9, 3, 1])  # two images, one, bands of 3 rows, of 1 row
@pytest.mark.parametrize("x_shape, weight_shape, stride, padding, dilation, groups",
                         [((3, 4, 9, 30), (6, 2, 3, 3), (1, 1), (1, 1), (1, 1), 2),
                          ((2, 3, 17, 31), (4, 3, 3, 2), (2, 1), (2, 1), (2, 3), 1)])
def test_every_chunking_gives_the_plain_results(monkeypatch, budget_rows, x_shape, weight_shape, stride, padding,
                                                dilation, groups):
    y_shape = _y_shape(x_shape, weight_shape, stride, padding, dilation)
    assert y_shape[2] == 9 and y_shape[2] * y_shape[3] >= conv_numpy.FOLD_BATCH_BELOW  # per image, 9 output rows
    x, weight, grad_y = arrays(5, x_shape, weight_shape, y_shape)
    widest_row = max(x_shape[1], weight_shape[0]) * weight_shape[2] * weight_shape[3] * x_shape[3] * x.itemsize
    monkeypatch.setattr(conv_numpy, "COL_CHUNK_BYTES", budget_rows * widest_row)
    geometry = stride, padding, dilation, groups
    np.testing.assert_allclose(conv_numpy.conv2d_forward(x, weight, *geometry),
                               conv.conv2d_forward_plain(x, weight, *geometry), rtol=1e-12, atol=1e-12)
    grad_x, grad_weight = conv_numpy.conv2d_backward(grad_y, x, weight, x_shape, weight_shape, *geometry)
    np.testing.assert_allclose(grad_x, conv.conv2d_backward_input_plain(grad_y, weight, x_shape, *geometry),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_weight, conv.conv2d_backward_weight_plain(x, grad_y, weight_shape, *geometry),
                               rtol=1e-12, atol=1e-12)
    y, grad_weight = conv_numpy.conv_transpose2d_backward(grad_y=x, x=grad_y, weight=weight, weight_shape=weight_shape,
                                                          stride=stride, padding=padding, dilation=dilation,
                                                          groups=groups)
    np.testing.assert_allclose(y, conv.conv2d_forward_plain(x, weight, *geometry), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_weight, conv.conv2d_backward_weight_plain(x, grad_y, weight_shape, *geometry),
                               rtol=1e-12, atol=1e-12)


def test_swap_channel_axes_is_swapaxes():
    weight = np.random.default_rng(3).standard_normal((2, 3, 5, 3, 2)).astype(np.float32)
    swapped = conv_numpy._swap_channel_axes(weight[:, :, :, ::-1])  # a strided view, too
    np.testing.assert_array_equal(swapped, weight[:, :, :, ::-1].swapaxes(1, 2))
    assert swapped.flags.c_contiguous and swapped.dtype == np.float32


def test_results_do_not_live_in_the_workspace(layout):
    x, weight, grad_y = arrays(4, (2, 3, 6, 6), (4, 3, 3, 3), (2, 4, 6, 6))
    geometry = (1, 1), (1, 1), (1, 1), 1
    results = [conv_numpy.conv2d_forward(x, weight, *geometry),
               *conv_numpy.conv2d_backward(grad_y, x, weight, x.shape, weight.shape, *geometry)]
    copies = [r.copy() for r in results]
    for buffer in workspace.buffers.values():
        buffer[...] = 0xFF  # the next convolution overwrites the scratch memory
    for result, copy in zip(results, copies):
        np.testing.assert_array_equal(result, copy)


@pytest.mark.parametrize("groups, weight_shape", [(2, (4, 2, 3, 3)), (4, (8, 1, 3, 3))])
def test_float32_stays_float32_with_groups(groups, weight_shape):
    y_shape = (2, weight_shape[0], 6, 7)
    x, weight, grad_y = (a.astype(np.float32) for a in arrays(5, (2, 4, 6, 7), weight_shape, y_shape))
    geometry = (1, 1), (1, 1), (1, 1), groups
    results = [conv_numpy.conv2d_forward(x, weight, *geometry),
               *conv_numpy.conv2d_backward(grad_y, x, weight, x.shape, weight.shape, *geometry)]
    assert [r.dtype for r in results] == [np.float32] * 3
    np.testing.assert_allclose(results[0], conv.conv2d_forward_plain(x.astype(np.float64), weight.astype(np.float64),
                                                                     *geometry), rtol=1e-4, atol=1e-4)
