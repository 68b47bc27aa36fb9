"""RoIAlign (Mask R-CNN): a fixed-size feature map for each box, bilinearly sampled without rounding.

A box (RoI) [x1, y1, x2, y2] in image coordinates becomes [x1·s, y1·s, x2·s, y2·s] on a feature map with
``spatial_scale`` s (minus half a pixel with ``aligned=True``, so that a box's edge lands on the edge of a pixel
rather than its centre). It is cut into ``output_size`` = (Ho, Wo) equal bins, each bin is sampled on a regular
gh × gw grid of points (``sampling_ratio``, or ceil(bin size) points per axis when it is −1), each point's value is
the bilinear interpolation of its four neighbouring pixels, and the bin's output is their mean. Unlike RoIPool
nothing is rounded to whole pixels, so a feature moves smoothly with its box. The numbers, down to how points
near and past the border are treated, are ``torchvision.ops.roi_align``'s; the formula and its derivative are in
``RoIAlignFunction``'s docstring.

The sample points of one RoI form a grid: a point's row depends only on (bin row, sample row), its column only on
(bin column, sample column). Bilinear interpolation is a weight per row times a weight per column, so the whole
RoI is two small matrices, rows then columns: ``_axis_weights`` builds one. The sample-by-sample loop that this
equals, written from the definition, is ``roi_align_reference`` in ``tests/test_roi_align.py``.
"""
import math

import numpy as np

from ..arguments import is_int, pair
from ..autograd import Function, as_tensor
from ..backend import get_array_module, to_device
from .boxes import as_array

__all__ = ["roi_align", "convert_boxes_to_roi_format"]


# ---------------------------------------------------------------------------
# One RoI: where its samples are, and which pixels they read along each axis
# ---------------------------------------------------------------------------
def _roi_geometry(box, spatial_scale, output_size, sampling_ratio, aligned, dtype):
    """Per axis (rows, then columns): (start, bin size, samples per bin, bins) of one RoI on the feature map.

    Computed in the input's dtype and in the order torchvision's kernel computes them, so the sample points agree.
    """
    scale, offset = dtype.type(spatial_scale), dtype.type(0.5 if aligned else 0.0)
    x1, y1, x2, y2 = (dtype.type(v) * scale - offset for v in box)
    axes = []
    for start, end, pooled in ((y1, y2, output_size[0]), (x1, x2, output_size[1])):
        length = end - start
        if not aligned:  # a malformed or sub-pixel RoI is treated as one pixel long
            length = max(length, dtype.type(1.0))
        bin_size = length / dtype.type(pooled)
        grid = sampling_ratio if sampling_ratio > 0 else int(math.ceil(bin_size))
        axes.append((start, bin_size, grid, pooled))
    return axes


def _axis_weights(xp, start, bin_size, grid, pooled, size, dtype):
    """A (pooled, size) matrix A: along one axis of one RoI, output row p = Σ_i A[p, i] · (input row i).

    Bin p's samples sit at c = start + p·bin_size + (s + ½)·bin_size / grid, s < grid. A sample outside
    [−1, size] reads 0; otherwise c is clamped to [0, size − 1] and shared between rows ⌊c⌋ and ⌊c⌋ + 1 with
    weights 1 − (c − ⌊c⌋) and c − ⌊c⌋ (all of it on the last row when ⌊c⌋ reaches it). Each sample weighs 1/grid,
    so A[p] is the mean over the bin's samples. No samples (grid ≤ 0, a negative RoI with aligned=True): zeros.
    """
    if grid <= 0:
        return xp.zeros((pooled, size), dtype)
    p = xp.arange(pooled, dtype=dtype)[:, None]
    s = xp.arange(grid, dtype=dtype)[None, :]
    c = start + p * bin_size + (s + dtype.type(0.5)) * bin_size / dtype.type(grid)  # (pooled, grid)
    inside = (c >= -1.0) & (c <= size)
    c = xp.maximum(c, dtype.type(0))
    low = xp.floor(c)
    at_end = low >= size - 1
    low = xp.where(at_end, dtype.type(size - 1), low)
    high = xp.where(at_end, low, low + 1)
    frac = xp.where(at_end, dtype.type(0), c - low)  # the weight of row `high`
    share = inside.astype(dtype) / dtype.type(grid)
    rows = xp.arange(size, dtype=dtype)
    weights = ((rows == low[..., None]) * ((1 - frac) * share)[..., None]
               + (rows == high[..., None]) * (frac * share)[..., None])  # (pooled, grid, size)
    return weights.sum(axis=1).astype(dtype, copy=False)


def _used_span(xp, weights):
    """The slice of input rows (or columns) that ``weights`` reads; None when it reads none."""
    used = xp.nonzero(weights.any(axis=0))[0]
    return None if used.size == 0 else slice(int(used[0]), int(used[-1]) + 1)


def _roi_weights(xp, roi, x_shape, output_size, spatial_scale, sampling_ratio, aligned, dtype):
    """(batch index, rows, row weights, columns, column weights) of one RoI, or None when it reads no pixel.

    rows and columns are slices of the feature map; the weight matrices are cut to them.
    """
    (y_axis, x_axis) = _roi_geometry(roi[1:], spatial_scale, output_size, sampling_ratio, aligned, dtype)
    row_weights = _axis_weights(xp, *y_axis, x_shape[2], dtype)
    col_weights = _axis_weights(xp, *x_axis, x_shape[3], dtype)
    rows, cols = _used_span(xp, row_weights), _used_span(xp, col_weights)
    if rows is None or cols is None:
        return None
    return int(roi[0]), rows, row_weights[:, rows], cols, col_weights[:, cols]


