"""The input sizes a model can take: its ``size_multiple``, checked once for every model, and the padding to it.

A model that halves the resolution k times can only restore sizes divisible by 2**k; without a check the user
meets an opaque shape mismatch deep inside the decoder. Every model declares that multiple as ``size_multiple``;
its ``forward`` checks it (``check_divisible``: the error names the multiple and the nearest size to pad to), and
the ``DataLoader`` (``pad_to_multiple=``), ``Learner.predict`` and the ``Predictor`` pad to it
(``pad_to_multiple``) and crop the prediction back (``crop_padding``).
"""
from .. import backend

__all__ = ["check_divisible", "padded_size", "pad_to_multiple", "crop_padding"]


def padded_size(size, multiple):
    """The smallest multiple of ``multiple`` that is at least ``size``: ``padded_size(97, 32) == 128``."""
    return -(-size // multiple) * multiple


def check_divisible(x, multiple, model_description):
    """Raise a ValueError naming the needed multiple and the padded size when x's height or width is not a multiple."""
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        raise ValueError(f"{model_description} needs height and width divisible by {multiple}, got {height}x{width}; "
                         f"pad the input to {padded_size(height, multiple)}x{padded_size(width, multiple)}")


def pad_to_multiple(images, multiple):
    """Normalized (N, C, H, W) images padded with 0 (the mean colour) at the bottom and right to multiples of
    ``multiple``; ``crop_padding`` cuts a prediction back to (H, W)."""
    height, width = images.shape[-2:]
    rows, cols = padded_size(height, multiple) - height, padded_size(width, multiple) - width
    if not rows and not cols:
        return images
    xp = backend.get_array_module(images)
    return xp.pad(images, ((0, 0), (0, 0), (0, rows), (0, cols)))


def crop_padding(output, height, width):
    """The top-left ``height`` x ``width`` of ``output`` (..., H', W'): what ``pad_to_multiple`` padded, removed."""
    return output[(slice(None),) * (output.ndim - 2) + (slice(0, height), slice(0, width))]
