"""Data-parallel training (minseg/distributed.py, Learner(comm=...), DataLoader(num_replicas, rank)).

The ranks are threads of this process (``ThreadGroup``), so these run everywhere; tests/test_mpi.py runs the
same training under ``mpiexec``. The claim: K ranks, each with its share of every batch, reach the weights
and the metrics that one process reaches with the whole batch.
"""
import copy

import numpy as np
import pytest

import minseg
import minseg.functional as F
from minseg import Tensor, nn
from minseg.data import DataLoader
from minseg.data.transforms import Compose, RandomCrop, RandomHorizontalFlip
from minseg.distributed import SingleProcess, ThreadGroup, allreduce_gradients, broadcast_module
from minseg.models import create
from minseg.optim import SGD, AdamW
from minseg.train import Learner, TrainingDiverged

NUM_CLASSES = 3


class ColourDataset:
    """Random images labelled by their brightest channel; some pixels ignored, more in some images than others."""

    def __init__(self, n, size, seed):
        rng = np.random.default_rng(seed)
        self.images = rng.integers(0, 256, size=(n, *size, 3), dtype=np.uint8)
        self.labels = self.images.argmax(axis=-1).astype(np.int64)
        for k in range(n):  # uneven counted pixels per image: the loss weights must count pixels, not images
            self.labels[k, : k % size[0]] = -100
        self.num_classes = NUM_CLASSES

    def __len__(self):
        return len(self.images)


