"""A training step of one image: refused before training where batch norm would get one value per channel.

Batch norm in training mode normalizes by the batch's own statistics; one image whose feature map is 1×1 at a
batch norm (DeepLabV3's image pooling on any image, the deepest stage of FCN on a small one) leaves one value per
channel. ``minseg train`` tries one image at each input size a step can have before training, and refuses with
one line naming --batch-size; where every batch norm sees more than one value, a batch of one trains as before.
"""
import types

import numpy as np
import pytest
from test_cli import train, write_dataset

from minseg.app.cli import TRAIN_DEFAULTS
from minseg.app.options import UsageError
from minseg.app.run import TrainingRun, _batch_norm_fails_on_one_image
from minseg.models import create
from minseg.random import get_state, manual_seed


@pytest.fixture
def data(tmp_path):
    return write_dataset(tmp_path / "data", n=6, size=(13, 17))


def one_error_line(status, err):
    lines = err.strip().splitlines()
    assert status == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_batch_size_1_with_batch_norm_on_a_pooled_map_is_one_line_before_training(tmp_path, capsys, data):
    status, _, err = train(capsys, data, tmp_path / "run", "--model", "deeplabv3", "--batch-size", "1")
    line = one_error_line(status, err)
    assert line.startswith("error: --batch-size 1: --model deeplabv3 has batch norm on a 1×1 feature map for a "
                           "16x24 image") and line.endswith("use --batch-size 2 or more")
    assert not (tmp_path / "run").exists()


def test_a_size_that_shrinks_to_1x1_is_refused_and_a_larger_crop_trains(tmp_path, capsys, data):
    status, _, err = train(capsys, data, tmp_path / "run", "--model", "fcn8s", "--batch-size", "1")
    assert "a 1×1 feature map for a 32x32 image" in one_error_line(status, err)
    status, printed, err = train(capsys, data, tmp_path / "run", "--model", "fcn8s", "--batch-size", "1",
                                 "--crop", "64x64", "--epochs", "1")
    assert status == 0 and "validation after 1 epoch" in printed, err


def test_a_batch_of_one_that_batch_norm_can_normalize_trains(tmp_path, capsys, data):
    status, printed, err = train(capsys, data, tmp_path / "run", "--model", "unet", "--batch-size", "1",
                                 "--epochs", "1")
    assert status == 0 and "validation after 1 epoch" in printed, err


def test_a_training_split_of_one_image_names_the_split(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", n=2, size=(13, 17))
    status, _, err = train(capsys, data, tmp_path / "run", "--model", "deeplabv3", "--valid-every", "2")
    line = one_error_line(status, err)
    assert line.startswith(f"error: --data {data}: the training split holds one image") and "add images" in line


def test_a_share_of_one_image_per_rank_without_synchronized_batch_norm_is_refused(tmp_path, data):
    options = dict(TRAIN_DEFAULTS, data=str(data), out=str(tmp_path / "run"), model="deeplabv3", batch_size=2,
                   sync_bn=False, progress=False, threads=1)
    rank_0_of_2 = types.SimpleNamespace(size=2, rank=0, barrier=lambda: None)
    with pytest.raises(UsageError, match=r"^--batch-size 2 over 2 ranks with --no-sync-bn gives a rank one image in "
                                         r"a step, .*synchronize batch norm \(leave out --no-sync-bn\)"):
        TrainingRun(options, None, rank_0_of_2)


def test_the_trial_forward_leaves_weights_statistics_mode_and_generator_as_they_were():
    manual_seed(3)
    model = create("deeplabv3", 3).eval()
    weights, generator = model.state_dict(), get_state()
    assert _batch_norm_fails_on_one_image(model, (32, 32), "cpu")
    after = model.state_dict()
    assert not model.training and get_state() == generator
    assert all(np.array_equal(weights[name], after[name]) for name in weights)

    model = create("enet", 3)  # dropout in training mode draws from the generator
    weights, generator = model.state_dict(), get_state()
    assert not _batch_norm_fails_on_one_image(model, (32, 32), "cpu")
    assert model.training and get_state() == generator
    assert all(np.array_equal(weights[name], model.state_dict()[name]) for name in weights)


def test_the_sizes_tried_are_the_crop_or_the_padded_sizes_no_other_fits_inside():
    def sizes(crop, shapes, in_memory=True):
        images = [np.zeros((*shape, 3), np.uint8) for shape in shapes]
        train_set = type("Split", (), {"in_memory": in_memory, "images": images,
                                       "__getitem__": lambda self, index: (images[index], None)})()
        run = types.SimpleNamespace(options={"crop": crop}, model=types.SimpleNamespace(size_multiple=32),
                                    train_set=train_set)
        return TrainingRun._one_image_sizes(run)

    assert sizes((64, 96), [(13, 17)]) == [(64, 96)]
    assert sizes(None, [(13, 17), (30, 30), (40, 40)]) == [(32, 32)]
    assert sizes(None, [(40, 20), (20, 40), (64, 64)]) == [(32, 64), (64, 32)]
    assert sizes(None, [(70, 20), (20, 40)], in_memory=False) == [(96, 32)]  # lazy: the first image's
