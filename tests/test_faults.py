"""A training run that is killed (SIGKILL, SIGTERM) at any moment, inside a checkpoint write too, loses nothing.

Each run here is ``minseg train`` in a subprocess on a tiny dataset (nine 16x16 images, a UNet of base 2, a few
epochs of well under a second). The child is the real command, started through ``CHILD``, which can make
``numpy.savez`` (what ``save_checkpoint`` writes with) announce each write and then sleep: a signal sent after the
announcement lands while the temporary file is written and not yet renamed. After every kill the last checkpoint
loads, ``--resume`` finishes the run with the very weights of an uninterrupted one, and no temporary file is left.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_cli import write_dataset

from minseg.app import cli, train_command
from minseg.app.interrupt import Terminated, terminate_as_interrupt
from minseg.atomic import remove_stale_temporaries
from minseg.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 4
OPTIONS = ["--base", "2", "--batch-size", "4", "--valid-every", "3", "--no-progress", "--threads", "1",
           "--epochs", str(EPOCHS)]
# The real command; with SLOW_WRITE set, every checkpoint write prints a line and then waits before the rename.
CHILD = """
import os, sys, time
import numpy as np
slow = float(os.environ.get("SLOW_WRITE", "0"))
if slow:
    savez = np.savez
    def announced_savez(file, *args, **kwargs):
        savez(file, *args, **kwargs)
        print("writing a checkpoint", flush=True)
        time.sleep(slow)
    np.savez = announced_savez
from minseg.app.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("faults") / "data", n=9, size=(16, 16))


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    """The weights after EPOCHS epochs of a run that nothing stopped."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert cli.main(["train", "--data", str(data), "--out", str(out), *OPTIONS]) == 0
    return load_checkpoint(out / "checkpoint.npz")["model"]


def start(*argv, slow=0.0):
    environment = dict(os.environ, SLOW_WRITE=str(slow), PYTHONUNBUFFERED="1",
                       PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", CHILD, "train", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=environment)


def wait_for_write(child, number):
    """Read the child's output until its ``number``-th checkpoint write has begun; returns what it printed."""
    printed, writes = [], 0
    while writes < number:
        line = child.stdout.readline()
        assert line, f"the child ended before write {number}:\n{''.join(printed)}"
        printed.append(line)
        writes += line.strip() == "writing a checkpoint"
    return "".join(printed)


def temporaries(out):
    return sorted(path.name for path in out.glob("*.tmp"))


def resume(out, capsys=None):
    status = cli.main(["train", "--out", str(out), "--resume", "--no-progress", "--threads", "1"])
    assert status == 0, capsys.readouterr().err if capsys else status


def assert_same_weights(out, expected):
    weights = load_checkpoint(out / "checkpoint.npz")["model"]
    assert weights.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(weights[name], expected[name], err_msg=name)


