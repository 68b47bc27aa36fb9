"""``minseg predict`` and ``minseg evaluate`` on an instance model's checkpoint (``minseg.app.instance_files``).

The files are read back and compared with the in-memory ``InstancePredictor``: the 16-bit PNG holds its instance
ids, the panoptic PNG and its JSON decode (COCO's id = R + 256 G + 256² B) to its panoptic map. The rest is the
command line's contract: nothing replaced without ``--overwrite``, the semantic-only flags refused, and every
mistake one ``error:`` line.
"""
import json

import numpy as np
import pytest
from PIL import Image
from test_cli import run_cli
from test_cli_fuzz import FIXTURE
from test_instance_predict import STUFF, THINGS, tiny_instance_checkpoint

from minseg.app.instance_files import MAX_INSTANCES, panoptic_rgb, segments_info
from minseg.checkpoint import load_checkpoint, save_checkpoint
from minseg.data.images import read_image
from minseg.detection import LABEL_DIVISOR
from minseg.instance_predict import InstancePredictor, instance_ids

THRESHOLD = "0.1"  # the untrained model's scores lie near 1 / (things + 1): keep some instances


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("instance_cli")
    return {task: tiny_instance_checkpoint(root / f"{task}.npz", task) for task in ("panoptic", "instances")}


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("street", (50, 70)), ("field", (64, 64))):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


def predict(capsys, checkpoint, photos, out, *extra):
    return run_cli(capsys, "predict", "--checkpoint", checkpoint, photos, "--out", out, "--no-progress",
                   "--threads", "1", *extra)


def one_error_line(status, err):
    lines = err.strip().splitlines()
    assert status == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def decode_panoptic(png, document):
    """The panoptic map a COCO panoptic PNG and its segments_info give: category * LABEL_DIVISOR + instance."""
    rgb = np.asarray(Image.open(png)).astype(np.int64)
    segment = rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]
    panoptic = np.full(segment.shape, -1, np.int64)
    for info in document["segments_info"]:
        assert info["category"] == (STUFF + THINGS)[info["category_id"]]
        assert info["isthing"] == int(info["category_id"] >= len(STUFF))
        assert info["area"] == (segment == info["id"]).sum()
        x, y, width, height = info["bbox"]
        rows, cols = np.nonzero(segment == info["id"])
        assert (x, y, x + width, y + height) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        panoptic[segment == info["id"]] = info["id"] - 1
    assert set(np.unique(segment)) <= {0} | {info["id"] for info in document["segments_info"]}
    return panoptic


def test_predict_writes_instance_ids_and_the_coco_panoptic_map(capsys, checkpoints, photos, tmp_path):
    status, printed, err = predict(capsys, checkpoints["panoptic"], photos, tmp_path / "out", "--score-threshold",
                                   THRESHOLD)
    assert status == 0, err
    assert "of 2 images" in printed and "COCO's panoptic format" in printed
    names = {f"{stem}_{kind}" for stem in ("street", "field")
             for kind in ("instances.png", "instances.json", "panoptic.png", "panoptic.json", "overlay.png")}
    assert {path.name for path in (tmp_path / "out").iterdir()} == names
    predictor = InstancePredictor.from_checkpoint(checkpoints["panoptic"], score_threshold=float(THRESHOLD))
    for stem in ("street", "field"):
        picture = read_image(photos / f"{stem}.png")
        result = predictor(picture)
        png = Image.open(tmp_path / "out" / f"{stem}_instances.png")
        ids = np.asarray(png)
        assert png.mode == "I;16" and ids.shape == picture.shape[:2]
        np.testing.assert_array_equal(ids, instance_ids(result, float(THRESHOLD)))
        assert ids.max() > 0
        instances = json.loads((tmp_path / "out" / f"{stem}_instances.json").read_text())["instances"]
        assert [item["id"] for item in instances] == list(range(1, len(instances) + 1))
        assert [item["area"] for item in instances] == [int((ids == item["id"]).sum()) for item in instances]
        assert all(item["category"] == THINGS[item["label"] - 1] for item in instances)
        assert sorted((item["score"] for item in instances), reverse=True) == [item["score"] for item in instances]
        document = json.loads((tmp_path / "out" / f"{stem}_panoptic.json").read_text())
        assert document["file_name"] == f"{stem}_panoptic.png"
        decoded = decode_panoptic(tmp_path / "out" / f"{stem}_panoptic.png", document)
        np.testing.assert_array_equal(decoded, result["panoptic"])
        overlay = np.asarray(Image.open(tmp_path / "out" / f"{stem}_overlay.png"))
        assert overlay.shape == picture.shape and (overlay[ids == 0] == picture[ids == 0]).all()