# ---------------------------------------------------------------------------
# Function
# ---------------------------------------------------------------------------
class RoIAlignFunction(Function):
    """y[k, c] = A_k · x[b_k, c] · B_kᵀ : the bin means of bilinear samples, rows through A_k, columns through B_k.

    Written out, y[k, c, i, j] = 1/(gh·gw) Σ_{s<gh} Σ_{t<gw} bilinear(x[b_k, c], Y_k(i, s), X_k(j, t)) with RoI k's
    sample rows Y_k and columns X_k; the bilinear weight of a pixel is a row weight times a column weight, so the
    double sum is the product with A_k (Ho × H) and B_k (Wo × W) from ``_axis_weights``. y is linear in x, so
    dL/dx[b_k, c] = Σ_k A_kᵀ · gy[k, c] · B_k: every sample hands its gradient back to its four pixels with the
    weights it read them with, added up where RoIs and samples share pixels. The boxes get no gradient (as in
    torchvision: the box regression learns from its own loss, not through the pooled features).
    """

    def __init__(self, rois, output_size, spatial_scale, sampling_ratio, aligned):
        self.rois = rois  # (K, 5) NumPy array [batch index, x1, y1, x2, y2]
        self.output_size, self.spatial_scale = output_size, spatial_scale
        self.sampling_ratio, self.aligned = sampling_ratio, aligned

    def forward(self, x):
        xp = get_array_module(x)
        self.x_shape = x.shape
        self.weights = [_roi_weights(xp, roi, x.shape, self.output_size, self.spatial_scale, self.sampling_ratio,
                                     self.aligned, x.dtype) for roi in self.rois]
        y = xp.zeros((len(self.rois), x.shape[1]) + self.output_size, x.dtype)
        for k, roi_weights in enumerate(self.weights):
            if roi_weights is not None:  # a RoI that reads no pixel pools to zeros
                b, rows, row_weights, cols, col_weights = roi_weights
                y[k] = row_weights @ x[b, :, rows, cols] @ col_weights.T
        return y

    def backward(self, grad_y):
        xp = get_array_module(grad_y)
        grad_x = xp.zeros(self.x_shape, grad_y.dtype)
        for k, roi_weights in enumerate(self.weights):
            if roi_weights is not None:
                b, rows, row_weights, cols, col_weights = roi_weights
                grad_x[b, :, rows, cols] += row_weights.T @ grad_y[k] @ col_weights
        return (grad_x,)


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------
def convert_boxes_to_roi_format(boxes):
    """A list of per-image (k_i, 4) boxes as one (Σ k_i, 5) array [image index, x1, y1, x2, y2] (torchvision's)."""
    arrays = [as_array(b, "roi_align", f"boxes[{i}]") for i, b in enumerate(boxes)]
    if not arrays:
        return np.zeros((0, 5), np.float32)
    xp = get_array_module(*arrays)
    dtype = arrays[0].dtype if arrays[0].dtype.kind == "f" else np.dtype(np.float32)
    return xp.concatenate([xp.concatenate([xp.full((len(b), 1), i, dtype), b.astype(dtype)], axis=1)
                           for i, b in enumerate(arrays)])


def _rois_for(boxes, batch_size):
    """``boxes`` as a (K, 5) NumPy array of RoIs whose batch indices exist in the input."""
    if isinstance(boxes, (list, tuple)):
        rois = convert_boxes_to_roi_format(boxes)
    else:
        rois = as_array(boxes, "roi_align", columns=5)
    rois = to_device(rois, "cpu").astype(np.float64 if rois.dtype == np.float64 else np.float32, copy=False)
    batch_index = rois[:, 0]
    if rois.size and (batch_index.min() < 0 or batch_index.max() >= batch_size
                      or np.any(batch_index != np.floor(batch_index))):
        raise ValueError(f"roi_align: boxes must start with a batch index in 0..{batch_size - 1} (the input holds "
                         f"{batch_size} images), got {np.unique(batch_index)[:10].tolist()}")
    return rois


def roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """The features of ``input`` (N, C, H, W) inside each box, resampled to (K, C, Ho, Wo) (torchvision's roi_align).

    ``boxes``: a (K, 5) array or Tensor of [batch index, x1, y1, x2, y2], or a list of N per-image (k_i, 4) arrays.
    Coordinates are in the image; ``spatial_scale`` maps them onto this feature map (1/stride). ``output_size`` is
    (Ho, Wo) or one int. ``sampling_ratio``: sample points per bin along each axis, or −1 for ceil(bin size).
    ``aligned=True`` shifts the box by half a pixel so that its edges fall on pixel edges (Detectron2's choice);
    False is the Mask R-CNN paper's. The gradient flows to ``input`` only. See the module docstring.
    """
    input = as_tensor(input)
    if input.ndim != 4:
        raise ValueError(f"roi_align: input must be 4-D (N, C, H, W), got shape {input.shape}")
    if input.dtype.kind != "f":
        raise TypeError(f"roi_align: input must be floating point, got dtype {input.dtype}")
    output_size = pair("roi_align", "output_size", output_size, 1)
    if not is_int(sampling_ratio):
        raise TypeError(f"roi_align: sampling_ratio must be an int (−1 for adaptive), got {sampling_ratio!r}")
    if not spatial_scale > 0:
        raise ValueError(f"roi_align: spatial_scale must be positive (1 / the feature map's stride), "
                         f"got {spatial_scale!r}")
    rois = _rois_for(boxes, input.shape[0])
    return RoIAlignFunction(rois, output_size, float(spatial_scale), int(sampling_ratio), bool(aligned))(input)
