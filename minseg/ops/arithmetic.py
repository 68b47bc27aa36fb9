"""Elementwise arithmetic with broadcasting, powers, exp and log, matrix products, dtype conversion.

Binary ops broadcast like NumPy; because one input element then feeds many output elements, its gradient is
the *sum* of theirs, and ``sum_to`` folds the broadcast back. ``Tensor``'s operators (``+ - * / @ **``) and
``exp`` / ``log`` / ``astype`` call the public functions at the bottom.
"""
import numpy as np

from .. import backend
from ..autograd import Function, Tensor, as_tensor

__all__ = ["sum_to", "add", "sub", "mul", "div", "matmul", "neg", "pow", "exp", "log", "astype",
           "AddFunction", "SubFunction", "MulFunction", "DivFunction", "NegFunction", "PowFunction", "ExpFunction",
           "LogFunction", "MatMulFunction", "AsTypeFunction"]


# ---------------------------------------------------------------------------
# Broadcasting
# ---------------------------------------------------------------------------
def sum_to(grad, shape):
    """Sum ``grad`` over the axes that broadcasting stretched, so it has ``shape`` again."""
    if tuple(grad.shape) == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


def _check_broadcastable(a, b, op_name):
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op_name}: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be broadcast "
                         f"together") from None


def _check_same_dtype(a, b, op_name):
    # NumPy would promote float32 + float64 to float64 without a word; we say it instead.
    if a.dtype != b.dtype and a.dtype.kind == "f" and b.dtype.kind == "f":
        raise TypeError(f"{op_name}: dtypes differ ({a.dtype} and {b.dtype}); convert one with .astype() first")


# ---------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------
class AddFunction(Function):
    """y = a + b.  dy/da = dy/db = 1, so both receive the upstream gradient (summed back to shape)."""

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, grad_y):
        return sum_to(grad_y, self.shapes[0]), sum_to(grad_y, self.shapes[1])


class SubFunction(Function):
    """y = a - b.  dy/da = 1, dy/db = -1."""

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, grad_y):
        return sum_to(grad_y, self.shapes[0]), sum_to(-grad_y, self.shapes[1])


class MulFunction(Function):
    """y = a * b.  dy/da = b and dy/db = a, so each input's gradient is the other input times grad_y."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, grad_y):
        grad_a = sum_to(grad_y * self.b, self.a.shape) if self.needs_input_grad[0] else None
        grad_b = sum_to(grad_y * self.a, self.b.shape) if self.needs_input_grad[1] else None
        return grad_a, grad_b


class DivFunction(Function):
    """y = a / b.  dy/da = 1/b and dy/db = -a/b² = -y/b."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, grad_y):
        grad_a = grad_y / self.b
        grad_b = sum_to(-grad_a * self.a / self.b, self.b.shape) if self.needs_input_grad[1] else None
        return sum_to(grad_a, self.a.shape), grad_b


class NegFunction(Function):
    """y = -x.  dy/dx = -1."""

    def forward(self, x):
        return -x

    def backward(self, grad_y):
        return -grad_y


class PowFunction(Function):
    """y = x ** p for a constant p.  dy/dx = p · x^(p-1)."""

    def __init__(self, exponent):
        self.exponent = exponent

    def forward(self, x):
        self.x = x
        return x ** self.exponent

    def backward(self, grad_y):
        p = self.exponent
        return (grad_y * p * self.x ** (p - 1)).astype(self.x.dtype, copy=False)


class ExpFunction(Function):
    """y = eˣ.  dy/dx = eˣ = y, so backward reuses the output."""

    def forward(self, x):
        self.y = backend.get_array_module(x).exp(x)
        return self.y

    def backward(self, grad_y):
        return grad_y * self.y


class LogFunction(Function):
    """y = ln x.  dy/dx = 1/x."""

    def forward(self, x):
        self.x = x
        return backend.get_array_module(x).log(x)

    def backward(self, grad_y):
        return grad_y / self.x


class MatMulFunction(Function):
    """Y = A @ B (batched like NumPy).  dL/dA = dL/dY @ Bᵀ and dL/dB = Aᵀ @ dL/dY."""

    def forward(self, a, b):
        if a.ndim < 2 or b.ndim < 2:
            raise ValueError(f"matmul: both operands need at least 2 dimensions, got shapes {a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: inner dimensions differ, shapes {a.shape} and {b.shape}")
        self.a, self.b = a, b
        return a @ b

    def backward(self, grad_y):
        grad_a = sum_to(grad_y @ self.b.swapaxes(-1, -2), self.a.shape) if self.needs_input_grad[0] else None
        grad_b = sum_to(self.a.swapaxes(-1, -2) @ grad_y, self.b.shape) if self.needs_input_grad[1] else None
        return grad_a, grad_b


class AsTypeFunction(Function):
    """y = x converted to another dtype; the gradient is converted back."""

    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, x):
        self.input_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, grad_y):
        return grad_y.astype(self.input_dtype)


# ---------------------------------------------------------------------------
# Public functions: argument checks, then one Function each
# ---------------------------------------------------------------------------
def _binary(function_class, a, b, op_name):
    like = a if isinstance(a, Tensor) else b
    a, b = as_tensor(a, like), as_tensor(b, like)
    _check_broadcastable(a.data, b.data, op_name)
    _check_same_dtype(a.data, b.data, op_name)
    return function_class()(a, b)


def add(a, b):
    return _binary(AddFunction, a, b, "add")


def sub(a, b):
    return _binary(SubFunction, a, b, "sub")


def mul(a, b):
    return _binary(MulFunction, a, b, "mul")


def div(a, b):
    return _binary(DivFunction, a, b, "div")


def matmul(a, b):
    like = a if isinstance(a, Tensor) else b
    a, b = as_tensor(a, like), as_tensor(b, like)
    _check_same_dtype(a.data, b.data, "matmul")
    return MatMulFunction()(a, b)


def neg(x):
    return NegFunction()(x)


def pow(x, exponent):
    if isinstance(exponent, Tensor) or not np.isscalar(exponent):
        raise TypeError(f"pow: the exponent must be a Python number, got {type(exponent).__name__}")
    return PowFunction(exponent)(x)


def exp(x):
    return ExpFunction()(x)


def log(x):
    return LogFunction()(x)


def astype(x, dtype):
    return AsTypeFunction(np.dtype(dtype))(x)
