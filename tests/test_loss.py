import math

import numpy as np
import pytest

import minseg
import minseg.functional as F
from minseg import backend
from minseg.functional.loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward


# ---------------------------------------------------------------------------
# Independent references: one pixel at a time, in float64, straight from the definitions
# ---------------------------------------------------------------------------
def pixels_of(logits, target):
    """(P, C) logits rows and (P,) ids: the class axis moved last, every pixel a row."""
    num_classes = logits.shape[1]
    return np.moveaxis(np.asarray(logits, np.float64), 1, -1).reshape(-1, num_classes), target.reshape(-1)


def log_softmax_row(row):
    return row - (row.max() + math.log(np.exp(row - row.max()).sum()))


def reference_cross_entropy(logits, target, weight=None, ignore_index=-100, reduction="mean", gamma=0.0):
    """Per-pixel −w (1 − p)^γ log p by log_softmax + gather (the gradient reference below is for γ = 0)."""
    rows, ids = pixels_of(logits, target)
    losses, weights = np.zeros(len(ids)), np.zeros(len(ids))
    for i, (row, c) in enumerate(zip(rows, ids)):
        if c == ignore_index:
            continue
        weights[i] = 1.0 if weight is None else weight[c]
        log_p = log_softmax_row(row)[c]
        losses[i] = -weights[i] * (1 - math.exp(log_p)) ** gamma * log_p
    if reduction == "none":
        return losses.reshape(target.shape)
    if reduction == "sum":
        return losses.sum()
    # Nothing counted: minseg's documented choice is 0 (PyTorch gives NaN).
    return losses.sum() / weights.sum() if weights.sum() > 0 else 0.0


def reference_cross_entropy_grad(logits, target, weight=None, ignore_index=-100):
    """d mean-loss / d logits = w (softmax − one_hot) / Σ w, per pixel."""
    rows, ids = pixels_of(logits, target)
    grads, weights = np.zeros_like(rows), np.zeros(len(ids))
    for i, (row, c) in enumerate(zip(rows, ids)):
        if c == ignore_index:
            continue
        weights[i] = 1.0 if weight is None else weight[c]
        grads[i] = np.exp(log_softmax_row(row)) * weights[i]
        grads[i, c] -= weights[i]
    if weights.sum() > 0:  # nothing counted: every gradient stays 0
        grads /= weights.sum()
    moved = grads.reshape(np.moveaxis(np.empty(logits.shape), 1, -1).shape)
    return np.moveaxis(moved, -1, 1)


def reference_overlap_loss(logits, target, smooth, ignore_index=None, kind="dice"):
    rows, ids = pixels_of(logits, target)
    keep = ids != ignore_index if ignore_index is not None else np.ones(len(ids), bool)
    probs = np.array([np.exp(log_softmax_row(r)) for r in rows])[keep]
    truth = np.eye(logits.shape[1])[ids[keep]]
    intersection, prob_sum, target_sum = (probs * truth).sum(0), probs.sum(0), truth.sum(0)
    if kind == "dice":
        scores = (2 * intersection + smooth) / (prob_sum + target_sum + smooth)
    else:
        scores = (intersection + smooth) / (prob_sum + target_sum - intersection + smooth)
    return 1 - scores.mean()


def random_case(shape, seed, ignore_index=None, ignore_every=4):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(shape) * 2
    target = rng.integers(0, shape[1], size=(shape[0],) + shape[2:])
    if ignore_index is not None:
        target.reshape(-1)[1::ignore_every] = ignore_index  # from pixel 1: a 1-pixel case keeps its pixel
    return logits, target


SHAPES = [(2, 5, 3, 4), (1, 3, 1, 1), (3, 4), (2, 3, 5, 7), (1, 2, 3, 2, 2)]


# ---------------------------------------------------------------------------
# cross_entropy
# ---------------------------------------------------------------------------
def test_cross_entropy_hand_worked_values():
    # Two pixels, two classes: (0, 0) with target 0 costs ln 2; (ln 3, 0) with target 1 costs −ln(1/4) = ln 4.
    logits = minseg.Tensor(np.array([[[[0.0, math.log(3)]], [[0.0, 0.0]]]]))  # (1, 2, 1, 2)
    target = np.array([[[0, 1]]])
    assert F.cross_entropy(logits, target).item() == pytest.approx(1.5 * math.log(2))
    assert F.cross_entropy(logits, target, reduction="sum").item() == pytest.approx(3 * math.log(2))
    # Weights (1, 3): the weighted mean divides by 1 + 3, not by the 2 pixels: (ln 2 + 3 ln 4) / 4 = 7/4 ln 2.
    assert F.cross_entropy(logits, target, weight=np.array([1.0, 3.0])).item() == pytest.approx(1.75 * math.log(2))
    # Ignoring the second pixel leaves ln 2 / 1.
    assert F.cross_entropy(logits, np.array([[[0, -100]]])).item() == pytest.approx(math.log(2))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore_index", [-100, 1])
