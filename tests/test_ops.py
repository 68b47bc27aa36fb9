"""Gradient checks for every basic op in minseg/ops/, on random float64 inputs."""
import numpy as np
import pytest

import minseg
from minseg import Tensor, gradcheck, ops

rng = np.random.default_rng(0)


def rand(*shape, positive=False, requires_grad=True):
    data = rng.standard_normal(shape)
    if positive:
        data = np.abs(data) + 0.5
    return Tensor(data, requires_grad=requires_grad)


# Pairs of shapes that broadcast in every way NumPy allows: equal, trailing, size-1 axes, scalar.
BROADCAST_SHAPES = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((2, 1, 5), (3, 1)), ((1, 4), (3, 1)), ((3,), ()),
                    ((1,), (2, 3))]


@pytest.mark.parametrize("shape_a, shape_b", BROADCAST_SHAPES)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_binary_ops_gradients_with_broadcasting(op, shape_a, shape_b):
    a, b = rand(*shape_a), rand(*shape_b, positive=(op == "div"))
    fn = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y,
          "mul": lambda x, y: x * y, "div": lambda x, y: x / y}[op]
    assert gradcheck(fn, [a, b])


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_binary_ops_with_python_scalars_on_either_side(op):
    x = rand(2, 3, positive=True)
    fn = {"add": lambda t: 2.5 + t + 1, "sub": lambda t: 3.0 - t - 1,
          "mul": lambda t: 2.0 * t * 3, "div": lambda t: 2.0 / t / 4}[op]
    assert gradcheck(fn, [x])
    assert fn(x).dtype == np.float64


def test_neg_pow_exp_log_gradients():
    x = rand(3, 5, positive=True)
    assert gradcheck(lambda t: -t, [x])
    assert gradcheck(lambda t: t ** 3, [x])
    assert gradcheck(lambda t: t ** -1.5, [x])
    assert gradcheck(lambda t: t.exp(), [x])
    assert gradcheck(lambda t: t.log(), [x])


@pytest.mark.parametrize("shape_a, shape_b", [((3, 4), (4, 5)), ((2, 3, 4), (4, 2)), ((2, 1, 3, 4), (5, 4, 3)),
                                              ((1, 4), (4, 1))])
def test_matmul_gradients_including_batched_broadcasting(shape_a, shape_b):
    assert gradcheck(lambda a, b: a @ b, [rand(*shape_a), rand(*shape_b)])


@pytest.mark.parametrize("dim", [None, 0, 1, -1, (0, 2)])
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("reduction", ["sum", "mean", "max"])
def test_reductions_gradients_over_dims(reduction, dim, keepdim):
    x = rand(3, 4, 5)
    assert gradcheck(lambda t: getattr(t, reduction)(dim=dim, keepdim=keepdim), [x])


