"""The training loop on a tiny synthetic problem: learning, exact resume, divergence, checkpoint files."""
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import minseg
import minseg.functional as F
from minseg import Tensor, nn
from minseg.data import DataLoader
from minseg.optim import SGD, AdamW, OneCycleLR
from minseg.train import CheckpointError, Learner, TrainingDiverged, load_checkpoint, lr_find

NUM_CLASSES = 3
CAMVID_TINY = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid_tiny"


class ColourDataset:
    """Random 6x7 images whose label is the brightest channel of each pixel (class 0 = red plays "void")."""

    def __init__(self, n, seed):
        rng = np.random.default_rng(seed)
        self.images = rng.integers(0, 256, size=(n, 6, 7, 3), dtype=np.uint8)
        self.labels = self.images.argmax(axis=-1).astype(np.int64)
        self.num_classes = NUM_CLASSES

    def __len__(self):
        return len(self.images)


class NoisyPixelLinear(nn.Module):
    """A 1x1 "convolution" as a matmul, with input dropout drawn from minseg.random while training.

    The dropout makes the run depend on the global generator, so an exact resume must restore it.
    """

    def __init__(self, in_channels=3, num_classes=NUM_CLASSES):
        super().__init__()
        rng = minseg.random.generator()
        self.weight = nn.Parameter(rng.normal(0, 0.1, size=(in_channels, num_classes)).astype(np.float32))
        self.bias = nn.Parameter(np.zeros(num_classes, dtype=np.float32))

    def forward(self, x):
        if self.training:
            keep = minseg.random.generator().random(x.shape) > 0.1
            x = x * Tensor(keep.astype(np.float32) / np.float32(0.9))
        pixels = x.permute(0, 2, 3, 1)                    # (N, H, W, C)
        return (pixels @ self.weight + self.bias).permute(0, 3, 1, 2)


def make_learner(tmp_path=None, seed=0, epochs=2, lr=0.05, loss_fn=F.cross_entropy, progress=False):
    """A fresh, seeded run: model, shuffled loaders, AdamW and a one-cycle schedule over ``epochs``."""
    minseg.manual_seed(seed)
    model = NoisyPixelLinear()
    train = DataLoader(ColourDataset(21, seed=1), batch_size=4, shuffle=True, seed=7)
    valid = DataLoader(ColourDataset(6, seed=2), batch_size=4)
    optimizer = AdamW(model.parameters(), lr=lr)
    scheduler = OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * len(train))
    path = None if tmp_path is None else tmp_path / "run" / "checkpoint.npz"
    return Learner(model, train, valid, loss_fn, optimizer, scheduler, void_class=0,
                   checkpoint_path=path, progress=progress)


def parameters_of(learner):
    return [p.data.copy() for p in learner.model.parameters()]


def test_fit_learns_and_keeps_history():
    learner = make_learner(epochs=6, lr=0.2)
    before = learner.evaluate()
    history = learner.fit(6)
    assert [record["epoch"] for record in history] == [1, 2, 3, 4, 5, 6]
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    assert history[-1]["valid_loss"] < before["valid_loss"]
    assert history[-1]["pixel_accuracy"] > 0.8 > before["pixel_accuracy"]
    for key in ("valid_loss", "pixel_accuracy", "foreground_accuracy", "mean_iou", "lr", "seconds"):
        assert key in history[-1]
    assert learner.epoch == 6 and learner.model.training