def test_cross_entropy_matches_log_softmax_and_gather(shape, weighted, ignore_index):
    logits, target = random_case(shape, seed=sum(shape), ignore_index=ignore_index, ignore_every=3)
    weight = np.linspace(0.5, 2.0, shape[1]) if weighted else None
    for reduction in ("mean", "sum", "none"):
        loss = F.cross_entropy(minseg.Tensor(logits), target, weight, ignore_index, reduction)
        expected = reference_cross_entropy(logits, target, weight, ignore_index, reduction)
        np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12, atol=1e-12)
    x = minseg.Tensor(logits, requires_grad=True)
    F.cross_entropy(x, target, weight, ignore_index).backward()
    np.testing.assert_allclose(x.grad, reference_cross_entropy_grad(logits, target, weight, ignore_index),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_gradcheck(shape, reduction):
    logits, target = random_case(shape, seed=7, ignore_index=-1)
    weight = np.random.default_rng(3).uniform(0.2, 3.0, shape[1])
    x = minseg.Tensor(logits, requires_grad=True)
    minseg.gradcheck(lambda x: F.cross_entropy(x, target, weight=weight, ignore_index=-1, reduction=reduction), [x])
    minseg.gradcheck(lambda x: F.cross_entropy(x, target, ignore_index=-1, reduction=reduction), [x])


def test_reductions_agree():
    logits, target = random_case((2, 4, 3, 5), seed=2, ignore_index=-100)
    weight = np.array([0.5, 1.0, 2.0, 4.0])
    x = minseg.Tensor(logits)
    per_pixel = F.cross_entropy(x, target, weight, reduction="none").numpy()
    assert per_pixel.shape == target.shape
    assert np.all(per_pixel[target == -100] == 0)
    total = F.cross_entropy(x, target, weight, reduction="sum").item()
    mean = F.cross_entropy(x, target, weight, reduction="mean").item()
    counted_weight = weight[target[target != -100]].sum()
    assert total == pytest.approx(per_pixel.sum(), rel=1e-12)
    assert mean == pytest.approx(total / counted_weight, rel=1e-12)


def test_extreme_logits_give_finite_loss_and_gradient_in_float32():
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], np.float32)
    x = minseg.Tensor(logits, requires_grad=True)
    loss = F.cross_entropy(x, np.array([1, 0]))
    loss.backward()
    # Pixel 0 costs 1e4 − (−1e4) = 2e4; pixel 1 costs 1e4 + ln 2 − (−1e4).
    assert loss.dtype == np.float32 and x.grad.dtype == np.float32
    assert loss.item() == pytest.approx((2e4 + 2e4 + math.log(2)) / 2, rel=1e-6)
    np.testing.assert_allclose(x.grad, [[0.5, -0.5, 0.0], [-0.5, 0.25, 0.25]], atol=1e-7)


def test_every_pixel_ignored_gives_zero_loss_and_zero_gradient():
    logits, _ = random_case((2, 3, 2, 2), seed=4)
    x = minseg.Tensor(logits, requires_grad=True)
    loss = F.cross_entropy(x, np.full((2, 2, 2), -100))
    loss.backward()
    assert loss.item() == 0.0  # PyTorch would give NaN (0/0); minseg chooses 0 on purpose
    np.testing.assert_array_equal(x.grad, 0)
    # The same holds when every counted pixel has class weight 0.
    x = minseg.Tensor(logits, requires_grad=True)
    loss = F.cross_entropy(x, np.zeros((2, 2, 2), np.int64), weight=np.array([0.0, 1.0, 1.0]))
    loss.backward()
    assert loss.item() == 0.0 and not np.any(x.grad)


