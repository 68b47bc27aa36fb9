"""Boxes as arrays: area, pairwise IoU, clipping, small-box removal, and the regression code of Faster R-CNN.

A box is ``[x1, y1, x2, y2]`` in pixel-edge coordinates (an instance covering columns a..b has x1 = a, x2 = b + 1),
so its width is ``x2 − x1`` and its area ``(x2 − x1)(y2 − y1)``. Every function takes (N, 4) arrays (NumPy or
CuPy; a Tensor is read through its ``.data``) and returns arrays: nothing here is differentiated. A detector's box
loss compares its predicted *codes* with the encoded targets (``encode_boxes``), so the gradient never has to pass
through ``decode_boxes``. The names and numbers are torchvision's (``torchvision.ops.boxes`` and
``torchvision.models.detection._utils.BoxCoder``).
"""
import math

import numpy as np

from ..autograd import Tensor
from ..backend import get_array_module

__all__ = ["box_area", "box_iou", "box_intersection", "clip_boxes_to_image", "remove_small_boxes", "encode_boxes",
           "decode_boxes", "BoxCoder"]

# exp(dw) is clamped so a wild regression output cannot make a box wider than 1000/16 times its anchor.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def as_array(boxes, where, name="boxes", columns=4):
    """``boxes`` (array, Tensor or nested list) as an (N, columns) array; the check every box function shares."""
    array = boxes.data if isinstance(boxes, Tensor) else boxes
    if not hasattr(array, "shape"):
        array = np.asarray(array, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != columns:
        raise ValueError(f"{where}: {name} must have shape (N, {columns}), got {tuple(array.shape)}; "
                         f"pass one row [x1, y1, x2, y2] per box" + (" after its batch index" if columns == 5 else ""))
    return array


# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------
def box_area(boxes):
    """Area (x2 − x1)(y2 − y1) of each of the (N, 4) boxes: an (N,) array."""
    boxes = as_array(boxes, "box_area")
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1, boxes2):
    """Intersection over union of every pair: iou[i, j] of boxes1[i] (N, 4) and boxes2[j] (M, 4), an (N, M) array.

    The intersection of two boxes is the box from the larger top-left corner to the smaller bottom-right corner,
    empty (area 0) when those corners cross; union = area1 + area2 − intersection. Two boxes of zero area give
    0 / 0 = nan, as in torchvision (NumPy's warning about it is silenced).
    """
    boxes1, boxes2 = as_array(boxes1, "box_iou", "boxes1"), as_array(boxes2, "box_iou", "boxes2")
    inter = box_intersection(boxes1, boxes2)
    union = box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def box_intersection(boxes1, boxes2):
    """The area of every pair's intersection (``box_iou``'s numerator), an (N, M) array: the box from the larger
    top-left corner to the smaller bottom-right corner, 0 where those corners cross."""
    boxes1, boxes2 = as_array(boxes1, "box_intersection", "boxes1"), as_array(boxes2, "box_intersection", "boxes2")
    xp = get_array_module(boxes1, boxes2)
    top_left = xp.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    bottom_right = xp.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    width_height = xp.clip(bottom_right - top_left, 0, None)
    return width_height[..., 0] * width_height[..., 1]


def clip_boxes_to_image(boxes, size):
    """The boxes with x clamped to [0, width] and y to [0, height]; ``size`` is (height, width) as torchvision."""
    boxes = as_array(boxes, "clip_boxes_to_image")
    height, width = size
    xp = get_array_module(boxes)
    clipped = boxes.copy()
    clipped[:, 0::2] = xp.clip(boxes[:, 0::2], 0, width)
    clipped[:, 1::2] = xp.clip(boxes[:, 1::2], 0, height)
    return clipped


def remove_small_boxes(boxes, min_size):
    """Indices (int64, ascending) of the boxes whose width and height are both at least ``min_size``."""
    boxes = as_array(boxes, "remove_small_boxes")
    xp = get_array_module(boxes)
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return xp.nonzero((widths >= min_size) & (heights >= min_size))[0].astype(np.int64)


# ---------------------------------------------------------------------------
# The regression code: a box relative to a reference box (anchor or proposal)
# ---------------------------------------------------------------------------
def _centres_and_sizes(boxes):
    """(centre x, centre y, width, height) of each box, as (N, 1) columns."""
    widths, heights = boxes[:, 2:3] - boxes[:, 0:1], boxes[:, 3:4] - boxes[:, 1:2]
    return boxes[:, 0:1] + 0.5 * widths, boxes[:, 1:2] + 0.5 * heights, widths, heights


