"""Optimizers against independent reference formulas (written out here in float64), on a small quadratic."""
import json

import numpy as np
import pytest

from minseg import Tensor
from minseg.nn import Parameter
from minseg.optim import SGD, Adam, AdamW


def quadratic_problem(dtype=np.float64, seed=0, size=(3, 5)):
    """L(w) = ½ Σ a·w² + Σ b·w, so dL/dw = a·w + b: a gradient that changes as w moves."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 2.0, size=size)
    b = rng.normal(size=size)
    w0 = rng.normal(size=size)
    return a.astype(dtype), b.astype(dtype), w0.astype(dtype)


def run_optimizer(make_optimizer, steps=6, dtype=np.float64, seed=0):
    """Train w on the quadratic with minseg's autograd computing the gradient; return w after each step."""
    a, b, w0 = quadratic_problem(dtype, seed)
    w = Parameter(w0.copy())
    optimizer = make_optimizer([w])
    trajectory = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (Tensor(a) * w * w).sum() * 0.5 + (Tensor(b) * w).sum()
        loss.backward()
        optimizer.step()
        trajectory.append(w.data.copy())
    return trajectory


def reference_sgd(lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, steps=6):
    a, b, w = quadratic_problem()
    velocity, trajectory = None, []
    for _ in range(steps):
        g = a * w + b + weight_decay * w
        if momentum:
            velocity = g if velocity is None else momentum * velocity + (1 - dampening) * g
            g = g + momentum * velocity if nesterov else velocity
        w = w - lr * g
        trajectory.append(w)
    return trajectory


def reference_adam(lr, betas, eps, weight_decay=0.0, decoupled=False, steps=6):
    """Adam as the paper writes it: bias-corrected moments m̂, v̂ and w ← w - lr·m̂/(√v̂ + ε)."""
    a, b, w = quadratic_problem()
    m, v, trajectory = np.zeros_like(w), np.zeros_like(w), []
    for t in range(1, steps + 1):
        g = a * w + b
        if decoupled:
            w = w - lr * weight_decay * w
        else:
            g = g + weight_decay * w
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g ** 2
        m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
        trajectory.append(w)
    return trajectory


def assert_trajectories_close(actual, expected, rtol=1e-12, atol=1e-12):
    for step, (x, y) in enumerate(zip(actual, expected)):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=f"after step {step + 1}")


def test_sgd_single_step_is_w_minus_lr_times_g():
    w = Parameter(np.array([1.0, -2.0], dtype=np.float32))
    w.grad = np.array([0.5, 4.0], dtype=np.float32)
    SGD([w], lr=0.1).step()
    np.testing.assert_allclose(w.data, [0.95, -2.4], rtol=1e-6)


def test_sgd_momentum_by_hand():
    # Constant gradient 1: v = 1, 1.9, 2.71 (μ = 0.9); w = -0.1, -0.29, -0.561 with lr = 0.1.
    w = Parameter(np.zeros(1))
    optimizer = SGD([w], lr=0.1, momentum=0.9)
    for expected in (-0.1, -0.29, -0.561):
        w.grad = np.ones(1)
        optimizer.step()
        assert w.data[0] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("options", [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.8, dampening=0.3),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.1, weight_decay=0.2),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
])
def test_sgd_matches_reference(options):
    assert_trajectories_close(run_optimizer(lambda p: SGD(p, **options)), reference_sgd(**options))


@pytest.mark.parametrize("options", [
    dict(lr=0.1, betas=(0.9, 0.999), eps=1e-8),
    dict(lr=0.03, betas=(0.5, 0.9), eps=1e-3),
    dict(lr=0.05, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.3),
])
def test_adam_matches_reference(options):
    assert_trajectories_close(run_optimizer(lambda p: Adam(p, **options)), reference_adam(**options))


@pytest.mark.parametrize("options", [
    dict(lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2),
    dict(lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.5),
])
def test_adamw_matches_reference_with_decoupled_decay(options):
    expected = reference_adam(decoupled=True, **options)
    assert_trajectories_close(run_optimizer(lambda p: AdamW(p, **options)), expected)
    # And it is not Adam's L2 decay: the trajectories differ.
    assert not np.allclose(expected[-1], reference_adam(**options)[-1])


def test_adam_first_step_moves_each_weight_by_lr():
    # m̂ = g and v̂ = g² on step 1, so every weight moves by lr·g/(|g| + ε) ≈ lr·sign(g).
    w = Parameter(np.zeros(4, dtype=np.float32))
    w.grad = np.array([1e-3, -5.0, 200.0, -0.2], dtype=np.float32)
    Adam([w], lr=0.01).step()
    np.testing.assert_allclose(w.data, [-0.01, 0.01, -0.01, 0.01], rtol=1e-4)


def test_adamw_default_weight_decay_is_1e_2():
    assert AdamW([Parameter(np.zeros(1))]).param_groups[0]["weight_decay"] == 1e-2
    assert Adam([Parameter(np.zeros(1))]).param_groups[0]["weight_decay"] == 0.0


