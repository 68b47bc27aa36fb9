"""Tests for Panoptic FPN and its detection FPN backbone, on tiny channel counts and 64x64 synthetic shapes.

The pyramid is checked against its definition (lateral 1x1 conv + upsampled coarser level, a 3x3 conv, P6 = P5
subsampled); the model by its contract: the named, weighted losses in training, one dict per image in the
instance conventions at inference, a gradient for every parameter, a loss that falls when it trains on two
images, and ``create()``'s names.
"""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import minseg
import minseg.functional as F
from minseg import Tensor
from minseg.data.instance_loader import InstanceDataLoader
from minseg.data.shapes import ShapesDataset
from minseg.detection import LABEL_DIVISOR
from minseg.models import INSTANCE_MODELS, PANet, PanopticFPN, create
from minseg.models.fpn_backbone import FPNBackbone, SmallResNetEncoder
from minseg.models.panoptic_fpn import SemanticHead, semantic_target
from minseg.optim import AdamW

# The smallest model that still has every part: 8-wide ResNet, 16-channel pyramid, 4x4 box and 7x7 mask RoIs.
TINY = dict(encoder="resnet_small", width=8, fpn_channels=16, semantic_channels=32, anchor_sizes=(8, 16, 32, 64, 128),
            canonical_scale=56, representation_size=32, mask_layers=(8, 8, 8, 8), box_resolution=4, mask_resolution=7,
            rpn_options={"pre_nms_top_n": {"training": 50, "testing": 30},
                         "post_nms_top_n": {"training": 30, "testing": 20}, "batch_size_per_image": 32},
            roi_options={"batch_size_per_image": 16, "detections_per_img": 10})
LOSSES = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask", "loss_semantic"}


def shapes_batch(count=2, size=64, seed=0):
    """``count`` synthetic images (normalized Tensor) and their targets."""
    loader = InstanceDataLoader(ShapesDataset(count, size=size, seed=seed), batch_size=count, mean=(0.5,) * 3,
                                std=(0.25,) * 3)
    return next(iter(loader))


def tiny_model(seed=0, **options):
    minseg.manual_seed(seed)
    return PanopticFPN(ShapesDataset.num_things, ShapesDataset.num_stuff, **{**TINY, **options})


