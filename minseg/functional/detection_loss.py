"""The losses of a detector's heads: binary cross-entropy on logits, smooth L1 and L1.

An RPN scores every anchor "object or not" and a mask head every pixel of a RoI "inside the
instance or not": both are ``binary_cross_entropy_with_logits``. Box regressions are trained with
``smooth_l1_loss`` (Girshick, Fast R-CNN 2015): quadratic near zero, so small errors give small
gradients, and linear beyond ``beta``, so one badly placed box cannot dominate the sum. ``l1_loss``
is its limit beta = 0. The classifier of the box head uses ``cross_entropy`` from loss.py on (N, C)
logits. Each loss is one Function; the derivations are in ``BinaryCrossEntropyWithLogitsFunction``
and ``SmoothL1LossFunction``. Signatures and defaults are PyTorch's (``reduction="mean"``,
``beta=1.0``); torchvision's detection heads call them with ``beta=1/9, reduction="sum"``.
"""
import numpy as np

from ..autograd import Function, Tensor, as_tensor
from ..backend import get_array_module

__all__ = ["binary_cross_entropy_with_logits", "smooth_l1_loss", "l1_loss"]

_REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------------------
# Helpers: the reduction and its gradient, shared by both Functions
# ---------------------------------------------------------------------------
def _reduce(loss, reduction):
    """Per-element loss -> 'none' | 'sum' | 'mean' (over every element; 0 for an empty input)."""
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    return total / loss.size if loss.size else total


def _per_element(grad_output, reduction, shape):
    """What each element's loss receives from the upstream gradient of the reduced loss."""
    xp = get_array_module(grad_output)
    if reduction == "mean":
        size = int(np.prod(shape, dtype=np.int64))
        grad_output = grad_output / size if size else grad_output
    return xp.broadcast_to(grad_output, shape)


# ---------------------------------------------------------------------------
# The Functions
# ---------------------------------------------------------------------------
class BinaryCrossEntropyWithLogitsFunction(Function):
    """loss_i = w_i · (log(1 + e^(x_i)) − t_i · x_i), computed as max(x, 0) − t·x + log(1 + e^(−|x|)).

    The two forms are equal; the second never exponentiates a positive number, so logits of ±1000
    stay finite. Backward: d log(1 + e^x)/dx = σ(x), so d loss_i / d x_i = w_i · (σ(x_i) − t_i), the
    probability's error. The target and the weight are labels here and get no gradient.
    """

    def __init__(self, reduction):
        self.reduction = reduction

    def forward(self, input, target, weight=None):
        xp = get_array_module(input)
        loss = xp.maximum(input, 0) - target * input + xp.log1p(xp.exp(-xp.abs(input)))
        if weight is not None:
            loss = loss * weight
        self.input, self.target, self.weight = input, target, weight
        return _reduce(loss, self.reduction)

    def backward(self, grad_output):
        xp = get_array_module(self.input)
        probability = 0.5 * (1 + xp.tanh(0.5 * self.input))  # σ(x) with no overflow for large |x|
        grad_input = (probability - self.target) * _per_element(grad_output, self.reduction, self.input.shape)
        if self.weight is not None:
            grad_input = grad_input * self.weight
        grad_input = grad_input.astype(self.input.dtype, copy=False)
        return (grad_input,) + (None,) * (len(self.needs_input_grad) - 1)


