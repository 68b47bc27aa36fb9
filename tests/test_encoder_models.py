"""Tests for the segmentation_models family (Unet, Linknet, FPN, PSPNet, DeepLabV3, DeepLabV3Plus on ResNets).

smp 0.6.0 itself cannot run here (tests never import torch), so its state dicts are pinned by what they must be:
the parameter counts the issue measured from smp, and a fingerprint of the sorted "name shape" lines of smp's
``state_dict()``, written by running ``benchmarks/smp_crosscheck.py --fingerprints`` where smp is installed. That
script also compares the outputs with smp's on the same weights.
"""
import functools
import hashlib

import numpy as np
import pytest

import minseg
import minseg.functional as F
from minseg import Tensor
from minseg.models import FPN, MODELS, DeepLabV3, DeepLabV3Plus, Linknet, PaperLinkNet, PaperUNet, PSPNet, Unet, create

NAMES = ["unet", "linknet", "fpn", "pspnet", "deeplabv3", "deeplabv3plus"]

# (model, encoder): parameters with 32 classes (the table, measured from smp 0.6.0), state-dict entries
# (parameters and buffers) and the sha256 prefix of smp's sorted "name shape" lines.
SMP = {
    ("unet", "resnet18"): (14_332_704, 182, "db4ec403ebe60411"),
    ("unet", "resnet34"): (24_440_864, 278, "3431bb21bce8d1e8"),
    ("linknet", "resnet18"): (11_664_800, 217, "6d32070fea1f7d04"),
    ("linknet", "resnet34"): (21_772_960, 313, "c6ffab58a3e33edc"),
    ("fpn", "resnet18"): (13_051_232, 151, "d6ae9e62eb4a58fe"),
    ("fpn", "resnet34"): (23_159_392, 247, "95e2854769f1c224"),
    ("pspnet", "resnet18"): (11_472_704, 148, "470668813977d592"),
    ("pspnet", "resnet34"): (21_580_864, 244, "08313e59bf46efba"),
    ("deeplabv3", "resnet18"): (15_906_912, 164, "40d4ca143b4194e3"),
    ("deeplabv3", "resnet34"): (26_015_072, 260, "b8a32c811202f52b"),
    ("deeplabv3plus", "resnet18"): (12_337_264, 181, "31a4226914b86275"),
    ("deeplabv3plus", "resnet34"): (22_445_424, 277, "26353ab2608b6604"),
}


@functools.lru_cache(maxsize=None)
def built(name, encoder="resnet18", num_classes=32):
    """One model per configuration for the tests that only read it (a ResNet-34 model takes a second to build)."""
    minseg.manual_seed(0)
    return create(name, num_classes, encoder=encoder)


def fingerprint(model):
    lines = "\n".join(f"{name} {tuple(array.shape)}" for name, array in sorted(model.state_dict().items()))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def random_input(shape, seed=0, dtype=np.float32):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


# --- the state dict is smp's ----------------------------------------------------------
@pytest.mark.parametrize("name, encoder", list(SMP))
def test_parameter_count_and_state_dict_are_smps(name, encoder):
    parameters, entries, digest = SMP[name, encoder]
    model = built(name, encoder)
    assert sum(p.size for p in model.parameters()) == parameters
    state = model.state_dict()
    assert len(state) == entries
    assert fingerprint(model) == digest
    assert all(array.dtype == (np.int64 if key.endswith("num_batches_tracked") else np.float32)
               for key, array in state.items())


def test_some_state_dict_names_read_as_smps():
    keys = {name: set(built(name).state_dict()) for name in NAMES}
    assert {"encoder.layer4.1.bn2.running_var", "decoder.blocks.4.conv2.0.weight",
            "segmentation_head.0.bias"} <= keys["unet"]
    assert "decoder.blocks.0.block.1.0.bias" in keys["linknet"]            # the transposed conv keeps its bias
    assert {"decoder.p5.weight", "decoder.seg_blocks.0.block.2.block.1.weight"} <= keys["fpn"]   # GroupNorm
    assert {"decoder.psp.blocks.0.pool.1.0.bias", "decoder.psp.blocks.3.pool.1.1.running_mean"} <= keys["pspnet"]
    assert "decoder.psp.blocks.0.pool.1.1.running_mean" not in keys["pspnet"]   # no BatchNorm on the 1x1 level
    assert {"decoder.aspp.convs.4.1.weight", "decoder.conv.weight", "decoder.bn.num_batches_tracked"} \
        <= keys["deeplabv3"]
    assert {"decoder.aspp.0.convs.1.0.0.weight", "decoder.block1.0.weight", "decoder.block2.0.1.weight"} \
        <= keys["deeplabv3plus"]
    assert built("deeplabv3plus").state_dict()["decoder.aspp.0.convs.1.0.0.weight"].shape == (512, 1, 3, 3)


