"""The command line keeps what the user owns and says the real cause: predict's outputs, a full disk, --weights.

Each test is one way a command could lose a file or mislead: two images that would write one mask, a
user's own ``photo_mask.png``, an unreadable image found after masks were written, a disk that fills
during a checkpoint, initial weights for another class count, NaN or one wrongly named tensor in them.
"""
import errno
import os

import numpy as np
import pytest
from PIL import Image
from test_cli import TINY, run_cli, train, write_dataset
from test_cli_fuzz import FIXTURE

from minseg.app.run import create_model
from minseg.checkpoint import load_checkpoint
from minseg.models import create, save_weights


def one_error_line(status, err):
    lines = err.strip().splitlines()
    assert status == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def photo(path, value=0, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)
    return path


def predict(capsys, *argv):
    return run_cli(capsys, "predict", "--checkpoint", FIXTURE, "--no-progress", "--threads", "1", *argv)


@pytest.fixture
def data(tmp_path):
    return write_dataset(tmp_path / "data", n=10, size=(8, 8))


# --- predict never loses a file ---------------------------------------------------------------------
def test_two_images_with_one_stem_are_refused_not_collapsed_into_one_mask(tmp_path, capsys):
    first, second = photo(tmp_path / "a" / "photo.png"), photo(tmp_path / "b" / "photo.jpg", 200)
    line = one_error_line(*predict(capsys, tmp_path / "a", tmp_path / "b", "--out", tmp_path / "out")[::2])
    assert str(first) in line and str(second) in line and "same name" in line
    assert not (tmp_path / "out").exists()


def test_the_same_image_named_twice_is_predicted_once(tmp_path, capsys):
    image = photo(tmp_path / "a" / "photo.png")
    status, printed, _ = predict(capsys, image, tmp_path / "a", "--out", tmp_path / "out")
    assert status == 0 and "wrote 1 mask (" in printed and "1 masks" not in printed


def test_predicting_into_the_images_folder_keeps_the_users_own_mask(tmp_path, capsys):
    folder = tmp_path / "photos"
    photo(folder / "photo.jpg")
    own = folder / "photo_mask.png"
    own.write_bytes(b"the user's ground truth")
    line = one_error_line(*predict(capsys, folder / "photo.jpg", "--out", folder)[::2])
    assert "photo_mask.png" in line and "--overwrite" in line
    assert own.read_bytes() == b"the user's ground truth" and not (folder / "photo_overlay.png").exists()

    status, _, _ = predict(capsys, folder / "photo.jpg", "--out", folder, "--overwrite")
    assert status == 0 and Image.open(own).mode == "P"


def test_an_output_that_is_an_input_image_is_refused_even_with_overwrite(tmp_path, capsys):
    folder = tmp_path / "photos"
    photo(folder / "photo.png")
    photo(folder / "photo_mask.png", 255)  # an image to predict, and photo.png's mask name
    line = one_error_line(*predict(capsys, folder, "--out", folder, "--overwrite")[::2])
    assert "would replace the input image" in line and "photo_mask.png" in line
    assert np.asarray(Image.open(folder / "photo_mask.png")).max() == 255


def test_every_unreadable_image_is_listed_before_anything_is_written(tmp_path, capsys):
    folder = tmp_path / "photos"
    for k in range(4):
        photo(folder / f"{k}.png")
    (folder / "1.png").write_bytes(b"not a png")
    (folder / "3.png").write_bytes((folder / "0.png").read_bytes()[:40])  # truncated inside the pixel data
    line = one_error_line(*predict(capsys, folder, "--out", tmp_path / "out")[::2])
    assert "2 of 4 images cannot be read" in line and "nothing was written" in line
    assert str(folder / "1.png") in line and str(folder / "3.png") in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("pixels, kind", [(40, "DecompressionBombWarning"), (20, "DecompressionBombError")])
