"""The Learner: one training step, the epoch, evaluation, prediction, and state that resumes exactly.

One training step is the whole of deep learning: forward, loss, ``zero_grad``, ``backward``,
``optimizer.step()``, ``scheduler.step()``. ``batch_loss`` (forward and loss, with the divergence
check) is written once and used by the epoch, by ``evaluate`` and, through ``train_step``, by ``lr_find``.

Resuming exactly. A run is fully determined by the weights, the optimizer's state (moments,
step counts, current lr/momentum), the schedule's step, the global generator behind dropout
(``minseg.random``) and the loaders' epoch counters (shuffling and augmentation are seeded per
epoch). A checkpoint stores all of them, so ``load_checkpoint`` + ``fit`` continues bit for bit
as if the run had never stopped. The file format (an atomic ``.npz`` read without pickle) is
``minseg.checkpoint``'s; ``Learner(run=...)`` adds what a later ``predict`` or ``--resume`` needs to
rebuild the run without the original command line (model name and arguments, normalization,
class names and colours, training arguments).

Divergence is checked once per step, in ``batch_loss``, before ``backward`` and ``step`` touch the
weights, in training and in evaluation alike (``diverged``).

Many processes. With ``comm`` (a ``minseg.distributed`` communicator of K ranks, each Learner given its
rank's share of every batch: ``DataLoader(num_replicas=K, rank=r)``) the Learner trains data-parallel:
rank 0's weights are broadcast once; each step, every rank's loss is weighted by its share of the batch's
counted pixels (``_weighted_loss``), so that the gradients summed by one all-reduce (``allreduce_gradients``)
are the gradient of the whole batch's mean loss; evaluation sums the ranks' confusion matrices; only rank 0
writes the checkpoint and the epoch table. Divergence is decided from the sums of all ranks, so every rank
stops at the same step. With SyncBatchNorm layers (``nn.SyncBatchNorm.convert_sync_batchnorm``) K ranks
compute what one process computes with the whole batch (``docs/course_7_many_processes.md``).
"""
import math
import os
import time

import numpy as np
from tqdm.auto import tqdm

from .. import backend, random
from ..autograd import Tensor, no_grad
from ..checkpoint import CheckpointError, load_checkpoint, mismatch_error, save_checkpoint
from ..distributed import SingleProcess, allreduce_gradients, broadcast_module
from ..functional.one_hot import to_class_ids
from ..metrics import SegmentationMetrics
from ..models.sizes import crop_padding, pad_to_multiple
from .diverged import QUIET_OVERFLOW, TrainingDiverged
from .progress import SmoothedLoss, print_epoch
from .range_test import lr_find

__all__ = ["Learner"]


def _megabytes(size):
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.0f} kB"


def _all_finite(tensor):
    xp = backend.get_array_module(tensor.data)
    return bool(xp.isfinite(tensor.data).all())


