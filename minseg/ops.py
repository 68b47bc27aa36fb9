"""The basic differentiable operations: arithmetic, reductions, shapes, activations.

Each ``Function`` states its forward formula and why its backward is what it is.
Binary ops broadcast like NumPy; because one input element then feeds many output
elements, its gradient is the *sum* of theirs (``sum_to`` folds the broadcast back).
The public helpers at the bottom (``add``, ``sum``, ``cat`` ...) are what ``Tensor``'s
operators and methods call.

Longer than 400 lines because it is one table of the elementary Functions, each beside its public wrapper,
which ``Tensor``'s operators import together.
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
        raise ValueError(f"{op_name}: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be broadcast "
                         f"together") from None


def _check_same_dtype(a, b, op_name):
    # NumPy would promote float32 + float64 to float64 without a word; we say it instead.
    if a.dtype != b.dtype and a.dtype.kind == "f" and b.dtype.kind == "f":
        raise TypeError(f"{op_name}: dtypes differ ({a.dtype} and {b.dtype}); convert one with .astype() first")


# --- arithmetic --------------------------------------------------------------
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


# --- reductions --------------------------------------------------------------
def _normalize_dims(dim, ndim, op_name):
    """``dim`` (None, an int or a tuple, as PyTorch) as a tuple of non-negative axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    for d in dims:
        if not -ndim <= d < ndim:
            raise ValueError(f"{op_name}: dim {d} is out of range for a tensor with {ndim} dimensions; "
                             f"use a dim in [{-ndim}, {ndim - 1}]")
    return tuple(d % ndim for d in dims)


def _expand_reduced(grad_y, axes, keepdims):
    """Re-insert the reduced axes as size 1, so grad_y broadcasts against the input."""
    if keepdims:
        return grad_y
    shape = list(grad_y.shape)
    for a in sorted(axes):
        shape.insert(a, 1)
    return grad_y.reshape(shape)


class _ReductionFunction(Function):
    """What the reductions share: the (normalized) axes they reduce and whether those stay as size 1."""

    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims


class SumFunction(_ReductionFunction):
    """y = Σ x over ``axes``.  Every summed element gets the same gradient: grad_y broadcast back."""

    def forward(self, x):
        self.shape = x.shape
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, grad_y):
        xp = backend.get_array_module(grad_y)
        return xp.broadcast_to(_expand_reduced(grad_y, self.axes, self.keepdims), self.shape).copy()


class MeanFunction(SumFunction):
    """y = (1/n) Σ x over ``axes``.  The sum scaled by 1/n, so every averaged element gets grad_y / n."""

    def forward(self, x):
        self.shape = x.shape
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, grad_y):
        count = int(np.prod([self.shape[a] for a in self.axes]))
        return super().backward(grad_y / grad_y.dtype.type(count))


