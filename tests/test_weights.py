"""Tests for save_weights / load_weights: round trip, PyTorch-named files, strict and non-strict reports, bad files.

The "PyTorch" files here are written with the safetensors package's NumPy API from arrays named as torchvision
names them (the shapes come from tests/test_resnet.py's reading of torchvision's definition), so no torch is needed.
"""
import os

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from test_resnet import torchvision_resnet_shapes

import minseg
import minseg.models.weights as weights_module
import minseg.nn as nn
from minseg import Tensor
from minseg.models import LoadReport, ResNetEncoder, compare_weights, create, load_weights, save_weights


class Small(nn.Module):
    """conv → BatchNorm → head: parameters and every kind of buffer, in a few hundred numbers."""

    def __init__(self, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, classes, 1)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)))


def torchvision_checkpoint(blocks=(2, 2, 2, 2), seed=0):
    """Random arrays under torchvision's resnet names and dtypes, classifier ``fc`` included."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in torchvision_resnet_shapes(blocks).items():
        if name.endswith("num_batches_tracked"):
            arrays[name] = np.array(rng.integers(1, 10_000), np.int64)   # a 0-d int64, as torch writes it
        elif name.endswith("running_var"):
            arrays[name] = rng.uniform(0.5, 2, shape).astype(np.float32)
        else:
            arrays[name] = rng.standard_normal(shape).astype(np.float32)
    arrays["fc.weight"] = rng.standard_normal((1000, 512)).astype(np.float32)
    arrays["fc.bias"] = rng.standard_normal(1000).astype(np.float32)
    return arrays


def test_save_then_load_gives_back_every_parameter_and_buffer(tmp_path):
    minseg.manual_seed(0)
    model = Small()
    model(Tensor(np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32)))  # updates the BN stats
    path = tmp_path / "small.safetensors"
    save_weights(model, path)
    minseg.manual_seed(1)
    other = Small()
    assert load_weights(other, path) == LoadReport([], [], [])
    for (name, saved), (_, loaded) in zip(model.state_dict().items(), other.state_dict().items()):
        assert loaded.dtype == saved.dtype and loaded.shape == saved.shape, name
        np.testing.assert_array_equal(loaded, saved, err_msg=name)
    assert other.bn.num_batches_tracked.item() == 1
    x = Tensor(np.ones((1, 2, 4, 4), np.float32))
    np.testing.assert_array_equal(model.eval()(x).numpy(), other.eval()(x).numpy())
    assert sorted(os.listdir(tmp_path)) == ["small.safetensors"]   # no temporary file left behind


def test_the_file_holds_pytorch_names_and_layouts(tmp_path):
    model = Small()
    save_weights(model, tmp_path / "small.safetensors")
    stored = load_file(str(tmp_path / "small.safetensors"))
    assert set(stored) == {"conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                           "bn.num_batches_tracked", "head.weight", "head.bias"}
    assert stored["conv.weight"].shape == (4, 2, 3, 3) and stored["bn.num_batches_tracked"].shape == ()
    assert stored["bn.num_batches_tracked"].dtype == np.int64


def test_a_torchvision_checkpoint_loads_into_the_encoder_and_reports_its_classifier(tmp_path):
    arrays = torchvision_checkpoint()
    path = str(tmp_path / "resnet18.safetensors")
    save_file(arrays, path)
    encoder = create("unet", 5, encoder="resnet18").encoder
    with pytest.raises(ValueError, match=r"unexpected keys \(in the file, not in the model\): fc\.bias, fc\.weight"):
        load_weights(encoder, path)
    report = load_weights(encoder, path, strict=False)
    assert report == LoadReport(missing_keys=[], unexpected_keys=["fc.bias", "fc.weight"], mismatched_keys=[])
    state = encoder.state_dict()
    assert set(state) == set(arrays) - {"fc.weight", "fc.bias"}
    for name, array in state.items():
        np.testing.assert_array_equal(array, arrays[name], err_msg=name)
        assert array.dtype == arrays[name].dtype


def test_a_whole_model_file_loads_into_the_whole_model_only(tmp_path):
    model = create("linknet", 4, encoder="resnet18")
    path = tmp_path / "linknet.safetensors"
    save_weights(model, path)
    other = create("linknet", 4, encoder="resnet18")
    with pytest.raises(ValueError, match="no tensor in .* fits ResNetEncoder; the file's names carry the prefix "
                                         "'encoder.' .*load it into the module that holds this one as .encoder"):
        load_weights(other.encoder, path, strict=False)
    save_weights(model.encoder, path)
    with pytest.raises(ValueError, match="fits Linknet; the module's names carry the prefix 'encoder.' .*load the "
                                         "file into module.encoder"):
        load_weights(other, path, strict=False)
    assert load_weights(other.encoder, path) == LoadReport([], [], [])


def test_strict_loading_names_every_missing_unexpected_and_mismatched_key_and_loads_nothing(tmp_path):
    model = Small()
    arrays = model.state_dict()
    del arrays["bn.running_var"], arrays["head.bias"]
    arrays["head.weight"] = np.zeros((5, 4, 1, 1), np.float32)       # 5 classes instead of 3
    arrays["extra.weight"] = np.zeros(2, np.float32)
    arrays["conv.weight"] = arrays["conv.weight"] + 1
    path = str(tmp_path / "bad.safetensors")
    save_file(arrays, path)
    before = model.conv.weight.numpy().copy()
    with pytest.raises(ValueError) as error:
        load_weights(model, path)
    message = str(error.value)
    assert message.startswith(f"load_weights: {path!r} does not fit Small: ")
    assert "missing keys (in the model, not in the file): bn.running_var, head.bias" in message
    assert "unexpected keys (in the file, not in the model): extra.weight" in message
    assert "head.weight is (3, 4, 1, 1) in the model but (5, 4, 1, 1) in the file" in message
    assert message.endswith("pass strict=False to load only the tensors that match")
    np.testing.assert_array_equal(model.conv.weight.numpy(), before)


def test_non_strict_loading_loads_what_fits_and_returns_the_rest(tmp_path):
    # The usual case: a model trained for 5 classes fine-tuned for 3; the head must start afresh.
    minseg.manual_seed(0)
    trained = Small(classes=5)
    path = tmp_path / "five.safetensors"
    save_weights(trained, path)
    minseg.manual_seed(1)
    model = Small(classes=3)
    head_before = model.head.weight.numpy().copy()
    report = load_weights(model, path, strict=False)
    assert report.missing_keys == [] and report.unexpected_keys == []
    assert report.mismatched_keys == [("head.weight", (3, 4, 1, 1), (5, 4, 1, 1)), ("head.bias", (3,), (5,))]
    np.testing.assert_array_equal(model.conv.weight.numpy(), trained.conv.weight.numpy())
    np.testing.assert_array_equal(model.bn.running_var.numpy(), trained.bn.running_var.numpy())
    np.testing.assert_array_equal(model.head.weight.numpy(), head_before)


def test_compare_weights_reports_what_loading_would_skip_and_loads_nothing(tmp_path):
    save_weights(Small(classes=5), tmp_path / "five.safetensors")
    model = Small(classes=3)
    before = model.state_dict()
    report = compare_weights(model, tmp_path / "five.safetensors")
    assert report == load_weights(Small(classes=3), tmp_path / "five.safetensors", strict=False)
    for name, array in model.state_dict().items():
        np.testing.assert_array_equal(array, before[name])


def test_arrays_take_the_models_dtype(tmp_path):
    arrays = {name: array.astype(np.float64) if array.dtype == np.float32 else array
              for name, array in Small().state_dict().items()}
    save_file(arrays, str(tmp_path / "double.safetensors"))
    model = Small()
    load_weights(model, tmp_path / "double.safetensors")
    assert model.conv.weight.dtype == np.float32
    np.testing.assert_allclose(model.conv.weight.numpy(), arrays["conv.weight"], rtol=1e-7)


def test_a_missing_file_is_named(tmp_path):
    path = str(tmp_path / "nowhere.safetensors")
    with pytest.raises(FileNotFoundError, match=f"load_weights: path must be an existing .safetensors file, got "
                                                f"'{path}', which does not exist"):
        load_weights(Small(), path)


@pytest.mark.parametrize("content", [b"", b"not a safetensors file at all", b"PK\x03\x04 a pickled .pth zip"])
def test_an_unreadable_file_is_named(tmp_path, content):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"load_weights: '{path}' is not a readable .safetensors file"):
        load_weights(Small(), path)


def test_a_truncated_file_is_named(tmp_path):
    path = tmp_path / "cut.safetensors"
    save_weights(Small(), path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="is not a readable .safetensors file"):
        load_weights(Small(), path)


def test_a_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    save_weights(Small(), path)
    old = path.read_bytes()

    def crash(arrays, filename):
        with open(filename, "wb") as half_written:
            half_written.write(b"\0" * 7)
        raise KeyboardInterrupt

    monkeypatch.setattr(weights_module, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_weights(Small(), path)
    assert path.read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]


def test_an_encoder_round_trip_keeps_its_outputs(tmp_path):
    minseg.manual_seed(0)
    encoder = ResNetEncoder("resnet18", output_stride=16).eval()
    save_weights(encoder, tmp_path / "encoder.safetensors")
    minseg.manual_seed(1)
    other = ResNetEncoder("resnet18", output_stride=16).eval()
    load_weights(other, tmp_path / "encoder.safetensors")
    x = Tensor(np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32))
    with minseg.no_grad():
        np.testing.assert_array_equal(encoder(x)[-1].numpy(), other(x)[-1].numpy())