# --- outputs --------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_output_is_one_score_per_class_and_pixel(name, mode):
    model = built(name).train(mode == "train")
    x = random_input((2, 3, 64, 96))
    with minseg.no_grad():
        y = model(x)
    model.train()
    assert y.shape == (2, 32, 64, 96) and y.dtype == np.float32
    assert np.all(np.isfinite(y.numpy()))


def test_eval_mode_is_deterministic_and_per_image():
    model = built("deeplabv3plus").eval()
    x = random_input((3, 3, 32, 48), seed=1)
    with minseg.no_grad():
        together, again, alone = model(x).numpy(), model(x).numpy(), model(x[1:2]).numpy()
    model.train()
    np.testing.assert_array_equal(together, again)
    np.testing.assert_allclose(alone[0], together[1], rtol=1e-4, atol=1e-5)


def test_unet_takes_any_size_as_smps_does():
    with minseg.no_grad():
        y = built("unet").eval()(random_input((1, 3, 45, 70)))
    built("unet").train()
    assert y.shape == (1, 32, 45, 70)


@pytest.mark.parametrize("name, size, message", [
    ("linknet", (48, 64), "Linknet with output stride 32 needs height and width divisible by 32, got 48x64; "
                          "pad the input to 64x64"),
    ("fpn", (96, 100), "FPN with output stride 32 needs height and width divisible by 32, got 96x100; "
                       "pad the input to 96x128"),
    ("pspnet", (36, 64), "PSPNet with output stride 8 needs height and width divisible by 8, got 36x64; "
                         "pad the input to 40x64"),
    ("deeplabv3", (64, 60), "DeepLabV3 with output stride 8 needs height and width divisible by 8, got 64x60; "
                            "pad the input to 64x64"),
    ("deeplabv3plus", (40, 64), "DeepLabV3Plus with output stride 16 needs height and width divisible by 16, "
                                "got 40x64; pad the input to 48x64"),
])
def test_an_unsupported_size_gets_the_multiple_and_the_padded_size(name, size, message):
    with pytest.raises(ValueError, match=message):
        built(name)(random_input((1, 3) + size))


@pytest.mark.parametrize("model_class, options, stride", [
    (DeepLabV3, {"encoder_output_stride": 16}, 16), (DeepLabV3Plus, {"encoder_output_stride": 8}, 8),
    (PSPNet, {"encoder_depth": 4, "upsampling": 16}, 16), (Linknet, {"encoder_depth": 4}, 16),
])
def test_options_change_the_stride_and_the_output_still_fits(model_class, options, stride):
    model = model_class(4, encoder="resnet18", in_channels=1, **options)
    assert model.encoder.output_stride == stride
    assert model(random_input((2, 1, 2 * stride, 3 * stride))).shape == (2, 4, 2 * stride, 3 * stride)


# --- gradients --------------------------------------------------------------------------
def to_float64(model):
    for tensor in list(model.parameters()) + [b for _, b in model.named_buffers()]:
        if tensor.data.dtype.kind == "f":
            tensor.data = tensor.data.astype(np.float64)
    return model


@pytest.mark.parametrize("name, chosen", [
    ("fpn", ["decoder.seg_blocks.1.block.0.block.1.weight", "decoder.p4.skip_conv.weight"]),
    ("deeplabv3plus", ["decoder.aspp.0.convs.2.0.0.weight", "decoder.block2.0.1.weight"]),
    ("pspnet", ["decoder.psp.blocks.0.pool.1.0.weight", "decoder.psp.blocks.3.pool.1.1.weight"]),
])
def test_loss_gradient_through_the_decoder_matches_finite_differences(name, chosen):
    # Eval mode: the dropout layers pass everything, so the loss is a fixed function of the weights.
    minseg.manual_seed(4)
    model = to_float64(create(name, 3, encoder="resnet18")).eval()
    rng = np.random.default_rng(5)
    x = Tensor(rng.standard_normal((1, 3, 32, 32)), requires_grad=True)
    target = Tensor(rng.integers(0, 3, size=(1, 32, 32)))
    named = dict(model.named_parameters())
    parameters = [named[n] for n in chosen] + [named["encoder.conv1.weight"], named["segmentation_head.0.weight"]]

    def loss(x, *parameters):
        return F.cross_entropy(model(x), target)

    assert minseg.gradcheck(loss, [x] + parameters, eps=1e-7, n_samples=4)


# --- create ---------------------------------------------------------------------------------
def test_create_picks_the_encoder_version_only_when_asked():
    assert type(create("unet", 3, base=4)) is PaperUNet
    assert type(create("linknet", 3, base=4)) is PaperLinkNet
    assert type(built("unet")) is Unet and type(built("linknet")) is Linknet
    assert type(built("fpn")) is FPN and type(built("pspnet")) is PSPNet
    assert built("fpn").encoder.name == "resnet18"
    assert set(MODELS) >= {"naive", "unet", "linknet", "fpn", "pspnet", "deeplabv3", "deeplabv3plus"}


