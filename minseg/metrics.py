"""How good is a segmentation? Everything here is computed from one confusion matrix.

``confusion_matrix(pred, target, C)`` counts pixels: entry [i, j] is the number of
pixels whose TARGET class is i and whose PREDICTED class is j (rows = truth, columns =
prediction, as in scikit-learn). For class c:

    TP = cm[c, c]    FN = row c minus TP (missed)    FP = column c minus TP (false alarms)
    IoU_c  = TP / (TP + FP + FN)              (intersection over union)
    Dice_c = 2 TP / (2 TP + FP + FN)  = 2 IoU_c / (1 + IoU_c)

The absent-class rule: a class absent from both the prediction and the target has
TP + FP + FN = 0, so its IoU and Dice are 0/0. minseg reports NaN for it in the
per-class results and leaves it out of the means (``nanmean``): a class that did not
occur can be neither right nor wrong, and counting it as 1 (or 0) would move the mean
by a number that says nothing about the model. A class present in only one of the two
scores 0. If no class occurs at all, the means are NaN too.

Because every metric is a function of the matrix, and matrices of batches simply add,
``SegmentationMetrics`` accumulates one matrix over a whole validation pass and gives
exactly the numbers one big ``confusion_matrix`` call would.

One measure is not in the matrix: ``boundary_accuracy``, the pixel accuracy inside a band of a few pixels around
the target's label edges. Mean IoU is dominated by the interiors of regions; a post-processing step that only
moves boundaries (the fully connected CRF, ``minseg.crf``) shows there.
"""
import numpy as np

from . import backend
from .autograd import Tensor
from .functional.one_hot import check_class_ids

__all__ = ["confusion_matrix", "pixel_accuracy", "per_class_iou", "mean_iou", "per_class_dice", "mean_dice",
           "foreground_accuracy", "SegmentationMetrics", "boundary_band", "boundary_counts", "boundary_accuracy"]


def _raw(value):
    return value.data if isinstance(value, Tensor) else value


def _check_num_classes(num_classes, where):
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"{where}: num_classes must be a positive integer, got {num_classes!r}")


def confusion_matrix(pred, target, num_classes, ignore_index=None):
    """int64 (C, C) NumPy array; [i, j] counts pixels with target class i predicted as class j.

    pred and target: class ids of the same shape (e.g. (N, H, W)), NumPy or CuPy arrays
    or Tensors; for logits use ``F.to_class_ids(logits)`` first. Pixels whose target is
    ``ignore_index`` are not counted at all. One ``bincount`` of ``target·C + pred`` does
    the counting (on the GPU for CuPy inputs; only the C×C result is copied back).
    """
    _check_num_classes(num_classes, "confusion_matrix")
    pred, target = _raw(pred), _raw(target)
    pred = pred if hasattr(pred, "shape") else np.asarray(pred)
    target = target if hasattr(target, "shape") else np.asarray(target)
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"confusion_matrix: pred has shape {tuple(pred.shape)} but target has shape "
                         f"{tuple(target.shape)}; pass class ids for both (F.to_class_ids(logits) for pred)")
    backend.check_same_device([pred, target], "confusion_matrix")
    check_class_ids(pred, num_classes, where="confusion_matrix", name="pred")
    check_class_ids(target, num_classes, ignore_index, where="confusion_matrix")
    xp = backend.get_array_module(target)
    pred, target = pred.reshape(-1), target.reshape(-1)
    if ignore_index is not None:
        counted = target != ignore_index
        pred, target = pred[counted], target[counted]
    pairs = target.astype(xp.int64) * num_classes + pred.astype(xp.int64)
    counts = xp.bincount(pairs, minlength=num_classes * num_classes)
    return backend.to_device(counts.reshape(num_classes, num_classes), "cpu").astype(np.int64, copy=False)


def _as_matrix(cm, where):
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"{where}: cm must be a square (C, C) confusion matrix, got shape {cm.shape}")
    return cm


