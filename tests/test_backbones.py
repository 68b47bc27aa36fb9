"""Tests for the DenseNet-121 and Inception-v4 encoders (minseg/models/densenet.py, inception.py) under smp's Unet,
Linknet, FPN and PSPNet.

As in test_encoder_models.py, smp 0.6.0 cannot run here, so its models are pinned by the parameter counts the issue
measured from smp and by a fingerprint of the sorted "name shape" lines of smp's ``state_dict()``
(``benchmarks/smp_crosscheck.py --fingerprints`` prints them where smp is installed; the same script compares the
outputs with smp's on the same weights). The encoders are built from existing layers only (concatenation,
convolutions, BatchNorm, pooling), so their gradients are checked end to end on a small input.
"""
import functools

import numpy as np
import pytest
from test_encoder_models import fingerprint, random_input, to_float64

import minseg
from minseg import Tensor
from minseg.models import ENCODERS, DeepLabV3, DeepLabV3Plus, DenseNetEncoder, InceptionV4Encoder, create
from minseg.models.densenet import DenseBlock
from minseg.models.inception import InceptionC, Mixed3a, Mixed5a

MODELS = ["unet", "linknet", "fpn", "pspnet"]

# (model, encoder): parameters with 32 classes (measured from smp 0.6.0), state-dict entries (parameters and
# buffers) and the sha256 prefix of smp's sorted "name shape" lines.
SMP = {
    ("unet", "densenet121"): (13_612_128, 787, "dc76b5697b48d4b2"),
    ("linknet", "densenet121"): (10_429_040, 822, "9661b980f5a1c1ad"),
    ("fpn", "densenet121"): (9_303_712, 756, "9ff15cbe7cfbf885"),
    ("pspnet", "densenet121"): (7_889_696, 753, "7bf6b6e7858b5901"),
    ("unet", "inceptionv4"): (48_796_416, 956, "97bf4bc1c85e636c"),
    ("linknet", "inceptionv4"): (46_160_160, 991, "62f684195d613536"),
    ("fpn", "inceptionv4"): (43_574_592, 925, "bfcceaa2f6fee6ac"),
    ("pspnet", "inceptionv4"): (41_832_672, 922, "0190d130fb164f0d"),
}
OUT_CHANNELS = {"densenet121": (3, 64, 256, 512, 1024, 1024), "inceptionv4": (3, 64, 192, 384, 1024, 1536)}


@functools.lru_cache(maxsize=None)
def built(name, encoder):
    minseg.manual_seed(0)
    return create(name, 32, encoder=encoder)


# --- the state dict is smp's ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, encoder", list(SMP))
def test_parameter_count_and_state_dict_are_smps(name, encoder):
    parameters, entries, digest = SMP[name, encoder]
    model = built(name, encoder)
    assert sum(p.size for p in model.parameters()) == parameters
    assert len(model.state_dict()) == entries
    assert fingerprint(model) == digest


def test_some_state_dict_names_and_shapes_read_as_smps():
    densenet = built("unet", "densenet121").state_dict()
    assert densenet["encoder.features.conv0.weight"].shape == (64, 3, 7, 7)
    assert densenet["encoder.features.denseblock1.denselayer6.conv1.weight"].shape == (128, 64 + 5 * 32, 1, 1)
    assert densenet["encoder.features.denseblock4.denselayer16.conv2.weight"].shape == (32, 128, 3, 3)
    assert densenet["encoder.features.transition3.conv.weight"].shape == (512, 1024, 1, 1)
    assert densenet["encoder.features.norm5.running_var"].shape == (1024,)
    inception = built("unet", "inceptionv4").state_dict()
    assert inception["encoder.features.0.conv.weight"].shape == (32, 3, 3, 3)
    assert inception["encoder.features.3.conv.bn.running_mean"].shape == (96,)           # Mixed-3a's conv
    assert inception["encoder.features.4.branch1.1.conv.weight"].shape == (64, 64, 1, 7)
    assert inception["encoder.features.6.branch3.1.conv.weight"].shape == (96, 384, 1, 1)  # after the avg-pool
    assert inception["encoder.features.21.branch2_3b.conv.weight"].shape == (256, 512, 3, 1)
    assert not any(key.startswith(("encoder.classifier", "encoder.last_linear")) for key in densenet | inception)


@pytest.mark.parametrize("encoder", ["densenet121", "inceptionv4"])
def test_encoder_out_channels_are_smps(encoder):
    assert built("unet", encoder).encoder.out_channels == OUT_CHANNELS[encoder]
    assert built("pspnet", encoder).encoder.out_channels == OUT_CHANNELS[encoder][:4]
    assert encoder in ENCODERS


def test_inception_batchnorms_use_tensorflows_epsilon():
    norms = [m for m in built("fpn", "inceptionv4").encoder.modules() if isinstance(m, minseg.nn.BatchNorm2d)]
    assert norms and all(norm.eps == 0.001 for norm in norms)


