"""Learning-rate schedules at hand-computed points (PyTorch's OneCycleLR formulas)."""
import json

import numpy as np
import pytest

from minseg.nn import Parameter
from minseg.optim import SGD, Adam, AdamW
from minseg.schedule import ConstantLR, OneCycleLR


def sgd(lr=0.1, momentum=0.9):
    return SGD([Parameter(np.zeros(2, dtype=np.float32))], lr=lr, momentum=momentum)


def lrs_over(scheduler, steps):
    """The lr in effect for each of ``steps`` optimizer steps (index k = step k)."""
    values = []
    for _ in range(steps):
        values.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.step()
    return values


def test_one_cycle_starts_peaks_and_ends_where_pytorch_does():
    # max_lr 1, div_factor 25: starts at 0.04; pct_start 0.3 of 100 steps: peak at step 29;
    # final_div_factor 1e4: ends at 0.04 / 1e4 = 4e-6 on step 99.
    optimizer = sgd()
    lrs = lrs_over(OneCycleLR(optimizer, max_lr=1.0, total_steps=100), 100)
    assert lrs[0] == pytest.approx(0.04, rel=1e-12)
    assert lrs[29] == pytest.approx(1.0, rel=1e-12)
    assert max(lrs) == lrs[29]
    assert lrs[99] == pytest.approx(4e-6, rel=1e-9)
    # The annealing runs from step 29 to 99; step 64 is its middle: (1 + 4e-6) / 2.
    assert lrs[64] == pytest.approx(0.500002, rel=1e-12)
    assert all(x < y for x, y in zip(lrs[:29], lrs[1:30]))
    assert all(x > y for x, y in zip(lrs[29:99], lrs[30:100]))


def test_one_cycle_warm_up_midpoint_cos_and_linear():
    # 50 steps, pct_start 0.3: warm-up over steps 0..14, so step 7 is its middle: (0.04 + 1) / 2.
    cos_lrs = lrs_over(OneCycleLR(sgd(), max_lr=1.0, total_steps=50), 50)
    linear_lrs = lrs_over(OneCycleLR(sgd(), max_lr=1.0, total_steps=50, anneal_strategy="linear"), 50)
    assert cos_lrs[7] == pytest.approx(0.52, rel=1e-12)
    assert linear_lrs[7] == pytest.approx(0.52, rel=1e-12)
    # Off the middle the shapes differ: linear at step 3 is 0.04 + 0.96·3/14;
    # the cosine at step 3 is 1 + (0.04 - 1)/2·(cos(3π/14) + 1).
    assert linear_lrs[3] == pytest.approx(0.04 + 0.96 * 3 / 14, rel=1e-12)
    assert cos_lrs[3] == pytest.approx(1 - 0.48 * (np.cos(3 * np.pi / 14) + 1), rel=1e-12)


def test_one_cycle_cycles_sgd_momentum_inversely():
    optimizer = sgd(momentum=0.0)
    scheduler = OneCycleLR(optimizer, max_lr=1.0, total_steps=100)
    momenta = []
    for _ in range(100):
        momenta.append(optimizer.param_groups[0]["momentum"])
        scheduler.step()
    assert momenta[0] == pytest.approx(0.95)  # PyTorch switches momentum on, even from 0
    assert momenta[29] == pytest.approx(0.85)
    assert momenta[64] == pytest.approx(0.90)
    assert momenta[99] == pytest.approx(0.95)


@pytest.mark.parametrize("optimizer_class", [Adam, AdamW])
def test_one_cycle_cycles_beta1_of_adam(optimizer_class):
    optimizer = optimizer_class([Parameter(np.zeros(2))], betas=(0.9, 0.99))
    scheduler = OneCycleLR(optimizer, max_lr=1e-2, total_steps=10, pct_start=0.5,
                           base_momentum=0.8, max_momentum=0.9)
    betas = []
    for _ in range(10):
        betas.append(optimizer.param_groups[0]["betas"])
        scheduler.step()
    assert betas[0] == pytest.approx((0.9, 0.99))
    assert betas[4] == pytest.approx((0.8, 0.99))  # peak at step 0.5·10 - 1
    assert betas[9] == pytest.approx((0.9, 0.99))
    assert all(beta2 == 0.99 for _, beta2 in betas)


