"""Optimizers: how a gradient becomes a change of the weights (``import minseg.optim as optim``).

Every optimizer here follows PyTorch's update rule exactly, so results carry over:

* ``SGD``:   v ← μ·v + (1 - τ)·g;   w ← w - lr·v   (Nesterov: w ← w - lr·(g + μ·v))
* ``Adam``:  m ← β₁·m + (1 - β₁)·g;  s ← β₂·s + (1 - β₂)·g²;
             w ← w - lr/(1 - β₁ᵗ) · m / (√s / √(1 - β₂ᵗ) + ε)
* ``AdamW``: Adam without weight decay in g, plus the decoupled shrink w ← w·(1 - lr·λ) first.

(g already includes λ·w for SGD and Adam: L2 regularization added to the gradient, which
Adam then rescales per weight — the reason AdamW decouples it.)

Parameters live in ``param_groups``: a list of dicts, each holding ``params`` and its own
hyper-parameters (``lr``, ``momentum``, ``betas``...). A schedule (``minseg.schedule``) sets
``group["lr"]`` before each step. Per-parameter state (momentum buffers, Adam's moments) is
kept in ``state``, keyed by the parameter's position (its index across all groups), which is
also how ``state_dict`` names it. Updates happen in place on ``param.data`` in the parameter's
own dtype: hyper-parameters are Python floats, which NumPy never lets upcast a float32 array.
"""
import math

from . import backend
from .schedule import ConstantLR, LRScheduler, OneCycleLR

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "LRScheduler", "OneCycleLR", "ConstantLR"]


class Optimizer:
    """Base class: parameter groups, per-parameter state, ``zero_grad`` and (de)serialization."""

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        params = list(params)
        if len(params) == 0:
            raise ValueError(f"{type(self).__name__}: params is an empty list (did the model register no Parameters?)")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        for group in groups:
            self.add_param_group(group)
        self.state = {}  # parameter index -> dict of that parameter's state

    def add_param_group(self, group):
        """Add a dict with ``params`` and optional hyper-parameters (the others come from ``defaults``)."""
        if "params" not in group:
            raise ValueError(f"{type(self).__name__}: a parameter group needs a 'params' entry, got keys {list(group)}")
        group = dict(group)
        group["params"] = list(group["params"])
        for key, default in self.defaults.items():
            group.setdefault(key, default)
        seen = {id(p) for other in self.param_groups for p in other["params"]}
        if any(id(p) in seen for p in group["params"]):
            raise ValueError(f"{type(self).__name__}: a parameter appears in more than one parameter group")
        self.param_groups.append(group)

    def indexed_params(self):
        """(index, group, parameter) for every parameter, indices counting across all groups."""
        index = 0
        for group in self.param_groups:
            for param in group["params"]:
                yield index, group, param
                index += 1

    def zero_grad(self):
        """Forget the gradients (set them to None, as PyTorch does by default)."""
        for _, _, param in self.indexed_params():
            param.grad = None

    def step(self):
        """Update every parameter that has a gradient."""
        for index, group, param in self.indexed_params():
            if param.grad is None:
                continue
            if param.grad.shape != param.data.shape:
                raise ValueError(f"{type(self).__name__}: parameter {index} has shape {param.shape} "
                                 f"but its gradient has shape {tuple(param.grad.shape)}")
            self.update(param, param.grad, self.state.setdefault(index, {}), group)

    def update(self, param, grad_param, state, group):
        raise NotImplementedError(f"{type(self).__name__} must define update()")

    # --- saving and loading ------------------------------------------------------
    def state_dict(self):
        """{"state": {index: {name: NumPy copy or number}}, "param_groups": [hyper-parameters + indices]}."""
        state = {index: {name: (backend.to_device(value, "cpu").copy() if hasattr(value, "shape") else value)
                         for name, value in entry.items()}
                 for index, entry in self.state.items()}
        groups, index = [], 0
        for group in self.param_groups:
            saved = {key: value for key, value in group.items() if key != "params"}
            saved["params"] = list(range(index, index + len(group["params"])))
            index += len(group["params"])
            groups.append(saved)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters and state; arrays go to each parameter's device and dtype."""
        name = type(self).__name__
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: the state dict has {len(saved_groups)} parameter groups, "
                             f"the optimizer has {len(self.param_groups)}")
        for position, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{name}.load_state_dict: group {position} has {len(saved['params'])} parameters "
                                 f"in the state dict but {len(group['params'])} in the optimizer")
            for key, value in saved.items():
                if key != "params":
                    # JSON (checkpoints) turns tuples into lists; betas is a tuple.
                    group[key] = tuple(value) if isinstance(value, list) else value
        params = {index: param for index, _, param in self.indexed_params()}
        self.state = {}
        for key, entry in state_dict["state"].items():
            index = int(key)  # JSON object keys are strings
            if index not in params:
                raise ValueError(f"{name}.load_state_dict: state for parameter {index}, "
                                 f"but the optimizer has only {len(params)} parameters")
            param = params[index]
            restored = {}
            for field, value in entry.items():
                if hasattr(value, "shape"):
                    if tuple(value.shape) != param.shape:
                        raise ValueError(f"{name}.load_state_dict: {field} of parameter {index} has shape "
                                         f"{tuple(value.shape)}, the parameter has shape {param.shape}")
                    xp = backend.get_array_module(param.data)
                    value = xp.array(backend.to_device(value, param.device), dtype=param.dtype)
                restored[field] = value
            self.state[index] = restored

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for position, group in enumerate(self.param_groups):
            settings = ", ".join(f"{k}={v}" for k, v in group.items() if k != "params")
            lines.append(f"  group {position}: {len(group['params'])} parameters, {settings}")
        return "\n".join(lines + [")"])


