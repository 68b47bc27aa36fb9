"""Training: the loop, validation metrics, checkpoints that resume exactly, and the LR range test.

A ``Learner`` bundles what a run needs (model, loaders, loss, optimizer, schedule) and gives
fastai-like verbs::

    learner = Learner(model, train_loader, valid_loader, F.cross_entropy, optimizer, scheduler,
                      num_classes=32, void_class=30, checkpoint_path="runs/camvid/checkpoint.npz")
    learner.fit(30)                 # 30 more epochs; validation metrics after each, history kept
    learner.evaluate()              # pixel accuracy, foreground accuracy, mean IoU, ...
    learner.predict(images)         # class ids (N, H, W)

One training step is the whole of deep learning: forward, loss, ``zero_grad``, ``backward``,
``optimizer.step()``, ``scheduler.step()``.

Resuming exactly. A run is fully determined by the weights, the optimizer's state (moments,
step counts, current lr/momentum), the schedule's step, the global generator behind dropout
(``minseg.random``) and the loaders' epoch counters (shuffling and augmentation are seeded per
epoch). A checkpoint stores all of them, so ``load_checkpoint`` + ``fit`` continues bit for bit
as if the run had never stopped. Checkpoints are ``.npz`` files: arrays as arrays, everything
else as one JSON string, read back with ``allow_pickle=False`` (a checkpoint can never run code).
They are written to a temporary file, flushed to disk and renamed over the old one, so a crash
mid-write leaves the previous checkpoint intact.
"""
import json
import math
import os
import tempfile
import time
from collections import namedtuple

import numpy as np
from tqdm.auto import tqdm

from . import backend, random
from .autograd import Tensor, no_grad
from .functional.one_hot import to_class_ids
from .metrics import SegmentationMetrics

__all__ = ["Learner", "TrainingDiverged", "CheckpointError", "save_checkpoint", "load_checkpoint",
           "lr_find", "LRFindResult"]

CHECKPOINT_FORMAT = "minseg-checkpoint-v1"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the weights were not updated with it."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, corrupt, or not a minseg checkpoint)."""


# --- checkpoint files: nested dicts of arrays and JSON values <-> one .npz -------------------
def _split_arrays(tree, path, arrays):
    """``tree`` with every array replaced by {"__array__": key}; the arrays go into ``arrays``."""
    if isinstance(tree, dict):
        return {str(key): _split_arrays(value, f"{path}/{key}", arrays) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_split_arrays(value, f"{path}/{i}", arrays) for i, value in enumerate(tree)]
    if isinstance(tree, np.generic):  # NumPy scalars are not JSON; they are plain numbers
        return tree.item()
    if hasattr(tree, "shape") and hasattr(tree, "dtype"):
        key = path.lstrip("/")
        arrays[key] = backend.to_device(tree, "cpu")
        return {"__array__": key}
    return tree


def _join_arrays(tree, arrays):
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            return arrays[tree["__array__"]]
        return {key: _join_arrays(value, arrays) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_join_arrays(value, arrays) for value in tree]
    return tree


