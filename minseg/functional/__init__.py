"""The differentiable operations of segmentation networks, PyTorch-style (``import minseg.functional as F``).

One module per concept; each defines ``__all__`` and is re-exported here.
"""
from ..ops import cat, stack, relu, sigmoid, tanh, softmax, log_softmax  # noqa: F401