def _check_non_negative(optimizer_name, **values):
    for key, value in values.items():
        if not value >= 0:
            raise ValueError(f"{optimizer_name}: {key} must be >= 0, got {value}")


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay (torch.optim.SGD)."""

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        _check_non_negative("SGD", lr=lr, momentum=momentum, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(f"SGD: nesterov=True needs momentum > 0 and dampening = 0, "
                             f"got momentum={momentum}, dampening={dampening}")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      nesterov=nesterov, weight_decay=weight_decay))

    def update(self, param, grad_param, state, group):
        lr, momentum = float(group["lr"]), float(group["momentum"])
        dampening, weight_decay = float(group["dampening"]), float(group["weight_decay"])
        if weight_decay != 0:
            grad_param = grad_param + weight_decay * param.data
        if momentum != 0:
            buffer = state.get("momentum_buffer")
            if buffer is None:  # the first step starts the velocity at g, undamped (as PyTorch does)
                buffer = grad_param.copy()
            else:
                buffer *= momentum
                buffer += (1 - dampening) * grad_param
            state["momentum_buffer"] = buffer
            # Nesterov: step with the gradient "looked ahead" along the velocity.
            grad_param = grad_param + momentum * buffer if group["nesterov"] else buffer
        param.data -= lr * grad_param


class Adam(Optimizer):
    """Adaptive moments (Kingma & Ba, 2015; torch.optim.Adam): each weight gets its own step size.

    ``m`` (mean of g) and ``s`` (mean of g²) start at zero, so early averages are biased
    towards zero; dividing by 1 - βᵗ removes that bias.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        _check_non_negative(type(self).__name__, lr=lr, eps=eps, weight_decay=weight_decay)
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"{type(self).__name__}: betas must lie in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def update(self, param, grad_param, state, group):
        lr, eps, weight_decay = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        beta1, beta2 = (float(beta) for beta in group["betas"])
        if weight_decay != 0:
            grad_param = self.apply_weight_decay(param, grad_param, lr, weight_decay)
        xp = backend.get_array_module(param.data)
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(param.data)
            state["exp_avg_sq"] = xp.zeros_like(param.data)
        state["step"] += 1
        step, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
        exp_avg *= beta1
        exp_avg += (1 - beta1) * grad_param
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * (grad_param * grad_param)
        # Python floats: the bias corrections must not turn the float32 update into float64.
        step_size = lr / (1 - beta1 ** step)
        denominator = xp.sqrt(exp_avg_sq) / math.sqrt(1 - beta2 ** step) + eps
        param.data -= step_size * (exp_avg / denominator)

    def apply_weight_decay(self, param, grad_param, lr, weight_decay):
        """Adam's L2 penalty: add λ·w to the gradient (then rescaled with it)."""
        return grad_param + weight_decay * param.data


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019; torch.optim.AdamW).

    The shrink w ← w·(1 - lr·λ) happens outside the adaptive rescaling, so every weight
    decays at the same rate whatever its gradient history.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def apply_weight_decay(self, param, grad_param, lr, weight_decay):
        param.data *= 1 - lr * weight_decay
        return grad_param
