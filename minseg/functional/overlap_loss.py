"""Soft Dice and soft Jaccard (IoU) losses: the overlap of the softmax with the one-hot target, per class.

Both take logits ``input`` (N, C, H, W) — or (N, C), or (N, C, d1, d2, ...) — and class
ids ``target`` (N, H, W), with the argument checks of loss.py, and return a scalar
Tensor. They are compositions of differentiable ops (softmax, products, sums), not
Functions of their own, because their gradients are nothing but the chain rule.
Losses combine by adding them (``F.cross_entropy(x, t) + F.dice_loss(x, t)``).
"""
import numpy as np

from ..autograd import Tensor
from ..ops import softmax
from .loss import check_ignore_index, check_input_and_target
from .one_hot import one_hot

__all__ = ["dice_loss", "jaccard_loss"]


# ---------------------------------------------------------------------------
# The soft overlap of prediction and target
# ---------------------------------------------------------------------------
def _soft_overlap(input, target, ignore_index, where):
    """Per class c, summed over the batch and all pixels: Σ p·g, Σ p and Σ g.

    p = softmax(input) over classes, g = one_hot(target); pixels equal to ``ignore_index``
    are left out of all three sums.
    """
    if ignore_index is not None:
        check_ignore_index(ignore_index, where)
    input, target = check_input_and_target(input, target, ignore_index, where)
    target_one_hot = one_hot(target, input.shape[1], ignore_index, dtype=input.dtype).data
    probs = softmax(input, 1)
    if ignore_index is not None:
        valid = (target != ignore_index)[:, None].astype(input.dtype)
        probs = probs * Tensor(valid)
    axes = (0,) + tuple(range(2, input.ndim))  # everything but the class axis
    intersection = (probs * Tensor(target_one_hot)).sum(axes)
    return intersection, probs.sum(axes), Tensor(target_one_hot.sum(axis=axes))


def _check_smooth(smooth, where):
    if not np.isscalar(smooth) or not smooth > 0:
        raise ValueError(f"{where}: smooth must be > 0, got {smooth!r}; it keeps a class absent from "
                         "both prediction and target at (0 + smooth)/(0 + smooth) = 1 instead of 0/0 "
                         "(use a small value such as 1e-5 for nearly the unsmoothed score)")


# ---------------------------------------------------------------------------
# The public losses
# ---------------------------------------------------------------------------
def dice_loss(input, target, smooth=1.0, ignore_index=-100):
    """Soft multi-class Dice loss: 1 − (1/C) Σ_c (2 Σ p_c g_c + s) / (Σ p_c + Σ g_c + s).

    p = softmax(input) over the class axis, g = one_hot(target), s = ``smooth``; each sum
    runs over the whole batch and every pixel (one Dice score per class for the batch,
    not per image), then the C scores are averaged with equal weight.

    Every class counts in the average, also one absent from the target: its score is
    s / (Σ p_c + s), which is 1 when the network puts no probability on it and falls
    toward 0 as it does, so the loss punishes predicting a class that is not there.
    A class absent from both prediction and target scores exactly 1 (s/s), which is why
    smooth must be > 0. Pixels equal to ``ignore_index`` are left out of every sum; its
    default, -100, is ``cross_entropy``'s, so the two add up on the same padded targets
    (None: every pixel counts). Returns a scalar Tensor.
    """
    _check_smooth(smooth, "dice_loss")
    intersection, prob_sum, target_sum = _soft_overlap(input, target, ignore_index, "dice_loss")
    dice = (2 * intersection + smooth) / (prob_sum + target_sum + smooth)
    return 1 - dice.mean()


def jaccard_loss(input, target, smooth=1.0, ignore_index=-100):
    """Soft multi-class Jaccard (IoU) loss: 1 − (1/C) Σ_c (Σ p_c g_c + s) / (Σ p_c + Σ g_c − Σ p_c g_c + s).

    The soft intersection over the soft union; every convention (sums over batch and
    pixels, equal-weight mean over all C classes, a class absent from both prediction
    and target scoring 1, smooth > 0, ignored pixels left out) is that of ``dice_loss``.
    """
    _check_smooth(smooth, "jaccard_loss")
    intersection, prob_sum, target_sum = _soft_overlap(input, target, ignore_index, "jaccard_loss")
    iou = (intersection + smooth) / (prob_sum + target_sum - intersection + smooth)
    return 1 - iou.mean()
