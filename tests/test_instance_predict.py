"""Tests for ``minseg.instance_predict``: the instance checkpoint, the predictor around the model, instance ids.

The model is Panoptic FPN at tiny channel counts, untrained: what is tested is the file format and its checks,
that the predictor gives the model's own result (padded and cropped back for sizes the model cannot take), and
``instance_ids`` against a case small enough to check by eye.
"""
import numpy as np
import pytest

import minseg
from minseg.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minseg.data.loader import normalize
from minseg.detection import merge_panoptic
from minseg.instance_predict import (
    InstancePredictor,
    check_instance_run,
    declared_task,
    instance_ids,
    instance_ranking,
    save_instance_checkpoint,
)
from minseg.models import create
from minseg.random import generator

# Panoptic FPN with every part at its smallest; stuff_area small enough that 64-pixel images keep stuff segments.
TINY = dict(encoder="resnet_small", width=8, fpn_channels=16, semantic_channels=32, anchor_sizes=(8, 16, 32, 64, 128),
            canonical_scale=56, representation_size=32, mask_layers=(8, 8, 8, 8), box_resolution=4, mask_resolution=7,
            stuff_area=10, rpn_options={"pre_nms_top_n": {"training": 50, "testing": 30},
                                        "post_nms_top_n": {"training": 30, "testing": 20}},
            roi_options={"detections_per_img": 10})
THINGS, STUFF = ["circle", "square", "triangle"], ["sky", "ground"]
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def tiny_model(name="panoptic_fpn", seed=0):
    minseg.manual_seed(seed)
    return create(name, len(THINGS), len(STUFF), **TINY)


def tiny_instance_checkpoint(path, task="panoptic", name="panoptic_fpn"):
    """An untrained tiny instance model saved at ``path``; returns the path."""
    save_instance_checkpoint(path, tiny_model(name), {"name": name, "options": TINY}, THINGS, STUFF, MEAN, STD,
                             task=task)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_instance_checkpoint(tmp_path_factory.mktemp("instance") / "checkpoint.npz")


def image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --- the checkpoint ---------------------------------------------------------------------------------------
def test_the_checkpoint_describes_the_run_and_rebuilds_the_model(checkpoint):
    state = load_checkpoint(checkpoint)
    run = check_instance_run(state, checkpoint, "test")
    assert run["task"] == "panoptic" and run["things"] == THINGS and run["stuff"] == STUFF
    assert run["model"]["name"] == "panoptic_fpn" and run["model"]["options"]["mask_layers"] == [8, 8, 8, 8]
    assert run["mean"] == list(MEAN) and run["std"] == list(STD) and declared_task(state) == "panoptic"
    predictor = InstancePredictor.from_checkpoint(checkpoint)
    for name, array in tiny_model().state_dict().items():
        np.testing.assert_array_equal(predictor.model.state_dict()[name], array)
    assert predictor.categories == STUFF + THINGS and predictor.score_threshold == 0.5


def test_a_semantic_checkpoint_declares_no_task():
    assert declared_task({"run": {"model": {"name": "unet"}, "classes": ["a"]}}) is None
    assert declared_task({"model": {}}) is None and declared_task([]) is None


def test_saving_leaves_the_random_generator_where_it_was(tmp_path):
    model = tiny_model()
    state = generator().bit_generator.state
    save_instance_checkpoint(tmp_path / "c.npz", model, {"name": "panoptic_fpn", "options": TINY}, THINGS, STUFF,
                             MEAN, STD)
    assert generator().bit_generator.state == state


