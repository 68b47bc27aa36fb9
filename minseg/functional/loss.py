"""Segmentation losses: pixel-wise cross-entropy, focal loss, soft Dice and soft Jaccard (IoU).

All take logits ``input`` (N, C, H, W) — or (N, C), or (N, C, d1, d2, ...) — and class
ids ``target`` (N, H, W) and return a Tensor; combining losses is adding them
(``F.cross_entropy(x, t) + F.dice_loss(x, t)``).

* ``cross_entropy`` and ``focal_loss`` are fused Functions: log-softmax and the pick of
  the target's log-probability in one node, with no log-probability array stored in
  between (the derivations are in ``SoftmaxCrossEntropyFunction`` and
  ``SoftmaxFocalFunction``). Cross-entropy's array functions,
  ``softmax_cross_entropy_forward/backward``, are where NumPy or ``minseg.cuda``'s kernels
  (same names and arguments) are chosen; their NumPy code (``_PixelSoftmax``) is the
  reference the kernels are tested against.
* ``dice_loss`` and ``jaccard_loss`` are compositions of differentiable ops (softmax,
  products, sums), because their gradients are nothing but the chain rule.
"""
import numpy as np

from .. import backend, cuda
from ..autograd import Function, Tensor, as_tensor
from ..ops import softmax
from .one_hot import check_class_ids, one_hot

__all__ = ["cross_entropy", "focal_loss", "dice_loss", "jaccard_loss",
           "softmax_cross_entropy_forward", "softmax_cross_entropy_backward"]

_REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------------------
# The per-pixel softmax shared by cross-entropy and focal loss (NumPy or CuPy)
# ---------------------------------------------------------------------------
def _target_positions(target, num_classes):
    """Flat indices of ``logits[n, target[n, *p], *p]`` in a C-contiguous (N, C, *) array.

    One fancy index both reads the target's logit and, in backward, subtracts the
    one-hot: no (N, C, H, W) one-hot array is ever built.
    """
    xp = backend.get_array_module(target)
    batch_size, pixels_per_image = target.shape[0], int(np.prod(target.shape[1:], dtype=np.int64))
    image = xp.arange(batch_size).reshape((batch_size,) + (1,) * (target.ndim - 1))
    pixel = xp.arange(pixels_per_image).reshape(target.shape[1:])
    return (image * num_classes + target) * pixels_per_image + pixel


class _PixelSoftmax:
    """softmax(x) and log softmax(x)[target] per pixel, computed stably, plus each pixel's weight.

    With m = max_c x_c (the log-sum-exp trick: every exponent is ≤ 0, so e^(x − m) never
    overflows and ±1e4 logits stay finite):
        log p_target = (x_target − m) − log Σ_c e^(x_c − m)
    ``exp_shifted`` = e^(x − m) and ``sum_exp`` are kept, since softmax = exp_shifted / sum_exp.
    pixel_weight = class_weight[target] (1 without class weights), 0 where target == ignore_index.
    """

    def __init__(self, logits, target, class_weight, ignore_index):
        xp = backend.get_array_module(logits)
        logits = xp.ascontiguousarray(logits)  # the flat ``positions`` assume C order
        max_logit = logits.max(axis=1, keepdims=True)
        self.exp_shifted = logits - max_logit
        xp.exp(self.exp_shifted, out=self.exp_shifted)
        self.sum_exp = self.exp_shifted.sum(axis=1)

        valid = target != ignore_index
        safe_target = xp.where(valid, target, 0)  # any real class: its weight is 0 anyway
        self.positions = _target_positions(safe_target, logits.shape[1])
        shifted_target_logit = logits.reshape(-1)[self.positions] - max_logit[:, 0]
        self.log_prob_target = shifted_target_logit - xp.log(self.sum_exp)
        if class_weight is None:
            self.pixel_weight = valid.astype(logits.dtype)
        else:
            self.pixel_weight = class_weight[safe_target] * valid

    def grad_logits(self, scale):
        """scale · (softmax − one_hot(target)) per pixel, for a per-pixel ``scale`` (N, *).

        Written into the saved exp buffer: backward runs once per Function (the engine
        releases it afterwards), and skipping a fresh (N, C, H, W) array saves time.
        """
        grad_logits = self.exp_shifted
        grad_logits *= (scale / self.sum_exp)[:, None]
        grad_logits.reshape(-1)[self.positions] -= scale  # positions are distinct, so -= hits each once
        return grad_logits

    def cross_entropy(self):
        """(loss, pixel_weight) per pixel, loss = −pixel_weight · log p_target."""
        loss = self.log_prob_target
        loss *= -self.pixel_weight  # cross-entropy needs log_prob_target no more: reuse its memory
        return loss, self.pixel_weight

    def cross_entropy_backward(self, grad_loss):
        """grad_loss · pixel_weight · (softmax − one_hot(target)), from the softmax kept since the forward."""
        return self.grad_logits(grad_loss * self.pixel_weight)


