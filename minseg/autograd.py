"""Reverse-mode automatic differentiation: ``Tensor``, ``Function`` and ``backward``.

This file is the whole engine. Read it first.

* A ``Tensor`` wraps an array (NumPy on the CPU, CuPy on a GPU) and remembers the
  ``Function`` that produced it (its ``creator``).
* A ``Function`` computes its ``forward`` on raw arrays and keeps only what its
  ``backward`` will need. ``backward`` receives dL/d(output) and returns dL/d(input),
  one gradient per input, each with that input's shape and dtype (the chain rule for
  one operation).
* ``Tensor.backward`` sorts the functions that led to the tensor so that every
  function comes after all the functions that consumed its outputs (a topological
  order), then walks that list once, handing each function the sum of the gradients
  flowing into its outputs. That is all of backpropagation.

Gradients reach only the leaves that asked for them (``requires_grad=True``), and the
graph is released as it is walked, so memory does not grow from step to step.
"""
import contextlib
import threading
import weakref

import numpy as np

from . import backend

__all__ = ["Tensor", "Function", "no_grad", "is_grad_enabled", "as_tensor"]


# ---------------------------------------------------------------------------
# Switching graph recording off (evaluation, optimizer steps, gradient checks)
# ---------------------------------------------------------------------------
class _GradMode(threading.local):
    """Whether ops record a graph, per thread (as PyTorch's grad mode): one thread's ``no_grad`` (an optimizer
    step) leaves another thread's forward recording (``minseg.distributed.ThreadGroup`` runs ranks as threads)."""
    enabled = True


_grad_mode = _GradMode()


def is_grad_enabled():
    """True unless inside ``with minseg.no_grad():`` (in this thread)."""
    return _grad_mode.enabled


@contextlib.contextmanager
def no_grad():
    """Run ops without recording a graph (in this thread): nothing is saved for backward."""
    previous, _grad_mode.enabled = _grad_mode.enabled, False
    try:
        yield
    finally:
        _grad_mode.enabled = previous


# ---------------------------------------------------------------------------
# Tensor
# ---------------------------------------------------------------------------
def _to_array(data, dtype):
    """Turn ``data`` into an array; Python floats become float32, never float64."""
    xp = backend.get_array_module(data)
    if isinstance(data, (xp.ndarray, np.generic)):  # np.generic: what NumPy reductions return
        array = xp.asarray(data)
        return array if dtype is None else array.astype(dtype, copy=False)
    array = np.asarray(data, dtype=dtype)
    if dtype is None and array.dtype == np.float64:
        # A Python float or list carries no precision of its own; float32 is the default.
        array = array.astype(np.float32)
    return array


def _operator(name, reflected=False):
    """The Tensor method behind a binary operator: ``ops.<name>(self, other)``, or (other, self) reflected."""
    if reflected:
        return lambda self, other: getattr(ops, name)(other, self)
    return lambda self, other: getattr(ops, name)(self, other)


def _elementwise(name):
    """The Tensor method ``t.<name>()``: ``ops.<name>(t)``, one Function applied to every element."""
    return lambda self: getattr(ops, name)(self)