def test_a_decompression_bomb_is_refused_in_one_line(tmp_path, capsys, monkeypatch, pixels, kind):
    """Pillow warns past MAX_IMAGE_PIXELS and refuses past twice that; predict refuses both (an 8x8 image
    stands in for a huge one by lowering the limit)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pixels)
    image = photo(tmp_path / "bomb.png")
    line = one_error_line(*predict(capsys, image, "--out", tmp_path / "out")[::2])
    assert str(image) in line and kind in line


@pytest.mark.parametrize("command", ["train", "predict"])
def test_an_out_that_is_a_file_is_one_error_line(tmp_path, capsys, data, command):
    (tmp_path / "file").write_text("mine")
    out = tmp_path / "file" if command == "train" else tmp_path / "file" / "inside"
    if command == "train":
        line = one_error_line(*train(capsys, data, out)[::2])
    else:
        line = one_error_line(*predict(capsys, photo(tmp_path / "p.png"), "--out", out)[::2])
    assert line.startswith(f"error: --out {out}") and "file" in line
    assert (tmp_path / "file").read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a folder whatever its mode")
def test_a_read_only_out_is_one_error_line(tmp_path, capsys, data):
    (tmp_path / "locked").mkdir(mode=0o555)
    line = one_error_line(*train(capsys, data, tmp_path / "locked" / "run")[::2])
    assert "--out" in line and "cannot write there" in line


# --- a full disk ---------------------------------------------------------------------------------
def test_a_full_disk_names_the_file_and_the_checkpoint_that_survived(tmp_path, capsys, data, monkeypatch):
    import minseg.train.learner as learner_module
    save = learner_module.save_checkpoint
    calls = []

    def disk_full_on_the_second_save(path, state):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        save(path, state)

    monkeypatch.setattr(learner_module, "save_checkpoint", disk_full_on_the_second_save)
    out = tmp_path / "run"
    line = one_error_line(*train(capsys, data, out, "--epochs", "3")[::2])
    checkpoint = out / "checkpoint.npz"
    assert line.startswith(f"error: {checkpoint}: No space left on device;")
    assert f"{checkpoint} still holds the run after epoch 1 of 3" in line and f"--out {out} --resume" in line
    assert load_checkpoint(checkpoint)["epoch"] == 1


def test_a_full_disk_while_predicting_names_the_file_and_what_was_done(tmp_path, capsys, monkeypatch):
    from minseg.app import files
    save, calls = files._atomic_save, []

    def disk_full_on_the_third_file(image, path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        save(image, path)

    monkeypatch.setattr(files, "_atomic_save", disk_full_on_the_third_file)
    images = [photo(tmp_path / "photos" / f"{k}.png") for k in range(3)]
    line = one_error_line(*predict(capsys, *images, "--out", tmp_path / "out")[::2])
    assert f"cannot write {tmp_path / 'out'}/1_*.png (No space left on device)" in line
    assert "the masks of 1 of 3 images were written before it" in line


def test_running_out_of_memory_is_one_line_naming_the_options_that_size_it(tmp_path, capsys, data, monkeypatch):
    import minseg.app.train_command as train_command

    def too_big(options, state, comm):
        raise MemoryError
    monkeypatch.setattr(train_command, "TrainingRun", too_big)
    line = one_error_line(*train(capsys, data, tmp_path / "run")[::2])
    assert "out of memory" in line and "--batch-size" in line and "--crop" in line


# --- --weights -----------------------------------------------------------------------------------
def test_weights_for_another_class_count_start_a_fine_tune(tmp_path, capsys, data):
    source = create("unet", 3, base=2)
    save_weights(source, tmp_path / "three.safetensors")
    model = create_model({"name": "unet", "options": {"base": 2}}, 5, tmp_path / "three.safetensors")
    printed = capsys.readouterr().out
    assert "(whole model)" in printed and "for 5 classes these start afresh: head.weight, head.bias" in printed
    for name, array in source.state_dict().items():
        if not name.startswith("head."):
            np.testing.assert_array_equal(model.state_dict()[name], array)
    assert model.state_dict()["head.weight"].shape[0] == 5

    (data / "codes.txt").write_text("red\ngreen\nblue\nwhite\n")  # a fourth class: the same masks, a new head
    status, printed, _ = train(capsys, data, tmp_path / "run", "--epochs", "1", "--weights",
                               tmp_path / "three.safetensors")
    assert status == 0 and "for 4 classes these start afresh: head.weight, head.bias" in printed


def test_weights_with_one_wrong_name_say_which_not_a_prefix(tmp_path, capsys, data):
    from safetensors.numpy import load_file, save_file
    save_weights(create("unet", 3, base=2), tmp_path / "w.safetensors")
    arrays = load_file(str(tmp_path / "w.safetensors"))
    arrays["heads.weight"] = arrays.pop("head.weight")
    save_file(arrays, str(tmp_path / "renamed.safetensors"))
    line = one_error_line(*train(capsys, data, tmp_path / "run", "--weights", tmp_path / "renamed.safetensors")[::2])
    assert "head.weight" in line and "heads.weight" in line and "prefix" not in line


def test_nan_weights_are_named_as_the_cause_not_the_learning_rate(tmp_path, capsys, data):
    from safetensors.numpy import load_file, save_file
    save_weights(create("unet", 3, base=2), tmp_path / "w.safetensors")
    arrays = load_file(str(tmp_path / "w.safetensors"))
    arrays["head.bias"] = np.full_like(arrays["head.bias"], np.nan)
    save_file(arrays, str(tmp_path / "nan.safetensors"))
    line = one_error_line(*train(capsys, data, tmp_path / "run", "--weights", tmp_path / "nan.safetensors")[::2])
    assert "NaN or infinite values (in head.bias)" in line and "learning rate" not in line


@pytest.mark.parametrize("value", ["inf", "nan", "1e30"])
def test_a_weight_decay_that_would_diverge_is_refused_before_training(tmp_path, capsys, data, value):
    line = one_error_line(*train(capsys, data, tmp_path / "run", "--weight-decay", value)[::2])
    assert "--weight-decay" in line and "learning rate" not in line
    line = one_error_line(*train(capsys, data, tmp_path / "run", "--weight-decay", "1", "--lr", "1")[::2])
    assert "lr × weight decay must be < 1" in line


# --- messages in the flags' words ---------------------------------------------------------------------
@pytest.fixture
def rgb_masks(tmp_path):
    root = tmp_path / "rgb"
    for k in range(4):
        photo(root / "images" / f"{k}.png")
        photo(root / "masks" / f"{k}.png", 7)
    (tmp_path / "colors.txt").write_text("0 0 0 a\n255 255 255 b\n")
    return root


def test_mask_errors_speak_the_flags(tmp_path, capsys, rgb_masks):
    base = ["train", "--data", rgb_masks, "--out", tmp_path / "run", "--layout", "folders", *TINY]
    line = one_error_line(*run_cli(capsys, *base)[::2])
    assert "--classes" in line and "--mask-values" in line and "--colors" in line and "classes=[" not in line
    status, _, err = run_cli(capsys, *base, "--classes", "a,b")
    assert status == 2 and "--colors FILE" in err and "colour table" not in err
    status, _, err = run_cli(capsys, *base, "--colors", tmp_path / "colors.txt")  # 4 problems: listed above
    assert status == 2 and err.splitlines()[-1].startswith("error: ") and "colour table" not in err
    assert "colours --colors does not list: [(7, 7, 7)]" in err.splitlines()[-1]
    line = one_error_line(*run_cli(capsys, *base, "--colors", tmp_path / "colors.txt", "--ignore", "255")[::2])
    assert line.startswith("error: --ignore with --colors must list colours 'R G B'")
    line = one_error_line(*run_cli(capsys, *base, "--colors", tmp_path / "nofile")[::2])
    assert line.startswith(f"error: --colors {tmp_path / 'nofile'}: no such file")


def test_a_split_that_leaves_nothing_to_train_on_is_one_line(tmp_path, capsys):
    data = write_dataset(tmp_path / "two", n=2, size=(8, 8))
    line = one_error_line(*train(capsys, data, tmp_path / "run", "--valid-fraction", "0.9")[::2])
    assert line.startswith("error: --valid-fraction 0.9 leaves none of the 2 images")
