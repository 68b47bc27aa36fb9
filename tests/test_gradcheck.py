"""gradcheck must pass right gradients and catch wrong ones, saying where."""
import numpy as np
import pytest

from minseg import Function, GradcheckError, Tensor, gradcheck


class ScaledSquare(Function):
    """y = x², with a backward we can break on purpose."""

    def __init__(self, backward_factor=2.0, transpose=False, wrong_at=None):
        self.backward_factor, self.transpose, self.wrong_at = backward_factor, transpose, wrong_at

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, gy):
        gx = self.backward_factor * self.x * gy
        if self.wrong_at is not None:
            gx[self.wrong_at] += 1.0
        return gx.T.copy() if self.transpose else gx


def test_passes_a_correct_backward():
    x = Tensor(np.random.default_rng(1).standard_normal((3, 3)), requires_grad=True)
    assert gradcheck(ScaledSquare(), [x])


def test_reports_the_input_the_worst_index_and_both_values():
    x = Tensor(np.array([[1.0, 2.0], [3.0, 4.0]]), requires_grad=True)
    with pytest.raises(GradcheckError, match=r"input 0 .*index \(1, 1\).*analytic .*numerical"):
        gradcheck(ScaledSquare(wrong_at=(1, 1)), [x])


def test_a_transposed_gradient_is_caught_thanks_to_the_random_upstream_gradient():
    # With an all-ones upstream gradient and symmetric x this bug would be invisible.
    x = Tensor(np.random.default_rng(2).standard_normal((3, 3)), requires_grad=True)
    with pytest.raises(GradcheckError):
        gradcheck(ScaledSquare(transpose=True), [x])


def test_checks_every_input_that_requires_grad_and_only_those():
    a = Tensor(np.random.default_rng(3).standard_normal(4), requires_grad=True)
    b = Tensor(np.random.default_rng(4).standard_normal(4), requires_grad=True)
    constant = Tensor(np.ones(4))

    class WrongSecondGradient(Function):
        def forward(self, x, y, z):
            self.x, self.y = x, y
            return x * y + z

        def backward(self, g):
            return g * self.y, g * self.y, g  # dL/dy should be g * x

    with pytest.raises(GradcheckError, match="input 1"):
        gradcheck(WrongSecondGradient(), [a, b, constant])


def test_sampled_elements_still_catch_a_wrong_gradient():
    x = Tensor(np.random.default_rng(5).standard_normal((20, 20)), requires_grad=True)
    assert gradcheck(ScaledSquare(), [x], n_samples=10)
    with pytest.raises(GradcheckError):
        gradcheck(ScaledSquare(backward_factor=3.0), [x], n_samples=10)


def test_refuses_float32_and_inputs_without_grad():
    with pytest.raises(TypeError, match="float64"):
        gradcheck(ScaledSquare(), [Tensor(np.ones(2, np.float32), requires_grad=True)])
    with pytest.raises(ValueError, match="no input requires grad"):
        gradcheck(ScaledSquare(), [Tensor(np.ones(2))])


def test_leaves_the_inputs_unchanged():
    data = np.random.default_rng(6).standard_normal(5)
    x = Tensor(data.copy(), requires_grad=True)
    gradcheck(ScaledSquare(), [x])
    np.testing.assert_array_equal(x.data, data)