class _PixelSoftmaxKernels:
    """``_PixelSoftmax``'s cross-entropy, on ``minseg.cuda``'s fused kernels (float32 CuPy arrays).

    It keeps only the arguments: the backward kernel computes the softmax again from the logits,
    in registers, which costs less on a GPU than storing and re-reading an (N, C, H, W) buffer.
    """

    def __init__(self, logits, target, class_weight, ignore_index):
        target = backend.get_array_module(target).asarray(target, dtype=np.int64)
        self.arguments = (logits, target, class_weight, ignore_index)

    def cross_entropy(self):
        return cuda.softmax_cross_entropy_forward(*self.arguments)

    def cross_entropy_backward(self, grad_loss):
        return cuda.softmax_cross_entropy_backward(*self.arguments, grad_loss)


# ---------------------------------------------------------------------------
# The cross-entropy array functions: the one place NumPy or minseg.cuda is chosen
# ---------------------------------------------------------------------------
def _cross_entropy_pixels(logits, target, class_weight, ignore_index):
    """The per-pixel softmax for cross-entropy: ``minseg.cuda``'s kernels for float32 CuPy logits,
    the NumPy-style ``_PixelSoftmax`` (NumPy, or CuPy in other dtypes) for anything else."""
    on_kernels = backend.device_of(logits) == "cuda" and logits.dtype == np.float32
    return (_PixelSoftmaxKernels if on_kernels else _PixelSoftmax)(logits, target, class_weight, ignore_index)


def softmax_cross_entropy_forward(logits, target, class_weight, ignore_index):
    """(loss, pixel_weight) per pixel, loss = pixel_weight · (logsumexp(logits) − logits[target]).

    logits (N, C, *), target (N, *) integer, class_weight (C,) or None; both results have the
    target's shape. Float32 CuPy arrays run ``minseg.cuda.softmax_cross_entropy_forward`` (same
    names and arguments); anything else runs ``_PixelSoftmax``, the kernel's reference.
    """
    return _cross_entropy_pixels(logits, target, class_weight, ignore_index).cross_entropy()


def softmax_cross_entropy_backward(logits, target, class_weight, ignore_index, grad_loss):
    """grad_logits = grad_loss · pixel_weight · (softmax(logits) − one_hot(target)), shaped like logits.

    ``grad_loss`` (the target's shape) is d(loss)/d(per-pixel loss). Float32 CuPy arrays run
    ``minseg.cuda.softmax_cross_entropy_backward`` (same names and arguments); anything else
    ``_PixelSoftmax``. Called on its own it computes the softmax again; the cross-entropy
    Function instead keeps the forward's ``_cross_entropy_pixels`` object, which on the CPU
    holds the softmax already computed.
    """
    return _cross_entropy_pixels(logits, target, class_weight, ignore_index).cross_entropy_backward(grad_loss)


def _reduce(loss, pixel_weight, reduction):
    """Per-pixel loss -> 'none' | 'sum' | 'mean' (divided by the total weight of the counted pixels)."""
    if reduction == "none":
        return loss, None
    total = loss.sum()
    if reduction == "sum":
        return total, None
    weight_sum = pixel_weight.sum()
    # PyTorch divides 0 by 0 here and returns NaN; see cross_entropy's docstring.
    return (total / weight_sum if float(weight_sum) > 0 else total * 0), weight_sum


def _upstream_per_pixel(grad_output, reduction, weight_sum):
    """d(reduced loss)/d(pixel loss) times the upstream gradient: what each pixel's loss receives."""
    if reduction == "mean":
        return grad_output / weight_sum if float(weight_sum) > 0 else grad_output * 0
    return grad_output  # 'sum': the scalar broadcasts; 'none': already per pixel


class SoftmaxCrossEntropyFunction(Function):
    """loss_i = w[t_i] · (log Σ_c e^(x_ic) − x_i,t_i) for each pixel i, then reduced.

    Backward: the log-sum-exp's gradient is the softmax and the picked logit's is the
    one-hot of the target, so d loss_i / d x_ic = w[t_i] · (softmax(x_i)_c − [c = t_i]),
    times what the reduction hands each pixel (1/Σ w for 'mean'). Ignored pixels have
    w = 0 and get no gradient. One node: the pixels object of ``_cross_entropy_pixels``
    (the one CPU/GPU switch) computes both directions; on a GPU, one kernel each.
    """

    def __init__(self, class_weight, ignore_index, reduction):
        self.class_weight, self.ignore_index, self.reduction = class_weight, ignore_index, reduction

    def forward(self, logits, target):
        self.pixels = _cross_entropy_pixels(logits, target, self.class_weight, self.ignore_index)
        loss, self.pixel_weight = self.pixels.cross_entropy()
        reduced, self.weight_sum = _reduce(loss, self.pixel_weight, self.reduction)
        return reduced

    def backward(self, grad_output):
        upstream = _upstream_per_pixel(grad_output, self.reduction, self.weight_sum)
        grad_loss = backend.get_array_module(upstream).broadcast_to(upstream, self.pixel_weight.shape)
        return self.pixels.cross_entropy_backward(grad_loss), None