class Learner:
    """Model + data + loss + optimizer (+ schedule): ``fit``, ``evaluate``, ``predict``, checkpoints.

    ``loss_fn(logits, targets)`` returns a scalar Tensor (e.g. ``F.cross_entropy``).
    ``num_classes`` defaults to ``train_loader.dataset.num_classes``. ``void_class`` is the class
    left out of the foreground accuracy; ``ignore_index`` pixels (default -100, the value
    ``F.cross_entropy`` ignores and the padding transforms write) are left out of every metric.
    With ``checkpoint_path`` a checkpoint is written after every ``checkpoint_every``-th epoch and after the
    last of each ``fit``, and the table (with ``table``) says its size once; resume a run with
    ``learner.load_checkpoint()`` and then ``fit`` the remaining epochs. ``progress`` shows tqdm bars and
    the epoch table; ``table`` (default: ``progress``) the table alone. ``run`` (a dict of JSON values
    and arrays) travels with every checkpoint: ``minseg train`` stores there what rebuilds the run.
    ``comm``: train data-parallel over its ranks (the module docstring); default: one process.
    """

    def __init__(self, model, train_loader, valid_loader, loss_fn, optimizer, scheduler=None,
                 num_classes=None, void_class=None, ignore_index=-100, checkpoint_path=None, progress=True,
                 run=None, table=None, comm=None, checkpoint_every=1):
        if num_classes is None:
            num_classes = getattr(getattr(train_loader, "dataset", None), "num_classes", None)
            if num_classes is None:
                raise ValueError("Learner: pass num_classes (train_loader.dataset has no num_classes)")
        self.model, self.loss_fn = model, loss_fn
        self.train_loader, self.valid_loader = train_loader, valid_loader
        self.optimizer, self.scheduler = optimizer, scheduler
        self.num_classes, self.void_class, self.ignore_index = num_classes, void_class, ignore_index
        if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise ValueError(f"Learner: checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
        self.checkpoint_path, self.checkpoint_every = checkpoint_path, checkpoint_every
        self.progress = progress
        self.table = progress if table is None else table  # the epoch table; progress alone hides the bars
        self.run = run     # JSON-able description of the run, stored in every checkpoint
        self.epoch = 0     # epochs completed
        self.history = []  # one dict per completed epoch
        self.comm = SingleProcess() if comm is None else comm
        if self.comm.size > 1:
            for name, loader in (("train_loader", train_loader), ("valid_loader", valid_loader)):
                if getattr(loader, "num_replicas", 1) != self.comm.size:
                    raise ValueError(f"Learner: {name} must give each of the {self.comm.size} ranks its share, got "
                                     f"{loader!r}; build it with num_replicas={self.comm.size}, rank=comm.rank")
            broadcast_module(model, self.comm)

    # --- training --------------------------------------------------------------------------
    def fit(self, epochs):
        """Train ``epochs`` more epochs, validating (and checkpointing) after each; returns the history."""
        if not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"fit: epochs must be an integer >= 0, got {epochs!r}")
        last = self.epoch + epochs
        self._check_same_steps()
        size = None
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
            written = None
            due = self.epoch % self.checkpoint_every == 0 or self.epoch == last
            if self.checkpoint_path is not None and due and self.comm.rank == 0:
                written = self.save_checkpoint()
            self._report(record, header=index == 0)
            if size is None and written is not None:
                size = written
                self._report_checkpoint(size)
        return self.history

    def train_one_epoch(self, description="train"):
        """One pass over ``train_loader``; the mean training loss (weighted by batch size)."""
        self.model.train()
        total, count, smoothed = 0.0, 0, SmoothedLoss()
        # A bar updated by hand: wrapping the loader would let some tqdm flavours call iter()
        # on it an extra time, and every iter() starts (and counts) a new shuffled pass.
        bar = tqdm(desc=description, total=len(self.train_loader), leave=False,
                   disable=not self.progress or self.comm.rank != 0, dynamic_ncols=True)
        try:
            for step, (images, targets) in enumerate(self.train_loader, start=1):
                value = self.train_step(images, targets, "training", step, len(self.train_loader))
                if self.scheduler is not None:
                    self.scheduler.step()
                total += value * self._batch_size
                count += self._batch_size
                bar.set_postfix(loss=f"{smoothed.add(value):.4f}", refresh=False)
                bar.update(1)
        finally:
            bar.close()
        return total / max(count, 1)

    def batch_loss(self, images, targets, where="training", step=1, steps=1):
        """Forward and loss of one batch: ``(logits, loss Tensor, its value)``.

        Raises TrainingDiverged, naming ``where`` and ``step`` of ``steps``, when the model's output or the loss
        is not finite, so that ``backward`` and ``step`` never touch the weights or the checkpoint with it."""
        with np.errstate(**QUIET_OVERFLOW):
            logits = self.model(images)
            if not _all_finite(logits):  # the loss would refuse these logits with an argument error
                self._diverged("the model's output holds NaN or inf", where, step, steps)
            loss = self.loss_fn(logits, targets)
        value = loss.item()
        if not math.isfinite(value):
            self._diverged(f"the loss is {value}", where, step, steps)
        return logits, loss, value

    def train_step(self, images, targets, where="training", step=1, steps=1):
        """``batch_loss``, then ``zero_grad``, ``backward`` and ``optimizer.step()``; returns the loss value.

        Data-parallel: the loss of the whole batch (all ranks), and the gradients summed across ranks before
        the step."""
        self._batch_size = len(images)
        if self.comm.size == 1:
            _, loss, value = self.batch_loss(images, targets, where, step, steps)
        else:
            loss, value = self._weighted_loss(images, targets, where, step, steps)
        self.optimizer.zero_grad()
        with np.errstate(**QUIET_OVERFLOW):
            loss.backward()
            allreduce_gradients(self.model.parameters(), self.comm)
            self.optimizer.step()
        return value

    def _weighted_loss(self, images, targets, where, step, steps):
        """This rank's loss times n_r / N, and the whole batch's loss value.

        The loss is a mean over a batch's counted pixels (those not ``ignore_index``): rank r's loss is
        L_r = S_r / n_r, S_r the sum over its n_r pixels, and the whole batch's is S / N = Σ_r (n_r / N)·L_r.
        So the gradients of (n_r / N)·L_r, summed over the ranks, are the gradient of the whole batch's mean
        loss, whatever the shares' sizes. One all-reduce carries n_r, n_r·L_r, the share's size and whether
        this rank's output or loss is not finite, so that every rank sees a divergence on any of them."""
        with np.errstate(**QUIET_OVERFLOW):
            logits = self.model(images)
            finite = _all_finite(logits)
            loss = self.loss_fn(logits, targets) if finite else None
        value = loss.item() if finite else math.nan
        counted = float((backend.to_device(targets.data, "cpu") != self.ignore_index).sum())
        diverged = not (finite and math.isfinite(value))
        sums = np.array([counted, 0.0 if diverged else counted * value, float(diverged), len(images)])
        self.comm.allreduce_sum(sums)
        if sums[2]:
            self._diverged(f"the model's output or the loss is not finite on {int(sums[2])} of {self.comm.size} "
                           "ranks", where, step, steps)
        self._batch_size = int(sums[3])
        if not sums[0]:  # no counted pixel in the whole batch: the loss is 0, as cross_entropy's is then
            return loss * loss.data.dtype.type(0), 0.0
        return loss * loss.data.dtype.type(counted / sums[0]), sums[1] / sums[0]

    def _check_same_steps(self):
        """Every rank must take every training step (each step waits for all): the same len(train_loader)."""
        if self.comm.size == 1:
            return
        steps = np.array([len(self.train_loader), len(self.train_loader) ** 2], np.float64)
        self.comm.allreduce_sum(steps)
        if steps[1] * self.comm.size != steps[0] ** 2:
            raise ValueError(f"Learner.fit: the ranks have different numbers of training batches (the last batch "
                             f"holds fewer samples than the {self.comm.size} ranks); give the training loader "
                             "drop_last=True, or a batch size that leaves a last batch of at least one per rank")

    def _diverged(self, problem, where, step, steps):
        kept = (f"the last good checkpoint is untouched at {self.checkpoint_path}"
                if self.checkpoint_path is not None and os.path.exists(self.checkpoint_path)
                else "no checkpoint was written")
        raise TrainingDiverged(
            f"training stopped: {problem} at epoch {self.epoch + 1}, {where} step {step} of {steps} "
            f"(lr {self.optimizer.param_groups[0]['lr']:.3g}); the weights were not updated with it and {kept}. "
            "Try a lower learning rate (see lr_find).")

    def _report(self, record, header):
        if self.table and self.comm.rank == 0:
            print_epoch(record, header)

    def _report_checkpoint(self, size):
        """Once per ``fit``: how large each checkpoint is, since a large model rewrites it every epoch."""
        if self.table:
            every = "every epoch" if self.checkpoint_every == 1 else f"every {self.checkpoint_every} epochs"
            print(f"{os.path.basename(self.checkpoint_path)}: {_megabytes(size)} (weights, optimizer state, "
                  f"history), written {every} and after the last")

    # --- validation and prediction -------------------------------------------------------------
    def evaluate(self, loader=None):
        """Loss and metrics over ``loader`` (default: the validation loader), in eval mode, without a graph.

        Returns ``SegmentationMetrics.compute()``'s dict plus "valid_loss" and "confusion_matrix".
        Data-parallel: each rank evaluates its share with rank 0's batch-norm statistics, and the metrics come
        from the confusion matrices summed over the ranks (exact, not an average of per-rank metrics).
        """
        loader = self.valid_loader if loader is None else loader
        metrics = SegmentationMetrics(self.num_classes, ignore_index=self.ignore_index, void_class=self.void_class)
        total, count = 0.0, 0
        was_training = self.model.training
        self.model.eval()
        broadcast_module(self.model, self.comm, buffers_only=True)  # without SyncBatchNorm, each rank's own statistics
        try:
            with no_grad():
                for step, (images, targets) in enumerate(loader, start=1):
                    logits, _, value = self.batch_loss(images, targets, "validation", step, len(loader))
                    total += value * len(images)
                    count += len(images)
                    metrics.update(to_class_ids(logits), targets)
        finally:
            self.model.train(was_training)
        if self.comm.size > 1:
            self.comm.allreduce_sum(metrics.confusion)
            total, count = self.comm.allreduce_sum(np.array([total, count], np.float64))
        results = metrics.compute()
        results["valid_loss"] = total / max(count, 1)
        results["confusion_matrix"] = metrics.confusion.copy()
        return results

    def predict(self, images, batch_size=16):
        """Class ids (N, H, W) int64 NumPy array for normalized images (N, C, H, W) (a Tensor or array).

        Any H and W: the images are padded with 0 to the model's multiple and the padding cropped off
        (``models.sizes``), as the ``Predictor`` does."""
        data = images.data if isinstance(images, Tensor) else images
        if getattr(data, "ndim", None) != 4:
            raise ValueError(f"predict: images must have shape (N, C, H, W), got {getattr(data, 'shape', type(data))}")
        device = next(self.model.parameters()).device
        height, width = data.shape[-2:]
        data = backend.to_device(pad_to_multiple(data, self.model.size_multiple), device)
        was_training = self.model.training
        self.model.eval()
        try:
            with no_grad():
                ids = [crop_padding(to_class_ids(self.model(Tensor(data[start:start + batch_size]))).numpy(),
                                    height, width) for start in range(0, len(data), batch_size)]
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
            "run": self.run,
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
        if state.get("run") is not None:
            self.run = state["run"]

    def save_checkpoint(self, path=None):
        """Write ``state_dict()`` to ``path`` (default: ``checkpoint_path``) atomically; returns its size in bytes."""
        return save_checkpoint(self._checkpoint_file(path, "save_checkpoint"), self.state_dict())

    def load_checkpoint(self, path=None):
        """Restore the run saved at ``path`` (default: ``checkpoint_path``); ``fit`` then continues it."""
        path = self._checkpoint_file(path, "load_checkpoint")
        try:
            self.load_state_dict(load_checkpoint(path))
        except CheckpointError:
            raise
        except (KeyError, ValueError, TypeError, AttributeError, IndexError) as error:  # another or damaged run
            raise mismatch_error("load_checkpoint", path, "this Learner", error) from error
        return self

    def _checkpoint_file(self, path, where):
        path = self.checkpoint_path if path is None else path
        if path is None:
            raise ValueError(f"{where}: pass a path or give the Learner a checkpoint_path")
        return path

    def lr_find(self, start_lr=1e-7, end_lr=10.0, num_it=100, stop_div=True, plot_path=None):
        """See ``minseg.train.lr_find``."""
        return lr_find(self, start_lr, end_lr, num_it, stop_div, plot_path)
