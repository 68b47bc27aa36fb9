"""sync_batch_norm and SyncBatchNorm (minseg/functional/sync_batch_norm.py, minseg/nn/sync_batchnorm.py).

The all-reduce is the stand-in ``ThreadGroup``: the ranks are threads of this process, each with its share of
one batch, so one process checks what K processes compute.
"""
import numpy as np
import pytest

import minseg.functional as F
from minseg import Tensor, gradcheck, nn
from minseg.autograd import Function
from minseg.distributed import ThreadGroup
from minseg.functional.sync_batch_norm import SyncBatchNormFunction

rng = np.random.default_rng(0)


def to_float64(model):
    for tensor in list(model.parameters()) + [b for _, b in model.named_buffers()]:
        if tensor.data.dtype.kind == "f":
            tensor.data = tensor.data.astype(np.float64)
    return model


def shares(x, splits):
    return np.split(x, np.cumsum(splits)[:-1])


class SplitBatch(Function):
    """SyncBatchNormFunction on each rank's share of x, the ranks being threads: x → y of the whole batch.

    Backward hands each rank its share of grad_y; grad_x is the shares put together, grad_weight and
    grad_bias the sum of the ranks' own (what the gradient all-reduce of training does)."""

    def __init__(self, splits, eps=1e-5):
        self.splits, self.eps = splits, eps

    def forward(self, x, weight, bias):
        group = ThreadGroup(len(self.splits))
        self.functions = [SyncBatchNormFunction(comm, self.eps) for comm in group.communicators]
        pieces = shares(x, self.splits)
        for function in self.functions:
            function.needs_input_grad = self.needs_input_grad
        outputs = group.run(lambda comm: self.functions[comm.rank].forward(pieces[comm.rank], weight, bias))
        return np.concatenate(outputs)

    def backward(self, grad_y):
        group = ThreadGroup(len(self.splits))
        for function, comm in zip(self.functions, group.communicators):
            function.comm = comm
        pieces = shares(grad_y, self.splits)
        grads = group.run(lambda comm: self.functions[comm.rank].backward(pieces[comm.rank]))
        return (np.concatenate([g[0] for g in grads]), sum(g[1] for g in grads), sum(g[2] for g in grads))


@pytest.mark.parametrize("splits", [(2, 2), (1, 3), (3, 1, 2)])
def test_forward_is_batch_norm_of_the_whole_batch(splits):
    x = rng.standard_normal((sum(splits), 3, 4, 5)) * 2 + 1
    weight, bias = Tensor(rng.standard_normal(3)), Tensor(rng.standard_normal(3))
    expected = F.batch_norm(Tensor(x), None, None, weight, bias, training=True).numpy()
    y = SplitBatch(splits)(Tensor(x), weight, bias).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_plain_batch_norm_per_share_would_differ():
    x = rng.standard_normal((4, 2, 3, 3)) + np.arange(4)[:, None, None, None]  # shares with different means
    whole = F.batch_norm(Tensor(x), None, None, training=True).numpy()
    per_share = np.concatenate([F.batch_norm(Tensor(p), None, None, training=True).numpy() for p in shares(x, (2, 2))])
    assert np.abs(whole - per_share).max() > 0.1


@pytest.mark.parametrize("splits", [(2, 2), (1, 2), (2, 1, 1)])
def test_gradcheck_over_split_batches(splits):
    x = Tensor(rng.standard_normal((sum(splits), 2, 3, 2)) * 1.5 + 0.5, requires_grad=True)
    weight = Tensor(rng.standard_normal(2), requires_grad=True)
    bias = Tensor(rng.standard_normal(2), requires_grad=True)
    assert gradcheck(lambda x, w, b: SplitBatch(splits)(x, w, b), [x, weight, bias])


def test_gradients_equal_batch_norms_over_the_whole_batch():
    x = rng.standard_normal((5, 3, 4, 4))
    grad_y = rng.standard_normal(x.shape)
    weight, bias = rng.standard_normal(3), rng.standard_normal(3)
    grads = []
    for function in (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                     lambda x, w, b: SplitBatch((2, 3))(x, w, b)):
        tensors = [Tensor(v.copy(), requires_grad=True) for v in (x, weight, bias)]
        function(*tensors).backward(Tensor(grad_y))
        grads.append([t.grad for t in tensors])
    for single, split in zip(*grads):
        np.testing.assert_allclose(split, single, rtol=1e-11, atol=1e-12)


def test_module_matches_batchnorm2d_on_the_whole_batch_including_running_statistics():
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float64)
    reference = to_float64(nn.BatchNorm2d(3))
    expected = reference(Tensor(x)).numpy()
    group = ThreadGroup(2)

    def rank(comm):
        layer = to_float64(nn.SyncBatchNorm(3, comm=comm))
        y = layer(Tensor(shares(x, (1, 3))[comm.rank])).numpy()
        return y, layer.running_mean.numpy(), layer.running_var.numpy()

    (y0, mean0, var0), (y1, mean1, var1) = group.run(rank)
    np.testing.assert_allclose(np.concatenate([y0, y1]), expected, rtol=1e-12, atol=1e-12)
    for mean, var in ((mean0, var0), (mean1, var1)):
        np.testing.assert_allclose(mean, reference.running_mean.numpy(), rtol=1e-12)
        np.testing.assert_allclose(var, reference.running_var.numpy(), rtol=1e-12)


def test_convert_swaps_every_batchnorm_and_keeps_its_tensors():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Sequential(nn.BatchNorm2d(4)))
    weight = model[1].weight
    keys = list(model.state_dict())
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model, ThreadGroup(1).communicators[0])
    assert isinstance(converted[1], nn.SyncBatchNorm) and isinstance(converted[3][0], nn.SyncBatchNorm)
    assert converted[1].weight is weight and list(converted.state_dict()) == keys
    assert not isinstance(converted[0], nn.SyncBatchNorm)


def test_evaluation_and_one_rank_are_plain_batch_norm():
    x = rng.standard_normal((2, 3, 4, 4))
    running_mean, running_var = np.zeros(3), np.ones(3)
    one = ThreadGroup(1).communicators[0]
    y = F.sync_batch_norm(Tensor(x), running_mean, running_var, training=False, comm=one).numpy()
    np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-5))


def test_bad_arguments_name_the_call():
    comms = ThreadGroup(2).communicators
    with pytest.raises(ValueError, match="sync_batch_norm: running_mean has shape"):
        F.sync_batch_norm(Tensor(np.zeros((2, 3, 2, 2))), np.zeros(2), np.ones(2), training=True, comm=comms[0])
    with pytest.raises(ValueError, match="sync_batch_norm: give both running_mean and running_var"):
        F.sync_batch_norm(Tensor(np.zeros((2, 3, 2, 2))), np.zeros(3), None, training=True, comm=comms[0])