def save_checkpoint(path, state):
    """Write ``state`` (nested dicts/lists of arrays, numbers, strings) to ``path`` atomically.

    Temporary file in the same folder → fsync → ``os.replace``: the rename is atomic, so
    ``path`` always holds either the old checkpoint or the complete new one.
    """
    path = os.fspath(path)
    arrays = {}
    tree = _split_arrays(state, "", arrays)
    arrays["__json__"] = np.array(json.dumps({"format": CHECKPOINT_FORMAT, "state": tree}))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(descriptor, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder):
    """Make the rename itself durable (POSIX); Windows has no directory handles to flush."""
    if hasattr(os, "O_DIRECTORY"):
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def load_checkpoint(path):
    """The state written by ``save_checkpoint``; ``CheckpointError`` naming the file if it is damaged."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_checkpoint: no checkpoint file at {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}  # reads (and CRC-checks) every member
        document = json.loads(str(arrays.pop("__json__")))
    except Exception as error:  # zipfile.BadZipFile, EOFError, KeyError, ValueError, ...
        raise CheckpointError(f"load_checkpoint: {path} is not a readable minseg checkpoint (truncated or "
                              f"corrupt?): {type(error).__name__}: {error}") from error
    if document.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"load_checkpoint: {path} has format {document.get('format')!r}, "
                              f"expected {CHECKPOINT_FORMAT!r}")
    return _join_arrays(document["state"], arrays)


def _all_finite(tensor):
    xp = backend.get_array_module(tensor.data)
    return bool(xp.isfinite(tensor.data).all())


# --- the Learner ---------------------------------------------------------------------------
class SmoothedLoss:
    """Exponential moving average of the loss, debiased (fastai's display): β·avg + (1-β)·loss."""

    def __init__(self, beta=0.98):
        self.beta, self.average, self.count = beta, 0.0, 0

    def add(self, value):
        self.count += 1
        self.average = self.beta * self.average + (1 - self.beta) * value
        return self.value

    @property
    def value(self):
        return self.average / (1 - self.beta ** self.count)


class Learner:
    """Model + data + loss + optimizer (+ schedule): ``fit``, ``evaluate``, ``predict``, checkpoints.

    ``loss_fn(logits, targets)`` returns a scalar Tensor (e.g. ``F.cross_entropy``).
    ``num_classes`` defaults to ``train_loader.dataset.num_classes``. ``void_class`` is the class
    left out of the foreground accuracy; ``ignore_index`` pixels (default -100, the value
    ``F.cross_entropy`` ignores and the padding transforms write) are left out of every metric.
    With ``checkpoint_path`` a checkpoint is written after every epoch; resume a run with
    ``learner.load_checkpoint()`` and then ``fit`` the remaining epochs.
    """

    def __init__(self, model, train_loader, valid_loader, loss_fn, optimizer, scheduler=None,
                 num_classes=None, void_class=None, ignore_index=-100, checkpoint_path=None, progress=True):
        if num_classes is None:
            num_classes = getattr(getattr(train_loader, "dataset", None), "num_classes", None)
            if num_classes is None:
                raise ValueError("Learner: pass num_classes (train_loader.dataset has no num_classes)")
        self.model, self.loss_fn = model, loss_fn
        self.train_loader, self.valid_loader = train_loader, valid_loader
        self.optimizer, self.scheduler = optimizer, scheduler
        self.num_classes, self.void_class, self.ignore_index = num_classes, void_class, ignore_index
        self.checkpoint_path = checkpoint_path
        self.progress = progress
        self.epoch = 0     # epochs completed
        self.history = []  # one dict per completed epoch

    # --- training --------------------------------------------------------------------------
    def fit(self, epochs):
        """Train ``epochs`` more epochs, validating (and checkpointing) after each; returns the history."""
        if not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"fit: epochs must be an integer >= 0, got {epochs!r}")
        last = self.epoch + epochs
        for index in range(epochs):
            start = time.perf_counter()
            train_loss = self.train_one_epoch(description=f"epoch {self.epoch + 1}/{last}")
            metrics = self.evaluate()
            self.epoch += 1
            record = {"epoch": self.epoch, "train_loss": train_loss, "valid_loss": metrics["valid_loss"]}
            for key in ("pixel_accuracy", "foreground_accuracy", "mean_iou", "mean_dice"):
                if key in metrics:
                    record[key] = float(metrics[key])
            record["lr"] = float(self.optimizer.param_groups[0]["lr"])
            record["seconds"] = time.perf_counter() - start
            self.history.append(record)
            if self.checkpoint_path is not None:
                self.save_checkpoint()
            self._report(record, header=index == 0)
        return self.history

    def train_one_epoch(self, description="train"):
        """One pass over ``train_loader``; the mean training loss (weighted by batch size)."""
        self.model.train()
        total, count, smoothed = 0.0, 0, SmoothedLoss()
        # A bar updated by hand: wrapping the loader would let some tqdm flavours call iter()
        # on it an extra time, and every iter() starts (and counts) a new shuffled pass.
        bar = tqdm(desc=description, total=len(self.train_loader), leave=False,
                   disable=not self.progress, dynamic_ncols=True)
        for step, (images, targets) in enumerate(self.train_loader, start=1):
            logits = self.model(images)
            # Checked before the loss too: a loss function may reject non-finite logits with its
            # own error, and "the output is NaN" says more than "the loss is NaN".
            if not _all_finite(logits):
                self._stop(bar, "the model's output holds NaN or inf", step)
            loss = self.loss_fn(logits, targets)
            value = loss.item()
            if not math.isfinite(value):
                self._stop(bar, f"the loss is {value}", step)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            total += value * len(images)
            count += len(images)
            bar.set_postfix(loss=f"{smoothed.add(value):.4f}", refresh=False)
            bar.update(1)
        bar.close()
        return total / max(count, 1)

    def _stop(self, bar, problem, step):
        """Raise TrainingDiverged before the bad step touches the weights or the checkpoint."""
        bar.close()
        kept = (f"the last good checkpoint is untouched at {self.checkpoint_path}"
                if self.checkpoint_path is not None and os.path.exists(self.checkpoint_path)
                else "no checkpoint was written")
        raise TrainingDiverged(
            f"training stopped: {problem} at epoch {self.epoch + 1}, step {step} of {len(self.train_loader)} "
            f"(lr {self.optimizer.param_groups[0]['lr']:.3g}); the weights were not updated with it and {kept}. "
            "Try a lower learning rate (see lr_find).")

    def _report(self, record, header):
        if not self.progress:
            return
        columns = [key for key in record if key != "epoch"]
        if header:
            tqdm.write("epoch  " + "  ".join(f"{key:>10}" for key in columns))
        values = "  ".join(f"{record[key]:>{max(len(key), 10)}.4g}" for key in columns)
        tqdm.write(f"{record['epoch']:>5}  {values}")

    # --- validation and prediction -------------------------------------------------------------
    def evaluate(self, loader=None):
        """Loss and metrics over ``loader`` (default: the validation loader), in eval mode, without a graph.

        Returns ``SegmentationMetrics.compute()``'s dict plus "valid_loss" and "confusion_matrix".
        """
        loader = self.valid_loader if loader is None else loader
        metrics = SegmentationMetrics(self.num_classes, ignore_index=self.ignore_index, void_class=self.void_class)
        total, count = 0.0, 0
        was_training = self.model.training
        self.model.eval()
        try:
            with no_grad():
                for images, targets in loader:
                    logits = self.model(images)
                    total += self.loss_fn(logits, targets).item() * len(images)
                    count += len(images)
                    metrics.update(to_class_ids(logits), targets)
        finally:
            self.model.train(was_training)
        results = metrics.compute()
        results["valid_loss"] = total / max(count, 1)
        results["confusion_matrix"] = metrics.confusion.copy()
        return results

    def predict(self, images, batch_size=16):
        """Class ids (N, H, W) int64 NumPy array for normalized images (N, C, H, W) (a Tensor or array)."""
        data = images.data if isinstance(images, Tensor) else images
        if getattr(data, "ndim", None) != 4:
            raise ValueError(f"predict: images must have shape (N, C, H, W), got {getattr(data, 'shape', type(data))}")
        device = next(self.model.parameters()).device
        data = backend.to_device(data, device)
        was_training = self.model.training
        self.model.eval()
        try:
            with no_grad():
                ids = [to_class_ids(self.model(Tensor(data[start:start + batch_size]))).numpy()
                       for start in range(0, len(data), batch_size)]
        finally:
            self.model.train(was_training)
        return np.concatenate(ids)

    # --- state and checkpoints -------------------------------------------------------------
    def state_dict(self):
        """Everything that determines how training continues (what a checkpoint holds)."""
        return {
            "epoch": self.epoch,
            "history": self.history,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "random": random.get_state(),
            "train_loader": self.train_loader.state_dict(),
            "valid_loader": self.valid_loader.state_dict(),
        }

    def load_state_dict(self, state):
        if (state["scheduler"] is None) != (self.scheduler is None):
            has = "has a schedule" if state["scheduler"] is not None else "has no schedule"
            raise ValueError(f"Learner.load_state_dict: the saved run {has} but this Learner's scheduler is "
                             f"{self.scheduler!r}; build the Learner the way the saved run was built")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        random.set_state(state["random"])
        self.train_loader.load_state_dict(state["train_loader"])
        self.valid_loader.load_state_dict(state["valid_loader"])
        self.epoch = int(state["epoch"])
        self.history = [dict(record) for record in state["history"]]

    def save_checkpoint(self, path=None):
        save_checkpoint(self._checkpoint_file(path, "save_checkpoint"), self.state_dict())

    def load_checkpoint(self, path=None):
        """Restore the run saved at ``path`` (default: ``checkpoint_path``); ``fit`` then continues it."""
        path = self._checkpoint_file(path, "load_checkpoint")
        try:
            self.load_state_dict(load_checkpoint(path))
        except (KeyError, ValueError) as error:
            if isinstance(error, CheckpointError):
                raise
            raise CheckpointError(f"load_checkpoint: {path} does not match this Learner: {error}") from error
        return self

    def _checkpoint_file(self, path, where):
        path = self.checkpoint_path if path is None else path
        if path is None:
            raise ValueError(f"{where}: pass a path or give the Learner a checkpoint_path")
        return path

    def lr_find(self, start_lr=1e-7, end_lr=10.0, num_it=100, stop_div=True, plot_path=None):
        """See ``lr_find``."""
        return lr_find(self, start_lr, end_lr, num_it, stop_div, plot_path)


