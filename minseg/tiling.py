"""Predict an image of any size through fixed-size windows, blended, with optional test-time flips.

A convolutional network predicts a pixel from a neighbourhood of it, its *receptive field*. Running it on a whole
large image costs memory in proportion to the image (every layer's activations at once); running it on windows
costs memory in proportion to a batch of windows, whatever the image's size. The windows' logits are put back
together in four steps (``tiled_logits``):

1. **Place** windows of ``tile`` pixels, ``overlap`` pixels apart from their neighbours, over the image padded to
   the model's ``size_multiple`` (``window_starts``). Every start is a multiple of ``size_multiple``, so a
   window's pooling grid lines up with the whole image's, and a window that sees all of a pixel's receptive field
   gives that pixel exactly the whole-image logits.
2. **Weigh** each window's logits per pixel (``blend_weights``): a pixel near a window's edge was predicted with
   zeros for part of its neighbourhood, so its logits there are worse than from a window where it sits in the
   middle. ``"uniform"`` (every pixel 1: mmsegmentation's ``slide`` mode), ``"linear"`` (ramps from the edge to
   1 across the overlap), ``"gaussian"`` (``exp(-d^2 / 2 sigma^2)``, sigma = tile / 8 from the window's centre:
   MONAI's ``sliding_window_inference``) or ``"center"`` (1 on the half of each overlap nearer the window's centre,
   0 on the other: the U-Net paper's overlap-tile strategy, exact once the overlap reaches the receptive field).
3. **Accumulate** logits x weight into one float32 array the size of the image's logits, and
4. **normalize** by the summed weights. The weights are an outer product of a row and a column profile, and the
   windows form a grid, so the summed weights are the outer product of two 1-D sums: no image-sized weight map.

Memory: the image's own arrays (the normalized float32 input, 3 x H x W; the accumulated float32 logits,
C x H x W) plus one batch of windows through the model, which does not grow with the image. The windows' weighted
logits come from one generator (``weighted_windows``), so ``tiled_stream`` can add the same ones into a band of
one row of windows instead, and hand on class ids with neither image-sized float32 array.

Test-time augmentation (``flip_logits``) runs each window batch also flipped left-right (and top-bottom), flips
the logits back and averages them (or the probabilities); composed with tiling, it runs inside each window batch.
"""
import tracemalloc
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from . import backend
from .arguments import pair
from .autograd import Tensor, no_grad
from .models.sizes import crop_padding, pad_to_multiple, padded_size

__all__ = ["BLENDS", "FLIPS", "window_starts", "blend_weights", "flip_logits", "tiled_logits", "whole_logits",
           "windows_count", "forward_bytes_per_pixel", "receptive_field", "Grid", "checked_grid", "summed_weights",
           "weighted_windows"]

BLENDS = ("uniform", "linear", "gaussian", "center")
FLIPS = {"h": ((-1,),), "v": ((-2,),), "hv": ((-1,), (-2,), (-2, -1))}  # the flipped copies beside the image
AVERAGES = ("logits", "probabilities")
# Pixels per batch of windows when the batch size is not given: 1 window of 512x512, 4 of 256x256, 16 of 128x128.
# The batch's activations are what tiling adds to the memory, so they are bounded by pixels, not by windows.
BATCH_PIXELS = 512 * 512


# ---------------------------------------------------------------------------------------------
# Where the windows go, and how much each pixel of a window counts
# ---------------------------------------------------------------------------------------------
def window_starts(size, tile, overlap):
    """First pixels of the windows of ``tile`` pixels covering ``size`` pixels, neighbours ``overlap`` apart.

    The windows step by ``tile - overlap``; the last one ends at ``size`` (so it may overlap its neighbour by
    more). ``window_starts(10, 4, 1) == [0, 3, 6]``; a ``size`` within one tile gives ``[0]``.
    """
    if size <= tile:
        return [0]
    return list(range(0, size - tile, tile - overlap)) + [size - tile]


