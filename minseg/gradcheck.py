"""Numerical gradient check: is a Function's analytic backward right?

For a function f and a random upstream gradient g, the scalar L(x) = ⟨f(x), g⟩ has
dL/dx = (df/dx)ᵀ g, which is exactly what ``backward(g)`` computes. Central
differences estimate the same quantity element by element:

    dL/dx_i ≈ (L(x + ε e_i) - L(x - ε e_i)) / 2ε      (error O(ε²))

A random g (not all ones) matters: with ones, a backward that transposes or permutes
its gradient can still sum to the right numbers. Float64 matters too: in float32 the
rounding error of L is larger than the differences being measured.
"""
import numpy as np

from .autograd import Tensor, no_grad
from .backend import get_array_module

__all__ = ["gradcheck", "GradcheckError"]


class GradcheckError(AssertionError):
    """The analytic and the numerical gradient disagree."""


def _outputs_as_tuple(outputs):
    return outputs if isinstance(outputs, tuple) else (outputs,)


def gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, n_samples=None, seed=0):
    """Compare ``fn``'s backward with central differences for every input that requires grad.

    fn:        takes the tensors in ``inputs`` and returns a Tensor (or a tuple of Tensors).
    inputs:    a sequence of Tensors; those with ``requires_grad=True`` are checked and
               must be float64.
    n_samples: check only this many randomly chosen elements per input (for large
               inputs such as a model's weights); None checks every element.
    Passes when |analytic - numerical| <= atol + rtol·|numerical| everywhere; otherwise
    raises GradcheckError naming the input, the worst element and both values.
    Returns True.
    """
    inputs = list(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad, so there is nothing to check")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {inputs[i].dtype}; gradient checks need float64 inputs")

    for i in checked:  # perturbing elements below writes through a flat view, which needs contiguity
        inputs[i].data = get_array_module(inputs[i].data).ascontiguousarray(inputs[i].data)

    rng = np.random.default_rng(seed)
    outputs = _outputs_as_tuple(fn(*inputs))
    grad_outputs = [rng.standard_normal(out.shape) for out in outputs]
    _backward_of_inner_product(outputs, grad_outputs, [inputs[i] for i in checked])

    def loss_value():
        with no_grad():
            outs = _outputs_as_tuple(fn(*inputs))
        return float(sum(np.sum(out.numpy() * grad_out) for out, grad_out in zip(outs, grad_outputs)))

    for i in checked:
        tensor = inputs[i]
        analytic = np.zeros(tensor.shape) if tensor.grad is None else Tensor(tensor.grad).numpy()
        flat = tensor.data.reshape(-1)  # a view: writing into it perturbs the input
        if n_samples is None or n_samples >= flat.size:
            positions = np.arange(flat.size)
        else:
            positions = rng.choice(flat.size, size=n_samples, replace=False)
        numerical = _central_differences(flat, positions, loss_value, eps)
        _compare(i, tensor.shape, analytic.reshape(-1)[positions], numerical, positions, atol, rtol)
    return True


def _backward_of_inner_product(outputs, grad_outputs, checked_inputs):
    """Analytic: one backward pass of L = Σ_k ⟨output_k, grad_output_k⟩ fills each checked input's grad."""
    for tensor in checked_inputs:
        tensor.grad = None
    total = None
    for out, grad_out in zip(outputs, grad_outputs):
        if not out.requires_grad:
            continue
        term = (out * Tensor(grad_out.astype(out.dtype))).sum()
        total = term if total is None else total + term
    if total is None:
        raise GradcheckError("gradcheck: no output of fn depends on an input that requires grad")
    total.backward()


def _central_differences(flat, positions, loss_value, eps):
    """(L(x + eps·e_p) − L(x − eps·e_p)) / 2eps for each position p of the flat view ``flat``."""
    numerical = np.empty(len(positions))
    for k, position in enumerate(positions):
        original = flat[position].item()
        flat[position] = original + eps
        plus = loss_value()
        flat[position] = original - eps
        minus = loss_value()
        flat[position] = original
        numerical[k] = (plus - minus) / (2 * eps)
    return numerical


def _compare(i, shape, analytic, numerical, positions, atol, rtol):
    """Raise GradcheckError at the worst element outside atol + rtol·|numerical|."""
    excess = np.abs(analytic - numerical) - (atol + rtol * np.abs(numerical))
    if np.any(excess > 0):
        worst = int(np.argmax(excess))
        index = np.unravel_index(positions[worst], shape)
        raise GradcheckError(
            f"gradcheck: input {i} (shape {shape}) has a wrong gradient at index {tuple(map(int, index))}: "
            f"analytic {analytic[worst]:.10g}, numerical {numerical[worst]:.10g} "
            f"({int(np.sum(excess > 0))} of {len(positions)} checked elements out of tolerance "
            f"atol={atol}, rtol={rtol})")