def test_an_instances_task_writes_no_panoptic_map(capsys, checkpoints, photos, tmp_path):
    status, printed, err = predict(capsys, checkpoints["instances"], photos / "field.png", tmp_path / "out")
    assert status == 0, err
    assert {path.name for path in (tmp_path / "out").iterdir()} == {
        "field_instances.png", "field_instances.json", "field_overlay.png"}
    assert "panoptic" not in printed


def test_the_coco_encoding_round_trips_every_segment_id():
    panoptic = np.array([[-1, 0, 1000], [4 * LABEL_DIVISOR + 7, 16777 * LABEL_DIVISOR + 214, 255]])
    ids, rgb = panoptic_rgb(panoptic)
    rgb = rgb.astype(np.int64)
    decoded = rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]
    np.testing.assert_array_equal(decoded, panoptic + 1)
    np.testing.assert_array_equal(ids, panoptic + 1)
    assert [info["id"] for info in segments_info(panoptic[:1], ["a", "b"], 1)] == [1, 1001]
    with pytest.raises(ValueError, match="panoptic_rgb: panoptic values must be in -1..16777214"):
        panoptic_rgb(np.array([[2 ** 24]]))


def test_existing_outputs_are_refused_naming_them_unless_overwrite(capsys, checkpoints, photos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "field_panoptic.json").write_text("mine\n")
    line = one_error_line(*predict(capsys, checkpoints["panoptic"], photos / "field.png", out)[::2])
    assert "field_panoptic.json" in line and "--overwrite" in line
    assert [path.name for path in out.iterdir()] == ["field_panoptic.json"]
    status, _, err = predict(capsys, checkpoints["panoptic"], photos / "field.png", out, "--overwrite")
    assert status == 0, err
    assert json.loads((out / "field_panoptic.json").read_text())["file_name"] == "field_panoptic.png"


@pytest.mark.parametrize("flags", [["--tile", "64"], ["--overlap", "8"], ["--blend", "linear"], ["--tta", "h"],
                                   ["--crf"], ["--tile", "64", "--crf"]])
def test_flags_of_semantic_prediction_are_refused_for_instance_models(capsys, checkpoints, photos, tmp_path, flags):
    line = one_error_line(*predict(capsys, checkpoints["panoptic"], photos, tmp_path / "out", *flags)[::2])
    assert all(flag in line for flag in flags if flag.startswith("--")) and "instance models" in line
    assert "panoptic_fpn" in line and not (tmp_path / "out").exists()


def test_score_threshold_is_refused_for_a_semantic_model(capsys, photos, tmp_path):
    line = one_error_line(*predict(capsys, FIXTURE, photos, tmp_path / "out", "--score-threshold", "0.5")[::2])
    assert "--score-threshold is for instance models" in line and not (tmp_path / "out").exists()


def test_evaluate_points_instance_models_to_the_example(capsys, checkpoints):
    status, _, err = run_cli(capsys, "evaluate", "--checkpoint", checkpoints["panoptic"], "--threads", "1")
    assert "examples/shapes_panoptic.py" in one_error_line(status, err)


@pytest.mark.parametrize("change, message", [
    (lambda state: state["run"].update(task="detection"), "its task must be one of panoptic, instances"),
    (lambda state: state["run"].update(std=[0, 1, 1]), "its mean and std are not"),
    (lambda state: state["run"]["model"]["options"].update(fpn_channels=32), "does not fit the model"),
])
def test_a_damaged_instance_checkpoint_is_one_line_naming_it(capsys, checkpoints, photos, tmp_path, change, message):
    state = load_checkpoint(checkpoints["panoptic"])
    change(state)
    save_checkpoint(tmp_path / "damaged.npz", state)
    line = one_error_line(*predict(capsys, tmp_path / "damaged.npz", photos, tmp_path / "out")[::2])
    assert line.startswith(f"error: --checkpoint {tmp_path / 'damaged.npz'}: ") and message in line
    assert not (tmp_path / "out").exists()


def test_more_instances_than_a_16_bit_png_holds_is_one_line(capsys, checkpoints, photos, tmp_path, monkeypatch):
    count = MAX_INSTANCES + 1

    def crowded(self, image):
        return {"boxes": np.zeros((count, 4), np.float32), "labels": np.ones(count, np.int64),
                "scores": np.ones(count, np.float32), "masks": np.zeros((count, 2, 2), np.float32),
                "semantic": np.zeros((3, 2, 2), np.float32), "panoptic": np.zeros((2, 2), np.int64)}
    monkeypatch.setattr(InstancePredictor, "__call__", crowded)
    line = one_error_line(*predict(capsys, checkpoints["panoptic"], photos / "field.png", tmp_path / "out")[::2])
    assert f"{count} instances" in line and "--score-threshold" in line and "65535" in line
    assert not list((tmp_path / "out").glob("field_*"))