def test_evaluate_and_predict_agree():
    learner = make_learner()
    learner.fit(1)
    images, targets = next(iter(learner.valid_loader))
    predicted = learner.predict(images, batch_size=3)
    assert predicted.shape == targets.shape and predicted.dtype == np.int64
    # The same prediction twice: eval mode switches the dropout off.
    np.testing.assert_array_equal(predicted, learner.predict(images.data))
    results = learner.evaluate()
    all_predicted = np.concatenate([learner.predict(x) for x, _ in learner.valid_loader])
    all_targets = np.concatenate([t.numpy() for _, t in learner.valid_loader])
    assert results["pixel_accuracy"] == pytest.approx((all_predicted == all_targets).mean())
    foreground = all_targets != 0
    assert results["foreground_accuracy"] == pytest.approx((all_predicted == all_targets)[foreground].mean())
    assert results["confusion_matrix"].sum() == all_targets.size
    with pytest.raises(ValueError, match="images"):
        learner.predict(images.data[0])


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    uninterrupted = make_learner()
    uninterrupted.fit(2)

    interrupted = make_learner(tmp_path)
    interrupted.fit(1)
    resumed = make_learner(tmp_path, seed=123)  # different initial weights: the checkpoint must win
    resumed.load_checkpoint()
    assert resumed.epoch == 1 and resumed.train_loader.epoch == 1 and len(resumed.history) == 1
    resumed.fit(1)

    for expected, actual in zip(parameters_of(uninterrupted), parameters_of(resumed)):
        np.testing.assert_array_equal(actual, expected)
    for key in ("train_loss", "valid_loss", "pixel_accuracy"):
        assert [r[key] for r in resumed.history] == [r[key] for r in uninterrupted.history]
    assert resumed.scheduler.last_epoch == uninterrupted.scheduler.last_epoch
    state = resumed.optimizer.state[0]
    np.testing.assert_array_equal(state["exp_avg"], uninterrupted.optimizer.state[0]["exp_avg"])


def test_resume_without_the_random_state_would_differ(tmp_path):
    # Guards the test above: the dropout really consumes the global generator.
    uninterrupted = make_learner()
    uninterrupted.fit(2)
    interrupted = make_learner(tmp_path)
    interrupted.fit(1)
    resumed = make_learner(tmp_path, seed=123)
    resumed.load_checkpoint()
    minseg.manual_seed(99)
    resumed.fit(1)
    assert not np.array_equal(parameters_of(resumed)[0], parameters_of(uninterrupted)[0])


def test_checkpoint_holds_arrays_and_json_without_pickle(tmp_path):
    learner = make_learner(tmp_path)
    learner.fit(1)
    with np.load(learner.checkpoint_path, allow_pickle=False) as archive:
        assert "model/weight" in archive.files
        assert all(archive[key].dtype != object for key in archive.files)
    state = load_checkpoint(learner.checkpoint_path)
    assert state["epoch"] == 1 and state["scheduler"]["last_epoch"] == len(learner.train_loader)
    assert state["random"] == minseg.random.get_state()
    assert sorted(os.listdir(learner.checkpoint_path.parent)) == ["checkpoint.npz"]


class NaNAfter:
    """F.cross_entropy, except that training call number ``bad_call`` returns NaN."""

    def __init__(self, bad_call):
        self.bad_call, self.calls = bad_call, 0

    def __call__(self, logits, targets):
        loss = F.cross_entropy(logits, targets)
        if not minseg.is_grad_enabled():  # validation
            return loss
        self.calls += 1
        return loss * Tensor(np.float32("nan")) if self.calls == self.bad_call else loss


def test_nan_loss_stops_training_and_keeps_last_good_checkpoint(tmp_path):
    steps_per_epoch = 5  # 21 samples in batches of 4: the last sample joins the fifth batch (no batch of one)
    learner = make_learner(tmp_path, epochs=3, loss_fn=NaNAfter(bad_call=steps_per_epoch + 2))
    assert len(learner.train_loader) == steps_per_epoch
    with pytest.raises(TrainingDiverged, match=r"the loss is nan at epoch 2, training step 2 of 5") as error:
        learner.fit(3)
    assert "checkpoint.npz" in str(error.value)
    assert learner.epoch == 1 and len(learner.history) == 1
    assert load_checkpoint(learner.checkpoint_path)["epoch"] == 1
    assert sorted(os.listdir(learner.checkpoint_path.parent)) == ["checkpoint.npz"]


def test_nan_weights_are_reported_as_a_non_finite_output(tmp_path):
    learner = make_learner(tmp_path)
    learner.fit(1)
    saved = learner.checkpoint_path.read_bytes()
    learner.model.weight.data[0, 0] = np.nan
    with pytest.raises(TrainingDiverged, match="output holds NaN or inf at epoch 2, training step 1"):
        learner.fit(1)
    assert learner.checkpoint_path.read_bytes() == saved