def _profile(length, overlap, blend, first, last):
    """1-D weights of a window of ``length`` pixels; ``first``/``last``: its start/end is the image's border,
    where no neighbour shares the pixels, so ``"linear"`` and ``"center"`` keep weight 1 there."""
    index = np.arange(length, dtype=np.float64) + 0.5  # pixel centres
    if blend == "uniform" or first and last or overlap == 0 and blend != "gaussian":  # alone: nothing to blend
        return np.ones(length, np.float32)
    if blend == "gaussian":
        sigma = length / 8
        return np.exp(-((index - length / 2) ** 2) / (2 * sigma ** 2)).astype(np.float32)
    if blend == "linear":  # rises from the edge across the overlap: neighbours' ramps add up to 1 there
        rise, fall = np.minimum(index / overlap, 1), np.minimum((length - index) / overlap, 1)
    else:  # center: the nearer half of each overlap
        rise, fall = (index >= overlap / 2).astype(float), (length - index >= overlap / 2).astype(float)
    return (np.ones(length) if first else rise) * (np.ones(length) if last else fall)


def blend_weights(height, width, overlap, blend="gaussian", borders=(False, False, False, False)):
    """float32 (height, width) weights of one window's logits: the outer product of a row and a column profile.

    ``overlap``: (rows, columns) shared with the neighbours; ``borders``: whether the window's top, bottom,
    left and right edges lie on the image's border. See the module docstring for the four ``blend`` kinds.
    """
    top, bottom, left, right = borders
    rows = _profile(height, overlap[0], blend, top, bottom)
    columns = _profile(width, overlap[1], blend, left, right)
    return np.outer(rows, columns).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Test-time flips
