"""minseg train | evaluate | predict on a tiny dataset the tests write: errors, resume, predict, padding."""
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minseg import Tensor, backend, no_grad
from minseg.app import cli, threads
from minseg.app.options import UsageError
from minseg.app.run import create_model
from minseg.checkpoint import load_checkpoint
from minseg.models.sizes import pad_to_multiple
from minseg.predict import Predictor

REPO = Path(__file__).resolve().parents[1]
TINY = ["--base", "2", "--batch-size", "4", "--no-progress", "--threads", "1"]


def write_dataset(root, n=10, size=(13, 17), seed=0):
    """A fastai-layout folder of odd-sized images whose label is the brightest channel (3 classes)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "codes.txt").write_text("red\ngreen\nblue\n")
    for k in range(n):
        image = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"im{k:02d}.png")
        Image.fromarray(image.argmax(-1).astype(np.uint8)).save(root / "labels" / f"im{k:02d}_P.png")
    return root


@pytest.fixture
def data(tmp_path):
    return write_dataset(tmp_path / "data")


def run_cli(capsys, *argv):
    """(exit status, stdout, stderr) of ``minseg ARGV``, run in this process."""
    try:
        status = cli.main([str(part) for part in argv])
    except SystemExit as exit:  # argparse's own errors
        status = exit.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def train(capsys, data, out, *extra):
    return run_cli(capsys, "train", "--data", data, "--out", out, *TINY, *extra)


# --- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "{tmp}/nowhere", "--out", "{tmp}/run"], "--data .*nowhere: no such folder"),
    (["train", "--out", "{tmp}/none", "--resume"], "--resume: there is no checkpoint at"),
    (["train", "--device", "cuda", "--out", "{tmp}/run"], "--device cuda needs CuPy"),
    (["train", "--epochs", "0"], "argument --epochs: must be a whole number from 1 to 100000, got '0'"),
    (["train", "--model", "resnet"], "argument --model: invalid choice: 'resnet'"),
    (["predict", "--checkpoint", "{tmp}/missing.npz", "{tmp}", "--out", "{tmp}/p"], "--checkpoint .*: no such file"),
    (["predict", "--checkpoint", "{tmp}/c.npz", "{tmp}/missing.png", "--out", "{tmp}/p"], "missing.png: no such"),
])
def test_user_mistakes_print_one_error_line_and_exit_2(tmp_path, capsys, argv, message):
    if "cuda" in argv and backend.cupy_available():
        pytest.skip("this machine has a GPU")
    (tmp_path / "c.npz").write_bytes(b"")
    status, _, err = run_cli(capsys, *[part.format(tmp=tmp_path) for part in argv])
    lines = err.strip().splitlines()
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(message, lines[0]), err


def test_a_dataset_with_problems_is_one_error_line_naming_the_files(tmp_path, capsys, data):
    (data / "images" / "im03.png").write_bytes(b"broken")
    Image.fromarray(np.full((13, 17), 9, np.uint8)).save(data / "labels" / "im05_P.png")
    status, _, err = train(capsys, data, tmp_path / "run")
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("error: SegmentationDataset") and "im03.png" in err and "im05_P.png" in err


@pytest.mark.parametrize("scale", ["abc", "2,1", "1"])
def test_a_bad_scale_is_one_error_line_naming_the_flag(tmp_path, capsys, data, scale):
    status, _, err = train(capsys, data, tmp_path / "run", "--scale", scale)
    assert status == 2 and err.startswith("error: argument --scale: must be LOW,HIGH") and err.count("\n") == 1


def test_the_console_script_exits_2_on_a_mistake_without_a_traceback(tmp_path):
    environment = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "minseg.app.cli", "train", "--data", str(tmp_path / "no")],
                            capture_output=True, text=True, cwd=tmp_path, env=environment)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: --data {tmp_path / 'no'}: no such folder; "
                                                  "expected a dataset folder"]


def test_help_shows_every_default_and_a_help_line_per_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    parser = cli.build_parser(train_only=True)[0]
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.dest
            assert "(default:" in action.help or action.dest == "resume", action.dest
    assert "(default: 100)" in text and "--threads" in text


# --- train, resume ---------------------------------------------------------------------------------
def test_train_then_resume_from_only_out(tmp_path, capsys, data):
    out = tmp_path / "run"
    status, printed, _ = train(capsys, data, out, "--epochs", "1", "--lr", "0.01")
    assert status == 0 and "validation after 1 epoch (" in printed
    run = load_checkpoint(out / "checkpoint.npz")["run"]
    assert run["model"] == {"name": "unet", "options": {"base": 2}}
    assert run["classes"] == ["red", "green", "blue"] and run["args"]["lr"] == 0.01
    assert run["mean"].shape == (3,) and run["ignore_index"] == -100

    status, printed, _ = run_cli(capsys, "train", "--out", out, "--resume", "--epochs", "2", "--no-progress")
    assert status == 0 and "resumed" in printed and "after epoch 1 of 2" in printed
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2

    status, _, err = run_cli(capsys, "train", "--out", out, "--resume", "--lr", "0.1")
    assert status == 2 and "--lr 0.1 contradicts the checkpoint being resumed, which has 0.01" in err
    status, _, err = train(capsys, data, out)
    assert status == 2 and "already holds a run" in err


def test_ctrl_c_says_what_was_saved_and_how_to_continue(tmp_path, capsys, data, monkeypatch):
    from minseg.train import Learner
    original = Learner.train_one_epoch

    def interrupted_in_epoch_two(self, description="train"):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return original(self, description)

    monkeypatch.setattr(Learner, "train_one_epoch", interrupted_in_epoch_two)
    out = tmp_path / "run"
    status, _, err = train(capsys, data, out, "--epochs", "3")
    assert status == 130
    assert f"{out / 'checkpoint.npz'} holds the run after epoch 1 of 3" in err
    assert f"minseg train --out {out} --resume" in err


def test_divergence_is_the_documented_message_without_numpy_warnings(tmp_path, capsys, data, monkeypatch):
    from minseg.optim import AdamW
    step = AdamW.step

    def exploding_step(self):  # weights that overflow float32 in the next forward pass
        step(self)
        for group in self.param_groups:
            for parameter in group["params"]:
                parameter.data *= 1e30
    monkeypatch.setattr(AdamW, "step", exploding_step)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        status, _, err = train(capsys, data, tmp_path / "run", "--epochs", "2")
    assert status == 1
    assert err.startswith("error: training stopped: ") and err.count("\n") == 1
    assert "Try a lower learning rate" in err and "Warning" not in err


# --- predict and evaluate --------------------------------------------------------------------------
@pytest.fixture
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    data = write_dataset(root / "data")
    status = cli.main(["train", "--data", str(data), "--out", str(root / "run"), "--epochs", "2", "--lr", "0.01",
                       *TINY])
    assert status == 0
    return data, root / "run" / "checkpoint.npz"


def test_predict_pads_to_the_model_multiple_and_crops_back(trained):
    data, checkpoint = trained
    predictor = Predictor.from_checkpoint(checkpoint)
    image = np.asarray(Image.open(data / "images" / "im00.png"))
    ids = predictor(image)
    assert ids.shape == (13, 17) and predictor.multiple == 16
    by_hand = np.zeros((1, 3, 16, 32), np.float32)
    by_hand[..., :13, :17] = predictor.normalize(image)
    np.testing.assert_array_equal(pad_to_multiple(predictor.normalize(image), 16), by_hand)
    with no_grad():
        logits = predictor.model(Tensor(by_hand)).data[:, :, :13, :17]
    np.testing.assert_array_equal(ids, logits.argmax(1)[0])


def test_predict_command_writes_palette_masks_equal_to_learner_predict(trained, tmp_path, capsys):
    data, checkpoint = trained
    images = sorted((data / "images").iterdir())[:3]
    status, printed, _ = run_cli(capsys, "predict", "--checkpoint", checkpoint, *images, "--out", tmp_path / "p",
                                 "--no-progress")
    assert status == 0 and "wrote 3 masks" in printed
    predictor = Predictor.from_checkpoint(checkpoint)
    from minseg.train import Learner
    learner = Learner(predictor.model, None, None, None, None, num_classes=3)
    for path in images:
        mask = Image.open(tmp_path / "p" / f"{path.stem}_mask.png")
        assert mask.mode == "P"
        assert np.asarray(mask.getpalette()[:9]).reshape(3, 3).tolist() == predictor.colors.tolist()
        expected = learner.predict(predictor.normalize(np.asarray(Image.open(path))))[0]
        np.testing.assert_array_equal(np.asarray(mask), expected)
        overlay = Image.open(tmp_path / "p" / f"{path.stem}_overlay.png")
        assert overlay.size == (17, 13) and overlay.mode == "RGB"


def test_predict_a_folder_of_images_of_different_sizes(trained, tmp_path, capsys):
    _, checkpoint = trained
    folder = tmp_path / "mine"
    folder.mkdir()
    Image.fromarray(np.zeros((5, 40, 3), np.uint8)).save(folder / "wide.png")
    Image.fromarray(np.zeros((33, 9), np.uint8)).save(folder / "grey.png")
    status, _, _ = run_cli(capsys, "predict", "--checkpoint", checkpoint, folder, "--out", tmp_path / "p",
                           "--no-progress")
    assert status == 0
    assert np.asarray(Image.open(tmp_path / "p" / "wide_mask.png")).shape == (5, 40)
    assert np.asarray(Image.open(tmp_path / "p" / "grey_mask.png")).shape == (33, 9)


def test_evaluate_command_reports_the_run_metrics(trained, capsys):
    _, checkpoint = trained
    status, printed, _ = run_cli(capsys, "evaluate", "--checkpoint", checkpoint)
    assert status == 0 and printed.startswith("pixel_accuracy ")
    metrics = json.loads((checkpoint.parent / "metrics.json").read_text())
    assert f"pixel_accuracy {metrics['pixel_accuracy']:.4f}" in printed


# --- --crf: the fully connected CRF after the model ------------------------------------------------
def test_crf_refines_the_softmax_on_the_image_and_the_commands_take_it(trained, tmp_path, capsys):
    from minseg.crf import dense_crf
    data, checkpoint = trained
    path = sorted((data / "images").iterdir())[0]
    image = np.asarray(Image.open(path))
    predictor = Predictor.from_checkpoint(checkpoint, crf={"iterations": 3, "w1": 5.0})
    scores = predictor.logits(predictor.normalize(image)).numpy()[0].astype(np.float64)
    softmax = np.exp(scores) / np.exp(scores).sum(axis=0)
    expected = dense_crf(softmax, image, iterations=3, w1=5.0).argmax(axis=0)
    np.testing.assert_array_equal(predictor(image), expected)
    status, printed, _ = run_cli(capsys, "predict", "--checkpoint", checkpoint, path, "--out", tmp_path / "p",
                                 "--no-progress", "--crf")
    assert status == 0
    refined = dense_crf(softmax, image).argmax(axis=0)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "p" / f"{path.stem}_mask.png")), refined)
    status, printed, _ = run_cli(capsys, "evaluate", "--checkpoint", checkpoint, "--crf")
    assert status == 0 and re.search(r"boundary_accuracy \d\.\d{4}", printed)
    with pytest.raises(ValueError, match="Predictor: crf must be None or a dict of dense_crf options"):
        Predictor.from_checkpoint(checkpoint, crf=True)


def test_default_threads_leaves_out_the_busy_cores(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    assert 0 <= threads._busy_cores(0.05) <= (os.cpu_count() or 1) + 1e-9
    monkeypatch.setattr(threads, "_busy_cores", lambda: 50.0)
    assert threads.default_threads() == 1
    monkeypatch.setattr(threads, "_busy_cores", lambda: 0.0)
    assert threads.default_threads() == cores
    monkeypatch.setattr(threads, "_busy_cores", lambda: 1.0)
    assert threads.default_threads() == max(1, cores - 1)


def test_weights_load_into_the_whole_model_or_its_encoder(tmp_path, capsys):
    from minseg.models import create, save_weights
    source = create("unet", 3, base=2)
    save_weights(source, tmp_path / "whole.safetensors")
    model = create_model({"name": "unet", "options": {"base": 2}}, 3, tmp_path / "whole.safetensors")
    for name, array in source.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name], array)
    assert "(whole model)" in capsys.readouterr().out

    encoder_source = create("unet", 3, encoder="resnet18")
    save_weights(encoder_source.encoder, tmp_path / "encoder.safetensors")
    model = create_model({"name": "unet", "options": {"encoder": "resnet18"}}, 3, tmp_path / "encoder.safetensors")
    for name, array in encoder_source.encoder.state_dict().items():
        np.testing.assert_array_equal(model.encoder.state_dict()[name], array)
    assert "into model.encoder" in capsys.readouterr().out

    with pytest.raises(UsageError, match="--weights .*whole.safetensors"):
        create_model({"name": "linknet", "options": {"base": 4}}, 3, tmp_path / "whole.safetensors")


def test_an_offline_download_is_one_error_line(tmp_path, capsys, monkeypatch):
    import minseg.data
    from minseg.data import DownloadError

    def offline(dest=None):
        raise DownloadError("could not download https://example/camvid_tiny.tgz (URLError: no network); "
                            "this machine may be offline. To use a copy you already have, ...")

    monkeypatch.setattr(minseg.data, "download_camvid_tiny", offline)
    status, _, err = run_cli(capsys, "train", "--out", tmp_path / "run", *TINY)
    assert status == 2 and err.startswith("error: could not download") and err.count("\n") == 1
