"""nn layers (minseg/nn/layers.py): parameter shapes, PyTorch initialization, buffers, modes, repr, errors.

A layer calls one functional op; that op's float64 gradient check lives in its own test file (test_conv.py,
test_normalization.py, test_activation.py, test_dropout.py), once.
"""
import math

import numpy as np
import pytest

import minseg
import minseg.functional as F
from minseg import Tensor, nn

rng = np.random.default_rng(0)


def image(*shape):
    return Tensor(rng.standard_normal(shape).astype(np.float32))


# --- convolutions ---------------------------------------------------------------
def test_conv2d_parameters_shapes_dtype_and_kaiming_uniform_bound():
    conv = nn.Conv2d(16, 32, 3)
    assert conv.weight.shape == (32, 16, 3, 3) and conv.bias.shape == (32,)
    assert conv.weight.dtype == np.float32 and conv.weight.requires_grad
    bound = 1 / math.sqrt(16 * 3 * 3)  # kaiming_uniform(a=√5) gives exactly 1/√fan_in
    w = conv.weight.numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound  # U(−b, b) has std b/√3
    assert np.abs(conv.bias.numpy()).max() <= bound
    assert [name for name, _ in conv.named_parameters()] == ["weight", "bias"]


def test_conv_transpose2d_weight_layout_and_fan_in_from_dimension_one():
    up = nn.ConvTranspose2d(64, 8, 2, stride=2)
    assert up.weight.shape == (64, 8, 2, 2) and up.bias.shape == (8,)
    bound = 1 / math.sqrt(8 * 2 * 2)  # PyTorch: fan_in = weight.shape[1]·kH·kW = out_channels·kH·kW
    assert np.abs(up.weight.numpy()).max() <= bound and np.abs(up.weight.numpy()).max() > 0.95 * bound
    assert np.abs(up.bias.numpy()).max() <= bound


def test_initialization_is_repeatable_with_manual_seed():
    minseg.manual_seed(5)
    a = nn.Conv2d(3, 4, 3)
    minseg.manual_seed(5)
    b = nn.Conv2d(3, 4, 3)
    c = nn.Conv2d(3, 4, 3)
    np.testing.assert_array_equal(a.weight.numpy(), b.weight.numpy())
    assert not np.array_equal(b.weight.numpy(), c.weight.numpy())


def test_conv_layers_call_the_functional_ops_with_their_settings():
    x = image(2, 3, 9, 8)
    conv = nn.Conv2d(3, 5, (3, 2), stride=2, padding=1, dilation=(1, 2), bias=False)
    assert conv.bias is None and len(list(conv.parameters())) == 1
    y = conv(x)
    expected = F.conv2d(x, conv.weight, None, (2, 2), (1, 1), (1, 2))
    np.testing.assert_array_equal(y.numpy(), expected.numpy())
    assert y.shape == (2, 5, (9 + 2 - 2 - 1) // 2 + 1, (8 + 2 - 2 * 1 - 1) // 2 + 1)

    up = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1)
    np.testing.assert_array_equal(up(x).numpy(),
                                  F.conv_transpose2d(x, up.weight, up.bias, 2, 1, 1).numpy())
    assert up(x).shape == (2, 4, (9 - 1) * 2 - 2 + 3 + 1, (8 - 1) * 2 - 2 + 3 + 1)


def test_conv_transpose2d_output_size_picks_the_output_padding():
    up = nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1)
    x = image(1, 2, 4, 5)
    assert up(x).shape == (1, 2, 7, 9)
    assert up(x, output_size=(8, 10)).shape == (1, 2, 8, 10)
    assert up(x, output_size=(1, 2, 7, 10)).shape == (1, 2, 7, 10)
    with pytest.raises(ValueError, match="output_size"):
        up(x, output_size=(9, 9))


def test_conv_gradients_reach_weight_and_bias():
    conv = nn.Conv2d(2, 3, 3, padding=1)
    conv(image(2, 2, 5, 5)).sum().backward()
    assert conv.weight.grad.shape == (3, 2, 3, 3) and conv.bias.grad.dtype == np.float32
    np.testing.assert_allclose(conv.bias.grad, 2 * 5 * 5)  # dΣy/db = number of output pixels