class Tensor:
    """An array plus what autograd needs: ``grad``, ``requires_grad`` and its ``creator``."""

    # Makes ``ndarray + Tensor`` call Tensor.__radd__ instead of NumPy's broadcasting loop.
    __array_priority__ = 1000

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        self.data = _to_array(data, dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"Tensor: only floating-point tensors can require grad, got dtype {self.data.dtype}")
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self.creator = None

    # --- what the tensor is -------------------------------------------------
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return int(self.data.size)

    @property
    def device(self):
        return backend.device_of(self.data)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad_info = ", requires_grad=True" if self.requires_grad else ""
        device_info = ", device='cuda'" if self.device == "cuda" else ""
        body = np.array2string(self.numpy(), prefix="Tensor(", threshold=20)
        return f"Tensor({body}, dtype={self.dtype}{device_info}{grad_info})"

    # --- moving data out and around -----------------------------------------
    def numpy(self):
        """The data as a NumPy array (copied from the GPU if needed)."""
        return backend.to_device(self.data, "cpu")

    def item(self):
        if self.size != 1:
            raise ValueError(f"item: only a one-element tensor converts to a Python number, got shape {self.shape}")
        return self.numpy().reshape(()).item()

    def to(self, device):
        """A copy on ``device`` ('cpu' or 'cuda'); the same tensor when it is already there."""
        if device == self.device:
            return self
        return Tensor(backend.to_device(self.data, device), requires_grad=self.requires_grad)

    def detach(self):
        """The same data, cut off from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, requires_grad=True):
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"requires_grad_: only floating-point tensors can require grad, got dtype {self.dtype}")
        self.requires_grad = requires_grad
        return self

    def astype(self, dtype):
        return ops.astype(self, dtype)

    def float(self):
        return self.astype(np.float32)

    def double(self):
        return self.astype(np.float64)

    # --- backpropagation -----------------------------------------------------
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) · grad into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` is dL/d(self); it may be omitted only when ``self`` has one element
        (a loss), where it is 1.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad (no input required grad, "
                               "or it was computed under no_grad())")
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward: grad can be omitted only for a one-element tensor, "
                                   f"but this tensor has shape {self.shape}; pass grad=<array of that shape>")
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else grad
            grad = xp.asarray(grad, dtype=self.dtype)
            if grad.shape != self.data.shape:
                raise ValueError(f"backward: grad has shape {tuple(grad.shape)} but the tensor has shape {self.shape}")
        if self.creator is None:  # a leaf: the gradient is simply the one given
            _accumulate_leaf(self, grad)
            return

        # Gradients waiting for the function that produced them, by tensor id. The entry
        # also holds the tensor: once its consumer is released nothing else keeps it alive.
        pending = {id(self): (self, grad)}
        for function in _topological_order(self.creator):
            output_grads = []
            for output_ref, (shape, dtype) in zip(function.outputs, function.output_specs):
                output = output_ref()
                _, grad_output = pending.pop(id(output), (None, None)) if output is not None else (None, None)
                output_grads.append(xp.zeros(shape, dtype) if grad_output is None else grad_output)
            input_grads = function.backward(*output_grads)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            _check_gradients(function, input_grads)
            for tensor, grad_input in zip(function.inputs, input_grads):
                if grad_input is None or not tensor.requires_grad:
                    continue
                if tensor.creator is None:
                    _accumulate_leaf(tensor, grad_input)
                else:
                    key = id(tensor)
                    pending[key] = (tensor, grad_input if key not in pending else pending[key][1] + grad_input)
            function.release()

    def zero_grad(self):
        self.grad = None

    # --- operators: each builds one Function of the ops package -------------
    # ``a + b`` calls a.__add__(b); ``2 * t`` calls t.__rmul__(2), the operands reflected.
    __add__, __radd__ = _operator("add"), _operator("add", reflected=True)
    __sub__, __rsub__ = _operator("sub"), _operator("sub", reflected=True)
    __mul__, __rmul__ = _operator("mul"), _operator("mul", reflected=True)
    __truediv__, __rtruediv__ = _operator("div"), _operator("div", reflected=True)
    __matmul__, __rmatmul__ = _operator("matmul"), _operator("matmul", reflected=True)
    __neg__ = _elementwise("neg")
    exp, log = _elementwise("exp"), _elementwise("log")
    relu, sigmoid, tanh = _elementwise("relu"), _elementwise("sigmoid"), _elementwise("tanh")

    def __pow__(self, exponent):
        return ops.pow(self, exponent)

    def __getitem__(self, index):
        return ops.getitem(self, index)

    def sum(self, dim=None, keepdim=False):
        return ops.sum(self, dim, keepdim)

    def mean(self, dim=None, keepdim=False):
        return ops.mean(self, dim, keepdim)

    def max(self, dim=None, keepdim=False):
        return ops.max(self, dim, keepdim)

    def reshape(self, *shape):
        return ops.reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)

    def flatten(self, start_dim=0):
        return ops.reshape(self, self.shape[:start_dim] + (-1,))

    def transpose(self, dim0, dim1):
        """Swap two dims (PyTorch's ``transpose``); ``permute`` reorders all of them."""
        dims = list(range(self.ndim))
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return ops.permute(self, dims)

    def permute(self, *dims):
        """Reorder the dims (``Tensor.permute``): ``t.permute(2, 0, 1)`` or ``t.permute((2, 0, 1))``."""
        return ops.permute(self, dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims)

    @property
    def T(self):
        return ops.permute(self, tuple(reversed(range(self.ndim))))

    def softmax(self, dim):
        return ops.softmax(self, dim)

    def log_softmax(self, dim):
        return ops.log_softmax(self, dim)

    def argmax(self, dim=None):
        """Indices of the maxima along ``dim`` (an integer tensor; not differentiable)."""
        return Tensor(self.data.argmax(axis=dim))


def as_tensor(value, like=None):
    """``value`` as a Tensor; a Python number takes the dtype and device of ``like``."""
    if isinstance(value, Tensor):
        return value
    if like is not None and not hasattr(value, "shape"):
        xp = backend.get_array_module(like.data)
        return Tensor(xp.asarray(value, dtype=like.dtype))
    return Tensor(value)


def _accumulate_leaf(tensor, grad):
    # Never add in place: ``grad`` may be the very array another tensor received.
    tensor.grad = grad.copy() if tensor.grad is None else tensor.grad + grad


def _check_gradients(function, input_grads):
    """Catch a wrong backward at the op that wrote it, not three layers later."""
    name = type(function).__name__
    if len(input_grads) != len(function.inputs):
        raise RuntimeError(f"{name}.backward returned {len(input_grads)} gradients for {len(function.inputs)} inputs")
    for position, (tensor, grad_input) in enumerate(zip(function.inputs, input_grads)):
        if grad_input is None or not tensor.requires_grad:
            continue
        if tuple(grad_input.shape) != tensor.shape:
            raise RuntimeError(f"{name}.backward: gradient for input {position} has shape {tuple(grad_input.shape)}, "
                               f"expected {tensor.shape}")
        if grad_input.dtype != tensor.dtype:
            raise RuntimeError(f"{name}.backward: gradient for input {position} has dtype {grad_input.dtype}, "
                               f"expected {tensor.dtype} (a silent upcast?)")


def _topological_order(root):
    """Functions reachable from ``root``, each listed before every function that produced its inputs.

    An iterative depth-first search (a recursive one would overflow Python's stack on
    a 10,000-op chain): a function is appended once all of its producers are done,
    which gives producers-first order; reversed, it is consumers-first, as backward needs.
    """
    finished, visited = [], set()
    stack = [(root, False)]
    while stack:
        function, producers_done = stack.pop()
        if producers_done:
            finished.append(function)
            continue
        if id(function) in visited:
            continue
        visited.add(id(function))
        stack.append((function, True))
        for tensor in function.inputs:
            producer = tensor.creator
            if producer is not None and id(producer) not in visited:
                stack.append((producer, False))
    return reversed(finished)


# ---------------------------------------------------------------------------
# Function
# ---------------------------------------------------------------------------
class Function:
    """One differentiable operation.

    Subclasses implement ``forward(*arrays) -> array or tuple of arrays`` and
    ``backward(*output_grads) -> one gradient (or None) per input``; options (stride,
    dim, ...) go to ``__init__``. Call an instance on tensors: ``Exp()(x)``.
    ``forward`` may store on ``self`` what ``backward`` needs; ``self.needs_input_grad``
    tells backward which gradients are wanted, so it can skip the others (return None).
    """

    inputs = ()

    def __call__(self, *inputs):
        tensors = [as_tensor(x) for x in inputs]
        backend.check_same_device([t.data for t in tensors], type(self).__name__)
        self.needs_input_grad = tuple(t.requires_grad for t in tensors)
        outputs = self.forward(*(t.data for t in tensors))
        single = not isinstance(outputs, tuple)
        outputs = (outputs,) if single else outputs

        record = _grad_mode.enabled and any(self.needs_input_grad)
        results = tuple(Tensor(y, requires_grad=record and y.dtype.kind == "f") for y in outputs)
        if record:
            self.inputs = tensors
            # Weak references: a function must not keep its own outputs alive.
            self.outputs = [weakref.ref(r) for r in results]
            self.output_specs = [(y.shape, y.dtype) for y in outputs]
            for r in results:
                r.creator = self
        return results[0] if single else results

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, *output_grads):
        raise NotImplementedError

    def release(self):
        """Drop the graph edges and everything forward saved, once backward has run."""
        for output_ref in self.outputs:
            output = output_ref()
            if output is not None:
                output.creator = None
        self.__dict__.clear()


# The usual Tensor-operator cycle: Tensor's operators call ``ops`` (``a + b`` is ``ops.add``), and ``ops`` builds
# its Functions on Tensor and Function, so it is imported here, at the bottom, once both exist.
from . import ops  # noqa: E402