class Float64(nn.Module):
    """The model in float64, fed float64 images (the loader makes float32)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        for tensor in list(model.parameters()) + [b for _, b in model.named_buffers()]:
            if tensor.data.dtype.kind == "f":
                tensor.data = tensor.data.astype(np.float64)

    def forward(self, x):
        return self.model(Tensor(x.data.astype(np.float64)))


def paper_unet():
    return create("unet", NUM_CLASSES, base=4, depth=2)


def resnet_fcn():
    return create("fcn32s", NUM_CLASSES, encoder="resnet18")


def learner(model, comm, data, batch_size, augment=None):
    train_set, valid_set = data
    rank, ranks = comm.rank, comm.size
    train = DataLoader(train_set, batch_size=batch_size, shuffle=True, seed=3, augment=augment,
                       num_replicas=ranks, rank=rank)
    valid = DataLoader(valid_set, batch_size=batch_size, num_replicas=ranks, rank=rank)
    if ranks > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model, comm)
    # SGD, not Adam: the biases of the convolutions ahead of batch norm have a gradient that is zero up to
    # rounding (the mean subtraction removes them), and Adam's division by √v would blow that rounding up to ±lr.
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    return Learner(model, train, valid, F.cross_entropy, optimizer, num_classes=NUM_CLASSES, progress=False, comm=comm)


def train_and_evaluate(make_model, ranks, data, batch_size=4, epochs=1, float64=True, augment=None, comm=None):
    """Weights (rank by rank) and evaluation of a run on ``ranks`` thread ranks; one process when ranks is None
    (or this process's rank of ``comm``, tests/mpi_driver.py)."""
    minseg.manual_seed(0)
    model = make_model()
    model = Float64(model) if float64 else model

    def run(comm):
        one = learner(copy.deepcopy(model), comm, data, batch_size, augment)
        one.fit(epochs)
        return {name: p.data.copy() for name, p in one.model.named_parameters()}, one.evaluate(), one.history

    if ranks is None:
        return [run(SingleProcess() if comm is None else comm)]
    return ThreadGroup(ranks).run(run)


def assert_same_run(single, ranks, tolerance):
    (weights, metrics, history), = single
    for rank_weights, rank_metrics, rank_history in ranks:
        assert rank_weights.keys() == weights.keys()
        for name in weights:
            np.testing.assert_allclose(rank_weights[name], weights[name], rtol=tolerance, atol=tolerance,
                                       err_msg=name)
        np.testing.assert_array_equal(rank_metrics["confusion_matrix"], metrics["confusion_matrix"])
        np.testing.assert_allclose(rank_metrics["mean_iou"], metrics["mean_iou"], rtol=1e-12)
        np.testing.assert_allclose(rank_history[-1]["train_loss"], history[-1]["train_loss"], rtol=tolerance)


# ---------------------------------------------------------------------------
# The equivalence
# ---------------------------------------------------------------------------
def test_two_ranks_reach_one_process_weights_and_metrics_paper_unet_float64():
    data = ColourDataset(11, (8, 8), seed=1), ColourDataset(7, (8, 8), seed=2)  # batches 4, 4, 3: shares 2+2, 2+1
    single = train_and_evaluate(paper_unet, None, data)
    assert_same_run(single, train_and_evaluate(paper_unet, 2, data), 1e-11)


def test_three_ranks_with_augmentation_reach_one_process_weights():
    data = ColourDataset(10, (10, 10), seed=1), ColourDataset(5, (8, 8), seed=2)
    augment = Compose([RandomCrop((8, 8)), RandomHorizontalFlip()])
    single = train_and_evaluate(paper_unet, None, data, batch_size=5, augment=augment)
    assert_same_run(single, train_and_evaluate(paper_unet, 3, data, batch_size=5, augment=augment), 1e-11)


def test_two_ranks_reach_one_process_weights_resnet_fcn_float64():
    data = ColourDataset(5, (32, 32), seed=1), ColourDataset(3, (32, 32), seed=2)  # batches 3, 2
    single = train_and_evaluate(resnet_fcn, None, data, batch_size=3)
    assert_same_run(single, train_and_evaluate(resnet_fcn, 2, data, batch_size=3), 1e-10)


def test_two_ranks_float32_differ_from_one_process_by_summation_order_only():
    data = ColourDataset(11, (8, 8), seed=1), ColourDataset(7, (8, 8), seed=2)
    single = train_and_evaluate(paper_unet, None, data, float64=False)
    (weights, _, _), = single
    for rank_weights, _, _ in train_and_evaluate(paper_unet, 2, data, float64=False):
        for name in weights:
            np.testing.assert_allclose(rank_weights[name], weights[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_without_sync_batch_norm_the_weights_differ():
    data = ColourDataset(8, (8, 8), seed=1), ColourDataset(4, (8, 8), seed=2)
    minseg.manual_seed(0)
    model = Float64(paper_unet())

    def run(comm):
        one = learner(copy.deepcopy(model), SingleProcess(), data, 4) if comm is None else None
        train = DataLoader(data[0], batch_size=4, shuffle=True, seed=3, num_replicas=2, rank=comm.rank)
        valid = DataLoader(data[1], batch_size=4, num_replicas=2, rank=comm.rank)
        mine = copy.deepcopy(model)  # plain BatchNorm2d: each rank normalizes by its own share
        one = Learner(mine, train, valid, F.cross_entropy, AdamW(mine.parameters(), lr=1e-2),
                      num_classes=NUM_CLASSES, progress=False, comm=comm)
        one.fit(1)
        return next(one.model.parameters()).data.copy()

    (single, _, _), = train_and_evaluate(paper_unet, None, data)
    first = ThreadGroup(2).run(run)
    np.testing.assert_array_equal(first[0], first[1])  # the ranks still agree with each other
    assert np.abs(first[0] - next(iter(single.values()))).max() > 1e-8


# ---------------------------------------------------------------------------
# The pieces
# ---------------------------------------------------------------------------
def test_the_shares_of_a_step_are_the_one_process_batch():
    dataset = ColourDataset(11, (8, 8), seed=1)
    augment = Compose([RandomCrop((6, 6)), RandomHorizontalFlip()])
    whole = list(DataLoader(dataset, batch_size=4, shuffle=True, seed=5, augment=augment))
    shares = [list(DataLoader(dataset, batch_size=4, shuffle=True, seed=5, augment=augment, num_replicas=3,
                              rank=rank)) for rank in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3]
    for step, (images, labels) in enumerate(whole):
        for rank in range(3):
            np.testing.assert_array_equal(shares[rank][step][0].numpy(), images.numpy()[rank::3])
            np.testing.assert_array_equal(shares[rank][step][1].numpy(), labels.numpy()[rank::3])


def test_a_last_batch_smaller_than_the_ranks_is_skipped_by_the_ranks_past_its_end():
    dataset = ColourDataset(9, (4, 4), seed=1)  # batches 4, 4, 1
    loaders = [DataLoader(dataset, batch_size=4, num_replicas=2, rank=rank) for rank in range(2)]
    assert [len(loader) for loader in loaders] == [3, 2]
    assert [len(images) for images, _ in loaders[0]] == [2, 2, 1]
    assert [len(images) for images, _ in loaders[1]] == [2, 2]


def test_a_learner_refuses_ranks_with_different_numbers_of_steps():
    # 10 images in batches of 4 end with a batch of 2, which only ranks 0 and 1 of 3 get a share of
    data = ColourDataset(10, (8, 8), seed=1), ColourDataset(4, (8, 8), seed=2)
    with pytest.raises(ValueError, match="Learner.fit: the ranks have different numbers of training batches"):
        train_and_evaluate(paper_unet, 3, data)


def test_a_learner_refuses_a_loader_that_is_not_split_between_the_ranks():
    data = ColourDataset(4, (8, 8), seed=1)
    comm = ThreadGroup(2).communicators[0]
    model = paper_unet()
    with pytest.raises(ValueError, match="Learner: train_loader must give each of the 2 ranks its share"):
        Learner(model, DataLoader(data), DataLoader(data), F.cross_entropy, AdamW(model.parameters()), comm=comm)


def test_divergence_on_one_rank_stops_every_rank_at_the_same_step():
    data = ColourDataset(8, (8, 8), seed=1), ColourDataset(4, (8, 8), seed=2)
    model = paper_unet()

    def run(comm):
        one = learner(copy.deepcopy(model), comm, data, 4)
        if comm.rank == 1:
            one.model.head.bias.data[...] = np.nan
        with pytest.raises(TrainingDiverged, match="not finite on 1 of 2 ranks at epoch 1, training step 1 of 2"):
            one.fit(1)
        return True

    assert ThreadGroup(2).run(run) == [True, True]


def test_broadcast_and_gradient_sum():
    def run(comm):
        model = nn.Conv2d(2, 3, 1)
        model.weight.data[...] = comm.rank  # different initial weights
        broadcast_module(model, comm)
        for p in model.parameters():
            p.grad = np.full(p.shape, comm.rank + 1, p.dtype)
        model.bias.grad = None if comm.rank == 0 else model.bias.grad
        allreduce_gradients(model.parameters(), comm)
        return model.weight.data.copy(), model.weight.grad, model.bias.grad

    for weight, grad_weight, grad_bias in ThreadGroup(3).run(run):
        np.testing.assert_array_equal(weight, 0)
        np.testing.assert_array_equal(grad_weight, 6)
        np.testing.assert_array_equal(grad_bias, 5)  # rank 0 had none: zeros


def test_a_failing_rank_does_not_leave_the_others_waiting():
    def run(comm):
        if comm.rank == 1:
            raise RuntimeError("rank 1 failed")
        comm.allreduce_sum(np.zeros(3))

    with pytest.raises(RuntimeError, match="rank 1 failed"):
        ThreadGroup(2, timeout=10).run(run)


# ---------------------------------------------------------------------------
# The application's side: which communicator, threads per rank, how a failure ends
# ---------------------------------------------------------------------------
def test_only_a_launch_by_mpiexec_with_several_processes_uses_mpi(monkeypatch):
    from minseg.app import ranks
    from minseg.distributed import launched_by_mpiexec
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert not launched_by_mpiexec() and isinstance(ranks.communicator(), SingleProcess)
    monkeypatch.setenv("PMI_SIZE", "1")  # mpiexec -n 1: one process, nothing to share
    assert not launched_by_mpiexec()
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert launched_by_mpiexec()


def test_the_free_cores_are_split_between_the_ranks_of_a_machine(monkeypatch):
    from minseg.app import ranks

    class FourRanksHere(SingleProcess):
        size, local_size = 8, 4

        def barrier(self):
            pass

    monkeypatch.setattr(ranks, "default_threads", lambda: 6)
    assert ranks.threads_per_rank(FourRanksHere()) == 1
    monkeypatch.setattr(ranks, "default_threads", lambda: 9)
    assert ranks.threads_per_rank(FourRanksHere()) == 2
    assert ranks.threads_per_rank(FourRanksHere(), threads=3) == 3  # --threads is per rank
    assert ranks.threads_per_rank(SingleProcess()) == 9


def test_ranks_that_fail_together_exit_with_one_line_from_rank_0(capsys):
    from minseg.app import ranks
    statuses = ThreadGroup(3).run(lambda comm: ranks.stop(comm, "error: --data x: no such folder", 2))
    assert statuses == [2, 2, 2]
    assert capsys.readouterr().err == "error: --data x: no such folder\n"


def test_one_failing_rank_ends_the_job_naming_itself(capsys):
    from minseg.app import ranks

    class Alone(SingleProcess):
        rank, size, aborted = 1, 2, None

        def agree(self, timeout):
            return False  # the other rank is waiting in a collective

        def abort(self, code):
            self.aborted = code

    comm = Alone()
    ranks.stop(comm, "error: internal error (RuntimeError: boom)", 1)
    assert comm.aborted == 1
    assert capsys.readouterr().err == "error: internal error (RuntimeError: boom) [rank 1 of 2; ending the job]\n"


def test_loader_arguments_for_the_ranks_are_checked():
    dataset = ColourDataset(4, (4, 4), seed=1)
    with pytest.raises(ValueError, match="DataLoader: rank must be an integer in 0 … num_replicas − 1 = 1, got 2"):
        DataLoader(dataset, batch_size=4, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="DataLoader: num_replicas must be a positive integer, got 0"):
        DataLoader(dataset, batch_size=4, num_replicas=0)
    with pytest.raises(ValueError, match="batch of all num_replicas=3 ranks together, so it must be at least 3, got 2"):
        DataLoader(dataset, batch_size=2, num_replicas=3, rank=0)


def test_a_share_without_counted_pixels_weighs_nothing():
    dataset = ColourDataset(4, (8, 8), seed=1)
    dataset.labels[0] = -100  # rank 0's share of the first batch of 2: one image, all of it ignored
    data = dataset, ColourDataset(2, (8, 8), seed=2)
    single = train_and_evaluate(paper_unet, None, data, batch_size=2)
    assert_same_run(single, train_and_evaluate(paper_unet, 2, data, batch_size=2), 1e-11)
