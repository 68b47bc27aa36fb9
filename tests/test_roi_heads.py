"""The second stage: box head, mask head, mask targets and pasting, sampling, the losses and the inference filter."""
import numpy as np
import pytest

import minseg
from minseg import Tensor, nn, optim
from minseg.detection.box_head import FastRCNNPredictor, TwoMLPHead, fastrcnn_loss
from minseg.detection.mask_head import (
    MaskRCNNHeads,
    MaskRCNNPredictor,
    maskrcnn_inference,
    maskrcnn_loss,
    paste_masks_in_image,
    project_masks_on_boxes,
)
from minseg.detection.poolers import MultiScaleRoIAlign
from minseg.detection.roi_heads import RoIHeads
from minseg.functional import cross_entropy, smooth_l1_loss

NUM_CLASSES = 3  # background + 2


def tiny_roi_heads(channels=4, with_mask=True, **kwargs):
    mask_parts = {}
    if with_mask:
        mask_parts = dict(mask_roi_pool=MultiScaleRoIAlign([0, 1], 4, 2),
                          mask_head=MaskRCNNHeads(channels, layers=(8, 8)),
                          mask_predictor=MaskRCNNPredictor(8, 8, NUM_CLASSES))
    return RoIHeads(MultiScaleRoIAlign([0, 1], 3, 2), TwoMLPHead(channels * 9, 16), FastRCNNPredictor(16, NUM_CLASSES),
                    **mask_parts, **kwargs)


def square_target(x1, y1, x2, y2, label, size=32):
    masks = np.zeros((1, size, size), np.uint8)
    masks[0, y1:y2, x1:x2] = 1
    return {"boxes": np.array([[x1, y1, x2, y2]], np.float32), "labels": np.array([label]), "masks": masks}


def pyramid(seed=0, channels=4):
    rng = np.random.default_rng(seed)
    return [Tensor(rng.standard_normal((1, channels, 8, 8)).astype(np.float32)),
            Tensor(rng.standard_normal((1, channels, 4, 4)).astype(np.float32))]


# ---------------------------------------------------------------------------
# Box head
# ---------------------------------------------------------------------------
def test_box_head_and_predictor_shapes():
    x = Tensor(np.ones((5, 4, 3, 3), np.float32))
    features = TwoMLPHead(36, 16)(x)
    scores, deltas = FastRCNNPredictor(16, NUM_CLASSES)(features)
    assert features.shape == (5, 16) and (features.numpy() >= 0).all()
    assert scores.shape == (5, NUM_CLASSES) and deltas.shape == (5, 4 * NUM_CLASSES)


def test_fastrcnn_loss_reads_the_true_class_deltas_and_divides_by_all_sampled():
    rng = np.random.default_rng(0)
    logits = Tensor(rng.standard_normal((4, NUM_CLASSES)))
    regression = Tensor(rng.standard_normal((4, 4 * NUM_CLASSES)))
    labels, targets = [np.array([2, 0]), np.array([1, 0])], [rng.standard_normal((2, 4)), rng.standard_normal((2, 4))]
    loss_classifier, loss_box_reg = fastrcnn_loss(logits, regression, labels, targets)
    np.testing.assert_allclose(loss_classifier.item(), cross_entropy(logits, np.array([2, 0, 1, 0])).item())
    chosen = np.stack([regression.numpy()[0, 8:12], regression.numpy()[2, 4:8]])
    expected = smooth_l1_loss(chosen, np.stack([targets[0][0], targets[1][0]]), reduction="sum", beta=1 / 9).item() / 4
    np.testing.assert_allclose(loss_box_reg.item(), expected)


def test_fastrcnn_loss_gradcheck():
    rng = np.random.default_rng(1)
    logits = Tensor(rng.standard_normal((3, NUM_CLASSES)), requires_grad=True)
    regression = Tensor(rng.standard_normal((3, 4 * NUM_CLASSES)) * 0.3, requires_grad=True)
    labels, targets = [np.array([1, 0, 2])], [rng.standard_normal((3, 4)) * 0.3]
    minseg.gradcheck(lambda a, b: fastrcnn_loss(a, b, labels, targets), [logits, regression])


