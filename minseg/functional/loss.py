"""Pixel-wise cross-entropy and focal loss: softmax and the target's log-probability in one node.

Both take logits ``input`` (N, C, H, W) — or (N, C), or (N, C, d1, d2, ...) — and class
ids ``target`` (N, H, W) and return a Tensor. Each is one fused Function, with no
log-probability array stored in between; the derivations are in
``SoftmaxCrossEntropyFunction`` and ``SoftmaxFocalFunction``.

Cross-entropy's two array functions, ``softmax_cross_entropy_forward`` and
``softmax_cross_entropy_backward``, choose once per call who computes, as the
convolution's do: float32 CuPy arrays go to ``minseg.cuda``'s functions of the same
names and arguments, anything else to ``_PixelSoftmax`` (NumPy, or CuPy in other
dtypes), the reference the kernels are tested against. Focal loss has no kernel; it
runs ``_PixelSoftmax`` on either library. The soft Dice and Jaccard losses are in
overlap_loss.py; losses combine by adding them (``F.cross_entropy(x, t) + F.dice_loss(x, t)``).
"""
import numpy as np

from .. import backend, cuda
from ..autograd import Function, Tensor, as_tensor
from ..backend import get_array_module
from .one_hot import check_class_ids

__all__ = ["cross_entropy", "focal_loss", "softmax_cross_entropy_forward", "softmax_cross_entropy_backward"]

_REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------------------
# The per-pixel softmax (NumPy or CuPy): cross-entropy's reference, and focal loss
# ---------------------------------------------------------------------------
def _target_positions(target, num_classes):
    """Flat indices of ``logits[n, target[n, *p], *p]`` in a C-contiguous (N, C, *) array.

    One fancy index both reads the target's logit and, in backward, subtracts the
    one-hot: no (N, C, H, W) one-hot array is ever built.
    """
    xp = get_array_module(target)
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
        xp = get_array_module(logits)
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

        Written into the exp buffer, which nothing reads afterwards (one object serves one
        backward); skipping a fresh (N, C, H, W) array saves time.
        """
        grad_logits = self.exp_shifted
        grad_logits *= (scale / self.sum_exp)[:, None]
        grad_logits.reshape(-1)[self.positions] -= scale  # positions are distinct, so -= hits each once
        return grad_logits

    def cross_entropy(self):
        """(loss, pixel_weight) per pixel, loss = −pixel_weight · log p_target: ``softmax_cross_entropy_forward``'s."""
        loss = self.log_prob_target
        loss *= -self.pixel_weight  # cross-entropy needs log_prob_target no more: reuse its memory
        return loss, self.pixel_weight

    def cross_entropy_backward(self, grad_loss):
        """grad_loss · pixel_weight · (softmax − one_hot(target)): ``softmax_cross_entropy_backward``'s reference."""
        return self.grad_logits(grad_loss * self.pixel_weight)


# ---------------------------------------------------------------------------
# The cross-entropy array functions: the one place NumPy or minseg.cuda is chosen
# ---------------------------------------------------------------------------
def softmax_cross_entropy_forward(logits, target, class_weight, ignore_index):
    """(loss, pixel_weight, saved) per pixel, loss = pixel_weight · (logsumexp(logits) − logits[target]).

    logits (N, C, *), target (N, *) integer, class_weight (C,) or None; loss and pixel_weight have
    the target's shape. pixel_weight = class_weight[target] (1 without class weights), 0 where
    target == ignore_index. ``saved`` is what ``softmax_cross_entropy_backward`` may reuse instead
    of computing the softmax again: NumPy's ``_PixelSoftmax`` (which holds e^(x − m) and its sum),
    or None from the kernel, whose backward recomputes them from the logits. Float32 CuPy arrays
    run ``minseg.cuda.softmax_cross_entropy_forward``; anything else ``_PixelSoftmax``.
    """
    if get_array_module(logits) is np or logits.dtype != np.float32:
        pixels = _PixelSoftmax(logits, target, class_weight, ignore_index)
        return (*pixels.cross_entropy(), pixels)
    return (*cuda.softmax_cross_entropy_forward(logits, _int64(target), class_weight, ignore_index), None)


