"""The engine itself: accumulation, deep graphs, freeing the graph, no_grad, errors."""
import gc
import weakref

import numpy as np
import pytest

import minseg
from minseg import Function, Tensor


def test_gradient_accumulates_when_a_tensor_is_used_twice():
    x = Tensor(np.array([2.0, -3.0]), requires_grad=True)
    y = x * x + x  # dy/dx = 2x + 1
    y.backward(np.ones(2))
    np.testing.assert_array_equal(x.grad, [5.0, -5.0])


def test_gradients_accumulate_across_backward_calls_until_cleared():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [6.0, 6.0])
    x.zero_grad()
    assert x.grad is None


def test_diamond_graph_sums_both_paths():
    # z = a*b + a with b = a*2: dz/da = 4a + 1 through both branches
    a = Tensor(np.array([1.5]), requires_grad=True)
    b = a * 2
    z = a * b + a
    z.backward()
    np.testing.assert_allclose(a.grad, [4 * 1.5 + 1])


def test_a_10000_op_chain_backpropagates_without_recursion():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001 + 0.0
    y.backward()
    np.testing.assert_allclose(x.grad, [1.0001 ** 10_000], rtol=1e-9)


def test_only_leaves_that_require_grad_receive_gradients():
    x = Tensor(np.ones(3), requires_grad=True)
    w = Tensor(np.full(3, 2.0))  # a constant
    hidden = x * w
    (hidden * hidden).sum().backward()
    np.testing.assert_array_equal(x.grad, [8.0, 8.0, 8.0])
    assert w.grad is None
    assert hidden.grad is None  # intermediate gradients are not kept


def test_saved_arrays_and_functions_are_freed_after_backward():
    x = Tensor(np.random.default_rng(0).standard_normal(1000), requires_grad=True)
    hidden = x.exp()                     # Exp saves its output array for backward
    loss = (hidden * hidden).sum()
    exp_function = weakref.ref(hidden.creator)
    saved_array = weakref.ref(hidden.creator.y)
    del hidden
    loss.backward()
    gc.collect()
    assert exp_function() is None, "the graph should be released once backward has walked it"
    assert saved_array() is None, "arrays saved for backward should be freed after backward"
    assert loss.creator is None


def test_memory_does_not_grow_across_training_steps():
    w = Tensor(np.ones((50, 50)), requires_grad=True)
    functions = []
    for _ in range(5):
        loss = ((w @ w).tanh() * 0.5).sum()
        functions.append(weakref.ref(loss.creator))
        loss.backward()
    gc.collect()
    assert all(ref() is None for ref in functions)


def test_no_grad_records_no_graph():
    x = Tensor(np.ones(2), requires_grad=True)
    with minseg.no_grad():
        y = x * 2
    assert not y.requires_grad and y.creator is None
    assert minseg.is_grad_enabled()
    z = x * 2
    assert z.requires_grad and z.creator is not None


def test_backward_without_grad_needs_a_one_element_tensor():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"one-element.*\(2, 3\)"):
        (x * 2).backward()
    with pytest.raises(ValueError, match=r"grad has shape \(3,\).*\(2, 3\)"):
        (x * 2).backward(np.ones(3))


def test_backward_on_a_tensor_that_does_not_require_grad_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(1)).backward()


def test_a_wrong_backward_is_caught_at_its_function():
    class BadShape(Function):
        def forward(self, x):
            return x * 2

        def backward(self, gy):
            return gy.sum(axis=0)

    x = Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"BadShape.backward.*shape \(3,\).*\(2, 3\)"):
        BadShape()(x).sum().backward()

    class Upcasts(Function):
        def forward(self, x):
            return x

        def backward(self, gy):
            return gy.astype(np.float64)

    x32 = Tensor(np.ones(2, np.float32), requires_grad=True)
    with pytest.raises(RuntimeError, match="Upcasts.backward.*float64.*float32"):
        Upcasts()(x32).sum().backward()


def test_python_numbers_become_float32_and_arrays_keep_their_dtype():
    assert Tensor(1.5).dtype == np.float32
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(np.ones(2)).dtype == np.float64
    assert Tensor(np.ones(2, np.int64)).dtype == np.int64
    assert Tensor(np.float64(2.0)).dtype == np.float64
    with pytest.raises(TypeError, match="floating-point"):
        Tensor(np.ones(2, np.int64), requires_grad=True)


def test_tensor_basics():
    t = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert t.shape == (2, 3) and t.ndim == 2 and t.size == 6 and len(t) == 2 and t.device == "cpu"
    assert isinstance(t.numpy(), np.ndarray)
    assert t.to("cpu") is t
    assert Tensor(np.array([4.0])).item() == 4.0
    d = t.detach()
    assert not d.requires_grad and d.creator is None
    assert "requires_grad=True" in repr(t)
    np.testing.assert_array_equal(t.argmax(dim=1).numpy(), [2, 2])


def test_ndarray_on_the_left_still_builds_a_graph():
    x = Tensor(np.ones(3), requires_grad=True)
    y = np.full(3, 2.0) * x
    assert isinstance(y, Tensor)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])