def _ratio(numerator, denominator):
    """numerator / denominator as float64, NaN where the denominator is 0 (nothing to measure)."""
    numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    out = np.full(np.broadcast_shapes(numerator.shape, denominator.shape), np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _nanmean(values):
    """Mean of the non-NaN entries as a float; NaN (without NumPy's warning) when there are none."""
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else float("nan")


def pixel_accuracy(cm):
    """Correct pixels / counted pixels (NaN if no pixel was counted)."""
    cm = _as_matrix(cm, "pixel_accuracy")
    return float(_ratio(np.trace(cm), cm.sum()))


def foreground_accuracy(cm, void_class):
    """Accuracy over the pixels whose TARGET is not ``void_class`` (fastai's CamVid metric).

    A non-void pixel predicted as void counts as wrong; void pixels count neither way.
    """
    cm = _as_matrix(cm, "foreground_accuracy")
    if isinstance(void_class, bool) or not isinstance(void_class, (int, np.integer)) or not 0 <= void_class < len(cm):
        raise ValueError(f"foreground_accuracy: void_class must be a class id in [0, {len(cm)}), got {void_class!r}")
    foreground = np.arange(len(cm)) != void_class
    return float(_ratio(np.diag(cm)[foreground].sum(), cm[foreground].sum()))


def _tp_fp_fn(cm):
    true_positive = np.diag(cm)
    return true_positive, cm.sum(axis=0) - true_positive, cm.sum(axis=1) - true_positive


def per_class_iou(cm):
    """(C,) float64: TP / (TP + FP + FN) per class; NaN for a class absent from prediction and target."""
    tp, fp, fn = _tp_fp_fn(_as_matrix(cm, "per_class_iou"))
    return _ratio(tp, tp + fp + fn)


def mean_iou(cm):
    """Mean of ``per_class_iou`` over the classes that occur (NaN entries left out)."""
    return _nanmean(per_class_iou(cm))


def per_class_dice(cm):
    """(C,) float64: 2 TP / (2 TP + FP + FN) per class (the F1 score); NaN for an absent class."""
    tp, fp, fn = _tp_fp_fn(_as_matrix(cm, "per_class_dice"))
    return _ratio(2 * tp, 2 * tp + fp + fn)


def mean_dice(cm):
    """Mean of ``per_class_dice`` over the classes that occur (NaN entries left out)."""
    return _nanmean(per_class_dice(cm))


# ---------------------------------------------------------------------------
# Near the label edges
# ---------------------------------------------------------------------------
def boundary_band(target, width=3):
    """Bool mask of the pixels at most ``width`` pixels (in x and in y) from a label edge of ``target``.

    ``target``: class ids (H, W) or (..., H, W). A pixel is on an edge when one of its four neighbours has another
    label; the band is the edges grown by ``width`` in every direction (a (2·width + 1)² square), so width=0 is
    the edge pixels alone.
    """
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 0:
        raise ValueError(f"boundary_band: width must be an int >= 0, got {width!r}")
    target = _raw(target)
    xp = backend.get_array_module(target)
    band = xp.zeros(target.shape, dtype=bool)
    vertical = target[..., 1:, :] != target[..., :-1, :]
    horizontal = target[..., :, 1:] != target[..., :, :-1]
    band[..., 1:, :] |= vertical
    band[..., :-1, :] |= vertical
    band[..., :, 1:] |= horizontal
    band[..., :, :-1] |= horizontal
    for _ in range(width):                  # grow by one pixel in each of the 8 directions
        grown = band.copy()
        grown[..., 1:, :] |= band[..., :-1, :]
        grown[..., :-1, :] |= band[..., 1:, :]
        band = grown.copy()
        band[..., :, 1:] |= grown[..., :, :-1]
        band[..., :, :-1] |= grown[..., :, 1:]
    return band


def boundary_counts(pred, target, width=3, ignore_index=None):
    """(correct, counted) pixels inside ``boundary_band(target, width)``, ``ignore_index`` pixels left out; the
    counts of several images add, like confusion matrices."""
    pred, target = _raw(pred), _raw(target)
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"boundary_counts: pred has shape {tuple(pred.shape)} but target has shape "
                         f"{tuple(target.shape)}; pass class ids for both (F.to_class_ids(logits) for pred)")
    band = boundary_band(target, width)
    if ignore_index is not None:
        band &= target != ignore_index
    return int(((pred == target) & band).sum()), int(band.sum())


def boundary_accuracy(pred, target, width=3, ignore_index=None):
    """Pixel accuracy within ``width`` pixels of the target's label edges (NaN when there is no edge)."""
    correct, counted = boundary_counts(pred, target, width, ignore_index)
    return float(_ratio(correct, counted))


class SegmentationMetrics:
    """Accumulates a confusion matrix batch by batch; ``compute()`` turns it into the metrics.

    ``update(pred, target)`` takes class ids — pred as (N, H, W) integers, not logits
    (use ``F.to_class_ids(logits)``) — as NumPy or CuPy arrays or Tensors. Matrices of
    batches add, so the result equals one ``confusion_matrix`` over all batches at once.
    ``ignore_index`` pixels are not counted; ``void_class`` pixels are counted in every
    metric except ``foreground_accuracy`` (pass ``ignore_index=void_class`` to drop them
    everywhere).
    """

    def __init__(self, num_classes, ignore_index=None, void_class=None):
        _check_num_classes(num_classes, "SegmentationMetrics")
        if void_class is not None and not 0 <= void_class < num_classes:
            raise ValueError(f"SegmentationMetrics: void_class must be a class id in [0, {num_classes}), "
                             f"got {void_class!r}")
        self.num_classes, self.ignore_index, self.void_class = num_classes, ignore_index, void_class
        self.reset()

    def reset(self):
        """Forget every counted pixel (call at the start of each validation pass)."""
        self.confusion = np.zeros((self.num_classes, self.num_classes), np.int64)

    def update(self, pred, target):
        """Add one batch's pixels to the running confusion matrix."""
        self.confusion += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def compute(self):
        """The metrics of every pixel seen since the last reset, as a dict of floats and lists.

        Keys: "pixel_accuracy", "foreground_accuracy" (only with a void_class), "mean_iou",
        "per_class_iou" (a list with NaN for absent classes), "mean_dice", "per_class_dice".
        """
        cm = self.confusion
        results = {"pixel_accuracy": pixel_accuracy(cm)}
        if self.void_class is not None:
            results["foreground_accuracy"] = foreground_accuracy(cm, self.void_class)
        results["mean_iou"] = mean_iou(cm)
        results["per_class_iou"] = per_class_iou(cm).tolist()
        results["mean_dice"] = mean_dice(cm)
        results["per_class_dice"] = per_class_dice(cm).tolist()
        return results

    def __repr__(self):
        return (f"SegmentationMetrics(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
                f"void_class={self.void_class}, pixels={int(self.confusion.sum())})")