def softmax_cross_entropy_backward(logits, target, class_weight, ignore_index, grad_loss, saved=None):
    """grad_logits = grad_loss · pixel_weight · (softmax(logits) − one_hot(target)), shaped like logits.

    ``grad_loss`` (the target's shape) is d(loss)/d(per-pixel loss). ``saved`` is the forward's third
    result: the NumPy path turns its e^(x − m) buffer into the gradient in place (so one ``saved``
    serves one backward); without it the softmax is computed again from the logits. Float32 CuPy
    arrays run ``minseg.cuda.softmax_cross_entropy_backward``; anything else ``_PixelSoftmax``.
    """
    if get_array_module(logits) is np or logits.dtype != np.float32:
        pixels = saved if saved is not None else _PixelSoftmax(logits, target, class_weight, ignore_index)
        return pixels.cross_entropy_backward(grad_loss)
    return cuda.softmax_cross_entropy_backward(logits, _int64(target), class_weight, ignore_index, grad_loss)


def _int64(target):
    """The class ids as int64, the type minseg.cuda's kernels read (no copy when they already are)."""
    return get_array_module(target).asarray(target, dtype=np.int64)


# ---------------------------------------------------------------------------
# The Functions
# ---------------------------------------------------------------------------
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
    w = 0 and get no gradient. Per pixel, the forward is ``softmax_cross_entropy_forward``
    and the backward ``softmax_cross_entropy_backward`` (one kernel each on a GPU).
    """

    def __init__(self, class_weight, ignore_index, reduction):
        self.class_weight, self.ignore_index, self.reduction = class_weight, ignore_index, reduction

    def forward(self, logits, target):
        self.logits, self.target = logits, target
        loss, self.pixel_weight, self.saved = softmax_cross_entropy_forward(logits, target, self.class_weight,
                                                                            self.ignore_index)
        reduced, self.weight_sum = _reduce(loss, self.pixel_weight, self.reduction)
        return reduced

    def backward(self, grad_output):
        upstream = _upstream_per_pixel(grad_output, self.reduction, self.weight_sum)
        grad_loss = get_array_module(upstream).broadcast_to(upstream, self.pixel_weight.shape)
        return softmax_cross_entropy_backward(self.logits, self.target, self.class_weight, self.ignore_index,
                                              grad_loss, self.saved), None


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
        xp = get_array_module(logits)
        self.pixels = _PixelSoftmax(logits, target, self.class_weight, self.ignore_index)
        log_p = self.pixels.log_prob_target
        self.q = -xp.expm1(log_p)  # 1 − p without the cancellation of 1 − exp(ℓ) near p = 1
        self.modulation = self.q ** self.gamma
        loss = -(self.modulation * log_p) * self.pixels.pixel_weight
        reduced, self.weight_sum = _reduce(loss, self.pixels.pixel_weight, self.reduction)
        return reduced

    def backward(self, grad_output):
        xp = get_array_module(grad_output)
        log_p, q = self.pixels.log_prob_target, self.q
        nonzero_q = q > 0
        log_p_over_q = xp.where(nonzero_q, log_p / xp.where(nonzero_q, q, 1), log_p.dtype.type(-1))
        scale = self.modulation * (1 - self.gamma * (1 - q) * log_p_over_q)
        upstream = _upstream_per_pixel(grad_output, self.reduction, self.weight_sum)
        return self.pixels.grad_logits(upstream * self.pixels.pixel_weight * scale), None


# ---------------------------------------------------------------------------
# Argument checks shared by every loss
# ---------------------------------------------------------------------------
def check_input_and_target(input, target, ignore_index, where):
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
    xp = get_array_module(input.data)
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


def check_ignore_index(ignore_index, where):
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
    check_ignore_index(ignore_index, "cross_entropy")
    input, target = check_input_and_target(input, target, ignore_index, "cross_entropy")
    class_weight = _check_class_weight(weight, input, "cross_entropy")
    return SoftmaxCrossEntropyFunction(class_weight, int(ignore_index), reduction)(input, Tensor(target))


def focal_loss(input, target, gamma=2.0, weight=None, ignore_index=-100, reduction="mean"):
    """Multi-class focal loss: −weight[t] (1 − p_t)^gamma log p_t per pixel, p_t = softmax(input)[t].

    Same conventions as ``cross_entropy`` (ignored pixels count 0; 'mean' divides by the
    summed weights of the counted pixels, 0 when there are none), so gamma = 0 gives
    exactly ``cross_entropy``. gamma must be >= 0; 2 is the paper's choice.
    """
    _check_reduction(reduction, "focal_loss")
    check_ignore_index(ignore_index, "focal_loss")
    if not np.isscalar(gamma) or not gamma >= 0:
        raise ValueError(f"focal_loss: gamma must be a number >= 0, got {gamma!r}")
    input, target = check_input_and_target(input, target, ignore_index, "focal_loss")
    class_weight = _check_class_weight(weight, input, "focal_loss")
    return SoftmaxFocalFunction(float(gamma), class_weight, int(ignore_index), reduction)(input, Tensor(target))