# ---------------------------------------------------------------------------------------------
def _log_softmax(xp, logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def flip_logits(model, x, flips=None, average="logits"):
    """Logits of the batch ``x`` (an array), averaged over ``x`` and its flipped copies, each flipped back.

    ``flips``: None (``x`` alone), ``"h"`` (left-right), ``"v"`` (top-bottom) or ``"hv"`` (both and each).
    ``average="probabilities"`` averages the softmax instead and returns its log, which has the same argmax
    order as logits do. A model that is flip-equivariant gives the plain logits back.
    """
    xp = backend.get_array_module(x)
    with no_grad():
        outputs = [model(Tensor(x)).data]
        for dims in FLIPS[flips] if flips else ():
            outputs.append(xp.flip(model(Tensor(xp.ascontiguousarray(xp.flip(x, dims)))).data, dims))
    if len(outputs) == 1:
        return outputs[0]
    if average == "logits":
        return sum(outputs[1:], outputs[0]) / len(outputs)
    probabilities = sum(xp.exp(_log_softmax(xp, output)) for output in outputs) / len(outputs)
    return xp.log(probabilities)


# ---------------------------------------------------------------------------------------------
# The windows, batched, blended and put back together
# ---------------------------------------------------------------------------------------------
def _padded(part, height, width):
    """A window's pixels (3, h, w), cut where it reaches past the image, zero-padded to (3, height, width)."""
    rows, columns = height - part.shape[-2], width - part.shape[-1]
    return np.pad(part, ((0, 0), (0, rows), (0, columns))) if rows or columns else part


class Grid(NamedTuple):
    """Where the windows over one image go; every number a multiple of the model's ``size_multiple``."""
    window: tuple  # (rows, columns) of a window
    overlap: tuple  # (rows, columns) a window shares with its neighbours
    tops: list  # the first rows of the rows of windows
    lefts: list  # the first columns of the columns of windows
    padded: tuple  # (height, width) of the image padded to size_multiple
    image: tuple  # (height, width) of the image itself


def _grid(height, width, tile, overlap, multiple):
    """The ``Grid`` over an image of ``height`` x ``width``: ``tile`` and ``overlap`` (pairs) rounded up."""
    padded = padded_size(height, multiple), padded_size(width, multiple)
    size = tuple(min(padded_size(t, multiple), p) for t, p in zip(tile, padded))
    shared = tuple(min(padded_size(o, multiple), s - multiple) if s < p else 0
                   for o, s, p in zip(overlap, size, padded))
    tops, lefts = [window_starts(p, s, o) for p, s, o in zip(padded, size, shared)]
    return Grid(size, shared, tops, lefts, padded, (height, width))


def checked_grid(model, height, width, tile, overlap, blend, where):
    """The ``Grid`` over an image of ``height`` x ``width``, once ``tile``, ``overlap`` (ints or pairs) and
    ``blend`` are checked (``where``: the public call that the errors name)."""
    tile, overlap = pair(where, "tile", tile, minimum=1), pair(where, "overlap", overlap)
    if any(o >= t for o, t in zip(overlap, tile)):
        raise ValueError(f"{where}: overlap must be smaller than tile, got overlap {overlap} and tile {tile}; "
                         "lower the overlap")
    if blend not in BLENDS:
        raise ValueError(f"{where}: blend must be one of {', '.join(BLENDS)}, got {blend!r}")
    return _grid(height, width, tile, overlap, model.size_multiple)


def _summed_profile(starts, length, overlap, blend, size):
    """The 1-D profiles of windows of ``length`` at ``starts`` along an axis of ``size``, added up: the summed
    weights of the grid of windows are the outer product of the rows' and the columns' sums."""
    summed = np.zeros(size, np.float32)
    for start in starts:
        summed[start:start + length] += _profile(length, overlap, blend, start == 0, start + length == size)
    return summed


def summed_weights(grid, blend, device):
    """float32 (H,) and (W,) on ``device``: the summed weights of ``grid``'s windows are their outer product,
    so dividing by one and then the other normalizes without an (H, W) array."""
    (rows, columns), (height, width) = grid.window, grid.image
    return (backend.to_device(_summed_profile(grid.tops, rows, grid.overlap[0], blend, grid.padded[0])[:height],
                              device),
            backend.to_device(_summed_profile(grid.lefts, columns, grid.overlap[1], blend, grid.padded[1])[:width],
                              device))


def weighted_windows(model, cut, images, grid, blend, batch_size=None, flips=None, average="logits",
                     device="cpu", progress=False):
    """Yield ``(image, top, left, weighted)`` for every window of ``grid`` over ``images`` images, in order:
    image by image, row of windows by row of windows, left to right. ``weighted``: the window's logits
    (C, h, w) times its blend weights, cropped to the part that is image, not padding.

    ``cut(image, top, left)``: the window's normalized pixels (3, h, w), a NumPy array cut short where the
    window reaches past the image; the rest is zero-padded here. ``batch_size`` windows (None:
    ``BATCH_PIXELS`` worth) go to ``device`` and through the model at once (``flip_logits``).
    """
    (rows, columns), (height, width), padded = grid.window, grid.image, grid.padded
    windows = [(image, top, left) for image in range(images) for top in grid.tops for left in grid.lefts]
    batch_size = batch_size or max(1, BATCH_PIXELS // (rows * columns))
    weights = {}  # one weight map per kind of window position (corner, edge, inside): a handful in all
    bar = tqdm(total=len(windows), desc="windows", unit="window", disable=not progress, leave=False)
    for first in range(0, len(windows), batch_size):
        batch = windows[first:first + batch_size]
        x = np.stack([_padded(cut(image, top, left), rows, columns) for image, top, left in batch])
        logits = flip_logits(model, backend.to_device(x.astype(np.float32, copy=False), device), flips, average)
        for (image, top, left), window in zip(batch, logits):
            borders = (top == 0, top + rows == padded[0], left == 0, left + columns == padded[1])
            if borders not in weights:
                weights[borders] = backend.to_device(blend_weights(rows, columns, grid.overlap, blend, borders),
                                                     device)
            yield image, top, left, crop_padding(window * weights[borders], height - top, width - left)
        bar.update(len(batch))
    bar.close()


def tiled_logits(model, pixels, tile, overlap=0, blend="gaussian", batch_size=None, flips=None,
                 average="logits", device="cpu", progress=False, where="tiled_logits"):
    """float32 logits (N, C, H, W) of normalized images ``pixels`` (N, 3, H, W), predicted window by window.

    ``pixels`` is a NumPy array: it stays on the host, and only each batch of windows moves to ``device``.
    ``tile`` and ``overlap`` (an int or a pair: rows, columns) are rounded up to the model's ``size_multiple``;
    ``batch_size`` windows go through the model at once (None: ``BATCH_PIXELS`` worth; with ``flips``, each
    also flipped: ``flip_logits``).
    A tile as large as the image predicts it in one window, exactly as the whole-image pass does.
    ``tiled_stream.tiled_class_ids`` gives the same class ids holding one row of windows' logits, not all.
    """
    images, height, width = pixels.shape[0], pixels.shape[-2], pixels.shape[-1]
    grid = checked_grid(model, height, width, tile, overlap, blend, where)
    rows, columns = grid.window

    def cut(image, top, left):
        return pixels[image, :, top:top + rows, left:left + columns]

    total = None
    for image, top, left, weighted in weighted_windows(model, cut, images, grid, blend, batch_size, flips,
                                                       average, device, progress):
        if total is None:
            total = backend.get_array_module(weighted).zeros((images, len(weighted), height, width), np.float32)
        total[image, :, top:top + weighted.shape[-2], left:left + weighted.shape[-1]] += weighted
    row_sums, column_sums = summed_weights(grid, blend, device)
    total /= row_sums[:, None]
    total /= column_sums[None, :]
    return total  # two 1-D divisions: the summed weights are never an (H, W) array


def whole_logits(model, pixels, flips=None, average="logits", device="cpu"):
    """Logits (N, C, H, W) of ``pixels`` in one pass: padded to the model's ``size_multiple``, cropped back."""
    height, width = pixels.shape[-2:]
    padded = backend.to_device(pad_to_multiple(pixels, model.size_multiple), device)
    return crop_padding(flip_logits(model, padded, flips, average), height, width)


def windows_count(height, width, tile, overlap, multiple):
    """How many windows ``tiled_logits`` runs for one image of ``height`` x ``width``."""
    grid = _grid(height, width, pair("windows_count", "tile", tile, minimum=1),
                 pair("windows_count", "overlap", overlap), multiple)
    return len(grid.tops) * len(grid.lefts)


# ---------------------------------------------------------------------------------------------
# How much memory a whole-image pass needs
# ---------------------------------------------------------------------------------------------
def forward_bytes_per_pixel(model, sizes=(256, 512)):
    """Bytes a forward pass of ``model`` allocates at its peak, per input pixel, measured on the CPU.

    A fully convolutional network's activations grow in proportion to the pixels, so two square inputs (rounded
    up to ``size_multiple``) give the slope; ``tracemalloc`` sees every NumPy allocation. A first, untraced pass
    makes the workspaces that persist between calls (the convolution's im2col chunk, ``conv_numpy``), so they do
    not count as growth. The process's resident memory is higher than what NumPy holds at once: the allocator
    keeps some freed pages.
    """
    sides = [padded_size(side, model.size_multiple) for side in sizes]
    sides[1] = max(sides[1], 2 * sides[0])
    with no_grad():  # a first pass makes the workspaces that persist between calls, so both peaks count them alike
        model(Tensor(np.zeros((1, 3, sides[1], sides[1]), np.float32)))
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        peaks = []
        for side in sides:
            x = np.zeros((1, 3, side, side), np.float32)
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            with no_grad():
                model(Tensor(x))
            peaks.append(tracemalloc.get_traced_memory()[1] - before)
    finally:
        if not tracing:
            tracemalloc.stop()
    return max(peaks[1] - peaks[0], 0) / (sides[1] ** 2 - sides[0] ** 2)


def receptive_field(model, size=256, trials=2, seed=0):
    """(rows, columns): the extent of the input pixels the centre output pixel of ``model`` depends on.

    The course's probe (docs/course_3_models.md) on a whole model: backpropagate a gradient of 1 at the centre
    output pixel of class 0 and see which input pixels receive one. ``model`` (on the CPU) should be in eval mode,
    so batch norm uses its running statistics, as in prediction. A ReLU that is off for one input hides the paths
    through it, so the gradients of ``trials`` random inputs are added up. ``size`` must exceed the field.
    """
    side = padded_size(size, model.size_multiple)
    reached = np.zeros((side, side), bool)
    generator = np.random.default_rng(seed)
    for _ in range(trials):
        x = Tensor(generator.standard_normal((1, 3, side, side)).astype(np.float32), requires_grad=True)
        y = model(x)
        grad = np.zeros(y.shape, np.float32)
        grad[0, 0, side // 2, side // 2] = 1
        y.backward(grad)
        reached |= (np.asarray(x.grad) != 0).any(axis=(0, 1))
    rows, columns = np.nonzero(reached.any(axis=1))[0], np.nonzero(reached.any(axis=0))[0]
    if rows[0] == 0 or columns[0] == 0 or rows[-1] == side - 1 or columns[-1] == side - 1:
        raise ValueError(f"receptive_field: the field reaches the border of the {side}x{side} probe; "
                         "pass a larger size")
    return int(rows[-1] - rows[0] + 1), int(columns[-1] - columns[0] + 1)
