"""Training: the loop, validation metrics, checkpoints that resume exactly, and the LR range test.

A ``Learner`` bundles what a run needs (model, loaders, loss, optimizer, schedule) and gives
fastai-like verbs::

    learner = Learner(model, train_loader, valid_loader, F.cross_entropy, optimizer, scheduler,
                      num_classes=32, void_class=30, checkpoint_path="runs/camvid/checkpoint.npz")
    learner.fit(30)                 # 30 more epochs; validation metrics after each, history kept
    learner.evaluate()              # pixel accuracy, foreground accuracy, mean IoU, ...
    learner.predict(images)         # class ids (N, H, W)

Read in this order: ``learner`` (the Learner: one step, the epoch, evaluation, prediction, state),
``diverged`` (when training stops), ``progress`` (the smoothed loss and the epoch table), ``range_test``
(``lr_find``). The checkpoint file format is ``minseg.checkpoint``'s; its two functions are importable
from here too.
"""
from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .diverged import TrainingDiverged
from .learner import Learner
from .progress import SmoothedLoss
from .range_test import LRFindResult, lr_find

__all__ = ["Learner", "TrainingDiverged", "CheckpointError", "save_checkpoint", "load_checkpoint",
           "lr_find", "LRFindResult", "SmoothedLoss"]