@pytest.mark.parametrize("change, message", [
    (dict(model_spec={"name": "panoptic_fpn", "options": {**TINY, "fpn_channels": 32}}), "must rebuild the model"),
    (dict(model_spec={"name": "panet", "options": TINY}), "must be the PANet"),
    (dict(model_spec={"name": "unet", "options": {}}), "naming one of panoptic_fpn, panet"),
    (dict(things=["circle"]), "3 thing classes and 2 stuff"),
    (dict(things=[]), "things are not a list of one or more names"),
    (dict(std=(0.25, 0, 0.25)), "std positive"),
    (dict(task="detection"), "task must be one of panoptic, instances"),
    (dict(colors=[(0, 0, 0)]), "one R, G, B triple"),
    (dict(extra={"run": 1}), "extra must not hold"),
])
def test_a_checkpoint_that_could_not_be_loaded_is_refused_when_saved(tmp_path, change, message):
    arguments = {**dict(model_spec={"name": "panoptic_fpn", "options": TINY}, things=THINGS, stuff=STUFF, mean=MEAN,
                        std=STD), **change}
    with pytest.raises(ValueError, match=message) as error:
        save_instance_checkpoint(tmp_path / "c.npz", tiny_model(), **arguments)
    assert str(error.value).startswith("save_instance_checkpoint: ") and "\n" not in str(error.value)
    assert not list(tmp_path.iterdir())


def damaged(checkpoint, path, change):
    state = load_checkpoint(checkpoint)
    change(state)
    save_checkpoint(path, state)
    return path


@pytest.mark.parametrize("change, message", [
    (lambda s: s["run"].pop("task"), "holds no instance model's run description"),
    (lambda s: s["run"].update(task=3), "its task must be one of"),
    (lambda s: s["run"].update(model={"name": "naive"}), "its model is not"),
    (lambda s: s["run"].update(things="circle"), "its things are not"),
    (lambda s: s["run"].update(stuff=[1]), "its stuff is not"),
    (lambda s: s["run"].update(mean=[0.5, "a", 0.5]), "mean and std"),
    (lambda s: s["run"].update(std=[0.2, 0.2, float("nan")]), "mean and std"),
    (lambda s: s["run"].update(colors=[[0, 0, 300]] * 5), "its colors"),
    (lambda s: s.pop("model"), "holds no model weights"),
    (lambda s: s["run"]["model"]["options"].update(fpn_channels=32), "does not fit the model it describes"),
    (lambda s: s["run"]["model"]["options"].update(colour=1), "does not fit the model it describes"),
    (lambda s: s["run"].update(things=["a", "b"]), "does not fit the model it describes"),
    (lambda s: s["model"]["semantic_head.head.0.bias"].fill(np.nan), "NaN or inf weights"),
])
def test_a_damaged_checkpoint_is_one_line_naming_the_file(checkpoint, tmp_path, change, message):
    path = damaged(checkpoint, tmp_path / "damaged.npz", change)
    with pytest.raises(CheckpointError, match=message) as error:
        InstancePredictor.from_checkpoint(path)
    assert str(error.value).startswith(f"InstancePredictor.from_checkpoint: {path}") and "\n" not in str(error.value)


# --- the predictor ----------------------------------------------------------------------------------------
def test_the_predictor_gives_the_models_result_for_a_size_it_takes(checkpoint):
    predictor = InstancePredictor.from_checkpoint(checkpoint)
    picture = image(64, 96)
    result = predictor(picture)
    with minseg.no_grad():
        expected = predictor.model(normalize(picture[None], MEAN, STD))[0]
    assert set(result) == {"boxes", "labels", "scores", "masks", "semantic", "panoptic"}
    for key, value in expected.items():
        np.testing.assert_array_equal(result[key], value, err_msg=key)


def test_the_predictor_pads_for_the_model_and_crops_back(checkpoint):
    predictor = InstancePredictor.from_checkpoint(checkpoint, score_threshold=0.1)
    result = predictor(image(50, 70))
    count = len(result["scores"])
    assert count > 0 and result["masks"].shape == (count, 50, 70) and result["semantic"].shape == (3, 50, 70)
    boxes = result["boxes"]
    assert (boxes[:, [0, 2]] <= 70).all() and (boxes[:, [1, 3]] <= 50).all() and (boxes >= 0).all()
    assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()  # none lies in the padding alone
    merged = merge_panoptic(result, result["semantic"], len(STUFF), **predictor.merge_options)
    np.testing.assert_array_equal(result["panoptic"], merged)
    assert predictor.merge_options["score_threshold"] == 0.1 and predictor.model.merge_options["score_threshold"] == 0.5