class SoftmaxFocalFunction(Function):
    """loss_i = −w[t_i] · (1 − p_i)^γ · log p_i, with p_i = softmax(x_i)[t_i] (Lin et al., 2017).

    The factor (1 − p)^γ shrinks the loss of pixels that are already right, so training
    attends to the hard ones; γ = 0 is cross-entropy. With ℓ = log p and q = 1 − p,
        d loss / d ℓ = −w (q^γ − γ p q^(γ−1) ℓ)   and   d ℓ / d x_c = [c = t] − softmax_c,
    so the gradient is cross-entropy's (softmax − one_hot), scaled per pixel by
    q^γ (1 − γ p ℓ/q). ℓ/q → −1 as p → 1, which keeps the scale finite even for γ < 1.
    """

    def __init__(self, gamma, class_weight, ignore_index, reduction):
        self.gamma, self.class_weight = gamma, class_weight
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(self, logits, target):
        xp = backend.get_array_module(logits)
        self.pixels = _PixelSoftmax(logits, target, self.class_weight, self.ignore_index)
        log_p = self.pixels.log_prob_target
        self.q = -xp.expm1(log_p)  # 1 − p without the cancellation of 1 − exp(ℓ) near p = 1
        self.modulation = self.q ** self.gamma
        loss = -(self.modulation * log_p) * self.pixels.pixel_weight
        reduced, self.weight_sum = _reduce(loss, self.pixels.pixel_weight, self.reduction)
        return reduced

    def backward(self, grad_output):
        xp = backend.get_array_module(grad_output)
        log_p, q = self.pixels.log_prob_target, self.q
        nonzero_q = q > 0
        log_p_over_q = xp.where(nonzero_q, log_p / xp.where(nonzero_q, q, 1), log_p.dtype.type(-1))
        scale = self.modulation * (1 - self.gamma * (1 - q) * log_p_over_q)
        upstream = _upstream_per_pixel(grad_output, self.reduction, self.weight_sum)
        return self.pixels.grad_logits(upstream * self.pixels.pixel_weight * scale), None


# ---------------------------------------------------------------------------
# Argument checks shared by every loss
# ---------------------------------------------------------------------------
def _check_input_and_target(input, target, ignore_index, where):
    """Logits as a Tensor and class ids as a raw array, or an error naming the bad argument."""
    input = as_tensor(input)
    target = target.data if isinstance(target, Tensor) else target
    if input.dtype.kind != "f":
        raise TypeError(f"{where}: input must be floating-point logits, got dtype {input.dtype}")
    if input.ndim < 2 or input.shape[1] < 1:
        raise ValueError(f"{where}: input must be logits (N, C) or (N, C, H, W) with C >= 1, got shape {input.shape}")
    if not hasattr(target, "dtype"):
        target = np.asarray(target)
    expected = (input.shape[0],) + input.shape[2:]
    if tuple(target.shape) != expected:
        raise ValueError(f"{where}: input has shape {input.shape}, so target must have shape {expected}, "
                         f"but target has shape {tuple(target.shape)}")
    backend.check_same_device([input.data, target], where)
    xp = backend.get_array_module(input.data)
    if not bool(xp.isfinite(input.data).all()):
        count = int((~xp.isfinite(input.data)).sum())
        raise ValueError(f"{where}: input holds {count} NaN or infinite logits; the loss would be NaN "
                         "(did training diverge? try a lower learning rate)")
    target = check_class_ids(target, input.shape[1], ignore_index, where=where)
    return input, target


def _check_class_weight(weight, input, where):
    """weight (C,) as a raw array with the input's dtype and device, or None."""
    if weight is None:
        return None
    weight = weight.data if isinstance(weight, Tensor) else weight
    weight = backend.to_device(weight if hasattr(weight, "shape") else np.asarray(weight), input.device)
    num_classes = input.shape[1]
    if tuple(weight.shape) != (num_classes,):
        raise ValueError(f"{where}: weight must have one entry per class, shape ({num_classes},), "
                         f"but has shape {tuple(weight.shape)}")
    return weight.astype(input.dtype)  # a copy: the caller's array is never touched


def _check_ignore_index(ignore_index, where):
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"{where}: ignore_index must be an integer class id, got {ignore_index!r}")


def _check_reduction(reduction, where):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{where}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


