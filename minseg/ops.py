"""The basic differentiable operations: arithmetic, reductions, shapes, activations.

Each ``Function`` states its forward formula and why its backward is what it is.
Binary ops broadcast like NumPy; because one input element then feeds many output
elements, its gradient is the *sum* of theirs (``sum_to`` folds the broadcast back).
The public helpers at the bottom (``add``, ``sum``, ``cat`` ...) are what ``Tensor``'s
operators and methods call.
"""
import numpy as np

from . import backend
from .autograd import Function, Tensor, as_tensor

__all__ = ["cat", "stack", "relu", "sigmoid", "tanh", "softmax", "log_softmax", "exp", "log", "sum_to"]


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
        raise ValueError(f"{op_name}: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be broadcast together") from None


def _check_same_dtype(a, b, op_name):
    # NumPy would promote float32 + float64 to float64 without a word; we say it instead.
    if a.dtype != b.dtype and a.dtype.kind == "f" and b.dtype.kind == "f":
        raise TypeError(f"{op_name}: dtypes differ ({a.dtype} and {b.dtype}); convert one with .astype() first")


# --- arithmetic --------------------------------------------------------------
class Add(Function):
    """y = a + b.  dy/da = dy/db = 1, so both receive the upstream gradient (summed back to shape)."""

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, gy):
        return sum_to(gy, self.shapes[0]), sum_to(gy, self.shapes[1])


class Sub(Function):
    """y = a - b.  dy/da = 1, dy/db = -1."""

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, gy):
        return sum_to(gy, self.shapes[0]), sum_to(-gy, self.shapes[1])


class Mul(Function):
    """y = a * b.  dy/da = b and dy/db = a, so each input's gradient is the other input times gy."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        ga = sum_to(gy * self.b, self.a.shape) if self.needs_input_grad[0] else None
        gb = sum_to(gy * self.a, self.b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    """y = a / b.  dy/da = 1/b and dy/db = -a/b² = -y/b."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, gy):
        ga = gy / self.b
        gb = sum_to(-ga * self.a / self.b, self.b.shape) if self.needs_input_grad[1] else None
        return sum_to(ga, self.a.shape), gb


class Neg(Function):
    """y = -x.  dy/dx = -1."""

    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class Pow(Function):
    """y = x ** p for a constant p.  dy/dx = p · x^(p-1)."""

    def __init__(self, exponent):
        self.exponent = exponent

    def forward(self, x):
        self.x = x
        return x ** self.exponent

    def backward(self, gy):
        p = self.exponent
        return (gy * p * self.x ** (p - 1)).astype(self.x.dtype, copy=False)


class Exp(Function):
    """y = eˣ.  dy/dx = eˣ = y, so backward reuses the output."""

    def forward(self, x):
        self.y = backend.get_array_module(x).exp(x)
        return self.y

    def backward(self, gy):
        return gy * self.y


class Log(Function):
    """y = ln x.  dy/dx = 1/x."""

    def forward(self, x):
        self.x = x
        return backend.get_array_module(x).log(x)

    def backward(self, gy):
        return gy / self.x


class MatMul(Function):
    """Y = A @ B (batched like NumPy).  dL/dA = dL/dY @ Bᵀ and dL/dB = Aᵀ @ dL/dY."""

    def forward(self, a, b):
        if a.ndim < 2 or b.ndim < 2:
            raise ValueError(f"matmul: both operands need at least 2 dimensions, got shapes {a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: inner dimensions differ, shapes {a.shape} and {b.shape}")
        self.a, self.b = a, b
        return a @ b

    def backward(self, gy):
        ga = sum_to(gy @ self.b.swapaxes(-1, -2), self.a.shape) if self.needs_input_grad[0] else None
        gb = sum_to(self.a.swapaxes(-1, -2) @ gy, self.b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class AsType(Function):
    """y = x converted to another dtype; the gradient is converted back."""

    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, x):
        self.input_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy):
        return gy.astype(self.input_dtype)


# --- reductions --------------------------------------------------------------
def _normalize_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
    return tuple(a % ndim for a in axes)


def _expand_reduced(gy, axes, keepdims):
    """Re-insert the reduced axes as size 1, so gy broadcasts against the input."""
    if keepdims:
        return gy
    shape = list(gy.shape)
    for a in sorted(axes):
        shape.insert(a, 1)
    return gy.reshape(shape)