def test_the_predictor_takes_greyscale_and_float_images_and_refuses_others(checkpoint):
    predictor = InstancePredictor.from_checkpoint(checkpoint)
    assert predictor(image(32, 32)[..., 0])["panoptic"].shape == (32, 32)
    assert predictor(image(32, 32).astype(np.float32) / 255)["panoptic"].shape == (32, 32)
    with pytest.raises(ValueError, match="InstancePredictor: a float image must hold values in"):
        predictor(np.full((32, 32, 3), 2.0, np.float32))
    with pytest.raises(ValueError, match=r"InstancePredictor: image must be uint8 or float"):
        predictor(np.zeros((32, 32, 4), np.uint8))


@pytest.mark.parametrize("name, value", [("score_threshold", 1.5), ("score_threshold", "0.5"),
                                         ("mask_threshold", -0.1), ("mask_threshold", float("nan"))])
def test_thresholds_outside_zero_to_one_are_refused(checkpoint, name, value):
    with pytest.raises(ValueError, match=f"InstancePredictor: {name} must be a number in \\[0, 1\\]"):
        InstancePredictor.from_checkpoint(checkpoint, **{name: value})


# --- instance ids -----------------------------------------------------------------------------------------
def by_eye():
    """Three 1x5 masks: detection 0 on columns 0-2 (score 0.6), 1 on 2-3 (0.9), 2 on 4 (0.3)."""
    masks = np.zeros((3, 1, 5), np.float32)
    masks[0, 0, 0:3], masks[1, 0, 2:4], masks[2, 0, 4] = 0.8, 0.7, 0.9
    return {"masks": masks, "scores": np.array([0.6, 0.9, 0.3], np.float32), "labels": np.array([1, 2, 1])}


def test_instance_ids_number_by_score_and_the_higher_score_wins_an_overlap():
    result = by_eye()
    assert instance_ranking(result, 0.5).tolist() == [1, 0]
    ids = instance_ids(result, score_threshold=0.5)
    assert ids.dtype == np.int32 and ids.tolist() == [[2, 2, 1, 1, 0]]
    assert instance_ids(result, score_threshold=0.0).tolist() == [[2, 2, 1, 1, 3]]
    assert instance_ids(result, score_threshold=0.0, mask_threshold=0.85).tolist() == [[0, 0, 0, 0, 3]]
    assert instance_ids(result, score_threshold=0.95).tolist() == [[0, 0, 0, 0, 0]]


def test_instance_ids_of_equal_scores_keep_the_order_given_and_of_no_detection_are_zero():
    result = by_eye()
    result["scores"] = np.full(3, 0.7, np.float32)
    assert instance_ids(result).tolist() == [[1, 1, 1, 2, 3]]
    empty = {"masks": np.zeros((0, 4, 6), np.float32), "scores": np.zeros(0, np.float32)}
    assert instance_ids(empty).tolist() == np.zeros((4, 6), int).tolist()


def test_instance_ids_refuse_masks_that_do_not_fit_the_scores():
    with pytest.raises(ValueError, match=r"instance_ids: result\['masks'\] must be \(K, H, W\)"):
        instance_ids({"masks": np.zeros((2, 4, 4)), "scores": np.zeros(3)})
    with pytest.raises(ValueError, match=r"instance_ranking: score_threshold must be a number in \[0, 1\]"):
        instance_ranking(by_eye(), 2)


def test_the_semantic_predictor_refuses_an_instance_checkpoint_saying_what_it_is(checkpoint):
    from minseg.predict import Predictor
    with pytest.raises(CheckpointError, match=r"holds an instance model \(panoptic\).*InstancePredictor"):
        Predictor.from_checkpoint(checkpoint)
