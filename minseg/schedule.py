"""Learning-rate schedules: the learning rate (and momentum) as a function of the step number.

A schedule owns a counter ``last_epoch`` (PyTorch's name; here it counts optimizer steps)
and writes ``group["lr"]`` into the optimizer's parameter groups. Construction applies
step 0; call ``scheduler.step()`` after every ``optimizer.step()``:

    optimizer = AdamW(model.parameters(), lr=3e-3)
    scheduler = OneCycleLR(optimizer, max_lr=3e-3, total_steps=epochs * len(loader))
    for images, targets in loader: ... optimizer.step(); scheduler.step()

``OneCycleLR`` is Smith's one-cycle policy (Smith & Topin, "Super-Convergence", 2017) with
torch.optim.lr_scheduler.OneCycleLR's exact formulas.
"""
import math

__all__ = ["LRScheduler", "OneCycleLR", "ConstantLR"]


class LRScheduler:
    """Base class: ``get_lr()`` says the learning rates for step ``last_epoch``; ``step()`` advances."""

    def __init__(self, optimizer, last_epoch=-1):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"{type(self).__name__}: optimizer must be an Optimizer (with param_groups), "
                            f"got {type(optimizer).__name__}")
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def get_lr(self):
        raise NotImplementedError(f"{type(self).__name__} must define get_lr()")

    def step(self):
        """Advance one step and write the new learning rates into the optimizer."""
        self.last_epoch += 1
        self.apply()

    def apply(self):
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        """The learning rates the last ``step()`` set, one per parameter group."""
        return list(self._last_lr)

    def state_dict(self):
        """The step counter (the schedule's settings come from its constructor; lr lives in the optimizer)."""
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict):
        self.last_epoch = int(state_dict["last_epoch"])
        self.apply()  # idempotent: the values for this step, whichever of optimizer/schedule loads first


class ConstantLR(LRScheduler):
    """lr = base_lr·factor for the first ``total_iters`` steps, then base_lr (torch's ConstantLR).

    ``ConstantLR(optimizer, factor=1.0)`` keeps the learning rate constant throughout.
    """

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, last_epoch=-1):
        if not 0 <= factor <= 1:
            raise ValueError(f"ConstantLR: factor must lie in [0, 1], got {factor}")
        self.factor, self.total_iters = float(factor), int(total_iters)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        scale = self.factor if self.last_epoch < self.total_iters else 1.0
        return [base_lr * scale for base_lr in self.base_lrs]


def annealing_cos(start, end, pct):
    """Half a cosine from ``start`` (pct = 0) to ``end`` (pct = 1)."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def annealing_linear(start, end, pct):
    return (end - start) * pct + start


class OneCycleLR(LRScheduler):
    """Warm up from max_lr/div_factor to max_lr, then anneal to initial_lr/final_div_factor.

    Phases (step numbers; ``pct_start·total_steps - 1`` is where the peak is reached):

    * two phases: initial_lr → max_lr over [0, pct_start·T - 1], max_lr → min_lr over the rest up to T - 1
    * ``three_phase=True``: initial → max, max → initial (symmetric), then initial → min_lr

    With ``cycle_momentum`` the momentum (SGD) or β₁ (Adam, AdamW) moves the opposite way, from
    max_momentum down to base_momentum while the lr rises and back up while it falls: a
    large step with a short memory, as in Smith's policy. Exactly as in PyTorch, the group
    values ``initial_lr``, ``max_lr``, ``min_lr``, ``max_momentum``, ``base_momentum`` are
    stored in the optimizer's parameter groups, so they travel with its state_dict.
    """

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None,
                 pct_start=0.3, anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85,
                 max_momentum=0.95, div_factor=25.0, final_div_factor=1e4, three_phase=False, last_epoch=-1):
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("OneCycleLR: give total_steps, or both epochs and steps_per_epoch")
            total_steps = epochs * steps_per_epoch
        if not isinstance(total_steps, int) or total_steps <= 0:
            raise ValueError(f"OneCycleLR: total_steps must be a positive integer, got {total_steps!r}")
        if not 0 <= pct_start <= 1:
            raise ValueError(f"OneCycleLR: pct_start must lie in [0, 1], got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.total_steps = total_steps
        self.anneal = annealing_cos if anneal_strategy == "cos" else annealing_linear
        peak = float(pct_start * total_steps) - 1
        if three_phase:
            self.phases = [
                (peak, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (float(2 * pct_start * total_steps) - 2, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                (total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"),
            ]
        else:
            self.phases = [
                (peak, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"),
            ]

        groups = optimizer.param_groups
        max_lrs = _per_group("max_lr", max_lr, groups)
        if last_epoch == -1:
            for group, group_max_lr in zip(groups, max_lrs):
                group["initial_lr"] = group_max_lr / div_factor
                group["max_lr"] = group_max_lr
                group["min_lr"] = group["initial_lr"] / final_div_factor

        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError(f"OneCycleLR: cycle_momentum=True needs an optimizer with momentum or betas, "
                                 f"got {type(optimizer).__name__}; pass cycle_momentum=False")
            self.use_beta1 = "betas" in optimizer.defaults
            if last_epoch == -1:
                for group, high, low in zip(groups, _per_group("max_momentum", max_momentum, groups),
                                            _per_group("base_momentum", base_momentum, groups)):
                    self._set_momentum(group, high)
                    group["max_momentum"], group["base_momentum"] = high, low
        super().__init__(optimizer, last_epoch)

    def _set_momentum(self, group, momentum):
        if self.use_beta1:
            group["betas"] = (momentum, *group["betas"][1:])
        else:
            group["momentum"] = momentum

    def get_lr(self):
        """The lr for step ``last_epoch`` (also sets the cycled momentum, as PyTorch's does)."""
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR: stepped {step} times but total_steps is {self.total_steps} "
                             "(build the schedule with total_steps = epochs * batches per epoch)")
        lrs = []
        for group in self.optimizer.param_groups:
            phase_start = 0
            for position, (phase_end, start_lr, end_lr, start_momentum, end_momentum) in enumerate(self.phases):
                if step <= phase_end or position == len(self.phases) - 1:
                    pct = (step - phase_start) / (phase_end - phase_start)
                    lrs.append(self.anneal(group[start_lr], group[end_lr], pct))
                    if self.cycle_momentum:
                        self._set_momentum(group, self.anneal(group[start_momentum], group[end_momentum], pct))
                    break
                phase_start = phase_end
        return lrs

    def state_dict(self):
        return {"last_epoch": self.last_epoch, "total_steps": self.total_steps}

    def load_state_dict(self, state_dict):
        if int(state_dict.get("total_steps", self.total_steps)) != self.total_steps:
            raise ValueError(f"OneCycleLR.load_state_dict: the saved schedule has total_steps="
                             f"{state_dict['total_steps']} but this one has {self.total_steps}; build it with "
                             "the same epochs and batch size as the run being resumed")
        super().load_state_dict(state_dict)


def _per_group(name, value, groups):
    """One value per parameter group: a number is shared, a list/tuple must have one per group."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(groups):
            raise ValueError(f"OneCycleLR: {name} has {len(value)} values for {len(groups)} parameter groups")
        return [float(v) for v in value]
    return [float(value)] * len(groups)
