"""The learning-rate range test: ``lr_find`` (Smith, "Cyclical Learning Rates", 2017; fastai's ``lr_find``)."""
from collections import namedtuple

import numpy as np

from .diverged import TrainingDiverged
from .progress import SmoothedLoss

__all__ = ["lr_find", "LRFindResult"]

LRFindResult = namedtuple("LRFindResult", ["lrs", "losses", "suggested_lr"])


def lr_find(learner, start_lr=1e-7, end_lr=10.0, num_it=100, stop_div=True, plot_path=None):
    """Train with an lr growing exponentially from ``start_lr`` to ``end_lr``; record the smoothed loss.

    The loss first stays flat (lr too small to matter), then falls, then explodes; a good max_lr sits
    on the falling slope. Stops early once the smoothed loss exceeds 4× its minimum (``stop_div``), or
    when a step diverges. The model, optimizer, schedule, generator and loaders are restored afterwards,
    so the test leaves no trace. Returns ``(lrs, losses, suggested_lr)``, the suggestion being the lr of
    the lowest smoothed loss divided by 10 (fastai's ``lr_min``).
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"lr_find: need 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}")
    if num_it < 2:
        raise ValueError(f"lr_find: num_it must be at least 2, got {num_it}")
    if len(learner.train_loader) == 0:
        raise ValueError("lr_find: the training loader yields no batches")
    saved = learner.state_dict()
    lrs, losses, smoothed = [], [], SmoothedLoss()
    learner.model.train()
    try:
        for images, targets in _endless(learner.train_loader):
            lr = start_lr * (end_lr / start_lr) ** (len(lrs) / (num_it - 1))
            for group in learner.optimizer.param_groups:
                group["lr"] = lr
            try:
                value = learner.train_step(images, targets, "lr_find", len(lrs) + 1, num_it)
            except TrainingDiverged:
                break
            lrs.append(lr)
            losses.append(smoothed.add(value))
            if len(lrs) == num_it or (stop_div and losses[-1] > 4 * min(losses)):
                break
    finally:
        learner.load_state_dict(saved)
    suggested = lrs[int(np.argmin(losses))] / 10 if losses else None
    if plot_path is not None and losses:
        from ..viz import plot_lr_find  # matplotlib alone takes longer to import than all of minseg
        plot_lr_find(lrs, losses, plot_path, suggested_lr=suggested)
    return LRFindResult(lrs, losses, suggested)


def _endless(loader):
    """Batches from pass after pass of ``loader`` (the range test may need more than one epoch)."""
    while True:
        yield from loader
