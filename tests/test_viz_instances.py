"""Instance and panoptic figures: every thing its own colour, stuff in its category's, the confident detections drawn.

The outputs and targets are made by hand in the instance conventions, small enough to check every pixel; the last
tests run examples/shapes_panoptic.py's --figure, which draws with ``show_instance_results``.
"""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from minseg import Tensor
from minseg.colors import palette
from minseg.detection import LABEL_DIVISOR
from minseg.viz_instances import (
    MASK_BACKGROUND,
    instances_rgb,
    panoptic_rgb,
    segment_colors,
    show_instance_results,
)

THINGS, STUFF = ["circle", "square"], ["sky", "ground"]
COLORS = np.array([(150, 200, 245), (150, 120, 70), (230, 60, 60), (60, 160, 60)], np.uint8)
H, W = 8, 10


def _masks(*boxes):
    """uint8 (N, H, W) masks, each 1 inside its (row0, row1, col0, col1) rectangle."""
    masks = np.zeros((len(boxes), H, W), np.uint8)
    for mask, (row0, row1, col0, col1) in zip(masks, boxes):
        mask[row0:row1, col0:col1] = 1
    return masks


def _panoptic():
    """Sky above ground, two circles (category 2, instances 1 and 2), a square (category 3), one void pixel."""
    panoptic = np.zeros((H, W), np.int64)
    panoptic[4:] = 1 * LABEL_DIVISOR
    panoptic[1:3, 1:3] = 2 * LABEL_DIVISOR + 1
    panoptic[1:3, 5:7] = 2 * LABEL_DIVISOR + 2
    panoptic[5:7, 2:4] = 3 * LABEL_DIVISOR + 1
    panoptic[7, 9] = -1
    return panoptic


def _output(scores=(0.9, 0.3)):
    """Two detections: a circle at ``scores[0]`` and a square at ``scores[1]``, with the map of ``_panoptic``."""
    masks = _masks((1, 3, 1, 3), (5, 7, 2, 4)).astype(np.float32) * 0.8
    return {"boxes": np.array([[1, 1, 3, 3], [2, 5, 4, 7]], np.float32), "labels": np.array([1, 2]),
            "scores": np.array(scores, np.float32), "masks": masks, "panoptic": _panoptic()}


def _target():
    masks = _masks((1, 3, 1, 3), (1, 3, 5, 7), (5, 7, 2, 4))
    semantic = np.where(np.arange(H)[:, None] >= 4, 1, 0).repeat(W, axis=1)
    for mask, category in zip(masks, (2, 2, 3)):
        semantic[mask == 1] = category
    return {"boxes": np.array([[1, 1, 3, 3], [5, 1, 7, 3], [2, 5, 4, 7]], np.float32),
            "labels": np.array([1, 1, 2]), "masks": masks, "semantic": semantic}


def _image():
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


# --- colouring --------------------------------------------------------------------------------
def test_segment_colors_are_distinct_bright_and_seeded():
    colours = segment_colors(12)
    assert colours.shape == (12, 3) and colours.min() >= 0 and colours.max() <= 1
    assert len({tuple(np.round(c, 6)) for c in colours}) == 12
    np.testing.assert_array_equal(segment_colors(12), colours)  # the same seed, the same colours
    assert not np.allclose(segment_colors(12, seed=1), colours)
    assert segment_colors(0).shape == (0, 3)


def test_instances_rgb_colours_each_mask_apart_on_grey():
    masks = _masks((0, 4, 0, 4), (2, 6, 2, 6))  # overlapping on rows 2-3, columns 2-3
    rgb = instances_rgb(masks)
    first, second = segment_colors(2)
    np.testing.assert_allclose(rgb[0, 0], first)
    np.testing.assert_allclose(rgb[5, 5], second)
    np.testing.assert_allclose(rgb[3, 3], second)  # the later mask is on top
    np.testing.assert_allclose(rgb[7, 9], [MASK_BACKGROUND] * 3)
    np.testing.assert_allclose(instances_rgb(np.zeros((0, H, W), np.uint8)), MASK_BACKGROUND)


def test_panoptic_rgb_colours_each_thing_segment_apart_and_stuff_by_category():
    panoptic = _panoptic()
    rgb, segments = panoptic_rgb(panoptic, num_stuff=2, colors=COLORS)
    np.testing.assert_allclose(rgb[0, 0], COLORS[0] / 255)  # sky
    np.testing.assert_allclose(rgb[0, 9], COLORS[0] / 255)  # the same category, the same colour
    np.testing.assert_allclose(rgb[7, 0], COLORS[1] / 255)  # ground
    np.testing.assert_array_equal(rgb[7, 9], [0, 0, 0])  # void
    things = [rgb[1, 1], rgb[1, 5], rgb[5, 2]]  # two circles and a square
    np.testing.assert_allclose(np.stack(things), segment_colors(3))
    pairs = [(a, b) for a in range(3) for b in range(a + 1, 3)]
    assert all(not np.allclose(things[a], things[b]) for a, b in pairs)  # two circles: two colours
    assert not any(np.allclose(thing, COLORS[2] / 255) for thing in things)  # not their category's colour
    assert [(segment, category) for segment, category, _ in segments] == [
        (0, 0), (1000, 1), (2001, 2), (2002, 2), (3001, 3)]
    assert segments[2][2] == (1.5, 1.5)  # the centre (row, column) of circle 1
    default, _ = panoptic_rgb(panoptic, num_stuff=2)
    np.testing.assert_allclose(default[7, 0], palette(2)[1] / 255)  # no colours given: the palette's