# --- the detection FPN ---------------------------------------------------------------------
@pytest.mark.parametrize("encoder", ["resnet_small", "resnet18"])
def test_backbone_returns_p2_to_p6_at_strides_4_to_64(encoder):
    minseg.manual_seed(0)
    backbone = FPNBackbone(encoder, out_channels=16, width=8)
    pyramid = backbone(Tensor(np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)))
    assert [tuple(p.shape) for p in pyramid] == [(1, 16, 64 // s, 64 // s) for s in backbone.strides]
    assert backbone.size_multiple == 32


def test_backbone_levels_are_smoothed_top_down_sums_and_p6_subsamples_p5():
    minseg.manual_seed(0)
    backbone = FPNBackbone("resnet_small", out_channels=8, width=8)
    x = Tensor(np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32))
    c2, c3, c4, c5 = backbone.encoder(x)[-4:]
    top = backbone.p5(c5)
    inner4 = F.interpolate(top, scale_factor=2.0) + backbone.p4.skip_conv(c4)
    pyramid = backbone(x)
    np.testing.assert_allclose(pyramid[3].data, backbone.layer_blocks[3](top).data, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pyramid[2].data, backbone.layer_blocks[2](inner4).data, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pyramid[4].data, pyramid[3].data[:, :, ::2, ::2])


def test_small_resnet_has_resnet_strides_at_the_chosen_width():
    encoder = SmallResNetEncoder(width=4, blocks=(1, 2, 1, 1))
    features = encoder.eval()(Tensor(np.zeros((1, 3, 32, 32), np.float32)))
    assert [tuple(f.shape[1:]) for f in features] == [(3, 32, 32), (4, 16, 16), (4, 8, 8), (8, 4, 4), (16, 2, 2),
                                                      (32, 1, 1)]
    assert encoder.out_channels == (3, 4, 4, 8, 16, 32) and len(encoder.layer2) == 2
    with pytest.raises(ValueError, match=r"SmallResNetEncoder: blocks must be four positive block counts"):
        SmallResNetEncoder(blocks=(1, 1, 1))
    with pytest.raises(ValueError, match=r"FPNBackbone: encoder must be one of 'resnet18', 'resnet34', "
                                         r"'resnet_small', got 'vgg16'"):
        FPNBackbone("vgg16")


# --- the semantic branch -------------------------------------------------------------------
def test_semantic_target_sends_every_thing_to_the_things_class():
    semantic = np.array([[0, 1, 2], [3, 4, -100]])
    np.testing.assert_array_equal(semantic_target(semantic, 2), [[0, 1, 2], [2, 2, -100]])


def test_semantic_head_sums_each_levels_upsampled_blocks_and_upsamples_4x():
    minseg.manual_seed(0)
    head = SemanticHead(8, 3, channels=32)
    rng = np.random.default_rng(0)
    pyramid = [Tensor(rng.standard_normal((1, 8, 16 // 2 ** k, 16 // 2 ** k)).astype(np.float32)) for k in range(5)]
    merged = sum(block(p).data for block, p in zip(head.seg_blocks, pyramid[3::-1]))
    expected = head.head(Tensor(merged)).data
    logits = head(pyramid)
    assert logits.shape == (1, 3, 64, 64)
    np.testing.assert_allclose(logits.data, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"SemanticHead: channels must be a multiple of 32 .*, got 16"):
        SemanticHead(8, 3, channels=16)


# --- training --------------------------------------------------------------------------------
def test_training_returns_the_named_losses_weighted_by_lambda():
    images, targets = shapes_batch()
    losses = tiny_model()(images, targets)
    assert set(losses) == LOSSES and all(np.isfinite(loss.item()) and loss.shape == () for loss in losses.values())
    heavier = tiny_model(semantic_loss_weight=1.0, instance_loss_weight=2.0)(images, targets)
    assert heavier["loss_semantic"].item() == pytest.approx(2 * losses["loss_semantic"].item(), rel=1e-6)
    assert heavier["loss_mask"].item() == pytest.approx(2 * losses["loss_mask"].item(), rel=1e-6)
    model = tiny_model()
    assert (model.semantic_loss_weight, model.instance_loss_weight) == (0.5, 1.0)


def test_the_semantic_loss_is_cross_entropy_on_stuff_plus_one_things_class():
    images, targets = shapes_batch()
    model = tiny_model(semantic_loss_weight=1.0)
    losses = model(images, targets)
    logits = model.semantic_head(model.backbone(images))
    target = np.stack([semantic_target(t["semantic"], ShapesDataset.num_stuff) for t in targets])
    assert logits.shape == (2, ShapesDataset.num_stuff + 1, 64, 64)
    assert losses["loss_semantic"].item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-5)


def test_images_without_objects_train_the_background_and_the_semantic_head_only():
    images, targets = next(iter(InstanceDataLoader(ShapesDataset(2, size=64, num_instances=0), batch_size=2)))
    assert [len(t["boxes"]) for t in targets] == [0, 0]
    losses = tiny_model()(images, targets)
    assert losses["loss_box_reg"].item() == losses["loss_mask"].item() == losses["loss_rpn_box_reg"].item() == 0
    assert losses["loss_classifier"].item() > 0 and losses["loss_semantic"].item() > 0
    sum(losses.values()).backward()


def test_every_parameter_gets_a_gradient():
    images, targets = shapes_batch()
    model = tiny_model()
    sum(model(images, targets).values()).backward()
    assert [name for name, parameter in model.named_parameters() if parameter.grad is None] == []


def test_the_semantic_loss_trains_the_shared_pyramid_but_not_the_instance_heads():
    images, targets = shapes_batch()
    model = tiny_model()
    model(images, targets)["loss_semantic"].backward()
    assert model.backbone.encoder.conv1.weight.grad is not None
    assert all(p.grad is None for p in model.rpn.parameters()) and all(p.grad is None for p in
                                                                      model.roi_heads.parameters())


def test_the_loss_falls_when_it_trains_on_two_images():
    images, targets = shapes_batch()
    model = tiny_model()
    optimizer = AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    totals = []
    for _ in range(12):
        total = sum(model(images, targets).values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    assert np.mean(totals[-3:]) < 0.8 * np.mean(totals[:3]), totals


# --- inference -------------------------------------------------------------------------------
def test_inference_returns_one_dict_per_image_in_the_instance_conventions():
    images, _ = shapes_batch()
    model = tiny_model().eval()
    with minseg.no_grad():
        outputs = model(images)
    assert len(outputs) == 2
    for output in outputs:
        k = len(output["boxes"])
        assert output["boxes"].shape == (k, 4) and output["boxes"].dtype == np.float32
        assert output["labels"].dtype == np.int64 and set(output["labels"].tolist()) <= {1, 2, 3}
        assert output["scores"].shape == (k,) and output["scores"].dtype == np.float32
        assert output["masks"].shape == (k, 64, 64) and 0 <= output["masks"].min() <= output["masks"].max() <= 1
        assert output["semantic"].shape == (3, 64, 64)
        panoptic = output["panoptic"]
        assert panoptic.shape == (64, 64) and panoptic.dtype == np.int64
        categories = panoptic[panoptic >= 0] // LABEL_DIVISOR
        assert set(categories.tolist()) <= set(range(5))


def test_forward_refuses_missing_targets_in_training_and_sizes_off_the_multiple():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"PanopticFPN.forward: targets must be given in training"):
        model(Tensor(np.zeros((1, 3, 64, 64), np.float32)))
    with pytest.raises(ValueError, match=r"PanopticFPN needs height and width divisible by 32, got 64x48"):
        model.eval()(Tensor(np.zeros((1, 3, 64, 48), np.float32)))


# --- create() ----------------------------------------------------------------------------------
def test_create_builds_the_instance_models_by_name():
    assert set(INSTANCE_MODELS) == {"panoptic_fpn", "panet"}
    model = create("panoptic_fpn", 3, 2, **TINY)
    assert type(model) is PanopticFPN and (model.num_things, model.num_stuff) == (3, 2)
    assert model.roi_heads.box_predictor.cls_score.out_features == 4  # three things and the background
    panet = create("panet", 3, num_stuff=2, fused_mask=False, **TINY)
    assert type(panet) is PANet and not panet.fused_mask and panet.path_augmentation
    assert create("panoptic_fpn", 3, 2).backbone.encoder.name == "resnet18"


def test_create_explains_a_missing_or_misplaced_num_stuff():
    with pytest.raises(ValueError, match=r"create: model 'panoptic_fpn' needs num_stuff, the number of stuff "
                                         r"categories; call create\('panoptic_fpn', num_things, num_stuff\)"):
        create("panoptic_fpn", 3)
    with pytest.raises(ValueError, match=r"create: num_stuff is for the panoptic models \('panoptic_fpn', 'panet'\), "
                                         r"got num_stuff='resnet18' for 'unet'; pass an encoder by name"):
        create("unet", 3, "resnet18")
    with pytest.raises(ValueError, match=r"create: unknown model name 'maskrcnn'; choose one of .*'panoptic_fpn', "
                                         r"'panet'"):
        create("maskrcnn", 3)
    with pytest.raises(ValueError, match=r"PanopticFPN: num_things must be >= 1 and num_stuff >= 0"):
        create("panoptic_fpn", 0, 2)


# --- examples/shapes_panoptic.py ------------------------------------------------------------
def load_example():
    path = Path(__file__).resolve().parents[1] / "examples" / "shapes_panoptic.py"
    spec = importlib.util.spec_from_file_location("shapes_panoptic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_trains_evaluates_and_prints_the_table(capsys):
    example = load_example()
    assert example.main(["--epochs", "1", "--train-images", "4", "--valid-images", "2", "--size", "64",
                         "--batch-size", "2", "--model", "panet", "--no-fused-mask"]) == 0
    out = capsys.readouterr().out
    assert "PANet (path_augmentation, adaptive_pooling)" in out
    assert "AP50" in out and "PQth" in out and "seed 0, 1 epochs" in out


def test_the_examples_ablation_turns_panets_additions_on_one_by_one():
    example = load_example()
    models = [example.build(name, flags, 3, 2, 64, 0) for name, flags in example.ABLATION]
    assert type(models[0]) is PanopticFPN
    assert [(m.path_augmentation, m.adaptive_pooling, m.fused_mask) for m in models[1:]] == [
        (True, False, False), (True, True, False), (True, True, True)]
    with pytest.raises(SystemExit):
        example.parse_args(["--size", "48"])
