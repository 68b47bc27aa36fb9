"""The region proposal network: head shapes, anchor order, the proposal filter, anchor labels, losses that train."""
import numpy as np
import pytest

import minseg
from minseg import Tensor, nn, optim
from minseg.detection.anchors import AnchorGenerator
from minseg.detection.rpn import RegionProposalNetwork, RPNHead, concat_box_prediction_layers


def tiny_pyramid(seed=0, batch=2, channels=4):
    """Two levels of a 32 x 32 image: strides 4 and 8."""
    rng = np.random.default_rng(seed)
    return [Tensor(rng.standard_normal((batch, channels, 8, 8)).astype(np.float32)),
            Tensor(rng.standard_normal((batch, channels, 4, 4)).astype(np.float32))]


def tiny_rpn(channels=4, **kwargs):
    anchors = AnchorGenerator(sizes=((8,), (16,)), aspect_ratios=((0.5, 1.0, 2.0),) * 2)
    return RegionProposalNetwork(anchors, RPNHead(channels, 3), **kwargs)


IMAGES = np.zeros((2, 3, 32, 32), np.float32)
TARGETS = [{"boxes": np.array([[4, 4, 12, 12]], np.float32), "labels": np.array([1])},
           {"boxes": np.array([[8, 16, 24, 24], [0, 0, 6, 10]], np.float32), "labels": np.array([1, 2])}]


# ---------------------------------------------------------------------------
# The head and the layout of its outputs
# ---------------------------------------------------------------------------
def test_head_shapes_and_initialization():
    minseg.manual_seed(0)
    head = RPNHead(4, 3)
    objectness, deltas = head(tiny_pyramid())
    assert [o.shape for o in objectness] == [(2, 3, 8, 8), (2, 3, 4, 4)]
    assert [d.shape for d in deltas] == [(2, 12, 8, 8), (2, 12, 4, 4)]
    assert abs(float(head.cls_logits.weight.data.std()) - 0.01) < 0.005
    assert not head.bbox_pred.bias.data.any() and not head.conv[0].bias.data.any()


def test_predictions_are_flattened_in_the_anchors_order():
    # Level l, row y, column x, anchor a gets the value 1000 l + 100 y + 10 x + a (and + 0.1 j for delta j).
    values, deltas = [], []
    for level, size in enumerate((3, 2)):
        l, a, y, x = np.meshgrid([level], np.arange(2), np.arange(size), np.arange(size), indexing="ij")
        code = (1000 * l + 100 * y + 10 * x + a).astype(np.float64)
        values.append(Tensor(code))
        deltas.append(Tensor((code[:, :, None] + 0.1 * np.arange(4)[None, None, :, None, None]).reshape(1, 8, size,
                                                                                                       size)))
    flat_objectness, flat_deltas = concat_box_prediction_layers(values, deltas)
    expected = [1000 * l + 100 * y + 10 * x + a for l, size in enumerate((3, 2))
                for y in range(size) for x in range(size) for a in range(2)]
    np.testing.assert_allclose(flat_objectness.numpy()[0], expected)
    np.testing.assert_allclose(flat_deltas.numpy()[0], np.array(expected)[:, None] + 0.1 * np.arange(4))


# ---------------------------------------------------------------------------
# Proposals
# ---------------------------------------------------------------------------
def test_proposals_have_the_right_shapes_and_lie_in_the_image():
    minseg.manual_seed(1)
    rpn = tiny_rpn(post_nms_top_n=dict(training=50, testing=20)).eval()
    boxes, losses = rpn(IMAGES, tiny_pyramid())
    assert losses == {} and len(boxes) == 2
    for b in boxes:
        assert b.dtype == np.float32 and b.ndim == 2 and b.shape[1] == 4 and 0 < len(b) <= 20
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= 32).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= 32).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()


def test_filter_proposals_by_hand():
    rpn = tiny_rpn(nms_thresh=0.5, score_thresh=0.2, pre_nms_top_n=dict(training=3, testing=3),
                   post_nms_top_n=dict(training=10, testing=10)).eval()
    proposals = [np.array([[0, 0, 10, 10],      # level 0, best
                           [1, 1, 10, 10],      # level 0, overlaps the best: suppressed
                           [0, 0, 10, 10.0],    # level 1, same box: another level, kept
                           [5, 5, 5.0005, 9],   # level 1, narrower than min_size: removed
                           [20, 20, 40, 40],    # level 1, clipped to the image, kept
                           [12, 12, 16, 16]],   # level 1, probability 0.1 < 0.2: removed
                          np.float32)]
    logits = np.log(np.array([[0.9, 0.8, 0.7, 0.95, 0.6, 0.1]]) / (1 - np.array([[0.9, 0.8, 0.7, 0.95, 0.6, 0.1]])))
    boxes, scores = rpn.filter_proposals(proposals, logits, (32, 32), [2, 4])
    np.testing.assert_allclose(boxes[0], [[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 32, 32]])
    np.testing.assert_allclose(scores[0], [0.9, 0.7, 0.6], rtol=1e-6)


