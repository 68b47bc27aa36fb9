"""minseg: semantic segmentation from scratch, in NumPy (and CuPy on a GPU).

Read it in this order: ``autograd`` (Tensor, Function, backward), ``ops`` (the basic
differentiable operations), ``gradcheck``, ``functional`` (convolution, pooling,
normalization, losses), ``nn`` (layers as Modules), ``models``, ``metrics``,
``optim``, ``data``, ``train``, ``predict``, ``colors``, ``viz``; ``cuda`` is the only module
that knows the CUDA kernels in ``kernels/``. ``train``, ``predict`` and ``viz`` (which needs
matplotlib) are imported on demand: ``from minseg import train, viz``. ``app`` is the ``minseg``
command line built on all of them; nothing above imports it.
"""
from . import data, functional, metrics, models, nn, optim
from .autograd import Function, Tensor, is_grad_enabled, no_grad
from .gradcheck import GradcheckError, gradcheck
from .ops import cat, stack
from .random import manual_seed

__version__ = "0.1.0"

__all__ = ["Tensor", "Function", "no_grad", "is_grad_enabled", "gradcheck", "GradcheckError",
           "cat", "stack", "manual_seed", "functional", "nn",
           "metrics", "models", "optim", "data"]
