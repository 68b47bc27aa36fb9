"""Where an epoch goes: the model's forward/backward/step versus everything around it.

    python benchmarks/loop_profile.py                            # the installed minseg
    PYTHONPATH=OTHER_CHECKOUT python benchmarks/loop_profile.py  # another checkout, to compare

A run larger than the example's, made of synthetic data: 367 training and 101 validation
images of 128x160 in 32 classes (CamVid's SegNet split sizes), UNet base 16, batch 8, AdamW with a
one-cycle schedule, random horizontal flips, a checkpoint after the epoch: ``Learner.fit(1)`` as the
example runs it. Each phase is timed by wrapping the object that does it (the model's forward, the
loss, ``Tensor.backward``, the optimizer and schedule steps, the loaders' batches, the metrics'
update, the checkpoint write), and "outside" is the epoch minus the model's forward, loss, backward
and step. Uses only long-standing API, so other checkouts run it too. Prints one table, seconds and % of the epoch.
"""
import os
import tempfile
import time
from collections import defaultdict

import numpy as np

import minseg
import minseg.functional as F
from minseg import metrics as metrics_module
from minseg.autograd import Tensor
from minseg.data import DataLoader, RandomHorizontalFlip
from minseg.models import create
from minseg.optim import AdamW, OneCycleLR
from minseg.train import Learner

SECONDS = defaultdict(float)


def timed(function, phase):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SECONDS[phase] += time.perf_counter() - start
    return wrapper


class TimedLoader:
    """A loader whose batches are timed (assembly, augmentation, normalization), delegating the rest."""

    def __init__(self, loader, phase):
        self.loader, self.phase = loader, phase

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        iterator = iter(self.loader)
        while True:
            start = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            finally:
                SECONDS[self.phase] += time.perf_counter() - start
            yield batch

    def __getattr__(self, name):
        return getattr(self.loader, name)


class Synthetic:
    """In-memory images and labels shaped like a SegmentationDataset (images, labels, num_classes)."""

    def __init__(self, n, seed):
        rng = np.random.default_rng(seed)
        self.images = rng.integers(0, 256, size=(n, 128, 160, 3), dtype=np.uint8)
        self.labels = rng.integers(0, 32, size=(n, 128, 160)).astype(np.int64)
        self.num_classes = 32

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]


def build(folder):
    minseg.manual_seed(0)
    mean, std = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
    train = DataLoader(Synthetic(367, 1), batch_size=8, shuffle=True, augment=RandomHorizontalFlip(), mean=mean,
                       std=std, seed=0)
    valid = DataLoader(Synthetic(101, 2), batch_size=8, mean=mean, std=std)
    model = create("unet", 32, base=16)
    optimizer = AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    scheduler = OneCycleLR(optimizer, max_lr=3e-3, total_steps=2 * len(train))
    learner = Learner(model, TimedLoader(train, "training batches"), TimedLoader(valid, "validation batches"),
                      timed(F.cross_entropy, "loss"), optimizer, scheduler, num_classes=32, void_class=30,
                      checkpoint_path=os.path.join(folder, "checkpoint.npz"), progress=False)
    model.forward = timed(model.forward, "forward")
    optimizer.step = timed(optimizer.step, "step")
    scheduler.step = timed(scheduler.step, "step")
    learner.save_checkpoint = timed(learner.save_checkpoint, "checkpoint write")
    return learner


def main():
    Tensor.backward = timed(Tensor.backward, "backward")
    metrics_module.SegmentationMetrics.update = timed(metrics_module.SegmentationMetrics.update, "metrics")
    with tempfile.TemporaryDirectory() as folder:
        learner = build(folder)
        learner.fit(1)  # warm-up epoch: first-touch allocations, BLAS start-up
        SECONDS.clear()
        start = time.perf_counter()
        learner.fit(1)
        epoch = time.perf_counter() - start
    model = sum(SECONDS[phase] for phase in ("forward", "loss", "backward", "step"))
    print(f"minseg from {os.path.dirname(minseg.__file__)}; one epoch after a warm-up epoch")
    print(f"{'phase':<22}{'seconds':>9}{'% of epoch':>12}")
    for phase in ("forward", "loss", "backward", "step", "training batches", "validation batches", "metrics",
                  "checkpoint write"):
        print(f"{phase:<22}{SECONDS[phase]:>9.2f}{100 * SECONDS[phase] / epoch:>11.1f}%")
    print(f"{'outside the model':<22}{epoch - model:>9.2f}{100 * (epoch - model) / epoch:>11.1f}%")
    print(f"{'epoch':<22}{epoch:>9.2f}{100.0:>11.1f}%")


if __name__ == "__main__":
    main()