def test_non_contiguous_logits_and_tensor_target():
    logits, target = random_case((2, 3, 4, 5), seed=5, ignore_index=-100)
    channels_last = np.ascontiguousarray(np.moveaxis(logits, 1, -1))
    permuted = minseg.Tensor(channels_last, requires_grad=True)
    x = permuted.permute(0, 3, 1, 2)  # (N, C, H, W) view with non-C-contiguous data
    F.cross_entropy(x, minseg.Tensor(target)).backward()
    expected = reference_cross_entropy_grad(logits, target)
    np.testing.assert_allclose(permuted.grad, np.moveaxis(expected, 1, -1), rtol=1e-10, atol=1e-12)


def test_numpy_reference_kernels_match_the_function():
    logits, target = random_case((2, 4, 3, 3), seed=6, ignore_index=2)
    weight = np.array([1.0, 0.5, 3.0, 2.0])
    grad_loss = np.random.default_rng(0).standard_normal(target.shape)
    loss, pixel_weight, saved = softmax_cross_entropy_forward(logits, target, weight, 2)
    np.testing.assert_allclose(loss, reference_cross_entropy(logits, target, weight, 2, "none"), rtol=1e-12)
    np.testing.assert_array_equal(pixel_weight, np.where(target == 2, 0.0, weight[np.where(target == 2, 0, target)]))
    x = minseg.Tensor(logits, requires_grad=True)
    F.cross_entropy(x, target, weight, ignore_index=2, reduction="none").backward(grad_loss)
    recomputed = softmax_cross_entropy_backward(logits, target, weight, 2, grad_loss)
    np.testing.assert_allclose(recomputed, x.grad, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(softmax_cross_entropy_backward(logits, target, weight, 2, grad_loss, saved),
                                  recomputed)  # the forward's saved softmax gives the same numbers


# ---------------------------------------------------------------------------
# focal_loss
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (3, 4), (1, 3, 1, 1)])
def test_focal_with_gamma_zero_is_cross_entropy(shape):
    logits, target = random_case(shape, seed=8, ignore_index=-100)
    weight = np.linspace(1.0, 2.0, shape[1])
    x1, x2 = minseg.Tensor(logits, requires_grad=True), minseg.Tensor(logits, requires_grad=True)
    focal = F.focal_loss(x1, target, gamma=0.0, weight=weight)
    cross = F.cross_entropy(x2, target, weight=weight)
    focal.backward()
    cross.backward()
    assert focal.item() == pytest.approx(cross.item(), rel=1e-12)
    np.testing.assert_allclose(x1.grad, x2.grad, rtol=1e-12, atol=1e-15)


FOCAL_CASES = {
    "random": random_case((2, 3, 3, 5), seed=9, ignore_index=-1),
    # Pixel 0 is near-certain (p_target = 1 − 1e-13): (1 − p)^γ is steep there for γ < 1, yet the gradient is finite.
    "near certain": (np.array([[30.0, -5.0, 0.0], [0.0, 1.0, 2.0]]), np.array([0, 1])),
}