# ---------------------------------------------------------------------------
# Mask head: modules, targets, loss, pasting
# ---------------------------------------------------------------------------
def test_mask_head_and_predictor_shapes():
    x = Tensor(np.ones((2, 4, 7, 7), np.float32))
    logits = MaskRCNNPredictor(8, 6, NUM_CLASSES)(MaskRCNNHeads(4, layers=(8, 8))(x))
    assert logits.shape == (2, NUM_CLASSES, 14, 14)


def test_mask_targets_of_a_mask_covering_the_box_are_ones():
    masks = np.zeros((2, 20, 20), np.uint8)
    masks[0, 2:18, 2:18] = 1   # covers the box [4, 4, 12, 12] with room around it
    masks[1, 4:12, 4:12] = 1   # exactly the box
    boxes = np.array([[4, 4, 12, 12], [4, 4, 12, 12], [4, 4, 12, 12]], np.float32)
    targets = project_masks_on_boxes(masks, boxes, np.array([0, 1, 1]), 8)
    assert targets.shape == (3, 8, 8) and targets.dtype == np.float32
    np.testing.assert_allclose(targets[0], 1)
    # aligned=False (torchvision's) samples half a pixel up-left: the inside is 1, the last row and column are less.
    np.testing.assert_allclose(targets[1][:-1, :-1], 1)
    assert (targets[1] > 0).all() and (targets[1] <= 1).all()


def test_maskrcnn_loss_uses_the_true_class_channel_only():
    masks = np.zeros((1, 16, 16), np.uint8)
    masks[0, 2:14, 2:14] = 1
    logits = np.full((1, NUM_CLASSES, 4, 4), -20.0)
    logits[0, 2] = 20.0  # confident "inside" on class 2's map, "outside" everywhere else
    proposals = [np.array([[4, 4, 12, 12]], np.float32)]
    right = maskrcnn_loss(Tensor(logits), proposals, [masks], [np.array([2])], [np.array([0])])
    wrong = maskrcnn_loss(Tensor(logits), proposals, [masks], [np.array([1])], [np.array([0])])
    assert right.item() < 1e-6 and wrong.item() > 10


def test_maskrcnn_loss_gradcheck():
    rng = np.random.default_rng(2)
    masks = (rng.random((2, 12, 12)) > 0.5).astype(np.uint8)
    logits = Tensor(rng.standard_normal((3, NUM_CLASSES, 3, 3)), requires_grad=True)
    proposals, labels, matched = [np.array([[1, 1, 9, 9], [2, 0, 12, 6], [0, 3, 7, 12]], np.float32)], \
        [np.array([2, 1])], [np.array([0, 1, 1])]
    minseg.gradcheck(lambda x: maskrcnn_loss(x, proposals, [masks], labels, matched), [logits])


def test_maskrcnn_loss_without_positives_is_zero_with_a_zero_gradient():
    logits = Tensor(np.ones((0, NUM_CLASSES, 4, 4)), requires_grad=True)
    loss = maskrcnn_loss(logits, [np.zeros((0, 4), np.float32)], [np.zeros((0, 8, 8))], [np.zeros(0)], [np.zeros(0)])
    assert loss.item() == 0


def test_maskrcnn_inference_picks_each_box_class():
    logits = np.zeros((3, NUM_CLASSES, 2, 2))
    logits[np.arange(3), [1, 2, 1]] = 50.0
    probabilities = maskrcnn_inference(logits, [np.array([1, 2]), np.array([2])])
    assert [p.shape for p in probabilities] == [(2, 1, 2, 2), (1, 1, 2, 2)]
    np.testing.assert_allclose(probabilities[0], 1)
    np.testing.assert_allclose(probabilities[1], 0.5)


def test_paste_puts_the_mask_inside_its_box_and_nothing_far_outside():
    pasted = paste_masks_in_image(np.ones((1, 1, 4, 4)), np.array([[4, 8, 12, 16]]), (24, 20))
    assert pasted.shape == (1, 24, 20) and pasted.dtype == np.float32
    np.testing.assert_allclose(pasted[0, 9:15, 5:11], 1)     # pixels well inside the box
    assert pasted[0, :6].max() == 0 and pasted[0, 18:].max() == 0 and pasted[0, :, :2].max() == 0
    # The edge pixels of the box read half the mask's edge cell and half the zero border, or more.
    assert (pasted[0, 8:16, 4:12] >= 0.5).all() and (pasted[0, 8:16, 3] < 0.5).all()