# --- forward: the smallest input each model takes -------------------------------------------------------------
@pytest.mark.parametrize("encoder", ["densenet121", "inceptionv4"])
def test_features_halve_at_each_stride_and_every_model_returns_one_score_per_pixel(encoder):
    x = random_input((1, 3, 32, 32))
    with minseg.no_grad():
        features = built("unet", encoder).eval().encoder(x)
        outputs = {name: built(name, encoder).eval()(x) for name in MODELS}
    assert [f.shape for f in features] == [(1, c, 32 >> i, 32 >> i) for i, c in enumerate(OUT_CHANNELS[encoder])]
    for name, y in outputs.items():
        assert y.shape == (1, 32, 32, 32) and np.all(np.isfinite(y.numpy())), name


@pytest.mark.parametrize("encoder_class", [DenseNetEncoder, InceptionV4Encoder])
def test_a_depth_3_encoder_computes_the_first_three_maps_of_the_full_one(encoder_class):
    x = random_input((1, 3, 32, 32))
    full, short = encoder_class(depth=5).eval(), encoder_class(depth=3).eval()
    short.load_state_dict(full.state_dict())
    with minseg.no_grad():
        got, expected = short(x), full(x)[:4]
    assert len(got) == 4 and short.output_stride == 8
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# --- the two ideas, as behaviour -----------------------------------------------------------------------------
def test_a_dense_block_keeps_its_input_and_appends_growth_rate_channels_per_layer():
    minseg.manual_seed(2)
    block = DenseBlock(3, 8, growth_rate=4).eval()
    x = random_input((2, 8, 5, 5))
    with minseg.no_grad():
        y = block(x)
        first = block.denselayer1(x)
    assert y.shape == (2, 8 + 3 * 4, 5, 5)
    np.testing.assert_array_equal(y.numpy()[:, :8], x.numpy())        # concatenation, not addition
    np.testing.assert_array_equal(y.numpy()[:, 8:12], first.numpy())
    assert block.denselayer3.conv1.weight.shape == (16, 8 + 2 * 4, 1, 1)  # layer 3 reads all 16 channels


def test_mixed_branches_are_concatenated_in_pretrainedmodels_order():
    minseg.manual_seed(3)
    x = random_input((1, 64, 8, 8))
    with minseg.no_grad():
        y = Mixed3a().eval()(x).numpy()
    pooled = minseg.functional.max_pool2d(x, 3, 2, 1).numpy()
    np.testing.assert_array_equal(y[:, :64], pooled)                  # Mixed-3a: the max-pool first
    mixed5a = Mixed5a().eval()
    x = random_input((1, 192, 8, 8))
    with minseg.no_grad():
        y = mixed5a(x).numpy()
    np.testing.assert_array_equal(y[:, 192:], minseg.functional.max_pool2d(x, 3, 2, 1).numpy())  # Mixed-5a: last
    assert y.shape == (1, 384, 4, 4)


def test_inception_c_forks_twice_into_1536_channels():
    minseg.manual_seed(4)
    block = InceptionC().eval()
    x = random_input((1, 1536, 2, 3))
    with minseg.no_grad():
        y = block(x)
        branch1 = block.branch1_1b(block.branch1_0(x))
    assert y.shape == (1, 1536, 2, 3)
    np.testing.assert_array_equal(y.numpy()[:, 512:768], branch1.numpy())


# --- gradients, end to end -----------------------------------------------------------------------------------
@pytest.mark.parametrize("encoder_class, chosen", [
    (DenseNetEncoder, "features.denseblock1.denselayer2.conv1.weight"),  # its input is a concatenation
    (InceptionV4Encoder, "features.6.branch3.1.conv.weight"),            # after the pooling without the padding
])
def test_encoder_gradients_match_finite_differences(encoder_class, chosen):
    # Eval mode: BatchNorm uses its running statistics, so each map is a fixed function of the weights. Every
    # feature map is an output, and x's gradient comes back through every block.
    minseg.manual_seed(5)
    encoder = to_float64(encoder_class()).eval()
    x = Tensor(np.random.default_rng(6).standard_normal((1, 3, 32, 32)), requires_grad=True)

    def features(x, weight):
        return tuple(encoder(x)[1:])

    assert minseg.gradcheck(features, [x, dict(encoder.named_parameters())[chosen]], eps=1e-7, n_samples=2)


# --- what is refused ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_class", [DeepLabV3, DeepLabV3Plus])
@pytest.mark.parametrize("encoder", ["densenet121", "inceptionv4"])
def test_deeplab_refuses_an_encoder_without_a_dilated_mode(model_class, encoder):
    name = model_class.__name__
    stride = 8 if model_class is DeepLabV3 else 16
    with pytest.raises(ValueError, match=f"^{name}: encoder must have a dilated mode \\(output stride {stride}\\), "
                                         f"got '{encoder}', which downsamples by pooling; use one of 'resnet18', "
                                         f"'resnet34'$"):
        model_class(3, encoder=encoder)


@pytest.mark.parametrize("call, message", [
    (lambda: create("unet", 3, encoder="densenet169"),
     "make_encoder: encoder must be one of 'resnet18', 'resnet34', 'densenet121', 'inceptionv4', got 'densenet169'"),
    (lambda: DenseNetEncoder(output_stride=16),
     "DenseNetEncoder: output_stride must be 32, got 16; DenseNet downsamples by pooling"),
    (lambda: InceptionV4Encoder(depth=6), "InceptionV4Encoder: depth must be an int from 1 to 5, got 6"),
])
def test_bad_encoder_options_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