def test_one_cycle_without_momentum_cycling_leaves_momentum_alone():
    optimizer = sgd(momentum=0.5)
    scheduler = OneCycleLR(optimizer, max_lr=1.0, total_steps=10, cycle_momentum=False)
    lrs_over(scheduler, 10)
    assert optimizer.param_groups[0]["momentum"] == 0.5


def test_one_cycle_three_phase():
    # Phases end at steps 29 (peak), 58 (back to 0.04) and 99 (4e-6).
    lrs = lrs_over(OneCycleLR(sgd(), max_lr=1.0, total_steps=100, three_phase=True), 100)
    assert lrs[29] == pytest.approx(1.0)
    assert lrs[58] == pytest.approx(0.04)
    assert lrs[99] == pytest.approx(4e-6)


def test_one_cycle_sets_the_lr_the_optimizer_uses():
    w = Parameter(np.zeros(1))
    optimizer = SGD([w], lr=123.0)
    OneCycleLR(optimizer, max_lr=0.5, total_steps=10, cycle_momentum=False)
    w.grad = np.ones(1)
    optimizer.step()
    assert w.data[0] == pytest.approx(-0.5 / 25)


def test_one_cycle_per_group_max_lr_and_epochs_times_steps():
    groups = [{"params": [Parameter(np.zeros(1))]}, {"params": [Parameter(np.zeros(1))]}]
    optimizer = SGD(groups, lr=0.1)
    scheduler = OneCycleLR(optimizer, max_lr=[1.0, 10.0], epochs=2, steps_per_epoch=5)
    assert scheduler.total_steps == 10
    assert scheduler.get_last_lr() == pytest.approx([0.04, 0.4])


def test_one_cycle_refuses_to_step_past_total_steps():
    scheduler = OneCycleLR(sgd(), max_lr=1.0, total_steps=5)
    for _ in range(5):
        scheduler.step()
    with pytest.raises(ValueError, match="total_steps is 5"):
        scheduler.step()


def test_one_cycle_bad_arguments():
    with pytest.raises(ValueError, match="total_steps"):
        OneCycleLR(sgd(), max_lr=1.0, total_steps=0)
    with pytest.raises(ValueError, match="pct_start"):
        OneCycleLR(sgd(), max_lr=1.0, total_steps=10, pct_start=1.5)
    with pytest.raises(ValueError, match="anneal_strategy"):
        OneCycleLR(sgd(), max_lr=1.0, total_steps=10, anneal_strategy="cosine")
    with pytest.raises(ValueError, match="max_lr has 2 values"):
        OneCycleLR(sgd(), max_lr=[1.0, 2.0], total_steps=10)


@pytest.mark.parametrize("make_optimizer", [lambda: sgd(), lambda: Adam([Parameter(np.zeros(2))])])
def test_one_cycle_state_dict_resumes_the_same_values(make_optimizer):
    optimizer = make_optimizer()
    scheduler = OneCycleLR(optimizer, max_lr=1.0, total_steps=40)
    lrs_over(scheduler, 17)
    saved_optimizer = json.loads(json.dumps(optimizer.state_dict()))
    saved_scheduler = json.loads(json.dumps(scheduler.state_dict()))
    expected = lrs_over(scheduler, 23)

    resumed_optimizer = make_optimizer()
    resumed = OneCycleLR(resumed_optimizer, max_lr=1.0, total_steps=40)
    resumed.load_state_dict(saved_scheduler)
    resumed_optimizer.load_state_dict(saved_optimizer)
    assert resumed.last_epoch == 17
    assert lrs_over(resumed, 23) == expected
    key = "betas" if "betas" in optimizer.param_groups[0] else "momentum"
    assert resumed_optimizer.param_groups[0][key] == optimizer.param_groups[0][key]

    mismatched = OneCycleLR(make_optimizer(), max_lr=1.0, total_steps=50)
    with pytest.raises(ValueError, match="total_steps"):
        mismatched.load_state_dict(saved_scheduler)


def test_constant_lr():
    optimizer = sgd(lr=0.3)
    assert lrs_over(ConstantLR(optimizer, factor=1.0), 4) == [0.3] * 4
    # PyTorch's defaults: a third of the lr for the first 5 steps, then the lr itself.
    optimizer = sgd(lr=0.3)
    lrs = lrs_over(ConstantLR(optimizer), 7)
    assert lrs[:5] == pytest.approx([0.1] * 5) and lrs[5:] == pytest.approx([0.3, 0.3])
    with pytest.raises(ValueError, match="factor"):
        ConstantLR(sgd(), factor=2.0)