def test_max_shares_gradient_between_ties():
    x = Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]]), requires_grad=True)
    x.max(dim=1).backward(np.array([1.0, 1.0]))
    np.testing.assert_array_equal(x.grad, [[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])


def test_shape_ops_gradients():
    x = rand(2, 3, 4)
    assert gradcheck(lambda t: t.reshape(4, 6) * Tensor(np.arange(24.0).reshape(4, 6)), [x])
    assert gradcheck(lambda t: t.permute(2, 0, 1), [x])
    assert gradcheck(lambda t: t.transpose(0, 2), [x])
    assert gradcheck(lambda t: t.flatten(1), [x])


def test_permute_takes_dims_as_torch_and_names_them_in_errors():
    x = Tensor(np.arange(24.0).reshape(2, 3, 4))
    np.testing.assert_array_equal(ops.permute(x, dims=(2, 0, 1)).numpy(), np.transpose(x.numpy(), (2, 0, 1)))
    with pytest.raises(ValueError, match=r"permute: dims must be a permutation of 0\.\.2 for a 3-d tensor, "
                                         r"got \(0, 0, 1\); name each dim once"):
        ops.permute(x, dims=(0, 0, 1))


@pytest.mark.parametrize("index", [1, (slice(None), 2), (Ellipsis, slice(1, 3)), (0, slice(None, None, -1)),
                                   np.array([0, 1, 0]), (slice(None), np.array([2, 2, 0]), slice(0, 3, 2))])
def test_indexing_gradients_including_repeated_indices(index):
    assert gradcheck(lambda t: t[index], [rand(2, 3, 4)])


def test_indexing_accumulates_repeated_fancy_indices():
    x = Tensor(np.zeros(3), requires_grad=True)
    x[np.array([0, 0, 2])].backward(np.array([1.0, 2.0, 5.0]))
    np.testing.assert_array_equal(x.grad, [3.0, 0.0, 5.0])


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cat_gradients(dim):
    shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
    for s, size in zip(shapes, (1, 2, 3)):
        s[dim] = size
    tensors = [rand(*s) for s in shapes]
    assert gradcheck(lambda *ts: minseg.cat(ts, dim), tensors)


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_stack_gradients(dim):
    assert gradcheck(lambda *ts: minseg.stack(ts, dim), [rand(2, 3), rand(2, 3), rand(2, 3)])


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_activation_gradients(name):
    x = rand(3, 7)
    x.data[np.abs(x.data) < 1e-3] = 0.5  # keep relu's kink away from the finite-difference step
    assert gradcheck(lambda t: getattr(t, name)(), [x])


def test_relu_passes_the_gradient_only_where_x_is_positive():
    # x = 0 and x = -0 take slope 0, as PyTorch; float32 stays float32 (the bool mask is no upcast).
    x = Tensor(np.array([[-2.0, -0.0, 0.0, 1e-30, 3.0]], np.float32), requires_grad=True)
    y = x.relu()
    y.backward(np.array([[10.0, 20.0, 30.0, 40.0, 50.0]], np.float32))
    np.testing.assert_array_equal(y.numpy(), np.array([[0.0, 0.0, 0.0, 1e-30, 3.0]], np.float32))
    np.testing.assert_array_equal(x.grad, [[0.0, 0.0, 0.0, 40.0, 50.0]])
    assert x.grad.dtype == np.float32


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_gradients(name, dim):
    assert gradcheck(lambda t: getattr(t, name)(dim), [rand(2, 5, 3)])


def test_softmax_values_are_stable_for_huge_logits():
    x = Tensor(np.array([[1e4, 0.0, -1e4], [-1e4, -1e4, -1e4]], dtype=np.float32))
    probabilities = x.softmax(1).numpy()
    log_probabilities = x.log_softmax(1).numpy()
    assert np.all(np.isfinite(probabilities)) and np.all(np.isfinite(log_probabilities))
    np.testing.assert_allclose(probabilities[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(probabilities[1], [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(log_probabilities[0], [0.0, -1e4, -2e4])


def test_softmax_matches_the_definition():
    x = rng.standard_normal((4, 6))
    expected = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(Tensor(x).softmax(1).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(Tensor(x).log_softmax(1).numpy(), np.log(expected), rtol=1e-12)


def test_float32_stays_float32_through_every_op():
    x = Tensor(rng.standard_normal((2, 3)).astype(np.float32) + 3, requires_grad=True)
    outputs = [x + 1.5, 2.0 - x, x * 0.1, 1.0 / x, x ** 2, x.exp(), x.log(), x @ x.T, x.mean(), x.max(0),
               x.sigmoid(), x.tanh(), x.relu(), x.softmax(1), x.log_softmax(1), x[0], minseg.cat([x, x], 0)]
    for y in outputs:
        assert y.dtype == np.float32, y
    sum(y.sum() for y in outputs).backward()
    assert x.grad.dtype == np.float32


def test_mixing_float32_and_float64_is_an_error_not_an_upcast():
    with pytest.raises(TypeError, match="float32.*float64|float64.*float32"):
        Tensor(np.ones(2, np.float32)) + Tensor(np.ones(2, np.float64))


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)"):
        Tensor(np.ones((2, 3))) + Tensor(np.ones(4))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 3\)"):
        Tensor(np.ones((2, 3))) @ Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"tensor 1 has \(2, 4\)"):
        minseg.cat([Tensor(np.ones((3, 3))), Tensor(np.ones((2, 4)))], dim=0)
    with pytest.raises(ValueError, match="reshape"):
        Tensor(np.ones(6)).reshape(4, 2)
    with pytest.raises(ValueError, match=r"sum: dim 3 is out of range for a tensor with 2 dimensions; "
                                         r"use a dim in \[-2, 1\]"):
        Tensor(np.ones((2, 2))).sum(dim=3)


def test_astype_gradient_converts_back_to_the_input_dtype():
    x = rand(3, 4)
    # float64 -> float64 keeps the check exact; a float32 round trip would drown the differences.
    assert gradcheck(lambda t: t.astype(np.float64) * t, [x])
    y32 = Tensor(np.ones(3, np.float32), requires_grad=True)
    (y32.double() * Tensor(np.array([1.0, 2.0, 3.0]))).sum().backward()
    assert y32.grad.dtype == np.float32
    np.testing.assert_array_equal(y32.grad, [1.0, 2.0, 3.0])
