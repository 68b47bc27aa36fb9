"""Fused softmax + cross-entropy on the GPU: ``kernels/softmax_cross_entropy.cu`` behind the two functions
of ``functional/loss.py`` of the same names and arguments (its NumPy twin: read the two side by side).

logits are float32 and targets int64 CuPy arrays; inputs that are not C-contiguous are copied to be.
"""
import math

import numpy as np

from .launch import _check_array, _launch, _output

_CE_THREADS = 256  # PIXELS_PER_BLOCK in softmax_cross_entropy.cu
_CE_REGISTER_VARIANTS = (16, 32, 64)  # softmax_cross_entropy_{forward,backward}_c<MAX_C>


def _check_cross_entropy_args(where, logits, target, class_weight, ignore_index):
    logits = _check_array(where, "logits", logits, np.float32)
    target = _check_array(where, "target", target, np.int64)
    if logits.ndim < 2 or tuple(target.shape) != (logits.shape[0],) + tuple(logits.shape[2:]):
        raise ValueError(f"{where}: target must have shape (N, *spatial) = "
                         f"{(logits.shape[0],) + tuple(logits.shape[2:])} for logits {tuple(logits.shape)}, "
                         f"got {tuple(target.shape)}")
    if class_weight is not None:
        class_weight = _check_array(where, "class_weight", class_weight, np.float32, ndim=1)
        if class_weight.shape[0] != logits.shape[1]:
            raise ValueError(f"{where}: class_weight has {class_weight.shape[0]} entries but logits have "
                             f"{logits.shape[1]} classes")
    if not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"{where}: ignore_index must be an int, got {ignore_index!r}")
    N, C = int(logits.shape[0]), int(logits.shape[1])
    pixels_per_image = int(np.prod(logits.shape[2:], dtype=np.int64))
    use_class_weight = class_weight is not None
    # The kernel ignores its class_weight pointer when use_class_weight is 0; any array will do.
    tail = (np.int32(N), np.int32(C), np.int32(pixels_per_image), np.int64(ignore_index))
    grid = (max(1, math.ceil(N * pixels_per_image / _CE_THREADS)), 1, 1)
    return logits, target, (class_weight if use_class_weight else logits), np.int32(use_class_weight), tail, grid


def _cross_entropy_kernel(direction, classes):
    """The smallest softmax_cross_entropy_<direction>_c<MAX_C> that holds ``classes`` in registers, else the
    plain (chunked) one."""
    fitting = [c for c in _CE_REGISTER_VARIANTS if classes <= c]
    return f"softmax_cross_entropy_{direction}" + (f"_c{fitting[0]}" if fitting else "")


def softmax_cross_entropy_forward(logits, target, class_weight, ignore_index, *, out=None):
    """(loss, pixel_weight), each shaped like target: loss = pixel_weight * (logsumexp_c logits - logits[target]).

    logits (N, C, H, W) float32, target (N, H, W) int64, class_weight (C,) float32 or None.
    pixel_weight = class_weight[target] (1 if None), 0 where target == ignore_index (and loss 0 there);
    a target outside [0, C) that is not ignore_index gives NaN. ``out``: a (loss, pixel_weight) pair
    to write into.
    """
    where = "softmax_cross_entropy_forward"
    logits, target, weight_arg, use_weight, tail, grid = _check_cross_entropy_args(
        where, logits, target, class_weight, ignore_index)
    loss_out, weight_out = (None, None) if out is None else out
    loss = _output(where, loss_out, target.shape, logits, name="out[0] (loss)")
    pixel_weight = _output(where, weight_out, target.shape, logits, name="out[1] (pixel_weight)")
    if loss.size == 0:
        return loss, pixel_weight
    _launch("softmax_cross_entropy", _cross_entropy_kernel("forward", logits.shape[1]), grid, (_CE_THREADS, 1, 1),
            (logits, target, weight_arg, use_weight, loss, pixel_weight) + tail)
    return loss, pixel_weight


def softmax_cross_entropy_backward(logits, target, class_weight, ignore_index, grad_loss, *, out=None):
    """grad_logits = grad_loss * pixel_weight * (softmax_c(logits) - one_hot(target)), shaped like logits.

    grad_loss (N, H, W) float32 is d(loss)/d(per-pixel loss); ``out``: array to write into.
    """
    where = "softmax_cross_entropy_backward"
    logits, target, weight_arg, use_weight, tail, grid = _check_cross_entropy_args(
        where, logits, target, class_weight, ignore_index)
    grad_loss = _check_array(where, "grad_loss", grad_loss, np.float32)
    if tuple(grad_loss.shape) != tuple(target.shape):
        raise ValueError(f"{where}: grad_loss must have the target's shape {tuple(target.shape)}, "
                         f"got {tuple(grad_loss.shape)}")
    grad_logits = _output(where, out, logits.shape, logits)
    if grad_logits.size == 0:
        return grad_logits
    _launch("softmax_cross_entropy", _cross_entropy_kernel("backward", logits.shape[1]), grid, (_CE_THREADS, 1, 1),
            (logits, target, weight_arg, use_weight, grad_loss, grad_logits) + tail)
    return grad_logits