# --- show_instance_results ----------------------------------------------------------------------
def test_show_instance_results_draws_the_confident_detections_and_both_panoptic_maps(tmp_path):
    path = tmp_path / "figures" / "results.png"
    figure = show_instance_results(np.stack([_image()] * 2), [_output(), _output((0.6, 0.95))],
                                   [_target(), _target()], things=THINGS, stuff=STUFF, path=path, colors=COLORS)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.png"]  # no temporary file left
    axes = np.array(figure.axes[:8]).reshape(2, 4)
    assert [ax.get_title() for ax in axes[0]] == ["detections scoring ≥ 0.5: class, score",
                                                  "their masks, one colour each", "predicted panoptic map",
                                                  "ground truth panoptic map"]
    assert [t.get_text() for t in axes[0, 0].texts] == ["circle 0.90"]  # the square at 0.30 is left out
    assert [t.get_text() for t in axes[1, 0].texts] == ["circle 0.60", "square 0.95"]
    box_colour = axes[0, 0].patches[0].get_edgecolor()[:3]
    np.testing.assert_allclose(box_colour, segment_colors(1)[0])  # the box in its mask's colour
    np.testing.assert_allclose(axes[0, 1].get_images()[0].get_array(), instances_rgb(_masks((1, 3, 1, 3))))
    predicted = [t.get_text() for t in axes[0, 2].texts]
    truth = [t.get_text() for t in axes[0, 3].texts]
    assert predicted == ["sky", "ground", "circle 1", "circle 2", "square 1"]
    assert truth == ["sky", "ground", "circle 1", "circle 2", "square 3"]  # the target's third instance
    np.testing.assert_allclose(axes[0, 2].get_images()[0].get_array(), panoptic_rgb(_panoptic(), 2, COLORS)[0])
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend == ["sky", "ground", "void"]


def test_no_detections_and_no_targets(tmp_path):
    empty = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
             "scores": np.zeros(0, np.float32), "masks": np.zeros((0, H, W), np.float32),
             "panoptic": np.where(np.arange(H)[:, None] >= 4, LABEL_DIVISOR, 0).repeat(W, axis=1)}
    figure = show_instance_results(_image(), empty, things=THINGS, stuff=STUFF)
    assert len(figure.axes) == 3 and list(tmp_path.iterdir()) == []  # path None: nothing written
    assert len(figure.axes[0].texts) == 0 and len(figure.axes[0].patches) == 0
    np.testing.assert_allclose(figure.axes[1].get_images()[0].get_array(), MASK_BACKGROUND)
    assert [t.get_text() for t in figure.axes[2].texts] == ["sky", "ground"]


def test_a_normalized_batch_and_outputs_without_a_panoptic_map():
    mean, std = np.array([0.5] * 3, np.float32), np.array([0.25] * 3, np.float32)
    images = np.stack([_image(), _image()]).astype(np.float32) / 255
    batch = Tensor(((images - mean) / std).transpose(0, 3, 1, 2).copy())
    outputs = [{key: value for key, value in _output().items() if key != "panoptic"}] * 2
    outputs[0] = {**outputs[0], "masks": outputs[0]["masks"][:, None]}  # (K, 1, H, W), as some heads give them
    figure = show_instance_results(batch, outputs, things=THINGS, stuff=STUFF, mean=mean, std=std, max_rows=1)
    assert len(figure.axes) == 2  # one row: the detections and their masks
    np.testing.assert_allclose(figure.axes[0].get_images()[0].get_array(), images[0], atol=1e-6)


def test_mistakes_are_named():
    with pytest.raises(ValueError, match=r"show_instance_results: labels must be thing classes 1\.\.1 .*got \[1, 2\]"):
        show_instance_results(_image(), _output((0.9, 0.9)), things=THINGS[:1], stuff=STUFF)
    with pytest.raises(ValueError, match=r"show_instance_results: images, outputs and targets must be one per image"):
        show_instance_results(np.stack([_image()] * 2), [_output()], things=THINGS, stuff=STUFF)
    with pytest.raises(ValueError, match=r"show_instance_results: outputs must be one dict per image"):
        show_instance_results(_image(), [np.zeros(3)], things=THINGS, stuff=STUFF)


# --- examples/shapes_panoptic.py --figure -------------------------------------------------------
def _example():
    path = Path(__file__).resolve().parents[1] / "examples" / "shapes_panoptic.py"
    spec = importlib.util.spec_from_file_location("shapes_panoptic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_examples_figure_flag_is_refused_where_it_cannot_work(tmp_path, capsys):
    example = _example()
    (tmp_path / "taken.png").write_bytes(b"")
    for argv, message in ((["--figure", "r.png", "--ablation"], "--figure draws one model; --ablation trains four"),
                          (["--figure", str(tmp_path / "taken.png")], "the file exists; choose a new name"),
                          (["--figure", "same", "--save", "same"], "--save and --figure must be two files")):
        with pytest.raises(SystemExit):
            example.parse_args(argv)
        err = capsys.readouterr().err
        assert message in err and err.strip().splitlines()[-1].startswith("python examples/shapes_panoptic.py: error:")


def test_the_example_draws_its_results(tmp_path, capsys):
    example = _example()
    assert example.main(["--epochs", "1", "--train-images", "2", "--valid-images", "2", "--size", "64",
                         "--batch-size", "2", "--figure", str(tmp_path / "results.png")]) == 0
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'results.png'} (the results on the first 2 held-out images)" in out
    assert "AP50" in out  # the table is still printed