def test_paste_resizes_a_gradient_along_the_box():
    mask = np.tile(np.linspace(0, 1, 8), (8, 1))  # rises left to right
    pasted = paste_masks_in_image(mask[None], np.array([[0, 0, 16, 16]]), (16, 16))[0]
    row = pasted[8]
    assert (np.diff(row[1:-1]) >= 0).all() and row[-2] > 0.8 and row[1] < 0.2


# ---------------------------------------------------------------------------
# RoIHeads: sampling, inference, training end to end
# ---------------------------------------------------------------------------
def test_training_samples_include_the_ground_truth_and_respect_the_sampler():
    minseg.manual_seed(0)
    heads = tiny_roi_heads(batch_size_per_image=4, positive_fraction=0.5)
    proposals = [np.array([[0, 0, 8, 8], [20, 20, 30, 30], [21, 21, 30, 30], [1, 1, 3, 3], [0, 20, 5, 30]],
                          np.float32)]
    target = square_target(20, 20, 30, 30, 2)
    kept, matched, labels, regression = heads.select_training_samples(proposals, [target])
    assert len(kept[0]) == 4 and (labels[0] == 2).sum() == 2 and (labels[0] == 0).sum() == 2
    assert len(regression[0]) == 4 and (matched[0] == 0).all()
    # The ground-truth box, added as a proposal, is its own perfect match: code 0.
    full, *_ = tiny_roi_heads(batch_size_per_image=100).select_training_samples(proposals, [target])
    assert any(np.array_equal(p, [20, 20, 30, 30]) for p in full[0])


def test_postprocess_keeps_confident_distinct_boxes_of_each_class():
    heads = tiny_roi_heads(score_thresh=0.3, nms_thresh=0.5, detections_per_img=3)
    proposals = [np.array([[0, 0, 10, 10], [1, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [2, 2, 3, 3]],
                          np.float32)]
    scores = np.array([[0.1, 0.9, 0.0],    # class 1, best
                       [0.1, 0.8, 0.1],    # class 1, overlaps the best: suppressed
                       [0.2, 0.0, 0.8],    # class 2 on the same box: another class, kept
                       [0.8, 0.1, 0.1],    # background wins; 0.1 is below the threshold
                       [0.0, 0.7, 0.3]])   # class 1 on a 1 x 1 box: small, yet above min_size (0.01), kept
    logits = Tensor(np.log(scores + 1e-12))
    boxes, kept_scores, labels = heads.postprocess_detections(logits, Tensor(np.zeros((5, 12), np.float32)),
                                                              proposals, [(32, 32)])
    np.testing.assert_array_equal(labels[0], [1, 2, 1])
    np.testing.assert_allclose(kept_scores[0], [0.9, 0.8, 0.7], rtol=1e-4)
    np.testing.assert_allclose(boxes[0], [[0, 0, 10, 10], [0, 0, 10, 10], [2, 2, 3, 3]])
    assert boxes[0].dtype == np.float32 and labels[0].dtype == np.int64


def test_training_then_inference_end_to_end():
    minseg.manual_seed(4)
    backbone = nn.Conv2d(3, 4, 3, padding=1)
    heads = tiny_roi_heads(batch_size_per_image=16)
    images = Tensor(np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32))
    targets = [square_target(8, 8, 24, 20, 1)]
    proposals = [np.array([[6, 6, 22, 22], [10, 8, 26, 20], [0, 0, 8, 8], [16, 16, 32, 32]], np.float32)]
    params = list(backbone.parameters()) + list(heads.parameters())
    optimizer = optim.Adam(params, lr=0.03)
    history = []
    for _ in range(10):
        x = backbone(images)
        features = [minseg.functional.avg_pool2d(x, 4), minseg.functional.avg_pool2d(x, 8)]
        detections, losses = heads(features, proposals, [(32, 32)], targets)
        assert detections == [] and set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask"}
        total = losses["loss_classifier"] + losses["loss_box_reg"] + losses["loss_mask"]
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert history[-1] < 0.6 * history[0], history

    heads.eval()
    x = backbone(images)
    detections, losses = heads([minseg.functional.avg_pool2d(x, 4), minseg.functional.avg_pool2d(x, 8)],
                               proposals, [(32, 32)])
    assert losses == {} and len(detections) == 1
    d = detections[0]
    k = len(d["boxes"])
    assert k >= 1 and d["labels"][0] == 1 and d["masks"].shape == (k, 32, 32)
    assert d["scores"].shape == (k,) and (np.diff(d["scores"]) <= 0).all()
    assert 0 <= d["masks"].min() and d["masks"].max() <= 1


