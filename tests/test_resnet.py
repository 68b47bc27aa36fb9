"""Tests for the ResNet encoder: torchvision's names and sizes, feature strides, dilation for output stride 16/8."""
import functools

import numpy as np
import pytest

import minseg
import minseg.functional as F
import minseg.nn as nn
from minseg import Tensor
from minseg.models.resnet import ResNetEncoder, stage_geometry


@functools.lru_cache(maxsize=None)
def built(name="resnet18", in_channels=3, output_stride=32, depth=5):
    """One encoder per configuration, shared by the tests that only read it (building one takes a while)."""
    minseg.manual_seed(0)
    return ResNetEncoder(name, in_channels, output_stride, depth).eval()


def torchvision_resnet_shapes(blocks):
    """Name → shape of torchvision's resnet18/34 state dict without ``fc``, written out from its definition."""
    shapes = {"conv1.weight": (64, 3, 7, 7)}

    def batch_norm(prefix, channels):
        shapes.update({f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,),
                       f"{prefix}.running_mean": (channels,), f"{prefix}.running_var": (channels,),
                       f"{prefix}.num_batches_tracked": ()})

    batch_norm("bn1", 64)
    in_channels = 64
    for stage, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
        for block in range(count):
            prefix = f"layer{stage}.{block}"
            shapes[f"{prefix}.conv1.weight"] = (width, in_channels, 3, 3)
            batch_norm(f"{prefix}.bn1", width)
            shapes[f"{prefix}.conv2.weight"] = (width, width, 3, 3)
            batch_norm(f"{prefix}.bn2", width)
            if block == 0 and stage > 1:
                shapes[f"{prefix}.downsample.0.weight"] = (width, in_channels, 1, 1)
                batch_norm(f"{prefix}.downsample.1", width)
            in_channels = width
    return shapes


@pytest.mark.parametrize("name, blocks, parameters", [("resnet18", (2, 2, 2, 2), 11_176_512),
                                                      ("resnet34", (3, 4, 6, 3), 21_284_672)])
def test_state_dict_is_torchvisions_without_the_classifier(name, blocks, parameters):
    # torchvision's counts with fc: 11,689,512 and 21,797,672; fc is 512·1000 + 1000 = 513,000.
    encoder = built(name)
    state = encoder.state_dict()
    assert {key: value.shape for key, value in state.items()} == torchvision_resnet_shapes(blocks)
    assert state["layer1.0.bn1.num_batches_tracked"].dtype == np.int64
    assert sum(p.size for p in encoder.parameters()) == parameters


@pytest.mark.parametrize("output_stride", [16, 8])
def test_state_dict_does_not_depend_on_the_output_stride(output_stride):
    plain = built("resnet18").state_dict()
    dilated = built("resnet18", output_stride=output_stride).state_dict()
    assert {k: v.shape for k, v in dilated.items()} == {k: v.shape for k, v in plain.items()}


@pytest.mark.parametrize("output_stride, strides", [(32, (1, 2, 4, 8, 16, 32)), (16, (1, 2, 4, 8, 16, 16)),
                                                    (8, (1, 2, 4, 8, 8, 8))])
