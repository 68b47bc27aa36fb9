"""Tests for PANet: its three additions checked against their definitions, each flag's structure, and training.

The additions are written out here from the paper's words (a stride-2 conv, a sum, a conv; a max over levels;
an fc mask added to every class), on tiny channel counts, and compared with the modules. The whole model is
checked as Panoptic FPN is (``test_panoptic_fpn.py``): losses, gradients reaching every parameter, and that
with every flag off it *is* Panoptic FPN.
"""
import numpy as np
import pytest
from test_panoptic_fpn import TINY, shapes_batch

import minseg
import minseg.functional as F
from minseg import Tensor
from minseg.models import PANet, PanopticFPN, create
from minseg.models import panet_heads as heads


def random_tensor(rng, *shape):
    return Tensor(rng.standard_normal(shape).astype(np.float32))


def conv(module, x):
    """A conv (+ ReLU) Sequential applied by hand: F.conv2d with its own weights, then relu."""
    layer = module[0]
    return F.relu(F.conv2d(x, layer.weight, layer.bias, stride=layer.stride, padding=layer.padding))


# --- 1. bottom-up path augmentation ------------------------------------------------------
def test_bottom_up_path_is_stride2_conv_plus_lateral_then_conv():
    rng = np.random.default_rng(0)
    minseg.manual_seed(0)
    path = heads.BottomUpPath(4)
    pyramid = [random_tensor(rng, 1, 4, 16 // 2 ** level, 16 // 2 ** level) for level in range(5)]
    levels = path(pyramid)
    assert [tuple(n.shape) for n in levels] == [(1, 4, 16, 16), (1, 4, 8, 8), (1, 4, 4, 4), (1, 4, 2, 2),
                                                (1, 4, 1, 1)]
    np.testing.assert_array_equal(levels[0].data, pyramid[0].data)  # N2 = P2
    expected = pyramid[0]
    for i in range(3):
        expected = conv(path.smooth[i], conv(path.downsample[i], expected) + pyramid[i + 1])
        np.testing.assert_allclose(levels[i + 1].data, expected.data, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(levels[4].data, levels[3].data[:, :, ::2, ::2])  # N6: N5 subsampled


# --- 2. adaptive feature pooling ---------------------------------------------------------
def test_level_fusion_is_the_elementwise_max_of_each_levels_layer():
    rng = np.random.default_rng(1)
    minseg.manual_seed(1)
    fusion = heads.LevelFusion([minseg.nn.Conv2d(3, 5, 3, padding=1) for _ in range(4)])
    grids = [random_tensor(rng, 2, 3, 6, 6) for _ in range(4)]
    each = np.stack([layer(grid).data for layer, grid in zip(fusion.layers, grids)])
    np.testing.assert_allclose(fusion(grids).data, each.max(axis=0), rtol=1e-6)
    with pytest.raises(ValueError, match=r"LevelFusion: expected one pooled grid per level \(4\), got 3"):
        fusion(grids[:3])


def test_level_fusion_sends_each_gradient_to_the_level_that_won():
    grids = [Tensor(np.array([[1.0, 5.0]], np.float32), requires_grad=True),
             Tensor(np.array([[3.0, 2.0]], np.float32), requires_grad=True)]
    fusion = heads.LevelFusion([minseg.nn.Identity(), minseg.nn.Identity()])
    fusion(grids).sum().backward()
    np.testing.assert_array_equal(grids[0].grad, [[0.0, 1.0]])
    np.testing.assert_array_equal(grids[1].grad, [[1.0, 0.0]])


def test_adaptive_box_head_with_one_level_is_the_two_mlp_head():
    rng = np.random.default_rng(2)
    minseg.manual_seed(2)
    head = heads.AdaptiveTwoMLPHead(1, 3, 4, 16)
    grid = random_tensor(rng, 5, 3, 4, 4)
    fc6, fc7 = head.fc6.layers[0], head.fc7
    flat = grid.data.reshape(5, -1)
    hidden = np.maximum(flat @ fc6.weight.data.T + fc6.bias.data, 0)
    expected = np.maximum(hidden @ fc7.weight.data.T + fc7.bias.data, 0)
    np.testing.assert_allclose(head([grid]).data, expected, rtol=1e-5, atol=1e-6)


def test_adaptive_mask_head_takes_all_levels_and_keeps_the_resolution():
    rng = np.random.default_rng(3)
    minseg.manual_seed(3)
    head = heads.AdaptiveMaskHead(4, 3, (6, 6, 6))
    out = head([random_tensor(rng, 2, 3, 7, 7) for _ in range(4)])
    assert out.shape == (2, 6, 7, 7) and head.out_channels == 6
    assert len(head.mask_fcn1.layers) == 4 and len(head.rest) == 2


# --- 3. the fused fully connected mask branch ---------------------------------------------
def test_fused_mask_predictor_adds_one_class_agnostic_fc_mask_to_every_class():
    rng = np.random.default_rng(4)
    minseg.manual_seed(4)
    predictor = heads.FusedMaskPredictor(4, 3, 5)
    x = random_tensor(rng, 2, 4, 5, 5)
    logits = predictor(x)
    assert logits.shape == (2, 3, 10, 10)
    assert predictor.conv5_fc[0].weight.shape[0] == 2  # conv5_fc: half the channels
    fcn = predictor.mask_fcn_logits(F.relu(predictor.conv5_mask(predictor.conv4(x)))).data
    fc_mask = (logits.data - fcn)  # what the fc path added, the same for every class
    np.testing.assert_allclose(fc_mask, np.repeat(fc_mask[:, :1], 3, axis=1), rtol=1e-5, atol=1e-5)
    fc = predictor.fc(predictor.conv5_fc(predictor.conv4_fc(x)).reshape(2, -1)).data.reshape(2, 1, 10, 10)
    np.testing.assert_allclose(fc_mask[:, :1], fc, rtol=1e-4, atol=1e-5)


# --- gradients through the three additions, in float64 -------------------------------------
def to_float64(module):
    for parameter in module.parameters():
        parameter.data = parameter.data.astype(np.float64)
    return module


def float64_inputs(rng, count, *shape):
    return [Tensor(rng.standard_normal(shape), requires_grad=True) for _ in range(count)]


def test_gradients_of_the_bottom_up_path_and_the_level_fusions_match_central_differences():
    rng = np.random.default_rng(5)
    minseg.manual_seed(5)
    path = to_float64(heads.BottomUpPath(2))
    pyramid = [Tensor(rng.standard_normal((1, 2, 8 // 2 ** k, 8 // 2 ** k)), requires_grad=True) for k in range(5)]
    assert minseg.gradcheck(lambda *levels: tuple(path(list(levels))[:4]), pyramid)
    box_head = to_float64(heads.AdaptiveTwoMLPHead(4, 2, 3, 5))
    assert minseg.gradcheck(lambda *grids: box_head(list(grids)), float64_inputs(rng, 4, 3, 2, 3, 3))
    mask_head = to_float64(heads.AdaptiveMaskHead(4, 2, (3, 3)))
    assert minseg.gradcheck(lambda *grids: mask_head(list(grids)), float64_inputs(rng, 4, 2, 2, 4, 4))
    predictor = to_float64(heads.FusedMaskPredictor(2, 3, 3))
    assert minseg.gradcheck(predictor, float64_inputs(rng, 1, 2, 2, 3, 3))


# --- the model: flags -----------------------------------------------------------------------
def test_with_every_flag_off_panet_is_panoptic_fpn():
    minseg.manual_seed(0)
    plain = PanopticFPN(3, 2, **TINY)
    minseg.manual_seed(0)
    panet = PANet(3, 2, path_augmentation=False, adaptive_pooling=False, fused_mask=False, **TINY)
    assert plain.state_dict().keys() == panet.state_dict().keys()
    for name, value in plain.state_dict().items():
        np.testing.assert_array_equal(value, panet.state_dict()[name], err_msg=name)


def test_every_flag_setting_starts_the_shared_parts_from_the_same_weights():
    minseg.manual_seed(0)
    plain = PanopticFPN(3, 2, **TINY).state_dict()
    minseg.manual_seed(0)
    panet = PANet(3, 2, **TINY).state_dict()
    shared = [name for name in plain if name.startswith(("backbone.", "rpn.", "semantic_head.",
                                                         "roi_heads.box_predictor."))]
    assert len(shared) > 50
    for name in shared:
        np.testing.assert_array_equal(plain[name], panet[name], err_msg=name)


def _keys(model):
    return set(model.state_dict())


@pytest.mark.parametrize("flag, added, removed", [
    ("path_augmentation", {"bottom_up.downsample.0.0.weight", "bottom_up.smooth.2.0.bias"}, set()),
    ("adaptive_pooling", {"roi_heads.box_head.fc6.layers.3.weight", "roi_heads.mask_head.mask_fcn1.layers.3.weight"},
     {"roi_heads.box_head.fc6.weight"}),
    ("fused_mask", {"roi_heads.mask_predictor.conv4_fc.0.weight", "roi_heads.mask_predictor.conv5_fc.0.weight",
                    "roi_heads.mask_predictor.fc.weight"}, set()),
])
def test_each_flag_changes_the_structure_as_documented(flag, added, removed):
    flags = {"path_augmentation": False, "adaptive_pooling": False, "fused_mask": False}
    base = _keys(PANet(3, 2, **flags, **TINY))
    model = PANet(3, 2, **{**flags, flag: True}, **TINY)
    keys = _keys(model)
    assert added <= keys - base
    assert removed <= base - keys
    assert getattr(model, flag) and f"{flag}=True" in repr(model)


def test_adaptive_pooling_pools_every_roi_from_every_level():
    model = PANet(3, 2, path_augmentation=False, adaptive_pooling=True, fused_mask=False, **TINY)
    assert len(model.roi_heads.box_head.fc6.layers) == 4 and len(model.roi_heads.mask_head.mask_fcn1.layers) == 4


def test_fused_mask_moves_conv4_into_the_predictor():
    model = PANet(3, 2, path_augmentation=False, adaptive_pooling=False, fused_mask=True, **TINY)
    assert len(model.roi_heads.mask_head.rest) == 2  # conv2, conv3: conv1 is mask_fcn1
    assert isinstance(model.roi_heads.mask_predictor, heads.FusedMaskPredictor)


# --- the model: training and inference ---------------------------------------------------------
def test_panet_trains_and_every_parameter_gets_a_gradient():
    minseg.manual_seed(0)
    model = create("panet", 3, 2, **TINY)
    images, targets = shapes_batch()
    losses = model(images, targets)
    assert {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask",
            "loss_semantic"} == set(losses)
    assert all(np.isfinite(loss.item()) for loss in losses.values())
    sum(losses.values()).backward()
    missing = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    assert missing == []


def test_panet_predicts_one_dict_per_image():
    minseg.manual_seed(0)
    model = create("panet", 3, num_stuff=2, **TINY).eval()
    images, _ = shapes_batch()
    with minseg.no_grad():
        outputs = model(images)
    assert len(outputs) == 2
    for output in outputs:
        assert output["masks"].shape[1:] == (64, 64) and output["panoptic"].shape == (64, 64)