class MaxFunction(_ReductionFunction):
    """y = max x over ``axes``.  Only the maximal element moves y: it gets grad_y (ties share it equally)."""

    def forward(self, x):
        self.x = x
        self.y = x.max(axis=self.axes, keepdims=True)
        return self.y if self.keepdims else self.y.reshape([n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, grad_y):
        is_max = (self.x == self.y).astype(grad_y.dtype)
        is_max /= is_max.sum(axis=self.axes, keepdims=True)
        return _expand_reduced(grad_y, self.axes, self.keepdims) * is_max


# --- shapes ------------------------------------------------------------------
class ReshapeFunction(Function):
    """y = x viewed with another shape.  The gradient is grad_y viewed with x's shape."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.input_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} into {self.shape}") from None

    def backward(self, grad_y):
        return grad_y.reshape(self.input_shape)


class PermuteFunction(Function):
    """y = x with its axes reordered.  The gradient undoes the reordering (the inverse permutation)."""

    def __init__(self, axes):
        self.axes = tuple(axes)

    def forward(self, x):
        if sorted(a % x.ndim for a in self.axes) != list(range(x.ndim)):
            raise ValueError(f"permute: axes {self.axes} are not a permutation of a {x.ndim}-d tensor's axes")
        return x.transpose(self.axes)

    def backward(self, grad_y):
        return grad_y.transpose(np.argsort([a % grad_y.ndim for a in self.axes]))


class GetItemFunction(Function):
    """y = x[index].  Each selected element gets its gradient back; an element picked twice gets both."""

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.shape, self.dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, grad_y):
        xp = backend.get_array_module(grad_y)
        grad_x = xp.zeros(self.shape, self.dtype)
        xp.add.at(grad_x, self.index, grad_y)  # unlike grad_x[index] += grad_y, adds repeated indices every time
        return grad_x


class CatFunction(Function):
    """y = the inputs joined along ``dim``.  Each input's gradient is its slice of grad_y."""

    def __init__(self, dim):
        self.dim = dim

    def forward(self, *xs):
        xp = backend.get_array_module(*xs)
        self.sizes = [x.shape[self.dim] for x in xs]
        return xp.concatenate(xs, axis=self.dim)

    def backward(self, grad_y):
        xp = backend.get_array_module(grad_y)
        return tuple(xp.split(grad_y, np.cumsum(self.sizes)[:-1].tolist(), axis=self.dim))


class StackFunction(Function):
    """y = the inputs stacked along a new ``dim``.  Each input's gradient is its index along that dim."""

    def __init__(self, dim):
        self.dim = dim

    def forward(self, *xs):
        return backend.get_array_module(*xs).stack(xs, axis=self.dim)

    def backward(self, grad_y):
        return tuple(grad_y.take(i, axis=self.dim) for i in range(grad_y.shape[self.dim]))


# --- activations -------------------------------------------------------------
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


# --- the public helpers ------------------------------------------------------
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


def sum(x, dim=None, keepdim=False):
    return SumFunction(_normalize_dims(dim, x.ndim, "sum"), keepdim)(x)


def mean(x, dim=None, keepdim=False):
    return MeanFunction(_normalize_dims(dim, x.ndim, "mean"), keepdim)(x)


def max(x, dim=None, keepdim=False):
    return MaxFunction(_normalize_dims(dim, x.ndim, "max"), keepdim)(x)


def reshape(x, shape):
    return ReshapeFunction(shape)(x)


def permute(x, axes):
    return PermuteFunction(axes)(x)


def getitem(x, index):
    unwrap = lambda i: i.data if isinstance(i, Tensor) else i  # noqa: E731
    index = tuple(unwrap(i) for i in index) if isinstance(index, tuple) else unwrap(index)
    return GetItemFunction(index)(x)


def _check_joinable(tensors, dim, op_name, same_size_along_dim):
    if len(tensors) == 0:
        raise ValueError(f"{op_name}: expected a non-empty sequence of tensors")
    first = tensors[0]
    for i, t in enumerate(tensors[1:], start=1):
        if t.ndim != first.ndim:
            raise ValueError(f"{op_name}: tensor 0 has {first.ndim} dimensions but tensor {i} has {t.ndim}")
        if t.dtype != first.dtype:
            raise TypeError(f"{op_name}: tensor 0 has dtype {first.dtype} but tensor {i} has {t.dtype}")
        for d in range(first.ndim):
            if (same_size_along_dim or d != dim % first.ndim) and t.shape[d] != first.shape[d]:
                rule = "all dims must match" if same_size_along_dim else f"they must match except along dim {dim}"
                raise ValueError(f"{op_name}: tensor 0 has shape {first.shape} but tensor {i} has {t.shape} ({rule})")


def cat(tensors, dim=0):
    """Join tensors along an existing dimension (``torch.cat``): UNet's skip connection."""
    tensors = [as_tensor(t) for t in tensors]
    _check_joinable(tensors, dim, "cat", same_size_along_dim=False)
    return CatFunction(dim % tensors[0].ndim)(*tensors)


def stack(tensors, dim=0):
    """Join equally shaped tensors along a new dimension (``torch.stack``)."""
    tensors = [as_tensor(t) for t in tensors]
    _check_joinable(tensors, dim, "stack", same_size_along_dim=True)
    return StackFunction(dim % (tensors[0].ndim + 1))(*tensors)


def relu(x):
    return ReLUFunction()(x)


def sigmoid(x):
    return SigmoidFunction()(x)


def tanh(x):
    return TanhFunction()(x)


def softmax(x, dim):
    return SoftmaxFunction(_normalize_dims(dim, x.ndim, "softmax")[0])(x)


def log_softmax(x, dim):
    return LogSoftmaxFunction(_normalize_dims(dim, x.ndim, "log_softmax")[0])(x)