def test_inference_without_detections_gives_empty_arrays():
    heads = tiny_roi_heads(score_thresh=0.99).eval()
    detections, _ = heads(pyramid(), [np.array([[0, 0, 8, 8]], np.float32)], [(32, 32)])
    assert detections[0]["boxes"].shape == (0, 4) and detections[0]["masks"].shape == (0, 32, 32)


def test_an_image_without_objects_and_an_image_without_proposals():
    heads = tiny_roi_heads(batch_size_per_image=8)
    empty = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
             "masks": np.zeros((0, 32, 32), np.uint8)}
    _, losses = heads(pyramid(), [np.array([[0, 0, 8, 8], [4, 4, 20, 20]], np.float32)], [(32, 32)], [empty])
    assert losses["loss_classifier"].item() > 0 and losses["loss_box_reg"].item() == 0
    assert losses["loss_mask"].item() == 0
    sum(losses.values(), Tensor(np.float32(0))).backward()
    detections, _ = heads.eval()(pyramid(), [np.zeros((0, 4), np.float32)], [(32, 32)])
    assert detections[0]["boxes"].shape == (0, 4) and detections[0]["masks"].shape == (0, 32, 32)


def test_bad_arguments():
    with pytest.raises(ValueError, match="RoIHeads: mask_roi_pool, mask_head and mask_predictor must be given"):
        RoIHeads(None, None, None, mask_head=MaskRCNNHeads(4, (8,)))
    with pytest.raises(ValueError, match="RoIHeads: targets must be given in training mode"):
        tiny_roi_heads()(pyramid(), [np.zeros((1, 4), np.float32)], [(32, 32)])


def test_rpn_and_roi_heads_compose_as_mask_rcnn():
    # The composition a model follows: features -> RPN proposals -> RoIHeads, the five losses summed in training.
    from minseg.detection import AnchorGenerator, RegionProposalNetwork, RPNHead
    minseg.manual_seed(5)
    backbone = nn.Conv2d(3, 4, 3, padding=1)
    anchors = AnchorGenerator(sizes=((8,), (16,)), aspect_ratios=((0.5, 1.0, 2.0),) * 2)
    rpn = RegionProposalNetwork(anchors, RPNHead(4, 3), pre_nms_top_n=dict(training=50, testing=50),
                                post_nms_top_n=dict(training=20, testing=10))
    heads = tiny_roi_heads(batch_size_per_image=16)
    images = Tensor(np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32))
    targets = [square_target(8, 8, 24, 20, 1), square_target(2, 4, 12, 30, 2)]

    def run(targets=None):
        x = backbone(images)
        features = [minseg.functional.avg_pool2d(x, 4), minseg.functional.avg_pool2d(x, 8)]
        proposals, rpn_losses = rpn(images, features, targets)
        detections, head_losses = heads(features, proposals, [(32, 32)] * 2, targets)
        return detections, {**rpn_losses, **head_losses}

    _, losses = run(targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}
    total = sum(losses.values(), Tensor(np.float32(0)))
    total.backward()
    assert np.isfinite(total.item()) and all(p.grad is not None for p in rpn.head.parameters())
    rpn.eval(), heads.eval()
    with minseg.no_grad():
        detections, losses = run()
    assert losses == {} and len(detections) == 2
    for d in detections:
        assert set(d) == {"boxes", "labels", "scores", "masks"} and d["masks"].shape[1:] == (32, 32)
