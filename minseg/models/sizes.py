"""The input sizes a model can take, checked once for every model.

A model that halves the resolution k times can only restore sizes divisible by 2**k; without a check the user
meets an opaque shape mismatch deep inside the decoder. The error names the multiple and the nearest size to pad to.
"""

__all__ = ["check_divisible", "padded_size"]


def padded_size(size, multiple):
    """The smallest multiple of ``multiple`` that is at least ``size``: ``padded_size(97, 32) == 128``."""
    return -(-size // multiple) * multiple


def check_divisible(x, multiple, model_description):
    """Raise a ValueError naming the needed multiple and the padded size when x's height or width is not a multiple."""
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        raise ValueError(f"{model_description} needs height and width divisible by {multiple}, got {height}x{width}; "
                         f"pad the input to {padded_size(height, multiple)}x{padded_size(width, multiple)}")
