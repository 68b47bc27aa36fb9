"""Non-maximum suppression: of boxes that overlap, keep the highest-scoring one.

A detector proposes many boxes around each object; NMS keeps a box unless a better-scoring box it overlaps by
IoU > ``iou_threshold`` was kept already. ``nms`` is the greedy loop as torchvision's CPU kernel runs it (boxes
visited by decreasing score, equal scores in index order); ``batched_nms`` runs it for many classes at once by
moving each class's boxes far from the others' so that boxes of different classes never overlap. Arrays in,
int64 index arrays out; nothing here is differentiated.
"""
import numpy as np

from ..autograd import Tensor
from ..backend import get_array_module
from .boxes import as_array

__all__ = ["nms", "batched_nms"]


def _scores_for(boxes, scores, where, name="scores"):
    """``scores`` as a 1-D array with one entry per box."""
    scores = scores.data if isinstance(scores, Tensor) else scores
    if not hasattr(scores, "shape"):
        scores = np.asarray(scores)
    if scores.shape != (boxes.shape[0],):
        raise ValueError(f"{where}: {name} must have shape (N,) = ({boxes.shape[0]},), one per box, "
                         f"got {tuple(scores.shape)}")
    return scores


def nms(boxes, scores, iou_threshold):
    """Indices (int64) of the boxes (N, 4) that survive non-maximum suppression, by decreasing score.

    Take the best remaining box (a stable sort: equal scores in index order), keep it, and drop every remaining
    box it overlaps with IoU > ``iou_threshold``; repeat until no box remains. Equals ``torchvision.ops.nms``.
    """
    boxes = as_array(boxes, "nms")
    scores = _scores_for(boxes, scores, "nms")
    xp = get_array_module(boxes, scores)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = xp.argsort(-scores, kind="stable")  # the boxes not yet kept or suppressed, best first
    keep = []
    while order.size:
        best, rest = int(order[0]), order[1:]
        keep.append(best)
        # box_iou of the best box with each remaining one (written out: the areas are computed once).
        width = xp.maximum(0, xp.minimum(x2[best], x2[rest]) - xp.maximum(x1[best], x1[rest]))
        height = xp.maximum(0, xp.minimum(y2[best], y2[rest]) - xp.maximum(y1[best], y1[rest]))
        inter = width * height
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = inter / (areas[best] + areas[rest] - inter)
        # "not >" rather than "<=": a box whose IoU is undefined (0 / 0, two empty boxes) is not suppressed.
        order = rest[~(iou > iou_threshold)]
    return xp.asarray(keep, dtype=np.int64)


def batched_nms(boxes, scores, idxs, iou_threshold):
    """``nms`` within each category ``idxs`` (N,): boxes of different categories never suppress each other.

    Every box of category c is shifted by c·(largest coordinate + 1) along both axes, which puts each category's
    boxes in a square of their own, apart from all others (torchvision's coordinate trick); one ``nms`` on the
    shifted boxes then runs every category at once. Returns int64 indices by decreasing score.
    """
    boxes = as_array(boxes, "batched_nms")
    scores = _scores_for(boxes, scores, "batched_nms")
    idxs = _scores_for(boxes, idxs, "batched_nms", "idxs")
    xp = get_array_module(boxes, scores, idxs)
    if boxes.shape[0] == 0:
        return xp.zeros(0, dtype=np.int64)
    offsets = idxs.astype(boxes.dtype) * (boxes.max() + boxes.dtype.type(1))
    return nms(boxes + offsets[:, None], scores, iou_threshold)
