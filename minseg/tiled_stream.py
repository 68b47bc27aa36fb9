"""Tiled prediction one row of windows at a time: class ids of an image of any size in memory for one band.

``tiling.tiled_logits`` is the plain version: it adds every window's weighted logits into one float32 array of
the whole image's logits (C x H x W) and divides by the summed weights at the end, so its memory grows with the
image. This module walks the same windows in the same order, batched the same way (``tiling.weighted_windows``),
but keeps only a **band**: the weighted logits of the rows one row of windows covers (C x window rows x W).

The windows come row of windows by row of windows, top to bottom. When the row of windows starting at row ``top``
begins, no later window touches the rows above ``top``: those rows of the band are final. They are divided by
the summed weights (``tiling.summed_weights``) and handed on (``tiled_rows``), and the band moves down to
``top``: the rows the new windows share with the old ones keep their sums, the rest start from zero. With
``tile=4, overlap=1`` the rows of windows start at rows 0, 3, 6, ...::

    while the windows at top 0 run      the band holds image rows 0 1 2 3
    when the windows at top 3 begin     rows 0 1 2 are final: divided by the summed weights, handed on;
                                        row 3 moves to the band's first row, the band's other rows are zeroed
    while the windows at top 3 run      the band holds image rows 3 4 5 6

Each window is normalized as it is cut from the uint8 (or float) image, so there is no float32 copy of the whole
image either. What stays in memory: the image, the class ids (``tiled_class_ids``), the band and one batch of
windows through the model; past one row of windows, a taller image adds only its own pixels and ids.

Every pixel's weighted logits are added in the same order and divided by the same sums as in ``tiled_logits``,
so the rows are bit for bit its rows and the class ids its argmax (``tests/test_tiled_stream.py``).
"""
import numpy as np

from . import backend
from .data.loader import normalize
from .tiling import checked_grid, summed_weights, weighted_windows

__all__ = ["tiled_rows", "tiled_class_ids"]


# ---------------------------------------------------------------------------------------------
# The band
# ---------------------------------------------------------------------------------------------
def _final_rows(band, count, row_sums, column_sums):
    """The first ``count`` rows of ``band`` (C, rows, W), divided by the summed weights of those rows and of
    every column, in the order ``tiled_logits`` divides (rows first, so the bits agree)."""
    rows = band[:, :count] / row_sums[:, None]
    rows /= column_sums[None, :]
    return rows


def _move_down(band, step):
    """The band ``step`` rows further down the image: its rows from ``step`` on become its first rows, and the
    rows below them, which no window has reached yet, start from zero."""
    kept = band.shape[1] - step
    band[:, :kept] = band[:, step:].copy()  # a copy: the two ranges overlap
    band[:, kept:] = 0


def _normalized_cut(images, mean, std, rows, columns):
    """``cut(image, top, left)`` for ``tiling.weighted_windows``: the window's pixels of ``images``
    (N, H, W, 3), normalized (``data.loader.normalize``) as they are cut: float32 (3, h, w)."""
    def cut(image, top, left):
        part = images[image:image + 1, top:top + rows, left:left + columns]
        return normalize(part if part.dtype == np.uint8 else part.astype(np.float32), mean, std)[0]
    return cut


def _check_images(images, where):
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[-1] != 3 or not (
            images.dtype == np.uint8 or images.dtype.kind == "f"):
        found = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise ValueError(f"{where}: images must be a NumPy array (N, H, W, 3), uint8 or float in [0, 1], got "
                         f"{found}; stack the images (or image[None] for one)")


# ---------------------------------------------------------------------------------------------
# Walking the windows with one band
# ---------------------------------------------------------------------------------------------
def _band_rows(model, images, mean, std, grid, blend, batch_size, flips, average, device, progress):
    """``tiled_rows``'s generator, its arguments checked."""
    count, height, width = images.shape[:3]
    cut = _normalized_cut(images, mean, std, *grid.window)
    row_sums, column_sums = summed_weights(grid, blend, device)
    band, band_image, band_top = None, 0, 0  # the band holds rows band_top .. band_top + window rows - 1
    for image, top, left, weighted in weighted_windows(model, cut, count, grid, blend, batch_size, flips,
                                                       average, device, progress):
        if band is None:
            band = backend.get_array_module(weighted).zeros((len(weighted), grid.window[0], width), np.float32)
        if image != band_image:  # a new image: the rest of the last one is final
            yield band_image, band_top, _final_rows(band, height - band_top, row_sums[band_top:], column_sums)
            band[...] = 0
            band_image, band_top = image, top
        elif top != band_top:  # a new row of windows: the rows above it are final
            yield image, band_top, _final_rows(band, top - band_top, row_sums[band_top:top], column_sums)
            _move_down(band, top - band_top)
            band_top = top
        band[:, :weighted.shape[1], left:left + weighted.shape[2]] += weighted
    yield band_image, band_top, _final_rows(band, height - band_top, row_sums[band_top:], column_sums)


# ---------------------------------------------------------------------------------------------
# Public: rows of logits as they become final, and the class ids
# ---------------------------------------------------------------------------------------------
def tiled_rows(model, images, mean, std, tile, overlap=0, blend="gaussian", batch_size=None, flips=None,
               average="logits", device="cpu", progress=False, where="tiled_rows"):
    """An iterator of ``(image, top, logits)``: float32 logits (C, r, W) of rows ``top`` .. ``top + r - 1`` of
    image ``image`` of ``images`` (N, H, W, 3), each row once, top to bottom, image by image, as soon as the
    windows below can no longer change it. For a caller that wants logits, not class ids, without holding all.

    The rows are those of ``tiled_logits(model, normalize(images, mean, std), tile, ...)`` (same arguments,
    same bits), on ``device``; ``images`` is a NumPy array of uint8 (0..255) or float (0..1) pixels, normalized
    with ``mean`` and ``std`` window by window. Memory: one band of C x window rows x W float32 logits.
    The arguments are checked here, before the first window runs.
    """
    _check_images(images, where)
    grid = checked_grid(model, images.shape[1], images.shape[2], tile, overlap, blend, where)
    return _band_rows(model, images, mean, std, grid, blend, batch_size, flips, average, device, progress)


def tiled_class_ids(model, images, mean, std, tile, overlap=0, blend="gaussian", batch_size=None, flips=None,
                    average="logits", device="cpu", progress=False, where="tiled_class_ids"):
    """int64 (N, H, W): the class ids of ``images`` (N, H, W, 3), uint8 or float in [0, 1], predicted window
    by window and blended; the argmax of ``tiled_logits`` over the same windows, exactly.

    The arguments are ``tiled_rows``'s, whose rows are turned into class ids as they come, so the logits of
    the whole image never exist: memory grows with the image only by its pixels and its ids.
    """
    rows = tiled_rows(model, images, mean, std, tile, overlap, blend, batch_size, flips, average, device,
                      progress, where)
    ids = np.empty(images.shape[:3], np.int64)
    for image, top, logits in rows:
        ids[image, top:top + logits.shape[1]] = backend.to_device(logits.argmax(axis=0), "cpu")
    return ids