@pytest.mark.parametrize("height, width", [(64, 96), (32, 160)])
def test_features_come_at_strides_1_to_32_or_stop_at_the_output_stride(output_stride, strides, height, width):
    encoder = built("resnet18", in_channels=2, output_stride=output_stride)
    x = Tensor(np.random.default_rng(0).standard_normal((2, 2, height, width)).astype(np.float32))
    with minseg.no_grad():
        features = encoder(x)
    assert encoder.out_channels == (2, 64, 64, 128, 256, 512)
    assert features[0] is x
    assert [f.shape for f in features] == [(2, c, height // s, width // s)
                                           for c, s in zip(encoder.out_channels, strides)]
    assert encoder.output_stride == output_stride


def test_odd_sizes_round_up_at_every_stride_two_step_as_in_torchvision():
    with minseg.no_grad():
        features = built("resnet18")(Tensor(np.zeros((1, 3, 33, 50), np.float32)))
    # conv 7x7 stride 2 pad 3 and the stride-2 3x3 convs give ceil(n / 2); so does the max-pool 3x3 stride 2 pad 1.
    assert [f.shape[2:] for f in features] == [(33, 50), (17, 25), (9, 13), (5, 7), (3, 4), (2, 2)]


@pytest.mark.parametrize("depth", [1, 3, 4])
def test_depth_runs_fewer_stages_but_builds_them_all(depth):
    encoder = built("resnet34", depth=depth)
    with minseg.no_grad():
        features = encoder(Tensor(np.zeros((1, 3, 32, 32), np.float32)))
    assert len(features) == depth + 1 == len(encoder.out_channels)
    assert features[-1].shape[2] == 32 // 2 ** depth == 32 // encoder.output_stride
    assert "layer4.2.conv2.weight" in encoder.state_dict()


def conv_geometry(stage):
    return [(name, conv.stride, conv.dilation, conv.padding)
            for name, conv in stage.named_modules() if isinstance(conv, nn.Conv2d)]


@pytest.mark.parametrize("output_stride, rates", [(16, {"layer3": 1, "layer4": 2}), (8, {"layer3": 2, "layer4": 4})])
def test_dilated_stages_trade_every_stride_for_the_stages_rate(output_stride, rates):
    # smp's make_dilated: EVERY conv of a stage past the output stride gets stride 1, the stage's rate, and
    # padding (k // 2) * rate; that includes the first block's conv1 and its 1x1 shortcut (padding 0).
    encoder = built("resnet34", output_stride=output_stride)
    for stage_name, rate in rates.items():
        for name, stride, dilation, padding in conv_geometry(getattr(encoder, stage_name)):
            kernel = 1 if "downsample" in name else 3
            if rate == 1:
                expected_stride = (2, 2) if name in ("0.conv1", "0.downsample.0") else (1, 1)
                assert (stride, dilation, padding) == (expected_stride, (1, 1), (kernel // 2,) * 2), name
            else:
                assert (stride, dilation, padding) == ((1, 1), (rate, rate), ((kernel // 2) * rate,) * 2), name
    assert stage_geometry(32) == [(1, 1), (2, 1), (2, 1), (2, 1)]
    assert stage_geometry(8) == [(1, 1), (2, 1), (1, 2), (1, 4)]


def test_a_block_adds_its_input_to_its_two_convolutions():
    encoder = ResNetEncoder("resnet18").eval()
    block = encoder.layer1[1]
    x = Tensor(np.random.default_rng(1).standard_normal((1, 64, 5, 7)).astype(np.float32))
    with minseg.no_grad():
        expected = F.relu(block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x))))) + x)
        np.testing.assert_allclose(block(x).numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)
        block.conv2.weight.data[...] = 0    # the residual branch gives bn2's shift only
        block.bn2.bias.data[...] = 0
        np.testing.assert_allclose(block(x).numpy(), F.relu(x).numpy(), atol=1e-7)  # identity, then relu


def test_convolutions_start_as_torchvision_does():
    weight = built("resnet34").layer3[2].conv1.weight.numpy()
    # kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / (out_channels · 3 · 3))
    assert weight.dtype == np.float32
    assert weight.std() == pytest.approx(np.sqrt(2 / (256 * 9)), rel=0.01)
    assert abs(weight.mean()) < 1e-3


def test_loss_gradient_through_a_dilated_encoder_matches_finite_differences():
    minseg.manual_seed(2)
    encoder = ResNetEncoder("resnet18", output_stride=8)
    for tensor in list(encoder.parameters()) + [b for _, b in encoder.named_buffers()]:
        if tensor.data.dtype.kind == "f":
            tensor.data = tensor.data.astype(np.float64)
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((2, 3, 16, 24)), requires_grad=True)
    upstream = [rng.standard_normal((2, c, 16 // s, 24 // s)) for c, s in zip(encoder.out_channels[1:],
                                                                             (2, 4, 8, 8, 8))]
    chosen = [encoder.conv1.weight, encoder.layer3[0].conv1.weight, encoder.layer4[0].downsample[0].weight,
              encoder.layer4[1].bn2.weight]

    def loss(x, *parameters):
        features = encoder(x)[1:]
        return sum((feature * Tensor(g)).sum() for feature, g in zip(features, upstream))

    assert minseg.gradcheck(loss, [x] + chosen, eps=1e-7, n_samples=4)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "resnet50"}, "ResNetEncoder: name must be one of 'resnet18', 'resnet34', got 'resnet50'"),
    ({"output_stride": 4}, "ResNetEncoder: output_stride must be 8, 16 or 32, got 4"),
    ({"depth": 6}, "ResNetEncoder: depth must be an int from 1 to 5, got 6"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNetEncoder(**kwargs)