class Sum(Function):
    """y = Σ x over ``axes``.  Every summed element gets the same gradient: gy broadcast back."""

    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        self.shape = x.shape
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        return xp.broadcast_to(_expand_reduced(gy, self.axes, self.keepdims), self.shape).copy()


class Mean(Function):
    """y = (1/n) Σ x over ``axes``.  Every averaged element gets gy / n."""

    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        self.shape = x.shape
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        count = int(np.prod([self.shape[a] for a in self.axes]))
        gy = _expand_reduced(gy, self.axes, self.keepdims) / gy.dtype.type(count)
        return xp.broadcast_to(gy, self.shape).copy()


class Max(Function):
    """y = max x over ``axes``.  Only the maximal element moves y: it gets gy (ties share it equally)."""

    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        self.x = x
        self.y = x.max(axis=self.axes, keepdims=True)
        return self.y if self.keepdims else self.y.reshape([n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, gy):
        is_max = (self.x == self.y).astype(gy.dtype)
        is_max /= is_max.sum(axis=self.axes, keepdims=True)
        return _expand_reduced(gy, self.axes, self.keepdims) * is_max


# --- shapes ------------------------------------------------------------------
class Reshape(Function):
    """y = x viewed with another shape.  The gradient is gy viewed with x's shape."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.input_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} into {self.shape}") from None

    def backward(self, gy):
        return gy.reshape(self.input_shape)


class Permute(Function):
    """y = x with its axes reordered.  The gradient undoes the reordering (the inverse permutation)."""

    def __init__(self, axes):
        self.axes = tuple(axes)

    def forward(self, x):
        if sorted(a % x.ndim for a in self.axes) != list(range(x.ndim)):
            raise ValueError(f"permute: axes {self.axes} are not a permutation of a {x.ndim}-d tensor's axes")
        return x.transpose(self.axes)

    def backward(self, gy):
        return gy.transpose(np.argsort([a % gy.ndim for a in self.axes]))


class GetItem(Function):
    """y = x[index].  Each selected element gets its gradient back; an element picked twice gets both."""

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.shape, self.dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        gx = xp.zeros(self.shape, self.dtype)
        xp.add.at(gx, self.index, gy)  # unlike gx[index] += gy, adds repeated indices every time
        return gx


class Cat(Function):
    """y = the inputs joined along ``axis``.  Each input's gradient is its slice of gy."""

    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        xp = backend.get_array_module(*xs)
        self.sizes = [x.shape[self.axis] for x in xs]
        return xp.concatenate(xs, axis=self.axis)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        return tuple(xp.split(gy, np.cumsum(self.sizes)[:-1].tolist(), axis=self.axis))


class Stack(Function):
    """y = the inputs stacked along a new ``axis``.  Each input's gradient is its index along that axis."""

    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        return backend.get_array_module(*xs).stack(xs, axis=self.axis)

    def backward(self, gy):
        return tuple(gy.take(i, axis=self.axis) for i in range(gy.shape[self.axis]))


# --- activations -------------------------------------------------------------
class ReLU(Function):
    """y = max(x, 0).  The slope is 1 where x > 0 and 0 elsewhere, so gy passes only there."""

    def forward(self, x):
        xp = backend.get_array_module(x)
        y = xp.maximum(x, 0)
        self.positive = y > 0
        return y

    def backward(self, gy):
        return gy * self.positive


class Sigmoid(Function):
    """y = 1 / (1 + e⁻ˣ).  dy/dx = y (1 - y)."""

    def forward(self, x):
        xp = backend.get_array_module(x)
        # tanh form: the same function, but no overflow warning for very negative x
        self.y = 0.5 * (xp.tanh(0.5 * x) + 1)
        return self.y

    def backward(self, gy):
        return gy * self.y * (1 - self.y)


class Tanh(Function):
    """y = tanh x.  dy/dx = 1 - y²."""

    def forward(self, x):
        self.y = backend.get_array_module(x).tanh(x)
        return self.y

    def backward(self, gy):
        return gy * (1 - self.y * self.y)


class Softmax(Function):
    """y_i = e^(x_i - m) / Σ_j e^(x_j - m) along ``axis`` (m = max x keeps eˣ from overflowing).

    Jacobian dy_i/dx_j = y_i (δ_ij - y_j), so dL/dx = y ⊙ (gy - Σ_j gy_j y_j).
    """

    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        xp = backend.get_array_module(x)
        e = xp.exp(x - x.max(axis=self.axis, keepdims=True))
        self.y = e / e.sum(axis=self.axis, keepdims=True)
        return self.y

    def backward(self, gy):
        y = self.y
        return y * (gy - (gy * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    """y_i = x_i - m - log Σ_j e^(x_j - m) along ``axis`` (the log-sum-exp trick, m = max x).

    dy_i/dx_j = δ_ij - softmax(x)_j, so dL/dx = gy - softmax(x) · Σ_i gy_i.
    """

    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        xp = backend.get_array_module(x)
        shifted = x - x.max(axis=self.axis, keepdims=True)
        y = shifted - xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))
        self.y = y
        return y

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        return gy - xp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True)