@pytest.mark.parametrize("make_optimizer", [
    lambda p: SGD(p, lr=np.float64(0.1), momentum=0.9, weight_decay=1e-4, nesterov=True),
    lambda p: Adam(p, lr=np.float64(1e-2), weight_decay=1e-4),
    lambda p: AdamW(p, lr=np.float64(1e-2), betas=(np.float64(0.9), 0.999)),
])
def test_updates_stay_float32(make_optimizer):
    # Hyper-parameters given as NumPy float64 scalars must not upcast float32 weights or state.
    trajectory = run_optimizer(make_optimizer, steps=3, dtype=np.float32)
    assert all(w.dtype == np.float32 for w in trajectory)
    w = Parameter(np.ones((2, 2), dtype=np.float32))
    optimizer = make_optimizer([w])
    for _ in range(2):
        w.grad = np.full((2, 2), 0.5, dtype=np.float32)
        optimizer.step()
    assert w.dtype == np.float32
    for value in optimizer.state[0].values():
        if hasattr(value, "dtype"):
            assert value.dtype == np.float32


def test_step_updates_in_place_and_does_not_touch_the_gradient():
    w = Parameter(np.ones(3, dtype=np.float32))
    data = w.data
    grad = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    w.grad = grad
    SGD([w], lr=0.1, momentum=0.9).step()
    SGD([w], lr=0.1, momentum=0.9).step()
    assert w.data is data
    np.testing.assert_array_equal(grad, [1.0, 2.0, 3.0])


def test_zero_grad_and_parameters_without_gradient_are_skipped():
    used, unused = Parameter(np.ones(2)), Parameter(np.ones(2))
    optimizer = Adam([used, unused], lr=0.1)
    used.grad = np.ones(2)
    optimizer.step()
    np.testing.assert_array_equal(unused.data, [1.0, 1.0])
    assert 1 not in optimizer.state and optimizer.state[0]["step"] == 1
    optimizer.zero_grad()
    assert used.grad is None


def test_param_groups_have_their_own_learning_rates():
    slow, fast = Parameter(np.zeros(1)), Parameter(np.zeros(1))
    optimizer = SGD([{"params": [slow]}, {"params": [fast], "lr": 1.0}], lr=0.1)
    slow.grad, fast.grad = np.ones(1), np.ones(1)
    optimizer.step()
    assert slow.data[0] == pytest.approx(-0.1) and fast.data[0] == pytest.approx(-1.0)


def _json_round_trip(state_dict):
    """What a checkpoint does to a state dict: arrays kept aside, the rest through JSON."""
    arrays = {}

    def strip(tree, path):
        if isinstance(tree, dict):
            return {k: strip(v, f"{path}/{k}") for k, v in tree.items()}
        if isinstance(tree, np.ndarray):
            arrays[path] = tree
            return {"array": path}
        return tree

    def restore(tree):
        if isinstance(tree, dict):
            return arrays[tree["array"]] if set(tree) == {"array"} else {k: restore(v) for k, v in tree.items()}
        return tree

    return restore(json.loads(json.dumps(strip(state_dict, ""))))


@pytest.mark.parametrize("make_optimizer", [
    lambda p: SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    lambda p: Adam(p, lr=0.05, betas=(0.8, 0.9)),
    lambda p: AdamW(p, lr=0.05, weight_decay=0.1),
])
@pytest.mark.parametrize("through_json", [False, True])
def test_state_dict_round_trip_continues_identically(make_optimizer, through_json):
    a, b, w0 = quadratic_problem(np.float32)

    def grad(w):
        return a * w.data + b

    w = Parameter(w0.copy())
    optimizer = make_optimizer([w])
    for _ in range(3):
        w.grad = grad(w)
        optimizer.step()
    saved = optimizer.state_dict()
    saved_copy = _json_round_trip(saved) if through_json else saved
    w_resumed = Parameter(w.data.copy())
    resumed = make_optimizer([w_resumed])
    resumed.load_state_dict(saved_copy)
    for _ in range(3):
        w.grad, w_resumed.grad = grad(w), grad(w_resumed)
        optimizer.step()
        resumed.step()
    np.testing.assert_array_equal(w_resumed.data, w.data)
    # The saved arrays are copies: the original optimizer kept stepping without changing them.
    first_array = next(v for v in saved["state"][0].values() if hasattr(v, "shape"))
    assert not np.array_equal(first_array, next(v for v in optimizer.state[0].values() if hasattr(v, "shape")))


def test_state_dict_restores_hyper_parameters_and_betas_tuple():
    w = Parameter(np.zeros(2))
    source = Adam([w], lr=0.5, betas=(0.7, 0.8))
    target = Adam([Parameter(np.zeros(2))], lr=0.1)
    target.load_state_dict(json.loads(json.dumps(source.state_dict())))
    group = target.param_groups[0]
    assert group["lr"] == 0.5 and group["betas"] == (0.7, 0.8)


def test_load_state_dict_rejects_mismatched_parameters():
    w = Parameter(np.zeros(3))
    source = SGD([w], lr=0.1, momentum=0.9)
    w.grad = np.ones(3)
    source.step()
    with pytest.raises(ValueError, match="momentum_buffer of parameter 0 has shape"):
        SGD([Parameter(np.zeros(4))], lr=0.1, momentum=0.9).load_state_dict(source.state_dict())
    with pytest.raises(ValueError, match="1 parameters in the state dict but 2"):
        SGD([Parameter(np.zeros(3)), Parameter(np.zeros(1))], lr=0.1).load_state_dict(source.state_dict())


def test_bad_arguments_name_the_argument():
    w = Parameter(np.zeros(1))
    with pytest.raises(ValueError, match="params"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        SGD([w], lr=-1.0)
    with pytest.raises(ValueError, match="nesterov"):
        SGD([w], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        Adam([w], betas=(1.0, 0.999))
    with pytest.raises(ValueError, match="weight_decay"):
        AdamW([w], weight_decay=-0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        SGD([{"params": [w]}, {"params": [w]}], lr=0.1)
