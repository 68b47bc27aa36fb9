"""The basic differentiable operations, one family per module: read them in this order.

- ``arithmetic``: ``+ − × ÷`` with NumPy broadcasting (``sum_to`` folds a broadcast gradient back), powers,
  exp and log, matrix products, dtype conversion.
- ``reduction``: ``sum``, ``mean`` and ``max`` over ``dim``.
- ``shape``: ``reshape``, ``permute``, indexing, ``cat`` and ``stack``.
- ``activation``: ReLU, sigmoid, tanh, softmax and log-softmax.

Each ``Function`` states its forward formula and why its backward is what it is. The public functions are what
``Tensor``'s operators and methods call (``ops.add``, ``ops.sum`` ...), so ``minseg.autograd`` imports this
package at its bottom and these modules import ``Tensor`` and ``Function`` from it.
"""
# Every public function and Function class, so ``ops.add`` and ``from minseg.ops import SoftmaxFunction`` work.
from .activation import *  # noqa: F401,F403
from .arithmetic import *  # noqa: F401,F403
from .reduction import *  # noqa: F401,F403
from .shape import *  # noqa: F401,F403

# ``from minseg.ops import *`` gives only these, so that it cannot shadow Python's ``sum``, ``max`` and ``pow``.
__all__ = ["cat", "stack", "relu", "sigmoid", "tanh", "softmax", "log_softmax", "exp", "log", "sum_to"]  # noqa: F405