# --- the learning-rate range test ------------------------------------------------------------
LRFindResult = namedtuple("LRFindResult", ["lrs", "losses", "suggested_lr"])


def lr_find(learner, start_lr=1e-7, end_lr=10.0, num_it=100, stop_div=True, plot_path=None):
    """Train with an lr growing exponentially from ``start_lr`` to ``end_lr``; record the smoothed loss.

    (Smith, "Cyclical Learning Rates", 2017; fastai's ``lr_find``.) The loss first stays flat
    (lr too small to matter), then falls, then explodes; a good max_lr sits on the falling
    slope. Stops early once the smoothed loss exceeds 4× its minimum (``stop_div``). The
    model, optimizer, schedule, generator and loaders are restored afterwards, so the test
    leaves no trace. Returns ``(lrs, losses, suggested_lr)``, the suggestion being the lr of
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
            logits = learner.model(images)
            if not _all_finite(logits):
                break
            loss = learner.loss_fn(logits, targets)
            value = loss.item()
            if not math.isfinite(value):
                break
            learner.optimizer.zero_grad()
            loss.backward()
            learner.optimizer.step()
            lrs.append(lr)
            losses.append(smoothed.add(value))
            if len(lrs) == num_it or (stop_div and losses[-1] > 4 * min(losses)):
                break
    finally:
        learner.load_state_dict(saved)
    suggested = lrs[int(np.argmin(losses))] / 10 if losses else None
    if plot_path is not None and losses:
        from .viz import plot_lr_find
        plot_lr_find(lrs, losses, plot_path, suggested_lr=suggested)
    return LRFindResult(lrs, losses, suggested)


def _endless(loader):
    """Batches from pass after pass of ``loader`` (the range test may need more than one epoch)."""
    while True:
        yield from loader
