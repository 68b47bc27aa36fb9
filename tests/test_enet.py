"""Tests for ENet: stage shapes against the paper's table 1, parameter counts, the blocks, gradients."""
import numpy as np
import pytest

import minseg
import minseg.functional as F
import minseg.nn as nn
from minseg import Tensor
from minseg.gradcheck import gradcheck
from minseg.models import create
from minseg.models.enet import Bottleneck, DownsamplingBottleneck, ENet, InitialBlock, UpsamplingBottleneck


def count_parameters(model):
    return sum(p.size for p in model.parameters())


def random_input(shape, seed=0, dtype=np.float32):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def to_float64(model):
    for tensor in list(model.parameters()) + [b for _, b in model.named_buffers()]:
        if tensor.data.dtype.kind == "f":
            tensor.data = tensor.data.astype(np.float64)
    return model


# --- table 1 of the paper, at a 64 x 96 input (the paper's is 512 x 512: the same table divided by 8) ----
def test_stage_shapes_follow_the_papers_table_and_forward_runs_them_in_order():
    minseg.manual_seed(0)
    model = ENet(19).eval()
    x = random_input((2, 3, 64, 96))
    h, w = 64, 96
    shapes = []
    y = model.initial(x)
    shapes.append(("initial", y.shape))
    y, indices1 = model.down1(y)
    shapes.append(("bottleneck1.0", y.shape))
    y = model.stage1(y)
    shapes.append(("bottleneck1.x", y.shape))
    y, indices2 = model.down2(y)
    shapes.append(("bottleneck2.0", y.shape))
    y = model.stage2(y)
    shapes.append(("bottleneck2.x", y.shape))
    y = model.stage3(y)
    shapes.append(("bottleneck3.x", y.shape))
    y = model.stage4(model.up4(y, indices2))
    shapes.append(("bottleneck4.x", y.shape))
    y = model.stage5(model.up5(y, indices1))
    shapes.append(("bottleneck5.x", y.shape))
    y = model.fullconv(y)
    shapes.append(("fullconv", y.shape))
    assert shapes == [("initial", (2, 16, h // 2, w // 2)), ("bottleneck1.0", (2, 64, h // 4, w // 4)),
                      ("bottleneck1.x", (2, 64, h // 4, w // 4)), ("bottleneck2.0", (2, 128, h // 8, w // 8)),
                      ("bottleneck2.x", (2, 128, h // 8, w // 8)), ("bottleneck3.x", (2, 128, h // 8, w // 8)),
                      ("bottleneck4.x", (2, 64, h // 4, w // 4)), ("bottleneck5.x", (2, 16, h // 2, w // 2)),
                      ("fullconv", (2, 19, h, w))]
    np.testing.assert_allclose(model(x).numpy(), y.numpy(), rtol=1e-5, atol=1e-5)


def test_stages_two_and_three_have_the_papers_bottleneck_types_in_order():
    expected = ["regular", "dilated 2", "asymmetric 5", "dilated 4", "regular", "dilated 8", "asymmetric 5",
                "dilated 16"]
    model = ENet(3)
    for stage in (model.stage2, model.stage3):
        assert [block.kind for block in stage] == expected
        middle = [next(m for m in block.main if isinstance(m, nn.Conv2d) and m.weight.shape[2:] != (1, 1))
                     for block in stage]
        assert [tuple(conv.weight.shape[2:]) for conv in middle] == [(3, 3), (3, 3), (5, 1), (3, 3), (3, 3),
                                                                        (3, 3), (5, 1), (3, 3)]


# --- parameter counts ----------------------------------------------------------------------
def test_parameter_count_by_stage():
    # A regular 64-channel bottleneck (internal 16): 1x1 64·16 + BN 32 + PReLU 16 + 3x3 16·16·9 + 16 + BN 32
    # + PReLU 16 + 1x1 16·64 + BN 128 + PReLU 64 = 4,656; the initial block: 13·27 + 13 + BN 32 + PReLU 16 = 412.
    assert 1024 + 32 + 16 + 2304 + 16 + 32 + 16 + 1024 + 128 + 64 == 4_656
    model = ENet(32)
    counts = {name: count_parameters(getattr(model, name)) for name in
              ("initial", "down1", "stage1", "down2", "stage2", "stage3", "up4", "stage4", "up5", "stage5",
               "fullconv")}
    assert counts == {"initial": 412, "down1": 4_656, "stage1": 4 * 4_656, "down2": 22_112, "stage2": 146_176,
                      "stage3": 146_176, "up4": 13_904, "stage4": 9_120, "up5": 1_572, "stage5": 324,
                      "fullconv": 16 * 32 * 4 + 32}
    assert count_parameters(model) == sum(counts.values()) == 365_156  # the paper: "0.37 M"


def test_create_builds_the_papers_enet():
    assert count_parameters(create("enet", 32)) == 365_156


def test_only_the_final_layer_depends_on_the_class_count():
    assert count_parameters(ENet(12)) == 365_156 - 65 * (32 - 12)


# --- the blocks -----------------------------------------------------------------------------
def test_initial_block_concatenates_the_pooled_input():
    minseg.manual_seed(0)
    block = InitialBlock(3, 16).eval()
    x = random_input((1, 3, 6, 8))
    convolved = block.conv(x)
    pooled = F.max_pool2d(x, 2)
    expected = block.prelu(block.bn(minseg.cat([convolved, pooled], dim=1)))
    np.testing.assert_allclose(block(x).numpy(), expected.numpy())
    assert block(x).shape == (1, 16, 3, 4)


def test_downsampling_shortcut_is_the_max_pool_padded_with_zero_channels():
    minseg.manual_seed(0)
    block = DownsamplingBottleneck(4, 8, dropout=0.1).eval()
    for module in block.main.modules():  # silence the main branch: only the shortcut is left
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data[:] = 0
            module.bias.data[:] = 0
    block.activation.weight.data[:] = 1  # PReLU with slope 1 is the identity
    x = random_input((2, 4, 6, 6))
    y, indices = block(x)
    pooled, expected_indices = F.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_allclose(y.numpy()[:, :4], pooled.numpy())
    np.testing.assert_array_equal(y.numpy()[:, 4:], 0)
    np.testing.assert_array_equal(indices.numpy(), expected_indices.numpy())


def test_upsampling_bottleneck_doubles_the_size_with_the_given_indices():
    minseg.manual_seed(0)
    down = DownsamplingBottleneck(4, 8, dropout=0.0).eval()
    up = UpsamplingBottleneck(8, 4).eval()
    x = random_input((1, 4, 6, 10))
    code, indices = down(x)
    assert up(code, indices).shape == (1, 4, 6, 10)


@pytest.mark.parametrize("kind", ["regular", "dilated 2", "asymmetric 5"])
def test_bottleneck_keeps_the_shape(kind):
    minseg.manual_seed(0)
    assert Bottleneck(8, kind).eval()(random_input((1, 8, 7, 9))).shape == (1, 8, 7, 9)


def test_spatial_dropout_is_active_in_training_only():
    minseg.manual_seed(0)
    block = Bottleneck(8, dropout=0.5)
    x = random_input((2, 8, 5, 5))
    block.train()
    first, second = block(x).numpy(), block(x).numpy()
    assert not np.allclose(first, second)  # a new channel mask on every call
    block.eval()
    np.testing.assert_array_equal(block(x).numpy(), block(x).numpy())


def test_gradcheck_through_a_dilated_and_an_asymmetric_bottleneck():
    minseg.manual_seed(0)
    model = to_float64(nn.Sequential(Bottleneck(8, "dilated 2"), Bottleneck(8, "asymmetric 5"))).eval()
    x = Tensor(np.random.default_rng(1).standard_normal((1, 8, 5, 7)), requires_grad=True)
    slopes = model[0].activation.weight
    assert gradcheck(lambda x, s: model(x), [x, slopes], n_samples=25)


def test_output_shape_and_size_error():
    minseg.manual_seed(0)
    assert ENet(5, in_channels=1)(random_input((1, 1, 24, 40))).shape == (1, 5, 24, 40)
    with pytest.raises(ValueError, match="ENet needs height and width divisible by 8, got 20x40; pad the input "
                                         "to 24x40"):
        ENet(5)(random_input((1, 3, 20, 40)))


def test_enet_learns_a_tiny_batch():
    minseg.manual_seed(0)
    model = ENet(3)
    x = random_input((2, 3, 16, 16), seed=3)
    target = Tensor(np.random.default_rng(4).integers(0, 3, (2, 16, 16)))
    optimizer = minseg.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(25):
        loss = F.cross_entropy(model(x), target)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < 0.7 * losses[0]