# --- the public helpers ------------------------------------------------------
def _binary(function_class, a, b, op_name):
    like = a if isinstance(a, Tensor) else b
    a, b = as_tensor(a, like), as_tensor(b, like)
    _check_broadcastable(a.data, b.data, op_name)
    _check_same_dtype(a.data, b.data, op_name)
    return function_class()(a, b)


def add(a, b):
    return _binary(Add, a, b, "add")


def sub(a, b):
    return _binary(Sub, a, b, "sub")


def mul(a, b):
    return _binary(Mul, a, b, "mul")


def div(a, b):
    return _binary(Div, a, b, "div")


def matmul(a, b):
    like = a if isinstance(a, Tensor) else b
    a, b = as_tensor(a, like), as_tensor(b, like)
    _check_same_dtype(a.data, b.data, "matmul")
    return MatMul()(a, b)


def neg(x):
    return Neg()(x)


def pow(x, exponent):
    if isinstance(exponent, Tensor) or not np.isscalar(exponent):
        raise TypeError(f"pow: the exponent must be a Python number, got {type(exponent).__name__}")
    return Pow(exponent)(x)


def exp(x):
    return Exp()(x)


def log(x):
    return Log()(x)


def astype(x, dtype):
    return AsType(np.dtype(dtype))(x)


def sum(x, axis=None, keepdims=False):
    return Sum(_normalize_axes(axis, x.ndim), keepdims)(x)


def mean(x, axis=None, keepdims=False):
    return Mean(_normalize_axes(axis, x.ndim), keepdims)(x)


def max(x, axis=None, keepdims=False):
    return Max(_normalize_axes(axis, x.ndim), keepdims)(x)


def reshape(x, shape):
    return Reshape(shape)(x)


def permute(x, axes):
    return Permute(axes)(x)


def getitem(x, index):
    unwrap = lambda i: i.data if isinstance(i, Tensor) else i  # noqa: E731
    index = tuple(unwrap(i) for i in index) if isinstance(index, tuple) else unwrap(index)
    return GetItem(index)(x)


def _check_joinable(tensors, axis, op_name, same_axis_size):
    if len(tensors) == 0:
        raise ValueError(f"{op_name}: expected a non-empty sequence of tensors")
    first = tensors[0]
    for i, t in enumerate(tensors[1:], start=1):
        if t.ndim != first.ndim:
            raise ValueError(f"{op_name}: tensor 0 has {first.ndim} dimensions but tensor {i} has {t.ndim}")
        if t.dtype != first.dtype:
            raise TypeError(f"{op_name}: tensor 0 has dtype {first.dtype} but tensor {i} has {t.dtype}")
        for d in range(first.ndim):
            if (same_axis_size or d != axis % first.ndim) and t.shape[d] != first.shape[d]:
                raise ValueError(f"{op_name}: tensor 0 has shape {first.shape} but tensor {i} has {t.shape} "
                                 f"(they must match except along dim {axis})")


def cat(tensors, dim=0):
    """Join tensors along an existing dimension (``torch.cat``): UNet's skip connection."""
    tensors = [as_tensor(t) for t in tensors]
    _check_joinable(tensors, dim, "cat", same_axis_size=False)
    return Cat(dim % tensors[0].ndim)(*tensors)


def stack(tensors, dim=0):
    """Join equally shaped tensors along a new dimension (``torch.stack``)."""
    tensors = [as_tensor(t) for t in tensors]
    _check_joinable(tensors, dim, "stack", same_axis_size=True)
    return Stack(dim % (tensors[0].ndim + 1))(*tensors)


def relu(x):
    return ReLU()(x)


def sigmoid(x):
    return Sigmoid()(x)


def tanh(x):
    return Tanh()(x)


def softmax(x, dim):
    return Softmax(_normalize_axes(dim, x.ndim)[0])(x)


def log_softmax(x, dim):
    return LogSoftmax(_normalize_axes(dim, x.ndim)[0])(x)
