"""docs/instances_figures.py draws the course page's figures from the library: each one here, into tmp_path.

The figures that need no trained model are drawn as the page shows them; the predictions figure is drawn from a
checkpoint of an untrained model of the example's recipe (it only proves the drawing and the loading; the page's
picture needs the trained model, which the example's --save writes). RoIPool, which the page compares RoIAlign
with, is checked on hand-worked values.
"""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minseg.detection import merge_panoptic
from minseg.instance_predict import InstancePredictor, save_instance_checkpoint

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "docs" / "instances_figures.py"


def _figures():
    spec = importlib.util.spec_from_file_location("instances_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_png(path, max_bytes):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path.name
    assert path.stat().st_size <= max_bytes, f"{path.name}: {path.stat().st_size} bytes"
    with Image.open(path) as image:
        image.verify()  # a truncated or corrupt PNG raises here
        assert min(image.size) >= 100, f"{path.name}: {image.size}"


def test_the_untrained_figures_draw(tmp_path, capsys):
    figures = _figures()
    figures.make_figures(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(figures.UNTRAINED)
    for name in figures.UNTRAINED:
        _assert_png(tmp_path / name, figures.MAX_BYTES)
    printed = capsys.readouterr().out
    assert "4092 for a 128x128 image" in printed  # the anchor count the page quotes
    assert "30 boxes around 6 objects, 6 kept" in printed  # nms keeps one box per object, as the page says


def _checkpoint(path, size=64, seed=0):
    """An untrained model of the example's recipe for ``size`` x ``size`` images, saved as its --save saves it."""
    figures = _figures()
    example = figures.load_example()
    model = example.build("panoptic_fpn", {}, 3, 2, size, seed)
    spec = {"name": "panoptic_fpn", "options": example.model_options("panoptic_fpn", {}, size)}
    dataset = figures.ShapesDataset
    save_instance_checkpoint(path, model, spec, dataset.things, dataset.stuff, example.MEAN, example.STD)
    return model


def test_predictions_figure_draws_an_instance_checkpoint(tmp_path):
    figures = _figures()
    _checkpoint(tmp_path / "model.ckpt")
    predictor = InstancePredictor.from_checkpoint(tmp_path / "model.ckpt")
    held_out = figures.ShapesDataset(2, size=64, seed=1000)
    figures.predictions_png(predictor, held_out, tmp_path / "predictions.png", shown=2)
    _assert_png(tmp_path / "predictions.png", figures.MAX_BYTES)


class _Predictor:
    """A stand-in InstancePredictor: each image gets its target's first object at score 0.9 and a stray at 0.3."""

    things, stuff = ["circle", "square", "triangle"], ["sky", "ground"]
    score_threshold, mask_threshold = 0.5, 0.5

    def __init__(self, dataset):
        self.targets = [dataset[index][1] for index in range(len(dataset))]
        self.calls = 0

    def __call__(self, image):
        target = self.targets[self.calls]
        self.calls += 1
        stray = np.zeros_like(target["masks"][:1])
        stray[0, :8, :8] = 1
        output = {"boxes": np.concatenate([target["boxes"][:1], [[0, 0, 8, 8]]]).astype(np.float32),
                  "labels": np.concatenate([target["labels"][:1], [1]]), "scores": np.array([0.9, 0.3]),
                  "masks": np.concatenate([target["masks"][:1], stray]).astype(np.float32)}
        output["panoptic"] = merge_panoptic(output, target["semantic"].clip(0, 2), 2, stuff_area=10)
        return output


def test_predictions_figure_draws_the_confident_detections(tmp_path):
    figures = _figures()
    held_out = figures.ShapesDataset(2, size=64, seed=1000)
    predictor = _Predictor(held_out)
    figures.predictions_png(predictor, held_out, tmp_path / "predictions.png", shown=2)
    assert predictor.calls == 2  # one call per image shown
    _assert_png(tmp_path / "predictions.png", figures.MAX_BYTES)


def test_roi_pool_rounds_the_box_and_its_bins():
    roi_pool = _figures().roi_pool
    ramp = np.tile(np.arange(8, dtype=np.float32), (8, 1))  # value = column index
    # [2, 6] x [1, 5] is 5 pixels each way, including its end pixel: bins of 2.5, rounded out to columns 2-4, 4-6.
    assert roi_pool(ramp, (2.0, 1.0, 6.0, 5.0), 2).tolist() == [[4, 6], [4, 6]]
    assert roi_pool(ramp, (2.3, 1.0, 6.3, 5.0), 2).tolist() == [[4, 6], [4, 6]]  # 0.3 px later: the same
    assert roi_pool(ramp, (2.5, 1.0, 6.5, 5.0), 2).tolist() == [[5, 7], [5, 7]]  # .5 rounds away from zero
    assert roi_pool(ramp, (-3.0, 0.0, -1.0, 2.0), 1).tolist() == [[0]]  # outside the map: clipped to nothing


def test_roi_align_follows_the_box_and_roi_pool_jumps():
    shifts, align, pool = _figures().ramp_responses()
    np.testing.assert_allclose(np.diff(align), np.diff(shifts), atol=1e-5)  # moves with the box, exactly
    assert set(np.diff(pool).tolist()) == {0.0, 1.0}  # whole pixels at a time


def test_command_line_errors(tmp_path, capsys):
    main = _figures().main
    assert main(["--out", str(tmp_path / "img"), "--checkpoint", str(tmp_path / "absent.ckpt")]) == 2
    err = capsys.readouterr().err
    assert "error: --checkpoint" in err and "examples/shapes_panoptic.py --save" in err
    (tmp_path / "damaged.ckpt").write_bytes(b"not a checkpoint")
    assert main(["--out", str(tmp_path / "img"), "--checkpoint", str(tmp_path / "damaged.ckpt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --checkpoint") and "not a minseg checkpoint" in err and err.count("\n") == 1
    assert not (tmp_path / "img").exists()  # a mistake is found before any figure is drawn


def test_checkpoint_draws_every_figure(tmp_path, capsys):
    """--checkpoint: the example's saved model is loaded and its predictions drawn beside the other figures."""
    figures = _figures()
    _checkpoint(tmp_path / "runs" / "panoptic_fpn.ckpt", size=figures.SIZE)
    assert figures.main(["--out", str(tmp_path / "img"), "--checkpoint",
                         str(tmp_path / "runs" / "panoptic_fpn.ckpt")]) == 0
    assert sorted(path.name for path in (tmp_path / "img").iterdir()) == sorted(figures.FIGURES)
    _assert_png(tmp_path / "img" / "predictions.png", figures.MAX_BYTES)
    assert "wrote " + str(tmp_path / "img" / "predictions.png") in capsys.readouterr().out


def test_help_names_the_command(capsys):
    with pytest.raises(SystemExit) as done:
        _figures().main(["--help"])
    assert done.value.code == 0 and "python docs/instances_figures.py" in capsys.readouterr().out
