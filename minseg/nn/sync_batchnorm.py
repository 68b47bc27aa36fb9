"""SyncBatchNorm: BatchNorm2d whose training statistics are the whole batch's, shared by data-parallel ranks.

Same parameters, buffers and state-dict keys as ``BatchNorm2d``, so checkpoints move between the two;
``SyncBatchNorm.convert_sync_batchnorm(model, comm)`` swaps every BatchNorm2d of a model for one, as
PyTorch's function of that name does. The math is ``F.sync_batch_norm``'s.
"""
from .. import functional as F
from .layers import BatchNorm2d

__all__ = ["SyncBatchNorm"]


class SyncBatchNorm(BatchNorm2d):
    """BatchNorm2d over a batch split between ``comm``'s ranks: in training, every rank normalizes by the
    mean and variance of all ranks' values together (``F.sync_batch_norm``); in evaluation it is
    BatchNorm2d. ``comm`` None (or of size 1) is BatchNorm2d in both modes."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, comm=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.comm = comm  # a plain attribute: not a parameter, buffer or child

    def forward(self, x):
        if not self.training or self.comm is None or self.comm.size == 1:
            return super().forward(x)
        if x.ndim != 4 or x.shape[1] != self.num_features:
            return super().forward(x)  # BatchNorm2d's messages for a wrong shape
        momentum = self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.data += 1
            if momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked.item())
        return F.sync_batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, training=True,
                                 momentum=0.0 if momentum is None else momentum, eps=self.eps, comm=self.comm)

    @classmethod
    def convert_sync_batchnorm(cls, module, comm):
        """``module`` with every BatchNorm2d replaced by a SyncBatchNorm over ``comm`` sharing its parameters
        and buffers (the tensors themselves, so an optimizer built before still updates them); returns it."""
        if isinstance(module, BatchNorm2d) and not isinstance(module, cls):
            converted = cls(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, comm)
            for registry in ("_parameters", "_buffers"):
                getattr(converted, registry).update(getattr(module, registry))
            converted.train(module.training)
            return converted
        for name, child in list(module._modules.items()):
            module._modules[name] = cls.convert_sync_batchnorm(child, comm)
        return module
