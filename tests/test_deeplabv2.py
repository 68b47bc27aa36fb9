"""DeepLab v2: a ResNet at output stride 8, four dilated 3x3 classifiers summed, bilinear back to the input.

DeepLab v2 adds no Function: it is built from convolutions, additions and ``F.interpolate``, each gradient-checked
in its own file. The end-to-end gradient check below confirms they compose, on a small float64 model.
"""
import numpy as np
import pytest

import minseg
import minseg.functional as F
from minseg import Tensor
from minseg.models import ENCODER_MODELS, MODELS, DeepLabV2, create
from minseg.models.deeplabv2 import ASPPV2


def random_input(shape, seed=0, dtype=np.float32):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def to_float64(model):
    for tensor in list(model.parameters()) + [b for _, b in model.named_buffers()]:
        if tensor.data.dtype.kind == "f":
            tensor.data = tensor.data.astype(np.float64)
    return model


@pytest.mark.parametrize("encoder, parameters", [("resnet18", 11_766_464), ("resnet34", 21_874_624)])
def test_parameter_count_is_the_encoders_plus_four_classifiers(encoder, parameters):
    model = create("deeplabv2", 32, encoder=encoder)
    encoder_parameters = sum(p.size for p in model.encoder.parameters())
    assert encoder_parameters == {"resnet18": 11_176_512, "resnet34": 21_284_672}[encoder]
    assert sum(p.size for p in model.parameters()) == parameters == encoder_parameters + 4 * (512 * 9 * 32 + 32)
    state = model.state_dict()
    assert [state[f"classifier.branches.{i}.weight"].shape for i in range(4)] == [(32, 512, 3, 3)] * 4
    assert [branch.dilation for branch in model.classifier.branches] == [(6, 6), (12, 12), (18, 18), (24, 24)]


def test_create_knows_it_with_and_without_an_encoder():
    assert MODELS["deeplabv2"] is DeepLabV2 and ENCODER_MODELS["deeplabv2"] is DeepLabV2
    assert create("deeplabv2", 2, in_channels=1).encoder.name == "resnet34"


@pytest.mark.parametrize("output_stride, size", [(8, (64, 96)), (16, (48, 80))])
def test_output_has_the_input_size_and_the_encoder_is_dilated(output_stride, size):
    minseg.manual_seed(0)
    model = DeepLabV2(5, encoder="resnet18", encoder_output_stride=output_stride).eval()
    assert model.size_multiple == output_stride
    with minseg.no_grad():
        features = model.encoder(random_input((1, 3) + size))
        y = model(random_input((2, 3) + size))
    assert features[-1].shape[2:] == (size[0] // output_stride, size[1] // output_stride)
    assert y.shape == (2, 5) + size and np.all(np.isfinite(y.numpy()))


def test_the_head_sums_the_full_dilated_convolutions_then_resizes_bilinearly():
    """Loop reference: each branch as the plain dilated conv (no trimmed taps), summed, then interpolated."""
    minseg.manual_seed(1)
    model = to_float64(DeepLabV2(3, encoder="resnet18", atrous_rates=(1, 2, 6))).eval()
    x = random_input((1, 3, 64, 64), seed=2, dtype=np.float64)
    with minseg.no_grad():
        deepest = model.encoder(x)[-1]
        expected = sum(F.conv2d(deepest, b.weight, b.bias, 1, b.dilation, b.dilation).numpy()
                       for b in model.classifier.branches)
        expected = F.interpolate(Tensor(expected), size=(64, 64), mode="bilinear", align_corners=False).numpy()
        np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-10, atol=1e-10)


def test_loss_gradient_end_to_end_matches_finite_differences():
    minseg.manual_seed(3)
    model = to_float64(DeepLabV2(3, encoder="resnet18", atrous_rates=(1, 2, 3, 6))).eval()
    rng = np.random.default_rng(4)
    x = Tensor(rng.standard_normal((1, 3, 32, 32)), requires_grad=True)
    target = Tensor(rng.integers(0, 3, size=(1, 32, 32)))
    named = dict(model.named_parameters())
    chosen = ["encoder.conv1.weight", "encoder.layer4.1.conv2.weight", "classifier.branches.1.weight",
              "classifier.branches.3.bias"]

    def loss(x, *parameters):
        return F.cross_entropy(model(x), target)

    assert minseg.gradcheck(loss, [x] + [named[name] for name in chosen], eps=1e-7, n_samples=4)


@pytest.mark.parametrize("call, message", [
    (lambda: DeepLabV2(3, encoder="resnet18", encoder_output_stride=32),
     "DeepLabV2: encoder_output_stride must be 8 or 16, got 32"),
    (lambda: ASPPV2(8, 3, rates=(6, 0)), r"ASPPV2: rates must be positive ints, got \(6, 0\)"),
    (lambda: create("deeplabv2", 3, encoder="resnet18")(random_input((1, 3, 60, 64))),
     "DeepLabV2 with output stride 8 needs height and width divisible by 8, got 60x64; pad the input to 64x64"),
])
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