# --- inside a checkpoint write --------------------------------------------------------------------
def test_sigkill_inside_a_checkpoint_write_keeps_the_last_checkpoint(tmp_path, data, uninterrupted, capsys):
    out = tmp_path / "run"
    child = start("--data", data, "--out", out, *OPTIONS, slow=1.5)
    try:
        wait_for_write(child, 2)  # epoch 1 is saved; epoch 2's file is being written
        # Meanwhile --out is locked: a second run into it is one error line, and changes nothing.
        assert cli.main(["train", "--data", str(data), "--out", str(out), *OPTIONS]) == 2
        assert cli.main(["train", "--out", str(out), "--resume", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 2 and err.startswith(f"error: --out {out} is in use by another minseg train")
        assert f"{out / 'train.lock'}" in err
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert len(temporaries(out)) == 1  # kill -9 cannot clean up; the next run does
    assert load_checkpoint(out / "checkpoint.npz")["epoch"] == 1
    resume(out, capsys)
    assert temporaries(out) == []
    assert_same_weights(out, uninterrupted)


def test_sigterm_inside_a_checkpoint_write_says_what_was_saved_and_leaves_no_temporary_file(tmp_path, data,
                                                                                          uninterrupted, capsys):
    out = tmp_path / "run"
    child = start("--data", data, "--out", out, *OPTIONS, slow=1.5)
    try:
        wait_for_write(child, 2)
        child.send_signal(signal.SIGTERM)
        printed = child.communicate(timeout=60)[0]
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 143, printed
    assert temporaries(out) == [] and "Traceback" not in printed
    assert f"interrupted: {out / 'checkpoint.npz'} holds the run after epoch 1 of {EPOCHS}; continue with:" in printed
    command = printed.strip().splitlines()[-1].split()
    assert command[:2] == ["minseg", "train"] and "--epochs" in command
    assert cli.main(command[1:]) == 0
    assert_same_weights(out, uninterrupted)


# --- at random moments ----------------------------------------------------------------------------
def test_kills_at_random_moments_lose_nothing(tmp_path, data, uninterrupted, capsys):
    seed = int(time.time())
    rng = np.random.default_rng(seed)
    out = tmp_path / "run"
    for signal_number in (signal.SIGKILL, signal.SIGTERM, signal.SIGKILL):
        argv = ["--out", out, "--resume", "--no-progress", "--threads", "1"] if (out / "checkpoint.npz").exists() \
            else ["--data", data, "--out", out, *OPTIONS]
        child = start(*argv)
        time.sleep(rng.uniform(0.5, 3.0))
        child.send_signal(signal_number)
        printed = child.communicate(timeout=60)[0]
        context = f"seed {seed}, signal {signal_number!r}, exit {child.returncode}:\n{printed}"
        assert "Traceback" not in printed, context
        if signal_number == signal.SIGTERM:
            # 143: handled; -15: it came before the handler was installed (while Python imported minseg)
            assert temporaries(out) == [] and child.returncode in (0, 143, -signal.SIGTERM), context
        if (out / "checkpoint.npz").exists():
            assert 1 <= load_checkpoint(out / "checkpoint.npz")["epoch"] <= EPOCHS, context
    if (out / "checkpoint.npz").exists():
        resume(out, capsys)
    else:
        assert cli.main(["train", "--data", str(data), "--out", str(out), *OPTIONS]) == 0
    assert temporaries(out) == [] and not (out / "metrics.json.tmp").exists()
    assert_same_weights(out, uninterrupted)


def test_an_interrupt_that_lands_in_a_finalizer_is_delivered_again():
    class Finalized:
        def __del__(self):
            raise Terminated()  # what SIGTERM does when it arrives while garbage collection runs a finalizer

    with pytest.raises(Terminated), terminate_as_interrupt():
        Finalized()
        time.sleep(5)  # the signal sent again lands here, in ordinary code


def test_stale_temporaries_of_dead_writers_go_and_a_live_writers_stay(tmp_path):
    dead = f"checkpoint.npz.{2 ** 22 + 7}-x1.tmp"  # above Linux's largest process id: no such process
    alive = f"checkpoint.npz.{os.getppid()}-y2.tmp"
    for name in (dead, alive, "checkpoint.npz.legacy_1.tmp", "other.npz.1-z.tmp"):
        (tmp_path / name).write_bytes(b"partial")
    removed = remove_stale_temporaries(tmp_path / "checkpoint.npz")
    assert sorted(removed) == sorted([dead, "checkpoint.npz.legacy_1.tmp"])
    assert temporaries(tmp_path) == sorted([alive, "other.npz.1-z.tmp"])


# --- the run's lifecycle, in this process ------------------------------------------------------------
TINY = ["--base", "2", "--batch-size", "4", "--valid-every", "3", "--no-progress", "--threads", "1"]


def interrupt_at_epoch(monkeypatch, epoch, where="train_one_epoch"):
    """Ctrl-C when the Learner starts epoch ``epoch + 1``."""
    from minseg.train import Learner
    original = getattr(Learner, where)

    def interrupted(self, *args, **kwargs):
        if self.epoch == epoch:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)
    monkeypatch.setattr(Learner, where, interrupted)


def run(capsys, *argv):
    status = cli.main([str(part) for part in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_printed_continue_command_trains_to_the_epochs_asked(tmp_path, data, capsys, monkeypatch):
    out = tmp_path / "run"
    assert run(capsys, "train", "--data", data, "--out", out, *TINY, "--epochs", "1")[0] == 0
    with monkeypatch.context() as patch:
        interrupt_at_epoch(patch, 2)
        status, _, err = run(capsys, "train", "--out", out, "--resume", "--epochs", "4", "--no-progress")
    assert status == 130 and "Traceback" not in err
    assert "holds the run after epoch 2 of 4; continue with:" in err
    command = err.strip().splitlines()[-1].split()
    assert command == ["minseg", "train", "--out", str(out), "--resume", "--epochs", "4", "--no-progress"]
    status, printed, _ = run(capsys, *command[1:])
    assert status == 0 and "resumed" in printed and "after epoch 2 of 4" in printed
    assert load_checkpoint(out / "checkpoint.npz")["epoch"] == 4
    status, printed, _ = run(capsys, *command[1:])
    assert status == 0 and "nothing to train: " in printed and "already holds epoch 4 of 4" in printed


def test_resume_needs_only_out_from_any_folder_and_not_the_weights_file(tmp_path, capsys, monkeypatch):
    from minseg.models import create, save_weights
    (tmp_path / "first").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "first")
    write_dataset(Path("data"), n=6, size=(16, 16))
    save_weights(create("unet", 3, base=2), "start.safetensors")
    with monkeypatch.context() as patch:
        interrupt_at_epoch(patch, 1)
        status, _, err = run(capsys, "train", "--data", "data", "--out", "run", "--weights", "start.safetensors",
                             *TINY, "--epochs", "2")
    assert status == 130
    args = load_checkpoint(Path("run/checkpoint.npz"))["run"]["args"]
    assert args["data"] == str(tmp_path / "first" / "data") and Path(args["weights"]).is_absolute()
    Path("start.safetensors").unlink()  # moved away: the checkpoint holds the weights
    monkeypatch.chdir(tmp_path / "elsewhere")
    status, printed, err = run(capsys, "train", "--out", "../first/run", "--resume")
    assert status == 0, err
    assert load_checkpoint(tmp_path / "first" / "run" / "checkpoint.npz")["epoch"] == 2
    assert not (tmp_path / "elsewhere").joinpath("runs").exists()


def test_ctrl_c_while_loading_a_resume_names_the_checkpoint(tmp_path, data, capsys, monkeypatch):
    out = tmp_path / "run"
    assert run(capsys, "train", "--data", data, "--out", out, *TINY, "--epochs", "1")[0] == 0

    def interrupted(path):
        raise KeyboardInterrupt
    monkeypatch.setattr(train_command, "load_checkpoint", interrupted)
    status, _, err = run(capsys, "train", "--out", out, "--resume", "--epochs", "3")
    assert status == 130 and "nothing was saved" not in err
    assert "holds the run after epoch 1 of 3" in err and err.strip().endswith("--resume --epochs 3")


def test_ctrl_c_during_the_figures_is_one_message_and_exit_130(tmp_path, data, capsys, monkeypatch):
    from minseg.app.run import TrainingRun

    def interrupted(self, out, results):
        raise KeyboardInterrupt
    monkeypatch.setattr(TrainingRun, "_figures", interrupted)
    status, _, err = run(capsys, "train", "--data", data, "--out", tmp_path / "run", *TINY, "--epochs", "1")
    assert status == 130 and "Traceback" not in err
    assert "interrupted while writing the results" in err and "--resume --epochs 1 " in err


@pytest.mark.parametrize("images, every", [(9, 50), (1, 3)])
def test_a_split_without_validation_images_is_an_error_before_training(tmp_path, capsys, images, every):
    data = write_dataset(tmp_path / "data", n=images, size=(16, 16))
    status, _, err = run(capsys, "train", "--data", data, "--out", tmp_path / "runs" / "one", "--base", "2",
                         "--no-progress", "--valid-every", every, "--epochs", "1")
    assert status == 2 and err.count("\n") == 1
    assert f"--valid-every {every} leaves {images} training and 0 validation images" in err
    assert not (tmp_path / "runs").exists()  # nothing was saved, so no empty --out is left


def test_written_files_follow_the_umask_and_checkpoint_every_is_obeyed(tmp_path, data, capsys):
    from minseg.models import create, save_weights
    old = os.umask(0o027)
    try:
        status, printed, _ = run(capsys, "train", "--data", data, "--out", tmp_path / "run", *TINY, "--epochs", "3",
                                 "--checkpoint-every", "2")
        assert run(capsys, "predict", "--checkpoint", tmp_path / "run" / "checkpoint.npz", data / "images" / "im00.png",
                   "--out", tmp_path / "masks", "--no-progress")[0] == 0
        save_weights(create("unet", 3, base=2), tmp_path / "weights.safetensors")
    finally:
        os.umask(old)
    assert status == 0 and "written every 2 epochs and after the last" in printed
    assert load_checkpoint(tmp_path / "run" / "checkpoint.npz")["epoch"] == 3
    written = [tmp_path / "run" / name for name in ("checkpoint.npz", "metrics.json", "results.png")]
    written += [tmp_path / "masks" / "im00_mask.png", tmp_path / "masks" / "im00_overlay.png"]
    for path in written + [tmp_path / "weights.safetensors"]:
        assert path.stat().st_mode & 0o777 == 0o640, path


# --- malformed checkpoints -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_checkpoint(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("good") / "run"
    assert cli.main(["train", "--data", str(data), "--out", str(out), *TINY, "--epochs", "1"]) == 0
    return out / "checkpoint.npz"


def _rewrite(source, target, change):
    """``target``: ``source``'s arrays and JSON, with ``change(arrays, document)`` applied."""
    with np.load(source) as archive:
        arrays = {key: archive[key] for key in archive.files}
    document = json.loads(str(arrays.pop("__json__")))
    change(arrays, document)
    np.savez(target, __json__=np.array(json.dumps(document)), **arrays)


def _weights_of(model):
    def change(arrays, document):
        for key in [key for key in arrays if key.startswith("model/")]:
            del arrays[key]
        state = {name: f"model/{name}" for name in model.state_dict()}
        document["state"]["model"] = {name: {"__array__": key} for name, key in state.items()}
        arrays.update({key: model.state_dict()[name] for name, key in state.items()})
    return change


def _malformed(kind, source, target):
    from minseg.models import create
    if kind == "not a zip":
        target.write_bytes(b"this is not a checkpoint\n")
    elif kind == "truncated":
        target.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    elif kind == "missing array":
        _rewrite(source, target, lambda arrays, document: arrays.pop(sorted(arrays)[0]))
    elif kind == "JSON not an object":
        with np.load(source) as archive:
            np.savez(target, **{key: archive[key] for key in archive.files if key != "__json__"},
                     __json__=np.array("[1, 2]"))
    elif kind == "state not an object":
        _rewrite(source, target, lambda arrays, document: document.update(state=[1, 2]))
    elif kind == "run not an object":
        _rewrite(source, target, lambda arrays, document: document["state"].update(run="unet"))
    elif kind == "pickled object array":
        _rewrite(source, target, lambda arrays, document: arrays.update({"model/extra": np.array([{}], object)}))
    elif kind == "another model":
        _rewrite(source, target, _weights_of(create("linknet", 3, base=8)))
    elif kind == "another class count":
        _rewrite(source, target, _weights_of(create("unet", 5, base=2)))
    return target


KINDS = ["not a zip", "truncated", "missing array", "JSON not an object", "state not an object", "run not an object",
         "pickled object array", "another model", "another class count"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_malformed_checkpoint_is_one_error_line_everywhere_it_is_read(tmp_path, good_checkpoint, capsys, kind):
    from minseg.checkpoint import CheckpointError
    from minseg.predict import Predictor
    out = tmp_path / "run"
    out.mkdir()
    checkpoint = _malformed(kind, good_checkpoint, out / "checkpoint.npz")
    image = tmp_path / "image.png"
    image.write_bytes((good_checkpoint.parent / "results.png").read_bytes())
    with pytest.raises(CheckpointError, match="checkpoint.npz"):
        Predictor.from_checkpoint(checkpoint)
    for argv in (["predict", "--checkpoint", checkpoint, image, "--out", tmp_path / "p", "--no-progress"],
                 ["evaluate", "--checkpoint", checkpoint, "--threads", "1"],
                 ["train", "--out", out, "--resume", "--no-progress", "--threads", "1"]):
        status, _, err = run(capsys, *argv)
        assert status == 2 and err.count("\n") == 1 and err.startswith("error: "), (argv[0], err)
        assert "checkpoint.npz" in err and "Traceback" not in err, (argv[0], err)


def test_a_checkpoint_with_nan_weights_is_refused_by_predict_and_evaluate(tmp_path, good_checkpoint, capsys):
    def poison(arrays, document):
        key = sorted(key for key in arrays if key.startswith("model/") and arrays[key].dtype.kind == "f")[0]
        arrays[key] = np.full_like(arrays[key], np.nan)
    checkpoint = tmp_path / "checkpoint.npz"
    _rewrite(good_checkpoint, checkpoint, poison)
    image = tmp_path / "image.png"
    image.write_bytes((good_checkpoint.parent / "results.png").read_bytes())
    for argv in (["predict", "--checkpoint", checkpoint, image, "--out", tmp_path / "p", "--no-progress"],
                 ["evaluate", "--checkpoint", checkpoint, "--threads", "1"]):
        status, printed, err = run(capsys, *argv)
        assert status == 2 and err.count("\n") == 1 and "holds NaN or inf weights" in err, err
    assert not (tmp_path / "p").exists() or not any((tmp_path / "p").iterdir())


def test_evaluate_prints_n_a_for_an_absent_class_and_refuses_no_labelled_pixels(tmp_path, good_checkpoint, capsys,
                                                                               monkeypatch):
    absent = {"pixel_accuracy": 0.5, "mean_iou": 0.25, "per_class_iou": {"red": 0.5, "green": 0.0,
                                                                          "blue": float("nan")}}
    monkeypatch.setattr(cli, "evaluate_checkpoint", lambda path, data, device, **options: absent)
    status, printed, _ = run(capsys, "evaluate", "--checkpoint", good_checkpoint, "--threads", "1")
    assert status == 0 and "per_class_iou: red 0.500, green 0.000, blue n/a" in printed and "nan" not in printed
    nothing = {"pixel_accuracy": float("nan"), "mean_iou": float("nan"), "per_class_iou": {}}
    monkeypatch.setattr(cli, "evaluate_checkpoint", lambda path, data, device, **options: nothing)
    status, printed, err = run(capsys, "evaluate", "--checkpoint", good_checkpoint, "--threads", "1")
    assert status == 2 and err.count("\n") == 1 and "no labelled pixel" in err and printed == ""
