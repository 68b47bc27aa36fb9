"""A checkpoint this code did not write (tests/fixtures/README.md) still loads, predicts and resumes the same."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli import write_dataset

from minseg.app import cli
from minseg.checkpoint import load_checkpoint
from minseg.predict import Predictor

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CHECKPOINT = FIXTURES / "tiny_naive_checkpoint.npz"
EXPECTED = np.load(FIXTURES / "tiny_naive_expected.npz")


@pytest.fixture
def data(tmp_path):
    return write_dataset(tmp_path / "data", n=4, size=(32, 32))


def images(data):
    return [np.asarray(Image.open(data / "images" / f"im{k:02d}.png")) for k in range(4)]


def test_predictor_from_the_fixture_computes_what_it_did(data):
    predictor = Predictor.from_checkpoint(CHECKPOINT)
    assert predictor.classes == ["red", "green", "blue"] and predictor.multiple == 16
    for k, image in enumerate(images(data)):
        np.testing.assert_allclose(predictor.logits(predictor.normalize(image)).numpy()[0], EXPECTED["logits"][k],
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(predictor(image), EXPECTED["ids"][k])


def test_minseg_predict_reads_the_fixture(data, tmp_path, capsys):
    status = cli.main(["predict", "--checkpoint", str(CHECKPOINT), str(data / "images"), "--out", str(tmp_path / "p"),
                       "--no-progress", "--threads", "1"])
    assert status == 0 and "wrote 4 masks" in capsys.readouterr().out
    for k in range(4):
        mask = np.asarray(Image.open(tmp_path / "p" / f"im{k:02d}_mask.png"))
        np.testing.assert_array_equal(mask, EXPECTED["ids"][k])


def test_resuming_the_fixture_continues_as_it_did(data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(CHECKPOINT, out / "checkpoint.npz")
    status = cli.main(["train", "--out", str(out), "--resume", "--epochs", "2", "--data", str(data), "--threads", "1"])
    assert status == 0 and "after epoch 1 of 2" in capsys.readouterr().out
    history = load_checkpoint(out / "checkpoint.npz")["history"]
    np.testing.assert_allclose([record["train_loss"] for record in history], EXPECTED["resumed_train_loss"],
                               rtol=1e-6)
    np.testing.assert_allclose([record["valid_loss"] for record in history], EXPECTED["resumed_valid_loss"],
                               rtol=1e-6)