def test_pre_nms_top_n_applies_per_level():
    rpn = tiny_rpn(pre_nms_top_n=dict(training=1, testing=1), nms_thresh=1.0).eval()
    proposals = [np.array([[0, 0, 4, 4], [8, 8, 12, 12], [16, 16, 20, 20], [24, 24, 28, 28]], np.float32)]
    boxes, scores = rpn.filter_proposals(proposals, np.array([[1.0, 2.0, 3.0, 0.5]]), (32, 32), [2, 2])
    np.testing.assert_allclose(boxes[0], [[16, 16, 20, 20], [8, 8, 12, 12]])


# ---------------------------------------------------------------------------
# Training targets and losses
# ---------------------------------------------------------------------------
def test_anchor_labels_objects_background_and_ignored():
    rpn = tiny_rpn()
    anchors = [np.array([[0, 0, 10, 10], [0, 0, 10, 7.5], [0, 0, 10, 6], [0, 0, 10, 2], [50, 50, 60, 60]],
                        np.float32)]
    labels, matched = rpn.assign_targets_to_anchors(anchors, [{"boxes": np.array([[0, 0, 10, 10]], np.float32)}])
    # IoU 1 and 0.75 -> object (>= 0.7), 0.6 -> ignored, 0.2 and 0 -> background (< 0.3).
    np.testing.assert_array_equal(labels[0], [1, 1, -1, 0, 0])
    np.testing.assert_array_equal(matched[0], np.tile([0, 0, 10, 10], (5, 1)))
    # No objects: every anchor is background, matched to itself (a zero code no loss reads).
    labels, matched = rpn.assign_targets_to_anchors(anchors, [{"boxes": np.zeros((0, 4), np.float32)}])
    np.testing.assert_array_equal(labels[0], [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(matched[0], anchors[0])


def test_training_losses_are_finite_scalars_with_gradients():
    minseg.manual_seed(2)
    rpn = tiny_rpn().train()
    features = [f.requires_grad_() for f in tiny_pyramid()]
    boxes, losses = rpn(IMAGES, features, TARGETS)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg"} and len(boxes) == 2
    total = losses["loss_objectness"] + losses["loss_rpn_box_reg"]
    assert total.shape == () and np.isfinite(total.item())
    total.backward()
    assert all(np.isfinite(p.grad).all() for p in rpn.parameters()) and features[0].grad is not None
    # At the start every anchor's probability is about 1/2: the objectness loss is about log 2.
    assert abs(losses["loss_objectness"].item() - np.log(2)) < 0.05


def test_an_image_without_objects_trains_objectness_only():
    rpn = tiny_rpn().train()
    empty = [{"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)}] * 2
    _, losses = rpn(IMAGES, tiny_pyramid(), empty)
    assert losses["loss_rpn_box_reg"].item() == 0 and losses["loss_objectness"].item() > 0


def test_losses_decrease_on_a_toy_overfit():
    minseg.manual_seed(3)
    backbone = nn.Conv2d(3, 4, 3, padding=1)
    rpn = tiny_rpn().train()
    images = Tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    optimizer = optim.Adam(list(backbone.parameters()) + list(rpn.parameters()), lr=0.05)
    history = []
    for _ in range(10):
        x = backbone(images)
        features = [minseg.functional.avg_pool2d(x, 4), minseg.functional.avg_pool2d(x, 8)]
        _, losses = rpn(images, features, TARGETS)
        total = losses["loss_objectness"] + losses["loss_rpn_box_reg"]
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert history[-1] < 0.8 * history[0] and history[-1] == min(history), history


def test_bad_uses_say_what_to_do():
    with pytest.raises(ValueError, match="RegionProposalNetwork: targets must be given in training mode"):
        tiny_rpn().train()(IMAGES, tiny_pyramid())
    anchors = AnchorGenerator(sizes=((8,), (16,)), aspect_ratios=((0.5, 1.0, 2.0),) * 2)
    with pytest.raises(ValueError, match=r"the anchor generator places 240 anchors but the head scores 80; give "
                                         r"RPNHead num_anchors = 3"):
        RegionProposalNetwork(anchors, RPNHead(4, 1)).eval()(IMAGES, tiny_pyramid())