class SmoothL1LossFunction(Function):
    """loss_i = 0.5 d_i² / β where |d_i| < β, else |d_i| − 0.5 β, with d = input − target (β = 0: |d|).

    The two pieces meet with equal value and slope at |d| = β, so the loss is once differentiable:
    d loss / d d = d/β inside (the gradient shrinks with the error) and sign(d) outside (it stays
    bounded however far off a box is). The target's gradient is the input's, negated, since d = x − t.
    """

    def __init__(self, beta, reduction):
        self.beta, self.reduction = beta, reduction

    def forward(self, input, target):
        xp = get_array_module(input)
        self.difference = input - target
        size = xp.abs(self.difference)
        if self.beta == 0:
            loss = size
        else:
            loss = xp.where(size < self.beta, 0.5 * self.difference ** 2 / self.beta, size - 0.5 * self.beta)
        return _reduce(loss.astype(input.dtype, copy=False), self.reduction)

    def backward(self, grad_output):
        xp = get_array_module(self.difference)
        slope = xp.sign(self.difference)
        if self.beta != 0:
            inside = xp.abs(self.difference) < self.beta
            slope = xp.where(inside, self.difference / self.beta, slope)
        grad = (slope * _per_element(grad_output, self.reduction, slope.shape)).astype(self.difference.dtype)
        grad_input = grad if self.needs_input_grad[0] else None
        grad_target = -grad if self.needs_input_grad[1] else None
        return grad_input, grad_target


# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------
def _check_pair(input, target, where, target_name="target"):
    """input and target as Tensors of one floating dtype and one shape, or an error naming the bad one."""
    input = as_tensor(input)
    if not isinstance(target, Tensor):  # a raw array of labels (0/1 integers, say) takes the input's dtype
        target = Tensor(get_array_module(input.data).asarray(target, dtype=input.dtype))
    if input.dtype.kind != "f":
        raise TypeError(f"{where}: input must be floating-point, got dtype {input.dtype}")
    if target.dtype != input.dtype:
        raise TypeError(f"{where}: {target_name} must have the input's dtype {input.dtype}, got {target.dtype}; "
                        f"convert it with .astype")
    if target.shape != input.shape:
        raise ValueError(f"{where}: {target_name} must have the input's shape {input.shape}, got {target.shape}")
    return input, target


def _check_reduction(reduction, where):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{where}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


# ---------------------------------------------------------------------------
# The public losses
# ---------------------------------------------------------------------------
def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean"):
    """Binary cross-entropy of logits ``input`` against 0/1 (or soft) targets of the same shape.

    loss_i = −weight_i · (t_i log σ(x_i) + (1 − t_i) log(1 − σ(x_i))), then 'none', 'sum', or
    'mean' over all elements (PyTorch's: the weights are not renormalized). ``weight`` broadcasts
    to the input's shape. An empty input gives 0.
    """
    _check_reduction(reduction, "binary_cross_entropy_with_logits")
    input, target = _check_pair(input, target, "binary_cross_entropy_with_logits")
    if weight is None:
        return BinaryCrossEntropyWithLogitsFunction(reduction)(input, target.detach())
    weight = as_tensor(weight.data if isinstance(weight, Tensor) else np.asarray(weight, dtype=input.dtype))
    try:
        np.broadcast_shapes(weight.shape, input.shape)
    except ValueError:
        raise ValueError(f"binary_cross_entropy_with_logits: weight of shape {weight.shape} must broadcast to the "
                         f"input's shape {input.shape}") from None
    return BinaryCrossEntropyWithLogitsFunction(reduction)(input, target.detach(), weight.astype(input.dtype).detach())


def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    """Smooth L1 (Huber divided by beta): 0.5 d²/beta for |d| < beta, |d| − 0.5 beta beyond; d = input − target.

    PyTorch's signature and defaults. Box regression in torchvision's RPN and box head uses
    ``beta=1/9, reduction="sum"`` and divides by the number of sampled anchors or RoIs.
    """
    _check_reduction(reduction, "smooth_l1_loss")
    if not np.isscalar(beta) or not beta >= 0:
        raise ValueError(f"smooth_l1_loss: beta must be a number >= 0, got {beta!r}")
    input, target = _check_pair(input, target, "smooth_l1_loss")
    return SmoothL1LossFunction(float(beta), reduction)(input, target)


def l1_loss(input, target, reduction="mean"):
    """|input − target| per element, then reduced: smooth L1 with beta = 0 (gradient sign(d), 0 at d = 0)."""
    _check_reduction(reduction, "l1_loss")
    input, target = _check_pair(input, target, "l1_loss")
    return SmoothL1LossFunction(0.0, reduction)(input, target)
