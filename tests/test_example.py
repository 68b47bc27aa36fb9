"""examples/camvid_tiny.py: its command line, and a tiny real run that writes every output."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "camvid_tiny.py"
CAMVID_TINY = REPO.parent / "shared" / "data" / "camvid_tiny"
OPTIONS = ["--data", "--model", "--base", "--epochs", "--lr", "--batch-size", "--seed", "--device", "--out", "--resume"]


def run_example(*arguments, timeout=120):
    environment = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, str(EXAMPLE), *arguments], capture_output=True, text=True,
                          cwd=REPO, env=environment, timeout=timeout)


def test_help_lists_every_option():
    result = run_example("--help")
    assert result.returncode == 0, result.stderr
    for option in OPTIONS:
        assert option in result.stdout
    for model in ("naive", "unet", "linknet"):
        assert model in result.stdout


def test_bad_option_values_are_rejected():
    result = run_example("--model", "resnet")
    assert result.returncode == 2 and "--model" in result.stderr
    result = run_example("--epochs", "0")
    assert result.returncode == 2 and "--epochs" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(not CAMVID_TINY.is_dir(), reason="../shared/data/camvid_tiny is not present")
def test_one_epoch_run_writes_metrics_figures_and_checkpoint(tmp_path):
    out = tmp_path / "run"
    result = run_example("--data", str(CAMVID_TINY), "--model", "unet", "--base", "4", "--epochs", "1",
                         "--batch-size", "16", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("pixel_accuracy", "foreground_accuracy", "mean_iou", "per_class_iou", "epochs", "seconds"):
        assert key in metrics
    assert metrics["epochs"] == 1 and 0 <= metrics["pixel_accuracy"] <= 1
    codes = (CAMVID_TINY / "codes.txt").read_text().split()
    assert list(metrics["per_class_iou"]) == codes
    for figure in ("batch", "results", "history", "per_class_iou", "confusion_matrix"):
        assert (out / f"{figure}.png").stat().st_size > 1000
    assert (out / "checkpoint.npz").is_file()

    # --resume of a finished run trains nothing more and reports the same numbers.
    result = run_example("--data", str(CAMVID_TINY), "--model", "unet", "--base", "4", "--epochs", "1",
                         "--batch-size", "16", "--out", str(out), "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["epochs"] == 1 and resumed["pixel_accuracy"] == metrics["pixel_accuracy"]


MEMBRANE_EXAMPLE = REPO / "examples" / "membrane.py"
MEMBRANE = REPO.parent / "shared" / "data" / "membrane"


def test_membrane_help_shows_its_own_defaults():
    result = subprocess.run([sys.executable, str(MEMBRANE_EXAMPLE), "--help"], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for default in ("(default: dice+ce)", "(default: hv)", "(default: 128x128)", "(default: membrane)"):
        assert default in text


@pytest.mark.slow
@pytest.mark.skipif(not MEMBRANE.is_dir(), reason="../shared/data/membrane is not present")
def test_membrane_example_runs_one_short_epoch_and_reports_dice_and_iou(tmp_path):
    out = tmp_path / "membrane"
    result = subprocess.run([sys.executable, str(MEMBRANE_EXAMPLE), "--epochs", "1", "--repeat", "1", "--base", "4",
                             "--out", str(out), "--no-progress"], capture_output=True, text=True, cwd=REPO,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[-3].split() == ["class", "Dice", "IoU"]
    assert lines[-2].split()[0] == "membrane" and lines[-1].split()[0] == "cell"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["per_class_dice"]) == {"membrane", "cell"} and 0 <= metrics["pixel_accuracy"] <= 1
