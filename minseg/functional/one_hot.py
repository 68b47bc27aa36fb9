"""Class ids <-> one channel per class: how a segmentation target meets the network's output.

A label map holds one class id per pixel, shape (N, H, W). The network predicts one
score per class per pixel, shape (N, C, H, W). ``one_hot`` turns the ids into that
layout (channel c is 1 where the pixel's class is c), and ``to_class_ids`` goes back
from scores to ids (the argmax over the class channel).

``check_class_ids`` is the one place that validates a label map; the losses and the
metrics call it too, so every function reports a bad label the same way.
"""
import numpy as np

from .. import backend
from ..autograd import Tensor

__all__ = ["one_hot", "to_class_ids", "check_class_ids"]

_MAX_LISTED = 10  # an error lists at most this many distinct offending ids


def _array_of(value):
    return value.data if isinstance(value, Tensor) else value


def check_class_ids(target, num_classes, ignore_index=None, where="target", name="target"):
    """Raise unless ``target`` holds integers in [0, num_classes) (or ``ignore_index``).

    ``where`` names the calling function and ``name`` the argument in the message, e.g.
    ``cross_entropy: target holds ids outside [0, 5): [7, 9] (ignore_index=-100)``.
    Returns the raw array.
    """
    target = _array_of(target)
    if not hasattr(target, "dtype"):
        target = np.asarray(target)
    if target.dtype.kind not in "iu":
        hint = " (predictions? convert scores with to_class_ids(...))" if target.dtype.kind == "f" else ""
        raise TypeError(f"{where}: {name} must hold integer class ids, got dtype {target.dtype}{hint}")
    if target.size == 0:
        return target
    # Two cheap reductions answer "all valid?" in the common case; only a bad map pays for more.
    if int(target.min()) >= 0 and int(target.max()) < num_classes:
        return target
    xp = backend.get_array_module(target)
    outside = (target < 0) | (target >= num_classes)
    if ignore_index is not None:
        outside &= target != ignore_index
    if bool(outside.any()):
        bad = backend.to_device(xp.unique(target[outside]), "cpu").tolist()
        listed = ", ".join(str(v) for v in bad[:_MAX_LISTED]) + (", ..." if len(bad) > _MAX_LISTED else "")
        ignore_note = f" (ignore_index={ignore_index})" if ignore_index is not None else ""
        raise ValueError(f"{where}: {name} holds ids outside [0, {num_classes}): [{listed}]{ignore_note}")
    return target


def one_hot(target, num_classes, ignore_index=None, dtype=np.float32):
    """Class ids (N, *) -> a Tensor (N, C, *) with channel c equal to 1 where ``target == c``.

    Pixels equal to ``ignore_index`` become all-zero columns (no class). Unlike
    ``torch.nn.functional.one_hot``, which appends an int64 class axis last, the class
    axis here is dim 1 and the values are float32 (``dtype``), the layout of the
    logits the one-hot target is compared with. The result needs no gradient.
    Raises TypeError for a float target and ValueError listing ids outside [0, C).
    """
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"one_hot: num_classes must be a positive integer, got {num_classes!r}")
    target = check_class_ids(target, num_classes, ignore_index, where="one_hot")
    if target.ndim < 1:
        raise ValueError(f"one_hot: target needs a batch dimension, got shape {tuple(target.shape)}")
    xp = backend.get_array_module(target)
    class_ids = xp.arange(num_classes).reshape((1, num_classes) + (1,) * (target.ndim - 1))
    encoded = target[:, None] == class_ids  # broadcasts (N, 1, *) against (1, C, 1...)
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        # An ignored id that is also a real class would otherwise light up its channel.
        encoded &= (target != ignore_index)[:, None]
    return Tensor(encoded.astype(dtype))


def to_class_ids(scores, dim=1):
    """Per-pixel predicted class: the argmax of logits or probabilities over ``dim``.

    (N, C, H, W) scores -> (N, H, W) int64 Tensor; the inverse of ``one_hot`` for a
    prediction. Softmax is monotonic, so logits and probabilities give the same ids.
    """
    scores = _array_of(scores)
    if scores.ndim < 2:
        raise ValueError(f"to_class_ids: scores need a class dimension, got shape {tuple(scores.shape)}")
    return Tensor(scores.argmax(axis=dim).astype(np.int64, copy=False))