def test_crash_while_saving_leaves_the_old_checkpoint_and_no_partial_file(tmp_path, monkeypatch):
    learner = make_learner(tmp_path)
    learner.fit(1)
    saved = learner.checkpoint_path.read_bytes()

    def crash_midway(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("simulated crash: disk full")

    monkeypatch.setattr(np, "savez", crash_midway)
    with pytest.raises(OSError, match="simulated crash"):
        learner.save_checkpoint()
    assert learner.checkpoint_path.read_bytes() == saved
    assert sorted(os.listdir(learner.checkpoint_path.parent)) == ["checkpoint.npz"]


def test_damaged_checkpoints_raise_errors_naming_the_file(tmp_path):
    learner = make_learner(tmp_path)
    learner.fit(1)
    data = learner.checkpoint_path.read_bytes()

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.npz"):
        learner.load_checkpoint(truncated)

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(CheckpointError, match="garbage.npz"):
        load_checkpoint(garbage)

    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(CheckpointError, match="foreign.npz"):
        load_checkpoint(foreign)

    with pytest.raises(FileNotFoundError, match="missing.npz"):
        learner.load_checkpoint(tmp_path / "missing.npz")


def test_checkpoint_of_another_model_is_rejected(tmp_path):
    learner = make_learner(tmp_path)
    learner.fit(1)
    other = make_learner()
    other.model.weight = nn.Parameter(np.zeros((3, 5), dtype=np.float32))
    with pytest.raises(CheckpointError, match="does not fit this Learner: load_state_dict: weight has shape"):
        other.load_checkpoint(learner.checkpoint_path)


def test_checkpoint_every_saves_every_nth_epoch_and_the_last_and_says_its_size(tmp_path, monkeypatch, capsys):
    learner = make_learner(tmp_path, epochs=5)
    learner.checkpoint_every, learner.table = 2, True
    saved = []
    original = Learner.save_checkpoint
    monkeypatch.setattr(Learner, "save_checkpoint", lambda self: saved.append(self.epoch) or original(self))
    learner.fit(3)
    learner.fit(2)
    assert saved == [2, 3, 4, 5]
    printed = capsys.readouterr().out
    sizes = re.findall(r"checkpoint.npz: (\d+) kB \(weights, optimizer state, history\), written every 2 epochs "
                       r"and after the last", printed)
    assert len(sizes) == 2 and abs(int(sizes[1]) - learner.checkpoint_path.stat().st_size / 1e3) <= 1
    with pytest.raises(ValueError, match="checkpoint_every must be an integer >= 1, got 0"):
        Learner(learner.model, learner.train_loader, learner.valid_loader, F.cross_entropy, learner.optimizer,
                checkpoint_every=0)


def test_lr_find_sweeps_exponentially_and_restores_everything(tmp_path):
    learner = make_learner()
    learner.fit(1)
    weights, state = parameters_of(learner), learner.state_dict()
    lrs, losses, suggested = lr_find(learner, start_lr=1e-5, end_lr=1e3, num_it=40,
                                     plot_path=tmp_path / "lr_find.png")
    assert lrs[0] == pytest.approx(1e-5)
    assert len(lrs) == len(losses) <= 40
    ratios = np.array(lrs[1:]) / np.array(lrs[:-1])
    np.testing.assert_allclose(ratios, (1e3 / 1e-5) ** (1 / 39))
    assert len(lrs) < 40, "an lr of 1e3 should blow the loss up and stop the test early"
    assert lrs[0] <= suggested * 10 <= lrs[-1]
    assert (tmp_path / "lr_find.png").stat().st_size > 0
    for before, after in zip(weights, parameters_of(learner)):
        np.testing.assert_array_equal(before, after)
    assert learner.optimizer.param_groups[0]["lr"] == state["optimizer"]["param_groups"][0]["lr"]
    assert learner.train_loader.epoch == state["train_loader"]["epoch"]
    assert minseg.random.get_state() == state["random"]
    np.testing.assert_array_equal(learner.optimizer.state[0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])


def test_fit_with_plain_sgd_and_no_schedule_or_checkpoint():
    minseg.manual_seed(0)
    model = NoisyPixelLinear()
    train = DataLoader(ColourDataset(8, seed=1), batch_size=3, shuffle=True)
    learner = Learner(model, train, train, F.cross_entropy, SGD(model.parameters(), lr=0.5, momentum=0.9),
                      progress=False)
    assert learner.num_classes == NUM_CLASSES
    history = learner.fit(3)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert "foreground_accuracy" not in history[-1]
    with pytest.raises(ValueError, match="checkpoint_path"):
        learner.save_checkpoint()
    with pytest.raises(ValueError, match="epochs"):
        learner.fit(-1)


@pytest.mark.slow
@pytest.mark.skipif(not CAMVID_TINY.is_dir(), reason="../shared/data/camvid_tiny is not present")
def test_two_epoch_smoke_run_on_camvid_tiny(tmp_path):
    from minseg.data import RandomHorizontalFlip, SegmentationDataset, channel_stats
    from minseg.models import create

    dataset = SegmentationDataset(CAMVID_TINY)
    train_set, valid_set = dataset.split()
    train_set, valid_set = train_set.subset(range(24)), valid_set.subset(range(8))
    mean, std = channel_stats(train_set)
    train = DataLoader(train_set, batch_size=8, shuffle=True, augment=RandomHorizontalFlip(), mean=mean, std=std)
    valid = DataLoader(valid_set, batch_size=8, mean=mean, std=std)
    minseg.manual_seed(0)
    model = create("unet", dataset.num_classes, base=4, depth=2)
    optimizer = AdamW(model.parameters(), lr=1e-2)
    scheduler = OneCycleLR(optimizer, max_lr=1e-2, total_steps=2 * len(train))
    learner = Learner(model, train, valid, F.cross_entropy, optimizer, scheduler,
                      void_class=dataset.codes.index("Void"), checkpoint_path=tmp_path / "camvid.npz",
                      progress=False)
    history = learner.fit(2)
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert all(np.isfinite(record["valid_loss"]) for record in history)
    assert 0 <= history[1]["pixel_accuracy"] <= 1
    assert load_checkpoint(tmp_path / "camvid.npz")["epoch"] == 2


def test_divergence_during_evaluation_gives_the_message_and_no_numpy_warnings(tmp_path):
    learner = make_learner(tmp_path)
    learner.fit(1)
    learner.model.weight.data[:] = np.float32(3e38)  # finite weights whose products overflow to inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any NumPy RuntimeWarning fails the test
        with pytest.raises(TrainingDiverged, match=r"output holds NaN or inf at epoch 2, validation step 1 of 2"):
            learner.evaluate()


def test_a_genuine_loss_argument_error_is_not_called_divergence():
    learner = make_learner(loss_fn=lambda logits, targets: F.cross_entropy(logits, targets[:, :1]))
    with pytest.raises(ValueError, match="target must have shape"):
        learner.fit(1)


def test_epoch_table_fits_in_80_columns(capsys):
    learner = make_learner(progress=True)
    learner.void_class = 0
    learner.fit(1)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines[0].split()[:3] == ["epoch", "train", "valid"]
    assert len(lines) == 2 and all(len(line) <= 80 for line in lines), lines


def test_checkpoint_carries_the_run_description(tmp_path):
    learner = make_learner(tmp_path)
    learner.run = {"model": {"name": "toy", "options": {"base": 4}}, "mean": np.arange(3, dtype=np.float32)}
    learner.fit(1)
    state = load_checkpoint(learner.checkpoint_path)
    assert state["run"]["model"] == {"name": "toy", "options": {"base": 4}}
    np.testing.assert_array_equal(state["run"]["mean"], [0, 1, 2])
    fresh = make_learner(tmp_path)
    fresh.load_checkpoint()
    assert fresh.run["model"]["name"] == "toy"
