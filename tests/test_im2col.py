"""Tests for minseg/functional/im2col.py: the window matrix and its adjoint."""
import itertools

import numpy as np
import pytest

from minseg.functional.im2col import col2im, conv_output_size, im2col, workspace

# (x shape, kernel, stride, padding, dilation); the last two tile the image exactly (kernel = stride)
GEOMETRIES = [((2, 3, 7, 9), (3, 3), (1, 1), (1, 1), (1, 1)), ((1, 2, 8, 5), (2, 3), (2, 1), (0, 2), (1, 2)),
              ((2, 1, 9, 9), (3, 2), (3, 2), (2, 0), (2, 3)), ((3, 2, 5, 6), (1, 1), (1, 1), (0, 0), (1, 1)),
              ((2, 2, 6, 8), (2, 2), (2, 2), (0, 0), (1, 1)), ((1, 3, 4, 4), (3, 3), (3, 3), (1, 1), (1, 1))]


def test_im2col_hand_computed_windows():
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    col = im2col(x, (2, 2), (1, 1), (0, 0), (1, 1))
    # Column k is the k-th 2×2 window read row by row; rows are the taps (0,0) (0,1) (1,0) (1,1).
    np.testing.assert_array_equal(col[0], [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]])
    # Padding 1, stride 2: the four corners' windows, zero outside the image.
    col = im2col(x, (2, 2), (2, 2), (1, 1), (1, 1))
    np.testing.assert_array_equal(col[0], [[0, 0, 0, 4], [0, 0, 3, 5], [0, 1, 0, 7], [0, 2, 6, 8]])


@pytest.mark.parametrize("x_shape, kernel, stride, padding, dilation", GEOMETRIES)
@pytest.mark.parametrize("fold_batch, rotate", [(False, False), (True, False), (False, True), (True, True)])
def test_col_entries_are_the_window_pixels(x_shape, kernel, stride, padding, dilation, fold_batch, rotate):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    n, c, h, w = x_shape
    kh, kw = kernel
    ho, wo = (conv_output_size(*a) for a in zip((h, w), kernel, stride, padding, dilation))
    col = im2col(x, kernel, stride, padding, dilation, fold_batch=fold_batch, rotate=rotate)
    col6 = col.reshape(c, kh, kw, n, ho, wo).transpose(3, 0, 1, 2, 4, 5) if fold_batch else \
        col.reshape(n, c, kh, kw, ho, wo)
    x_padded = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    for b, ch, i, j, oh, ow in itertools.product(range(n), range(c), range(kh), range(kw), range(ho), range(wo)):
        tap_i, tap_j = (kh - 1 - i, kw - 1 - j) if rotate else (i, j)  # rotate: each window turned 180°
        assert col6[b, ch, i, j, oh, ow] == x_padded[b, ch, oh * stride[0] + tap_i * dilation[0],
                                                     ow * stride[1] + tap_j * dilation[1]]


@pytest.mark.parametrize("x_shape, kernel, stride, padding, dilation", GEOMETRIES)
@pytest.mark.parametrize("fold_batch", [False, True])
def test_col2im_is_the_adjoint_of_im2col(x_shape, kernel, stride, padding, dilation, fold_batch):
    """⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩ for every x and c: col2im is im2colᵀ."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape)
    col = im2col(x, kernel, stride, padding, dilation, fold_batch=fold_batch)
    c = rng.standard_normal(col.shape)
    back = col2im(c, x_shape, kernel, stride, padding, dilation, fold_batch=fold_batch)
    assert back.shape == x_shape and back.flags.c_contiguous
    np.testing.assert_allclose(np.sum(col * c), np.sum(x * back), rtol=1e-12)


def test_col2im_counts_how_many_windows_hold_each_pixel():
    ones = np.ones((1, 1, 4, 4))
    col = np.ones_like(im2col(ones, (3, 3), (1, 1), (1, 1), (1, 1)))
    counts = col2im(col, ones.shape, (3, 3), (1, 1), (1, 1), (1, 1))[0, 0]
    np.testing.assert_array_equal(counts, [[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]])
    # Stride 2 over 5 pixels with kernel 2: the last row and column lie in no window.
    col = np.ones((1, 4, 4))
    counts = col2im(col, (1, 1, 5, 5), (2, 2), (2, 2), (0, 0), (1, 1))[0, 0]
    assert counts[:4, :4].min() == 1 and counts[4].max() == 0 and counts[:, 4].max() == 0


def test_im2col_into_workspace_leaves_results_independent():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    first = im2col(x, (3, 3), (1, 1), (1, 1), (1, 1), out=workspace((2, 27, 36), np.float32))
    expected = im2col(x, (3, 3), (1, 1), (1, 1), (1, 1))
    np.testing.assert_array_equal(first, expected)
    assert first.dtype == np.float32
    back = col2im(first, x.shape, (3, 3), (1, 1), (1, 1), (1, 1))
    workspace((2, 27, 36), np.float32)[...] = np.nan  # reusing the scratch memory must not touch results
    assert np.isfinite(back).all() and not np.shares_memory(back, workspace.buffers["col"])
    workspace.release()
    assert workspace.buffers == {}