def encode_boxes(reference_boxes, proposals, weights=(1.0, 1.0, 1.0, 1.0)):
    """The code (dx, dy, dw, dh) that moves each of ``proposals`` (N, 4) onto its ``reference_boxes`` row (N, 4).

    With (x, y, w, h) a proposal's centre and size and (X, Y, W, H) its reference box's (the matched ground truth,
    in torchvision's words), and ``weights`` = (wx, wy, ww, wh):

        dx = wx (X − x) / w,   dy = wy (Y − y) / h,   dw = ww log(W / w),   dh = wh log(H / h)

    Shifts are measured in units of the proposal's size and scales as logarithms, so one regression target means
    the same relative move for a small and a large box. Returns (N, 4) in the boxes' dtype.
    """
    reference_boxes = as_array(reference_boxes, "encode_boxes", "reference_boxes")
    proposals = as_array(proposals, "encode_boxes", "proposals")
    xp = get_array_module(reference_boxes, proposals)
    wx, wy, ww, wh = (reference_boxes.dtype.type(w) for w in weights)
    x, y, w, h = _centres_and_sizes(proposals)
    gt_x, gt_y, gt_w, gt_h = _centres_and_sizes(reference_boxes)
    return xp.concatenate([wx * (gt_x - x) / w, wy * (gt_y - y) / h,
                           ww * xp.log(gt_w / w), wh * xp.log(gt_h / h)], axis=1)


def decode_boxes(rel_codes, boxes, weights=(1.0, 1.0, 1.0, 1.0), bbox_xform_clip=BBOX_XFORM_CLIP):
    """The boxes that the codes ``rel_codes`` (N, 4·k) describe relative to ``boxes`` (N, 4): (N, 4·k).

    The inverse of ``encode_boxes``: centre x + (dx / wx)·w, width w·exp(dw / ww), and so on, with dw / ww and
    dh / wh clamped at ``bbox_xform_clip`` (log(1000/16)) from above before the exponential. k > 1 decodes one box
    per class from a class-specific regressor (torchvision's ``decode_single``); the result has rel_codes' dtype.
    """
    rel_codes = rel_codes.data if isinstance(rel_codes, Tensor) else rel_codes
    boxes = as_array(boxes, "decode_boxes")
    if rel_codes.ndim != 2 or rel_codes.shape[1] % 4 != 0 or rel_codes.shape[0] != boxes.shape[0]:
        raise ValueError(f"decode_boxes: rel_codes must have shape (N, 4·k) with N = {boxes.shape[0]} boxes, "
                         f"got {tuple(rel_codes.shape)}; pass one row of (dx, dy, dw, dh) per box and class")
    xp = get_array_module(rel_codes, boxes)
    dtype = rel_codes.dtype
    x, y, w, h = _centres_and_sizes(boxes.astype(dtype, copy=False))
    wx, wy, ww, wh = (dtype.type(v) for v in weights)
    dx, dy = rel_codes[:, 0::4] / wx, rel_codes[:, 1::4] / wy
    dw = xp.minimum(rel_codes[:, 2::4] / ww, dtype.type(bbox_xform_clip))
    dh = xp.minimum(rel_codes[:, 3::4] / wh, dtype.type(bbox_xform_clip))
    centre_x, centre_y = dx * w + x, dy * h + y
    half_w, half_h = dtype.type(0.5) * (xp.exp(dw) * w), dtype.type(0.5) * (xp.exp(dh) * h)
    decoded = xp.stack([centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], axis=2)
    return decoded.reshape(rel_codes.shape)


class BoxCoder:
    """torchvision's ``BoxCoder``: the weights (and clamp) of one head, for ``encode_boxes``/``decode_boxes``.

    The RPN uses weights (1, 1, 1, 1) and the box head (10, 10, 5, 5), which scales its targets to a similar range.
    """

    def __init__(self, weights, bbox_xform_clip=BBOX_XFORM_CLIP):
        self.weights, self.bbox_xform_clip = tuple(weights), bbox_xform_clip

    def encode_single(self, reference_boxes, proposals):
        return encode_boxes(reference_boxes, proposals, self.weights)

    def decode_single(self, rel_codes, boxes):
        return decode_boxes(rel_codes, boxes, self.weights, self.bbox_xform_clip)