# ---------------------------------------------------------------------------
# The public losses
# ---------------------------------------------------------------------------
def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Pixel-wise cross-entropy of logits ``input`` (N, C, *) against class ids ``target`` (N, *).

    loss_i = weight[t_i] · (−log softmax(input_i)[t_i]) for every pixel i whose target
    is not ``ignore_index`` (ignored pixels contribute 0 and get no gradient), then
    'none': the (N, *) per-pixel losses; 'sum': their sum; 'mean': their sum divided by
    the sum of weight[t_i] over the non-ignored pixels — PyTorch's definition, so with
    class weights it is a weighted average, not sum / pixel count.

    A batch in which every pixel is ignored (or every counted pixel has weight 0) gives
    loss 0 and a zero gradient. PyTorch returns NaN there (0/0); minseg returns 0 on
    purpose, so that one crop holding only void pixels cannot turn a run's weights to NaN.
    Non-finite logits raise a ValueError instead of producing a NaN loss.
    """
    _check_reduction(reduction, "cross_entropy")
    _check_ignore_index(ignore_index, "cross_entropy")
    input, target = _check_input_and_target(input, target, ignore_index, "cross_entropy")
    class_weight = _check_class_weight(weight, input, "cross_entropy")
    return SoftmaxCrossEntropyFunction(class_weight, int(ignore_index), reduction)(input, Tensor(target))


def focal_loss(input, target, gamma=2.0, weight=None, ignore_index=-100, reduction="mean"):
    """Multi-class focal loss: −weight[t] (1 − p_t)^gamma log p_t per pixel, p_t = softmax(input)[t].

    Same conventions as ``cross_entropy`` (ignored pixels count 0; 'mean' divides by the
    summed weights of the counted pixels, 0 when there are none), so gamma = 0 gives
    exactly ``cross_entropy``. gamma must be >= 0; 2 is the paper's choice.
    """
    _check_reduction(reduction, "focal_loss")
    _check_ignore_index(ignore_index, "focal_loss")
    if not np.isscalar(gamma) or not gamma >= 0:
        raise ValueError(f"focal_loss: gamma must be a number >= 0, got {gamma!r}")
    input, target = _check_input_and_target(input, target, ignore_index, "focal_loss")
    class_weight = _check_class_weight(weight, input, "focal_loss")
    return SoftmaxFocalFunction(float(gamma), class_weight, int(ignore_index), reduction)(input, Tensor(target))


def _soft_overlap(input, target, ignore_index, where):
    """Per class c, summed over the batch and all pixels: Σ p·g, Σ p and Σ g.

    p = softmax(input) over classes, g = one_hot(target); pixels equal to ``ignore_index``
    are left out of all three sums.
    """
    if ignore_index is not None:
        _check_ignore_index(ignore_index, where)
    input, target = _check_input_and_target(input, target, ignore_index, where)
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


def dice_loss(input, target, smooth=1.0, ignore_index=None):
    """Soft multi-class Dice loss: 1 − (1/C) Σ_c (2 Σ p_c g_c + s) / (Σ p_c + Σ g_c + s).

    p = softmax(input) over the class axis, g = one_hot(target), s = ``smooth``; each sum
    runs over the whole batch and every pixel (one Dice score per class for the batch,
    not per image), then the C scores are averaged with equal weight.

    Every class counts in the average, also one absent from the target: its score is
    s / (Σ p_c + s), which is 1 when the network puts no probability on it and falls
    toward 0 as it does, so the loss punishes predicting a class that is not there.
    A class absent from both prediction and target scores exactly 1 (s/s), which is why
    smooth must be > 0. Pixels equal to ``ignore_index`` are left out of every sum.
    Returns a scalar Tensor.
    """
    _check_smooth(smooth, "dice_loss")
    intersection, prob_sum, target_sum = _soft_overlap(input, target, ignore_index, "dice_loss")
    dice = (2 * intersection + smooth) / (prob_sum + target_sum + smooth)
    return 1 - dice.mean()


def jaccard_loss(input, target, smooth=1.0, ignore_index=None):
    """Soft multi-class Jaccard (IoU) loss: 1 − (1/C) Σ_c (Σ p_c g_c + s) / (Σ p_c + Σ g_c − Σ p_c g_c + s).

    The soft intersection over the soft union; every convention (sums over batch and
    pixels, equal-weight mean over all C classes, a class absent from both prediction
    and target scoring 1, smooth > 0, ignored pixels left out) is that of ``dice_loss``.
    """
    _check_smooth(smooth, "jaccard_loss")
    intersection, prob_sum, target_sum = _soft_overlap(input, target, ignore_index, "jaccard_loss")
    iou = (intersection + smooth) / (prob_sum + target_sum - intersection + smooth)
    return 1 - iou.mean()
