"""The one random number generator behind weight initialization and dropout.

``minseg.manual_seed(seed)`` makes a run repeatable; ``get_state``/``set_state`` let a
checkpoint capture it, so a resumed run draws the same numbers an uninterrupted one would.
(Data shuffling and augmentation use their own generator, seeded per epoch, in ``minseg.data``.)
"""
import numpy as np

__all__ = ["manual_seed", "generator", "get_state", "set_state"]

_generator = np.random.default_rng(0)


def manual_seed(seed):
    """Reseed the generator used by initializers and dropout."""
    global _generator
    _generator = np.random.default_rng(seed)


def generator():
    """The current ``numpy.random.Generator`` (draw on the CPU, move to the GPU if needed)."""
    return _generator


def get_state():
    """A plain dict describing the generator's state (what a checkpoint stores)."""
    return _generator.bit_generator.state


def set_state(state):
    """Restore a state returned by ``get_state``."""
    _generator.bit_generator.state = state
