"""Argument checks shared by every layer, op and kernel wrapper: one place, one wording.

Each check names the public call (``where``) and the argument, says what was expected and what came,
so a mistake is reported where the user made it, not deep inside NumPy.
"""
import numpy as np

__all__ = ["is_int", "pair", "positive_int"]


def is_int(value):
    """True for Python and NumPy integers, False for bools (``True`` is an int in Python, never a size here)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def pair(where, name, value, minimum=0):
    """``value`` (an int, or a pair of ints) as an ``(int, int)`` tuple, each at least ``minimum``.

    ``pair("conv2d", "stride", 2, minimum=1) == (2, 2)``; ``(1, 2)`` stays ``(1, 2)``.
    """
    values = (value, value) if is_int(value) else tuple(value) if isinstance(value, (tuple, list)) else None
    if values is None or len(values) != 2 or not all(is_int(v) for v in values):
        raise TypeError(f"{where}: {name} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in values):
        raise ValueError(f"{where}: {name} must be at least {minimum}, got {value!r}")
    return int(values[0]), int(values[1])


def positive_int(where, name, value):
    """``value`` as an int, which must be at least 1."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")
    return int(value)