@pytest.mark.parametrize("in_channels, out_channels, groups", [(4, 6, 2), (6, 6, 6), (3, 6, 3), (4, 4, 1)])
def test_grouped_conv2d_weight_layout_and_fan_in(in_channels, out_channels, groups):
    conv = nn.Conv2d(in_channels, out_channels, 3, groups=groups)
    assert conv.weight.shape == (out_channels, in_channels // groups, 3, 3) and conv.groups == groups
    bound = 1 / math.sqrt(in_channels // groups * 3 * 3)  # PyTorch: fan_in = in_channels/groups·kH·kW
    assert np.abs(conv.weight.numpy()).max() <= bound and np.abs(conv.weight.numpy()).max() > 0.9 * bound
    assert [name for name, _ in conv.named_parameters()] == ["weight", "bias"]


@pytest.mark.parametrize("groups, stride, padding, dilation", [(2, 1, 1, 1), (3, 2, 0, 1), (6, 1, 2, 2),
                                                              (2, (2, 1), 1, 1)])
def test_grouped_conv2d_is_independent_convolutions_of_the_channel_groups(groups, stride, padding, dilation):
    # Fails (TypeError) rather than skips if F.conv2d does not take groups.
    conv = nn.Conv2d(6, 6, 3, stride=stride, padding=padding, dilation=dilation, groups=groups)
    x = image(1, 6, 9, 8)
    size = 6 // groups
    group = [slice(g * size, (g + 1) * size) for g in range(groups)]
    per_group = [F.conv2d(x[:, part], conv.weight[part], conv.bias[part], stride, padding, dilation) for part in group]
    np.testing.assert_allclose(conv(x).numpy(), minseg.cat(per_group, dim=1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(conv(x).numpy(),
                                  F.conv2d(x, conv.weight, conv.bias, stride, padding, dilation, groups).numpy())


def test_grouped_conv_transpose2d_layer_weight_layout_and_settings():
    up = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    assert up.weight.shape == (4, 3, 3, 3)
    x = image(1, 4, 3, 5)
    np.testing.assert_array_equal(up(x).numpy(), F.conv_transpose2d(x, up.weight, up.bias, 2, 1, output_padding=1,
                                                                     groups=2).numpy())


# --- batch norm -----------------------------------------------------------------
def test_batchnorm2d_parameters_and_buffers():
    bn = nn.BatchNorm2d(4)
    np.testing.assert_array_equal(bn.weight.numpy(), 1)
    np.testing.assert_array_equal(bn.bias.numpy(), 0)
    assert [name for name, _ in bn.named_parameters()] == ["weight", "bias"]
    assert [name for name, _ in bn.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]
    assert bn.num_batches_tracked.dtype == np.int64
    assert set(bn.state_dict()) == {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}


def test_batchnorm2d_training_updates_running_stats_and_eval_uses_them():
    bn = nn.BatchNorm2d(3, momentum=0.2)
    x = Tensor(rng.standard_normal((4, 3, 5, 5)).astype(np.float32) * 2 + 1)
    y = bn(x)
    np.testing.assert_allclose(y.numpy().mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.2 * x.numpy().mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.8 + 0.2 * x.numpy().var(axis=(0, 2, 3), ddof=1),
                               rtol=1e-5)
    assert bn.num_batches_tracked.item() == 1

    bn.eval()
    before = bn.running_mean.numpy().copy()
    y_eval = bn(x).numpy()
    np.testing.assert_array_equal(bn.running_mean.numpy(), before)
    assert bn.num_batches_tracked.item() == 1
    expected = ((x.numpy() - before.reshape(1, 3, 1, 1))
                / np.sqrt(bn.running_var.numpy().reshape(1, 3, 1, 1) + 1e-5))
    np.testing.assert_allclose(y_eval, expected, rtol=1e-5, atol=1e-6)


def test_batchnorm2d_momentum_none_is_a_cumulative_average():
    bn = nn.BatchNorm2d(2, momentum=None)
    batches = [Tensor(rng.standard_normal((2, 2, 3, 3)).astype(np.float32) + k) for k in range(3)]
    for batch in batches:
        bn(batch)
    means = [b.numpy().mean(axis=(0, 2, 3)) for b in batches]
    np.testing.assert_allclose(bn.running_mean.numpy(), np.mean(means, axis=0), rtol=1e-5)
    assert bn.num_batches_tracked.item() == 3


def test_batchnorm2d_without_affine_or_running_stats():
    bn = nn.BatchNorm2d(3, affine=False, track_running_stats=False)
    assert list(bn.parameters()) == [] and bn.state_dict() == {}
    x = image(2, 3, 4, 4)
    bn.eval()  # no running statistics: batch statistics even in eval, as PyTorch
    np.testing.assert_allclose(bn(x).numpy().mean(axis=(0, 2, 3)), 0, atol=1e-5)


def test_batchnorm2d_rejects_wrong_input():
    bn = nn.BatchNorm2d(3)
    with pytest.raises(ValueError, match="4-D"):
        bn(image(2, 3, 4))
    with pytest.raises(ValueError, match="num_features"):
        bn(image(2, 4, 3, 3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(image(1, 3, 1, 1))


def reference_group_norm(x, num_groups, weight, bias, eps):
    """From the definition: each sample's channel group normalized by its own mean and biased variance."""
    n, c = x.shape[:2]
    y = np.empty_like(x)
    for sample in range(n):
        for group in range(num_groups):
            part = slice(group * c // num_groups, (group + 1) * c // num_groups)
            values = x[sample, part]
            y[sample, part] = (values - values.mean()) / np.sqrt(values.var() + eps)
    view = (1, c) + (1,) * (x.ndim - 2)
    return y * weight.reshape(view) + bias.reshape(view)


@pytest.mark.parametrize("num_groups, shape", [(2, (2, 6, 5, 4)), (1, (1, 4, 3, 3)), (4, (3, 4, 2, 5)),
                                               (3, (2, 6, 7))])
def test_groupnorm_matches_the_definition_and_ignores_the_mode(num_groups, shape):
    norm = nn.GroupNorm(num_groups, shape[1])
    norm.weight.data = rng.uniform(0.5, 1.5, shape[1]).astype(np.float32)
    norm.bias.data = rng.standard_normal(shape[1]).astype(np.float32)
    x = image(*shape)
    expected = reference_group_norm(x.numpy().astype(np.float64), num_groups, norm.weight.numpy(), norm.bias.numpy(),
                                    1e-5)
    np.testing.assert_allclose(norm(x).numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(norm.eval()(x).numpy(), norm.train()(x).numpy())  # no batch statistics


def test_groupnorm_parameters_and_state_dict_are_pytorchs():
    norm = nn.GroupNorm(4, 8)
    assert list(norm.state_dict()) == ["weight", "bias"]
    assert norm.weight.shape == norm.bias.shape == (8,)
    np.testing.assert_array_equal(norm.weight.numpy(), 1)
    np.testing.assert_array_equal(norm.bias.numpy(), 0)
    plain = nn.GroupNorm(2, 8, affine=False)
    assert list(plain.parameters()) == [] and plain.weight is None
    assert repr(norm) == "GroupNorm(4, 8, eps=1e-05, affine=True)"


# --- pooling, resizing, activations ---------------------------------------------------
def test_maxpool_with_indices_and_maxunpool_round_trip():
    pool, unpool = nn.MaxPool2d(2, return_indices=True), nn.MaxUnpool2d(2)
    x = image(2, 3, 7, 6)
    y, indices = pool(x)
    restored = unpool(y, indices, output_size=x.shape)
    assert restored.shape == x.shape
    kept = restored.numpy() != 0
    np.testing.assert_array_equal(restored.numpy()[kept], x.numpy()[kept])
    assert kept.sum() == y.size
    np.testing.assert_array_equal(y.numpy(), F.max_pool2d(x, 2).numpy())


def test_pooling_and_resizing_layers_match_their_functions():
    x = image(2, 3, 8, 10)
    np.testing.assert_array_equal(nn.MaxPool2d(3, 2, 1)(x).numpy(), F.max_pool2d(x, 3, 2, 1).numpy())
    np.testing.assert_array_equal(nn.AvgPool2d(2)(x).numpy(), F.avg_pool2d(x, 2).numpy())
    np.testing.assert_array_equal(nn.AdaptiveAvgPool2d((3, 1))(x).numpy(), F.adaptive_avg_pool2d(x, (3, 1)).numpy())
    up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
    np.testing.assert_array_equal(up(x).numpy(),
                                  F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True).numpy())
    assert nn.Upsample(size=(5, 7))(x).shape == (2, 3, 5, 7)


def test_relu_identity_and_dropout_modes():
    x = image(3, 4, 5, 5)
    np.testing.assert_array_equal(nn.ReLU()(x).numpy(), np.maximum(x.numpy(), 0))
    assert nn.Identity(54, unused="argument")(x) is x
    drop = nn.Dropout(0.5)
    assert (drop(x).numpy() == 0).mean() > 0.3
    drop.eval()
    np.testing.assert_array_equal(drop(x).numpy(), x.numpy())
    with pytest.raises(ValueError, match="p is a probability"):
        nn.Dropout(1.5)


def test_dropout2d_zeroes_whole_channels_and_scales_the_rest():
    x = Tensor(rng.uniform(1, 2, size=(8, 16, 5, 5)).astype(np.float32))  # never zero: a zero means "dropped"
    drop = nn.Dropout2d(0.25)
    y = drop(x).numpy()
    dropped = (y == 0).all(axis=(2, 3))
    assert np.array_equal((y == 0).any(axis=(2, 3)), dropped)  # a channel goes entirely or not at all
    assert 0.1 < dropped.mean() < 0.4  # 128 channels, p = 0.25
    np.testing.assert_allclose(y[~dropped], x.numpy()[~dropped] / 0.75, rtol=1e-6)
    drop.eval()
    np.testing.assert_array_equal(drop(x).numpy(), x.numpy())
    assert repr(drop) == "Dropout2d(p=0.25, inplace=False)"


def test_prelu_layer_one_shared_or_one_slope_per_channel():
    shared, per_channel = nn.PReLU(), nn.PReLU(num_parameters=3, init=0.1)
    assert shared.weight.shape == (1,) and shared.weight.dtype == np.float32
    np.testing.assert_array_equal(shared.weight.numpy(), [0.25])
    np.testing.assert_allclose(per_channel.weight.numpy(), [0.1] * 3)
    assert list(per_channel.state_dict()) == ["weight"]
    x = image(2, 3, 4, 4)
    np.testing.assert_array_equal(shared(x).numpy(), np.where(x.numpy() > 0, x.numpy(), np.float32(0.25) * x.numpy()))
    np.testing.assert_array_equal(per_channel(x).numpy(), F.prelu(x, per_channel.weight).numpy())
    assert repr(per_channel) == "PReLU(num_parameters=3)"


def test_layers_keep_float32():
    x = Tensor(rng.standard_normal((2, 4, 8, 8)).astype(np.float32), requires_grad=True)
    model = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(6, 6, 3, padding=1, groups=3), nn.GroupNorm(2, 6), nn.PReLU(6), nn.Dropout2d(0.2),
                          nn.ConvTranspose2d(6, 4, 2, stride=2), nn.Upsample(scale_factor=0.5, mode="bilinear"),
                          nn.Dropout(0.2), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Identity())
    y = model(x)
    assert y.shape == (2, 4, 1, 1) and y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32
    assert all(p.grad is not None and p.grad.dtype == np.float32 for p in model.parameters())


def test_repr_reads_like_pytorch():
    assert repr(nn.Conv2d(3, 16, 3, padding=1)) == "Conv2d(3, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))"
    assert repr(nn.Conv2d(3, 16, 1, bias=False)) == "Conv2d(3, 16, kernel_size=(1, 1), stride=(1, 1), bias=False)"
    assert repr(nn.ConvTranspose2d(8, 4, 2, stride=2)) == "ConvTranspose2d(8, 4, kernel_size=(2, 2), stride=(2, 2))"
    assert repr(nn.BatchNorm2d(8)) == "BatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
    assert repr(nn.MaxPool2d(2)) == "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
    assert repr(nn.Upsample(scale_factor=2)) == "Upsample(scale_factor=2.0, mode='nearest')"
    assert repr(nn.Dropout(0.1)) == "Dropout(p=0.1, inplace=False)"
    assert repr(nn.ReLU()) == "ReLU()"


@pytest.mark.parametrize("build, pattern", [
    (lambda: nn.Conv2d(3, 4, 3, padding_mode="reflect"), "padding_mode"),
    (lambda: nn.MaxPool2d(2, dilation=2), "dilation"),
    (lambda: nn.MaxPool2d(2, ceil_mode=True), "ceil_mode"),
    (lambda: nn.AvgPool2d(2, divisor_override=3), "divisor_override"),
])
def test_unsupported_pytorch_options_are_refused_by_name(build, pattern):
    with pytest.raises(NotImplementedError, match=pattern):
        build()


@pytest.mark.parametrize("build, error, pattern", [
    (lambda: nn.Conv2d(0, 4, 3), ValueError, "in_channels"),
    (lambda: nn.Conv2d(3, -1, 3), ValueError, "out_channels"),
    (lambda: nn.Conv2d(3, 4, (3, 3, 3)), TypeError, "kernel_size"),
    (lambda: nn.ConvTranspose2d(3, 4, 2, stride=1.5), TypeError, "stride"),
    (lambda: nn.BatchNorm2d(0), ValueError, "num_features"),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError,
     "Conv2d: in_channels must be divisible by groups, got in_channels=3 and groups=2"),
    (lambda: nn.Conv2d(4, 6, 3, groups=4), ValueError, "out_channels must be divisible by groups"),
    (lambda: nn.Conv2d(4, 4, 3, groups=0), ValueError, "Conv2d: groups must be a positive int, got 0"),
    (lambda: nn.ConvTranspose2d(4, 6, 2, groups=4), ValueError, "ConvTranspose2d: out_channels must be divisible"),
    (lambda: nn.GroupNorm(3, 8), ValueError, "GroupNorm: num_channels must be divisible by num_groups"),
    (lambda: nn.GroupNorm(0, 8), ValueError, "GroupNorm: num_groups must be a positive int"),
    (lambda: nn.PReLU(0), ValueError, "PReLU: num_parameters must be a positive int"),
    (lambda: nn.Dropout2d(-0.1), ValueError, "Dropout2d: p is a probability"),
])
def test_bad_constructor_arguments_raise_errors_naming_them(build, error, pattern):
    with pytest.raises(error, match=pattern):
        build()
