"""The parameter-free activations: ReLU, sigmoid, tanh, and softmax / log-softmax along ``dim``.

Each is also ``torch.nn.functional``'s function of the same name (``minseg.functional`` re-exports them);
activations with a learned parameter (PReLU) live in ``minseg/functional/activation.py``.
"""
from .. import backend
from ..autograd import Function
from .reduction import _normalize_dims

__all__ = ["relu", "sigmoid", "tanh", "softmax", "log_softmax",
           "ReLUFunction", "SigmoidFunction", "TanhFunction", "SoftmaxFunction", "LogSoftmaxFunction"]


# ---------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------
class ReLUFunction(Function):
    """y = max(x, 0).  The slope is 1 where x > 0 and 0 elsewhere, so grad_y passes only there."""

    def forward(self, x):
        xp = backend.get_array_module(x)
        y = xp.maximum(x, 0)
        self.positive = y > 0
        return y

    def backward(self, grad_y):
        # One pass: NumPy casts the bool mask to grad_y's dtype in cache-sized chunks, never a full-size copy;
        # where() is an element-by-element branch, and a mask kept in grad_y's dtype would be 4x the memory.
        return grad_y * self.positive


class SigmoidFunction(Function):
    """y = 1 / (1 + e⁻ˣ).  dy/dx = y (1 - y)."""

    def forward(self, x):
        xp = backend.get_array_module(x)
        # tanh form: the same function, but no overflow warning for very negative x
        self.y = 0.5 * (xp.tanh(0.5 * x) + 1)
        return self.y

    def backward(self, grad_y):
        return grad_y * self.y * (1 - self.y)


class TanhFunction(Function):
    """y = tanh x.  dy/dx = 1 - y²."""

    def forward(self, x):
        self.y = backend.get_array_module(x).tanh(x)
        return self.y

    def backward(self, grad_y):
        return grad_y * (1 - self.y * self.y)


class SoftmaxFunction(Function):
    """y_i = e^(x_i - m) / Σ_j e^(x_j - m) along ``dim`` (m = max x keeps eˣ from overflowing).

    Jacobian dy_i/dx_j = y_i (δ_ij - y_j), so with g = grad_y, dL/dx = y ⊙ (g - Σ_j g_j y_j).
    """

    def __init__(self, dim):
        self.dim = dim

    def forward(self, x):
        xp = backend.get_array_module(x)
        e = xp.exp(x - x.max(axis=self.dim, keepdims=True))
        self.y = e / e.sum(axis=self.dim, keepdims=True)
        return self.y

    def backward(self, grad_y):
        y = self.y
        return y * (grad_y - (grad_y * y).sum(axis=self.dim, keepdims=True))


class LogSoftmaxFunction(Function):
    """y_i = x_i - m - log Σ_j e^(x_j - m) along ``dim`` (the log-sum-exp trick, m = max x).

    dy_i/dx_j = δ_ij - softmax(x)_j, so with g = grad_y, dL/dx = g - softmax(x) · Σ_i g_i.
    """

    def __init__(self, dim):
        self.dim = dim

    def forward(self, x):
        xp = backend.get_array_module(x)
        shifted = x - x.max(axis=self.dim, keepdims=True)
        y = shifted - xp.log(xp.exp(shifted).sum(axis=self.dim, keepdims=True))
        self.y = y
        return y

    def backward(self, grad_y):
        xp = backend.get_array_module(grad_y)
        return grad_y - xp.exp(self.y) * grad_y.sum(axis=self.dim, keepdims=True)


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------
def relu(input):
    return ReLUFunction()(input)


def sigmoid(input):
    return SigmoidFunction()(input)


def tanh(input):
    return TanhFunction()(input)


def softmax(input, dim):
    return SoftmaxFunction(_normalize_dims(dim, input.ndim, "softmax")[0])(input)


def log_softmax(input, dim):
    return LogSoftmaxFunction(_normalize_dims(dim, input.ndim, "log_softmax")[0])(input)
