"""Shapes and indexing: reshape, permute, indexing, and joining tensors (``cat``, ``stack``).

None of these computes anything; each moves elements, so its gradient moves grad_y back to where each
element came from (an element picked twice gets both gradients).
"""
import numpy as np

from .. import backend
from ..autograd import Function, Tensor, as_tensor

__all__ = ["reshape", "permute", "getitem", "cat", "stack",
           "ReshapeFunction", "PermuteFunction", "GetItemFunction", "CatFunction", "StackFunction"]


# ---------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------
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
    """y = x with its dims reordered: y's dim i is x's dim ``dims[i]``.  The gradient undoes the reordering."""

    def __init__(self, dims):
        self.dims = tuple(dims)

    def forward(self, x):
        if sorted(d % x.ndim for d in self.dims) != list(range(x.ndim)):
            raise ValueError(f"permute: dims must be a permutation of 0..{x.ndim - 1} for a {x.ndim}-d tensor, "
                             f"got {self.dims}; name each dim once")
        return x.transpose(self.dims)

    def backward(self, grad_y):
        return grad_y.transpose(np.argsort([d % grad_y.ndim for d in self.dims]))  # the inverse permutation


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


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------
def reshape(x, shape):
    return ReshapeFunction(shape)(x)


def permute(x, dims):
    """Reorder the dims of ``x`` (``torch.permute``): y's dim i is x's dim ``dims[i]``."""
    return PermuteFunction(dims)(x)


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