def test_create_without_an_encoder_uses_smps_default_resnet34():
    model = create("deeplabv3", 2, in_channels=1, decoder_channels=16)
    assert model.encoder.name == "resnet34" and model.encoder.conv1.weight.shape == (64, 1, 7, 7)


@pytest.mark.parametrize("call, error, message", [
    (lambda: create("naive", 3, encoder="resnet18"), ValueError,
     "create: model 'naive' takes no encoder, got encoder='resnet18'; the models with an encoder are 'unet'"),
    (lambda: create("unet", 3, encoder="resnet50"), ValueError,
     "make_encoder: encoder must be one of 'resnet18', 'resnet34', 'densenet121', 'inceptionv4', got 'resnet50'"),
    (lambda: DeepLabV3(3, encoder_output_stride=32), ValueError,
     "DeepLabV3: encoder_output_stride must be 8 or 16, got 32"),
    (lambda: Unet(3, decoder_channels=(16, 8)), ValueError,
     r"Unet: decoder_channels must have one entry per encoder stage \(5\), got \(16, 8\)"),
    (lambda: FPN(3, decoder_merge_policy="mean"), ValueError,
     "FPN: decoder_merge_policy must be 'add' or 'cat', got 'mean'"),
])
def test_bad_options_are_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


# --- ASPP's dilated convs skip the taps that read only padding -----------------------------------
@pytest.mark.parametrize("height, width, rate, groups", [
    (6, 8, 24, 1),    # both directions trimmed: a 1x1 conv of the centre weights
    (6, 8, 6, 1),     # rows trimmed (6 >= 6), columns kept (6 < 8)
    (12, 16, 12, 4),  # grouped, rows trimmed
    (5, 9, 2, 2),     # nothing trimmed: the plain path
])
def test_atrous_conv_equals_the_full_dilated_conv_forward_and_backward(height, width, rate, groups):
    from minseg.models.deeplab import AtrousConv2d
    minseg.manual_seed(6)
    conv = AtrousConv2d(4, 8, 3, padding=rate, dilation=rate, groups=groups)
    rng = np.random.default_rng(7)
    x = Tensor(rng.standard_normal((2, 4, height, width)), requires_grad=True)
    conv.weight.data = conv.weight.data.astype(np.float64)
    conv.bias.data = conv.bias.data.astype(np.float64)
    grad_y = Tensor(rng.standard_normal((2, 8, height, width)))
    results = []
    for y in (conv(x), F.conv2d(x, conv.weight, conv.bias, 1, rate, rate, groups=groups)):
        x.grad = conv.weight.grad = None
        (y * grad_y).sum().backward()
        results.append((y.numpy(), x.grad, conv.weight.grad))
    for trimmed, full in zip(*results):
        np.testing.assert_allclose(trimmed, full, rtol=1e-12, atol=1e-12)
    assert conv.weight.shape == (8, 4 // groups, 3, 3)


def _conv_layers(module):
    return [layer for layer in module.modules() if isinstance(layer, minseg.nn.Conv2d)]


def _fan_in_and_out(conv):
    out_channels, in_per_group, kh, kw = conv.weight.shape
    return in_per_group * kh * kw, out_channels * kh * kw


@pytest.mark.parametrize("name", ["unet", "linknet", "fpn", "pspnet"])
def test_decoder_and_head_start_as_smp_initializes_them(name):
    """smp's initialize(): decoder convs Kaiming-uniform for ReLU, U(±√(6/fan_in)); head Xavier-uniform,
    U(±√(6/(fan_in + fan_out))); biases 0. Each big layer must fill its bound, not just stay inside it."""
    model = built(name)
    decoder = [(conv, np.sqrt(6 / _fan_in_and_out(conv)[0])) for conv in _conv_layers(model.decoder)]
    head = [(conv, np.sqrt(6 / sum(_fan_in_and_out(conv)))) for conv in _conv_layers(model.segmentation_head)]
    for conv, bound in decoder + head:
        weight = conv.weight.data
        assert np.abs(weight).max() <= bound
        if weight.size >= 2000:  # enough draws: a uniform on (−b, b) has standard deviation b/√3
            np.testing.assert_allclose(weight.std(), bound / np.sqrt(3), rtol=0.1)
        if conv.bias is not None:
            assert not conv.bias.data.any()


@pytest.mark.parametrize("name", ["deeplabv3", "deeplabv3plus"])
def test_deeplab_keeps_each_layers_default_initialization_as_smp_does(name):
    """smp's DeepLabV3 and DeepLabV3+ never call initialize(): their convs keep PyTorch's U(±1/√fan_in)."""
    model = built(name)
    convs = _conv_layers(model.decoder) + _conv_layers(model.segmentation_head)
    widest = max(convs, key=lambda conv: conv.weight.size)
    bound = 1 / np.sqrt(_fan_in_and_out(widest)[0])
    assert np.abs(widest.weight.data).max() <= bound
    np.testing.assert_allclose(widest.weight.data.std(), bound / np.sqrt(3), rtol=0.1)
