"""The detection losses: paper-sized cases, loop references from the definitions, float64 gradchecks."""
import math

import numpy as np
import pytest

import minseg
from minseg import Tensor
from minseg.functional.detection_loss import binary_cross_entropy_with_logits, l1_loss, smooth_l1_loss


# ---------------------------------------------------------------------------
# References, one element at a time
# ---------------------------------------------------------------------------
def reference_bce(x, t, w=None):
    out = np.empty(x.size)
    for i, (xi, ti) in enumerate(zip(x.reshape(-1), t.reshape(-1))):
        p = 1 / (1 + math.exp(-xi))
        out[i] = -(ti * math.log(p) + (1 - ti) * math.log(1 - p))
    out = out.reshape(x.shape)
    return out if w is None else out * w


def reference_smooth_l1(x, t, beta):
    out = np.empty(x.size)
    for i, d in enumerate((x - t).reshape(-1)):
        out[i] = 0.5 * d * d / beta if abs(d) < beta else abs(d) - 0.5 * beta
    return out.reshape(x.shape)


def reduce(loss, reduction):
    return {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]


SHAPES = [(1,), (5,), (3, 4), (2, 1, 3, 3)]


# ---------------------------------------------------------------------------
# Binary cross-entropy with logits
# ---------------------------------------------------------------------------
def test_bce_on_paper():
    # x = 0: σ = 1/2, so the loss is log 2 whatever the target; x = log 3: σ = 3/4, target 1 gives log(4/3).
    loss = binary_cross_entropy_with_logits(np.array([0.0, math.log(3)]), np.array([1.0, 1.0]), reduction="none")
    np.testing.assert_allclose(loss.numpy(), [math.log(2), math.log(4 / 3)], rtol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_matches_reference_and_gradcheck(shape, reduction):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape) * 3
    t = rng.random(shape).round()
    w = rng.random(shape) + 0.5
    for weight in (None, w):
        got = binary_cross_entropy_with_logits(x, t, weight=weight, reduction=reduction)
        np.testing.assert_allclose(got.numpy(), reduce(reference_bce(x, t, weight), reduction), rtol=1e-10)
        xt = Tensor(x.copy(), requires_grad=True)
        minseg.gradcheck(lambda v: binary_cross_entropy_with_logits(v, t, weight=weight, reduction=reduction), [xt])


def test_bce_stays_finite_for_huge_logits_and_its_gradient_is_the_probability_error():
    x = Tensor(np.array([1000.0, -1000.0, 1000.0, -1000.0]), requires_grad=True)
    t = np.array([1.0, 0.0, 0.0, 1.0])
    loss = binary_cross_entropy_with_logits(x, t, reduction="sum")
    np.testing.assert_allclose(loss.item(), 2000.0)
    loss.backward()
    np.testing.assert_allclose(x.grad, [0.0, 0.0, 1.0, -1.0])


def test_bce_weight_broadcasts_and_mean_counts_every_element():
    x, t = np.zeros((2, 3)), np.ones((2, 3))
    loss = binary_cross_entropy_with_logits(x, t, weight=np.array([0.0, 1.0, 2.0]))
    np.testing.assert_allclose(loss.item(), math.log(2) * 6 / 6)


def test_bce_of_an_empty_input_is_zero():
    assert binary_cross_entropy_with_logits(np.zeros((0,)), np.zeros((0,))).item() == 0.0


# ---------------------------------------------------------------------------
# Smooth L1 and L1
# ---------------------------------------------------------------------------
def test_smooth_l1_on_paper():
    # beta = 1: d = 0.5 is inside (0.5·0.25 = 0.125), d = −3 outside (3 − 0.5 = 2.5).
    loss = smooth_l1_loss(np.array([0.5, -3.0]), np.array([0.0, 0.0]), reduction="none")
    np.testing.assert_allclose(loss.numpy(), [0.125, 2.5])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("beta", [1 / 9, 1.0])
def test_smooth_l1_matches_reference_and_gradcheck(shape, reduction, beta):
    rng = np.random.default_rng(len(shape) + int(beta * 9))
    x, t = rng.standard_normal(shape), rng.standard_normal(shape)
    got = smooth_l1_loss(x, t, reduction=reduction, beta=beta)
    np.testing.assert_allclose(got.numpy(), reduce(reference_smooth_l1(x, t, beta), reduction), rtol=1e-10)
    xt, tt = Tensor(x.copy(), requires_grad=True), Tensor(t.copy(), requires_grad=True)
    minseg.gradcheck(lambda a, b: smooth_l1_loss(a, b, reduction=reduction, beta=beta), [xt, tt])


@pytest.mark.parametrize("beta", [1 / 9, 1.0])
def test_smooth_l1_gradcheck_next_to_the_kink(beta):
    # |d| a hair inside and outside beta on both sides: the slope is continuous there (d/beta = 1 = sign d).
    offsets = np.array([-1e-3, -1e-4, 1e-4, 1e-3])
    d = np.concatenate([beta + offsets, -beta + offsets])
    x = Tensor(d.copy(), requires_grad=True)
    minseg.gradcheck(lambda a: smooth_l1_loss(a, np.zeros(8), reduction="sum", beta=beta), [x], eps=1e-6)
    loss = smooth_l1_loss(Tensor(d, requires_grad=True), np.zeros(8), reduction="sum", beta=beta)
    assert np.isfinite(loss.item())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_l1_matches_reference_and_gradcheck(reduction):
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    np.testing.assert_allclose(l1_loss(x, t, reduction=reduction).numpy(), reduce(np.abs(x - t), reduction))
    xt, tt = Tensor(x.copy(), requires_grad=True), Tensor(t.copy(), requires_grad=True)
    minseg.gradcheck(lambda a, b: l1_loss(a, b, reduction=reduction), [xt, tt])


def test_smooth_l1_tends_to_l1_and_target_gradient_is_the_negated_input_gradient():
    rng = np.random.default_rng(4)
    x, t = rng.standard_normal(6), rng.standard_normal(6)
    np.testing.assert_allclose(smooth_l1_loss(x, t, beta=1e-9).item(), l1_loss(x, t).item(), atol=1e-8)
    xt, tt = Tensor(x, requires_grad=True), Tensor(t, requires_grad=True)
    smooth_l1_loss(xt, tt, beta=0.5).backward()
    np.testing.assert_allclose(tt.grad, -xt.grad)


# ---------------------------------------------------------------------------
# Bad arguments
# ---------------------------------------------------------------------------
def test_bad_arguments_name_the_call_and_the_argument():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="smooth_l1_loss: target must have the input's shape"):
        smooth_l1_loss(x, np.zeros(3))
    with pytest.raises(ValueError, match="smooth_l1_loss: beta must be a number >= 0, got -1"):
        smooth_l1_loss(x, x, beta=-1)
    with pytest.raises(ValueError, match="l1_loss: reduction must be 'mean', 'sum' or 'none', got 'max'"):
        l1_loss(x, x, reduction="max")
    with pytest.raises(ValueError, match="binary_cross_entropy_with_logits: weight of shape"):
        binary_cross_entropy_with_logits(x, x, weight=np.ones(4))
    with pytest.raises(TypeError, match="binary_cross_entropy_with_logits: target must have the input's dtype"):
        binary_cross_entropy_with_logits(Tensor(x.astype(np.float32)), Tensor(x))
