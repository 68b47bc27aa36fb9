"""``minseg predict`` and ``minseg evaluate`` with --tile, --overlap, --blend, --tta (docs/large_images.md).

The committed fixture checkpoint (a tiny naive model, size multiple 16) predicts the written images window by
window exactly as the library's Predictor does with the same arguments; a tile as large as the image gives the
whole-image masks; a bad value is one ``error:`` line and exit status 2; an image past the memory budget is
tiled with a note saying so.
"""
import numpy as np
import pytest
from PIL import Image
from test_cli import run_cli, write_dataset
from test_fixture_checkpoint import CHECKPOINT, EXPECTED

import minseg.predict
from minseg.predict import Predictor


@pytest.fixture
def data(tmp_path):
    return write_dataset(tmp_path / "data", n=4, size=(32, 32))


def _masks(folder, count=4):
    return [np.asarray(Image.open(folder / f"im{k:02d}_mask.png")) for k in range(count)]


def test_a_tile_as_large_as_the_image_writes_the_whole_image_masks(data, tmp_path, capsys):
    status, out, err = run_cli(capsys, "predict", "--checkpoint", CHECKPOINT, data / "images", "--out",
                               tmp_path / "p", "--no-progress", "--threads", 1, "--tile", 64, "--overlap", 16)
    assert status == 0, err
    for mask, expected in zip(_masks(tmp_path / "p"), EXPECTED["ids"]):
        np.testing.assert_array_equal(mask, expected)


def test_predict_tiles_and_flips_as_the_predictor_does(data, tmp_path, capsys):
    status, _, err = run_cli(capsys, "predict", "--checkpoint", CHECKPOINT, data / "images", "--out", tmp_path / "p",
                             "--no-progress", "--threads", 1, "--tile", 16, "--overlap", 0, "--blend", "uniform",
                             "--tta", "hv")
    assert status == 0, err
    predictor = Predictor.from_checkpoint(CHECKPOINT, tile=16, overlap=0, blend="uniform", tta="hv")
    for k, mask in enumerate(_masks(tmp_path / "p")):
        image = np.asarray(Image.open(data / "images" / f"im{k:02d}.png"))
        np.testing.assert_array_equal(mask, predictor(image))


def test_evaluate_takes_the_same_flags(data, capsys):
    status, out, err = run_cli(capsys, "evaluate", "--checkpoint", CHECKPOINT, "--data", data, "--threads", 1,
                               "--tile", 16, "--overlap", 0, "--tta", "h")
    assert status == 0, err
    assert out.startswith("pixel_accuracy ")


def test_an_image_past_the_memory_budget_is_tiled_and_the_note_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(minseg.predict, "MEMORY_BUDGET", 1000)
    (tmp_path / "in").mkdir()
    image = np.random.default_rng(0).integers(0, 256, (20, 600, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "in" / "wide.png")
    status, _, err = run_cli(capsys, "predict", "--checkpoint", CHECKPOINT, tmp_path / "in", "--out", tmp_path / "p",
                             "--no-progress", "--threads", 1)
    assert status == 0
    assert err.startswith("note: a 20x600 image needs about ") and "predicting it in 512x512 windows" in err
    tiled = Predictor.from_checkpoint(CHECKPOINT, tile=512)(image)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "p" / "wide_mask.png")), tiled)


BAD = [("--tile", "0"), ("--tile", "-16"), ("--tile", "nan"), ("--tile", "inf"), ("--tile", "1e9"),
       ("--tile", "2.5"), ("--tile", "abc"), ("--tile", "99999999999999999999"), ("--tile", "²"),
       ("--overlap", "-1"), ("--overlap", "nan"), ("--overlap", "16384.0"), ("--blend", "box"), ("--tta", "x")]


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("flag, value", BAD)
def test_a_bad_tiling_value_is_one_error_line(command, flag, value, tmp_path, capsys):
    argv = ["--checkpoint", CHECKPOINT, flag, value] + (["x.png", "--out", tmp_path] if command == "predict" else [])
    status, out, err = run_cli(capsys, command, *argv)
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: argument {flag}: "), err


@pytest.mark.parametrize("flags, message", [
    (["--tile", "32", "--overlap", "32"], "error: --overlap 32 must be smaller than --tile 32; lower --overlap"),
    (["--overlap", "600"], "error: --overlap 600 must be smaller than the automatic tile, 512; lower --overlap"),
])
def test_an_overlap_that_leaves_no_step_is_one_error_line(flags, message, data, tmp_path, capsys):
    status, _, err = run_cli(capsys, "predict", "--checkpoint", CHECKPOINT, data / "images", "--out", tmp_path / "p",
                             *flags)
    assert status == 2 and err.strip() == message