@pytest.mark.parametrize("gamma", [0.5, 2.0, 3.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", sorted(FOCAL_CASES))
def test_focal_matches_reference_and_gradcheck(gamma, reduction, case):
    logits, target = FOCAL_CASES[case]
    weight = np.array([0.5, 2.0, 1.0])
    loss = F.focal_loss(minseg.Tensor(logits), target, gamma, weight, -1, reduction)
    np.testing.assert_allclose(loss.numpy(), reference_cross_entropy(logits, target, weight, -1, reduction, gamma),
                               rtol=1e-12, atol=1e-14)
    x = minseg.Tensor(logits, requires_grad=True)
    minseg.gradcheck(lambda x: F.focal_loss(x, target, gamma, weight, -1, reduction), [x])


def test_focal_gradient_is_finite_where_the_prediction_is_certain():
    # p_target = 1 exactly: (1 − p)^0.5 has an infinite slope there, but the loss's gradient is 0.
    x = minseg.Tensor(np.array([[1e4, -1e4, 0.0], [0.0, 1.0, 2.0]]), requires_grad=True)
    loss = F.focal_loss(x, np.array([0, 1]), gamma=0.5)
    loss.backward()
    assert np.all(np.isfinite(x.grad))
    np.testing.assert_array_equal(x.grad[0], 0)


# ---------------------------------------------------------------------------
# dice_loss and jaccard_loss
# ---------------------------------------------------------------------------
def test_dice_and_jaccard_hand_worked_values():
    # Softmax of ±1e4 logits is exactly one-hot: pixel 0 predicts class 0 (target 0),
    # pixel 1 predicts class 0 (target 1), class 2 appears nowhere. smooth = 1:
    #   Dice:    class 0 (2·1+1)/(2+1+1) = 3/4, class 1 (0+1)/(0+1+1) = 1/2, class 2 1/1 -> loss 1 − 3/4 = 1/4
    #   Jaccard: class 0 (1+1)/(2+1−1+1) = 2/3, class 1 1/2, class 2 1 -> loss 1 − 13/18 = 5/18
    logits = minseg.Tensor(np.array([[1e4, 1e4], [-1e4, -1e4], [-1e4, -1e4]])[None, :, None, :])  # (1, 3, 1, 2)
    target = np.array([[[0, 1]]])
    assert F.dice_loss(logits, target).item() == pytest.approx(1 / 4, abs=1e-12)
    assert F.jaccard_loss(logits, target).item() == pytest.approx(5 / 18, abs=1e-12)
    # A perfect prediction scores 0 whatever smooth is; absent classes count as 1, not 0.
    perfect = minseg.Tensor(np.array([[1e4, -1e4], [-1e4, 1e4], [-1e4, -1e4]])[None, :, None, :])
    assert F.dice_loss(perfect, target, smooth=1e-5).item() == pytest.approx(0, abs=1e-12)
    assert F.jaccard_loss(perfect, target, smooth=3.0).item() == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize("loss_fn, kind", [(F.dice_loss, "dice"), (F.jaccard_loss, "jaccard")])
@pytest.mark.parametrize("shape, ignore_index, smooth", [((2, 4, 3, 5), None, 1.0), ((1, 3, 2, 3), 255, 0.5),
                                                         ((5, 3), 0, 1e-3), ((1, 2, 1, 3, 2), None, 2.0)])
def test_overlap_losses_match_reference_and_gradcheck(loss_fn, kind, shape, ignore_index, smooth):
    logits, target = random_case(shape, seed=10, ignore_index=ignore_index, ignore_every=3)
    loss = loss_fn(minseg.Tensor(logits), target, smooth=smooth, ignore_index=ignore_index)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(reference_overlap_loss(logits, target, smooth, ignore_index, kind), rel=1e-12)
    x = minseg.Tensor(logits, requires_grad=True)
    minseg.gradcheck(lambda x: loss_fn(x, target, smooth=smooth, ignore_index=ignore_index), [x])


@pytest.mark.parametrize("loss_fn", [F.dice_loss, F.jaccard_loss, F.cross_entropy, F.focal_loss])
def test_ignored_pixels_neither_count_nor_receive_gradient(loss_fn):
    logits, target = random_case((2, 3, 4, 4), seed=11, ignore_index=7)
    ignored = np.moveaxis(np.broadcast_to((target == 7)[..., None], target.shape + (3,)), -1, 1)
    changed = np.where(ignored, logits * 10 - 3, logits)
    x = minseg.Tensor(logits, requires_grad=True)
    loss = loss_fn(x, target, ignore_index=7)
    loss.backward()
    assert loss.item() == pytest.approx(loss_fn(minseg.Tensor(changed), target, ignore_index=7).item(), rel=1e-12)
    np.testing.assert_array_equal(x.grad[ignored], 0)


@pytest.mark.parametrize("overlap_loss", [F.dice_loss, F.jaccard_loss])
def test_the_documented_sum_works_on_targets_padded_with_minus_100(overlap_loss):
    """F.cross_entropy(x, t) + F.dice_loss(x, t) with both defaults: the padding neither counts nor gets gradient."""
    logits, target = random_case((2, 3, 4, 5), seed=15)
    padded_logits = np.random.default_rng(16).standard_normal((2, 3, 6, 8)) * 5  # any values in the padding
    padded_logits[:, :, :4, :5] = logits
    padded_target = np.full((2, 6, 8), -100)
    padded_target[:, :4, :5] = target
    results = []
    for x_array, t in ((padded_logits, padded_target), (logits, target)):
        x = minseg.Tensor(x_array, requires_grad=True)
        loss = F.cross_entropy(x, t) + overlap_loss(x, t)
        loss.backward()
        results.append((loss.item(), x.grad))
    (padded_loss, padded_grad), (loss, grad) = results
    assert padded_loss == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(padded_grad[:, :, :4, :5], grad, rtol=1e-10, atol=1e-14)
    padded_grad[:, :, :4, :5] = 0
    np.testing.assert_array_equal(padded_grad, 0)


def test_overlap_losses_with_ignore_index_none_count_every_pixel():
    logits, target = random_case((1, 3, 2, 3), seed=17)
    for loss_fn, kind in ((F.dice_loss, "dice"), (F.jaccard_loss, "jaccard")):
        loss = loss_fn(minseg.Tensor(logits), target, ignore_index=None).item()
        assert loss == pytest.approx(reference_overlap_loss(logits, target, 1.0, None, kind), rel=1e-12)
        assert loss == loss_fn(minseg.Tensor(logits), target).item()  # no -100 in target: the default agrees
    with pytest.raises(ValueError, match=r"target holds ids outside \[0, 3\): \[-100\]"):
        F.dice_loss(minseg.Tensor(logits), np.full((1, 2, 3), -100), ignore_index=None)


def test_dice_loss_in_float32_and_summing_losses():
    logits, target = random_case((2, 4, 6, 6), seed=12)
    x = minseg.Tensor(logits.astype(np.float32), requires_grad=True)
    combined = F.cross_entropy(x, target) + F.dice_loss(x, target)
    assert combined.dtype == np.float32
    combined.backward()
    assert x.grad.dtype == np.float32
    separate = []
    for fn in (F.cross_entropy, F.dice_loss):
        x1 = minseg.Tensor(logits.astype(np.float32), requires_grad=True)
        fn(x1, target).backward()
        separate.append(x1.grad)
    np.testing.assert_allclose(x.grad, separate[0] + separate[1], rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------------------
# GPU: the CuPy path (minseg.cuda's fused kernels for float32) agrees with the NumPy reference
# ---------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not backend.cupy_available(), reason="needs CuPy and an NVIDIA GPU")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 6, 17, 9), (5, 4)])
def test_losses_on_gpu_match_numpy(dtype, shape):
    logits, target = random_case(shape, seed=13, ignore_index=-100)
    logits = logits.astype(dtype)
    weight = np.linspace(0.5, 2.0, shape[1]).astype(dtype)
    grad_loss = np.random.default_rng(1).standard_normal(target.shape).astype(dtype)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    for loss_fn, kwargs in [(F.cross_entropy, {"weight": weight}), (F.focal_loss, {"weight": weight}),
                            (F.dice_loss, {"ignore_index": -100})]:
        for reduction in (["mean", "sum", "none"] if "weight" in kwargs else [None]):
            options = dict(kwargs, reduction=reduction) if reduction else kwargs
            results = []
            for device in ("cpu", "cuda"):
                x = minseg.Tensor(logits, requires_grad=True).to(device)
                x.requires_grad = True
                loss = loss_fn(x, minseg.Tensor(target).to(device), **options)
                loss.backward(minseg.Tensor(grad_loss).to(device) if reduction == "none" else None)
                results.append((loss.numpy(), minseg.Tensor(x.grad).numpy()))
            (cpu_loss, cpu_grad), (gpu_loss, gpu_grad) = results
            assert np.linalg.norm(gpu_loss - cpu_loss) <= tolerance * np.linalg.norm(cpu_loss)
            assert np.linalg.norm(gpu_grad - cpu_grad) <= tolerance * np.linalg.norm(cpu_grad)


# ---------------------------------------------------------------------------
# Bad input: every error names the argument
# ---------------------------------------------------------------------------
LOSSES = [F.cross_entropy, F.focal_loss, F.dice_loss, F.jaccard_loss]


@pytest.mark.parametrize("loss_fn", LOSSES)
def test_shape_mismatch_names_both_shapes(loss_fn):
    x = minseg.Tensor(np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(ValueError, match=r"input has shape \(2, 3, 4, 5\), so target must have shape "
                                         r"\(2, 4, 5\), but target has shape \(2, 5, 4\)"):
        loss_fn(x, np.zeros((2, 5, 4), np.int64))


@pytest.mark.parametrize("loss_fn", LOSSES)
def test_float_target_and_out_of_range_ids(loss_fn):
    x = minseg.Tensor(np.zeros((1, 3, 2, 2), np.float32))
    with pytest.raises(TypeError, match="target must hold integer class ids"):
        loss_fn(x, np.zeros((1, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"target holds ids outside \[0, 3\): \[3, 9\]"):
        loss_fn(x, np.array([[[0, 3], [9, 1]]]))


@pytest.mark.parametrize("loss_fn", LOSSES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_logits_are_an_error_not_a_nan_loss(loss_fn, bad):
    logits = np.zeros((1, 3, 2, 2), np.float32)
    logits[0, 1, 1, 0] = bad
    with pytest.raises(ValueError, match="input holds 1 NaN or infinite logits"):
        loss_fn(minseg.Tensor(logits), np.zeros((1, 2, 2), np.int64))


def test_bad_options_name_the_argument():
    x = minseg.Tensor(np.zeros((1, 3, 2, 2), np.float32))
    target = np.zeros((1, 2, 2), np.int64)
    with pytest.raises(ValueError, match=r"weight must have one entry per class, shape \(3,\), but has shape \(2,\)"):
        F.cross_entropy(x, target, weight=np.ones(2))
    with pytest.raises(ValueError, match="focal_loss: weight"):
        F.focal_loss(x, target, weight=np.ones(4))
    with pytest.raises(ValueError, match="reduction must be 'mean', 'sum' or 'none', got 'avg'"):
        F.cross_entropy(x, target, reduction="avg")
    with pytest.raises(ValueError, match="focal_loss: reduction"):
        F.focal_loss(x, target, reduction="batchmean")
    with pytest.raises(TypeError, match="ignore_index must be an integer"):
        F.cross_entropy(x, target, ignore_index=None)
    with pytest.raises(ValueError, match="gamma must be a number >= 0"):
        F.focal_loss(x, target, gamma=-1.0)
    with pytest.raises(ValueError, match="dice_loss: smooth must be > 0"):
        F.dice_loss(x, target, smooth=0.0)
    with pytest.raises(ValueError, match="jaccard_loss: smooth"):
        F.jaccard_loss(x, target, smooth=-1.0)
    with pytest.raises(TypeError, match="input must be floating-point logits"):
        F.cross_entropy(np.zeros((1, 3), np.int64), np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="input must be logits"):
        F.cross_entropy(minseg.Tensor(np.zeros(3, np.float32)), np.zeros((), np.int64))


@pytest.mark.parametrize("loss_fn", [F.cross_entropy, F.focal_loss])
def test_the_fused_losses_are_one_node_on_the_logits(loss_fn):
    # One node: the loss's creator consumes the logits tensor itself, with no log-softmax node in between.
    logits = minseg.Tensor(np.random.default_rng(0).standard_normal((1, 3, 2, 2)), requires_grad=True)
    loss = loss_fn(logits, minseg.Tensor(np.zeros((1, 2, 2), np.int64)))
    assert loss.creator.inputs[0] is logits
    assert all(t.creator is None for t in loss.creator.inputs)


@pytest.mark.gpu
@pytest.mark.parametrize("reduction, with_weights", [("mean", True), ("none", False), ("sum", True)])
def test_cross_entropy_on_float32_gpu_arrays_runs_the_kernels_and_matches_numpy(reduction, with_weights, monkeypatch):
    from minseg import backend, cuda
    if not backend.cupy_available():
        pytest.skip("needs CuPy and a GPU")
    import cupy
    called = []
    for name in ("softmax_cross_entropy_forward", "softmax_cross_entropy_backward"):
        kernel = getattr(cuda, name)
        monkeypatch.setattr(cuda, name,
                            lambda *args, _kernel=kernel, _name=name: called.append(_name) or _kernel(*args))
    logits, target = random_case((2, 5, 3, 4), seed=9, ignore_index=-100)
    logits = logits.astype(np.float32)
    weight = np.array([1.0, 0.5, 2.0, 1.5, 0.7], np.float32) if with_weights else None
    grad_output = np.random.default_rng(1).standard_normal(target.shape if reduction == "none" else ())
    results = []
    for to_device in (lambda a: a, cupy.asarray):
        x = minseg.Tensor(to_device(logits), requires_grad=True)
        loss = F.cross_entropy(x, minseg.Tensor(to_device(target)), None if weight is None else to_device(weight),
                               reduction=reduction)
        loss.backward(to_device(grad_output.astype(np.float32)))
        results.append((loss.numpy(), minseg.Tensor(x.grad).numpy()))
    assert called == ["softmax_cross_entropy_forward", "softmax_cross_entropy_backward"]
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-5, atol=1e-6)
