"""The region proposal network (Ren et al., Faster R-CNN 2015): a few thousand boxes likely to hold an object.

At every position of every FPN level sit A anchors (``AnchorGenerator``: A sizes × aspect ratios). ``RPNHead``, one
small convolution shared by all levels, predicts per anchor an *objectness* logit (object or background) and four
box deltas that move the anchor onto the object (``encode_boxes``' code). ``RegionProposalNetwork`` turns them into
proposals: decode the deltas, keep the ``pre_nms_top_n`` best-scoring anchors of each level, clip to the image,
drop tiny boxes and low scores, suppress overlaps (NMS per level) and keep the ``post_nms_top_n`` best. In training
it also matches anchors to ground-truth boxes (``Matcher(0.7, 0.3)``, each object's best anchors always matched),
samples 256 anchors per image, half of them positive at most, and returns torchvision's two losses:

    loss_objectness  = binary cross-entropy of the sampled anchors' logits against 1 (object) / 0 (background)
    loss_rpn_box_reg = smooth L1 (beta 1/9) of the positive anchors' deltas against their encoded ground truth,
                       summed and divided by the number of sampled anchors

The proposals are NumPy arrays: choosing boxes is not differentiated, and the second stage learns from them as
fixed inputs, as in torchvision.models.detection.rpn, whose names, defaults and order of steps these are.
"""
import numpy as np

from .. import nn
from ..functional.boxes import box_iou, clip_boxes_to_image, decode_boxes, encode_boxes, remove_small_boxes
from ..functional.detection_loss import binary_cross_entropy_with_logits, smooth_l1_loss
from ..functional.nms import batched_nms
from ..ops import cat
from .matcher import BalancedPositiveNegativeSampler, Matcher

__all__ = ["RPNHead", "RegionProposalNetwork", "concat_box_prediction_layers"]


# ---------------------------------------------------------------------------
# The head: a 3x3 convolution, then objectness and box deltas per anchor
# ---------------------------------------------------------------------------
class RPNHead(nn.Module):
    """conv3x3 + ReLU, then a 1x1 convolution to A objectness logits and one to 4·A box deltas, on every level.

    ``forward(features)`` takes a list of (N, in_channels, Hl, Wl) Tensors and returns two lists:
    objectness (N, A, Hl, Wl) and deltas (N, 4·A, Hl, Wl). Weights start ~ N(0, 0.01²), biases at 0, as
    torchvision: every anchor begins near "probability 1/2, box unchanged".
    """

    def __init__(self, in_channels, num_anchors, conv_depth=1):
        super().__init__()
        self.conv = nn.Sequential(*[layer for _ in range(conv_depth)
                                    for layer in (nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.ReLU())])
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.zeros_(layer.bias)

    def forward(self, features):
        objectness, deltas = [], []
        for feature in features:
            t = self.conv(feature)
            objectness.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return objectness, deltas


def concat_box_prediction_layers(objectness, deltas):
    """Per-level head outputs as (N, ΣHWA) logits and (N, ΣHWA, 4) deltas, ordered level, y, x, anchor.

    That is the anchors' order (``AnchorGenerator`` lists each level's positions row by row and the A anchors of
    a position together), so element i of either result belongs to anchor i.
    """
    flat_objectness, flat_deltas = [], []
    for logits, codes in zip(objectness, deltas):
        n, a, h, w = logits.shape
        flat_objectness.append(logits.permute(0, 2, 3, 1).reshape(n, h * w * a))
        flat_deltas.append(codes.reshape(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, h * w * a, 4))
    return cat(flat_objectness, dim=1), cat(flat_deltas, dim=1)


# ---------------------------------------------------------------------------
# The network: proposals, and in training the two losses
# ---------------------------------------------------------------------------
class RegionProposalNetwork(nn.Module):
    """Proposals from anchors, an ``RPNHead`` and the rules above; torchvision's arguments and Mask R-CNN's defaults.

    anchor_generator: an ``AnchorGenerator`` (its ``num_anchors_per_location()`` must match the head's A).
    head:             an ``RPNHead``.
    fg_iou_thresh, bg_iou_thresh: anchors with IoU ≥ 0.7 are objects, < 0.3 background, others ignored.
    batch_size_per_image, positive_fraction: the sampled anchors per image, and at most this share positive.
    pre_nms_top_n, post_nms_top_n: dicts {"training": n, "testing": n}: anchors kept per level before NMS, and
        proposals kept per image after it.
    nms_thresh: IoU above which a lower-scoring proposal of the same level is suppressed.
    score_thresh: proposals with objectness probability below this are dropped. min_size: so are narrower boxes.

    ``forward(images, features, targets=None)`` returns (boxes, losses): a list of per-image (K_i, 4) float32
    proposal arrays, and in training {"loss_objectness", "loss_rpn_box_reg"} (an empty dict otherwise).
    """

    def __init__(self, anchor_generator, head, fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=256,
                 positive_fraction=0.5, pre_nms_top_n=None, post_nms_top_n=None, nms_thresh=0.7, score_thresh=0.0,
                 min_size=1e-3):
        super().__init__()
        self.anchor_generator, self.head = anchor_generator, head
        self.proposal_matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self._pre_nms_top_n = dict(training=2000, testing=1000) if pre_nms_top_n is None else dict(pre_nms_top_n)
        self._post_nms_top_n = dict(training=2000, testing=1000) if post_nms_top_n is None else dict(post_nms_top_n)
        self.nms_thresh, self.score_thresh, self.min_size = float(nms_thresh), float(score_thresh), float(min_size)

    def pre_nms_top_n(self):
        return self._pre_nms_top_n["training" if self.training else "testing"]

    def post_nms_top_n(self):
        return self._post_nms_top_n["training" if self.training else "testing"]

    def forward(self, images, features, targets=None):
        if self.training and targets is None:
            raise ValueError("RegionProposalNetwork: targets must be given in training mode (a list of dicts with "
                             "'boxes'); call .eval() to only propose")
        features = list(features.values()) if isinstance(features, dict) else list(features)
        image_size = tuple(images.shape[-2:])
        objectness, deltas = self.head(features)
        anchors = self.anchor_generator(images, features)
        num_anchors_per_level = [int(np.prod(o.shape[1:])) for o in objectness]
        if len(anchors[0]) != sum(num_anchors_per_level):
            raise ValueError(f"RegionProposalNetwork: the anchor generator places {len(anchors[0])} anchors but the "
                             f"head scores {sum(num_anchors_per_level)}; give RPNHead num_anchors = "
                             f"{self.anchor_generator.num_anchors_per_location()[0]} (anchors per location)")
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)

        # Choosing proposals is not differentiated: it reads the predictions as NumPy arrays.
        codes = deltas.numpy().astype(np.float32, copy=False)
        proposals = [decode_boxes(codes[i], anchors[i]) for i in range(len(anchors))]
        boxes, _ = self.filter_proposals(proposals, objectness.numpy(), image_size, num_anchors_per_level)

        losses = {}
        if self.training:
            labels, matched_gt_boxes = self.assign_targets_to_anchors(anchors, targets)
            regression_targets = [encode_boxes(m, a) for m, a in zip(matched_gt_boxes, anchors)]
            loss_objectness, loss_rpn_box_reg = self.compute_loss(objectness, deltas, labels, regression_targets)
            losses = {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_rpn_box_reg}
        return boxes, losses

    # --- proposals ------------------------------------------------------------
    def _top_n_per_level(self, scores, num_anchors_per_level):
        """Indices of each level's pre_nms_top_n highest scores (all of a smaller level), level after level."""
        keep, offset = [], 0
        for count in num_anchors_per_level:
            level = scores[offset:offset + count]
            keep.append(offset + np.argsort(-level, kind="stable")[:self.pre_nms_top_n()])
            offset += count
        return np.concatenate(keep)

    def filter_proposals(self, proposals, objectness, image_size, num_anchors_per_level):
        """Per image: top-n per level, sigmoid, clip, remove small, score threshold, NMS per level, post-NMS top-n.

        proposals: per-image (ΣHWA, 4) decoded boxes; objectness: (N, ΣHWA) logits. Returns per-image boxes
        (float32) and probabilities, best first.
        """
        levels = np.repeat(np.arange(len(num_anchors_per_level)), num_anchors_per_level)
        final_boxes, final_scores = [], []
        for boxes, logits in zip(proposals, np.asarray(objectness)):
            top = self._top_n_per_level(logits, num_anchors_per_level)
            boxes, level = clip_boxes_to_image(boxes[top], image_size), levels[top]
            scores = 1 / (1 + np.exp(-logits[top].astype(np.float64)))
            keep = remove_small_boxes(boxes, self.min_size)
            keep = keep[scores[keep] >= self.score_thresh]
            boxes, scores, level = boxes[keep], scores[keep], level[keep]
            keep = batched_nms(boxes, scores, level, self.nms_thresh)[:self.post_nms_top_n()]
            final_boxes.append(boxes[keep].astype(np.float32))
            final_scores.append(scores[keep].astype(np.float32))
        return final_boxes, final_scores

    # --- training -------------------------------------------------------------
    def assign_targets_to_anchors(self, anchors, targets):
        """Per image: anchor labels (1 object, 0 background, −1 ignored; float32) and each anchor's matched box.

        An image without objects has every anchor background, matched to itself: a zero code that no loss reads.
        """
        labels, matched_gt_boxes = [], []
        for anchors_per_image, target in zip(anchors, targets):
            gt_boxes = np.asarray(target["boxes"], np.float32).reshape(-1, 4)
            if len(gt_boxes) == 0:
                labels.append(np.zeros(len(anchors_per_image), np.float32))
                matched_gt_boxes.append(np.asarray(anchors_per_image, np.float32))
                continue
            matched_idxs = self.proposal_matcher(box_iou(gt_boxes, anchors_per_image))
            matched_gt_boxes.append(gt_boxes[np.maximum(matched_idxs, 0)])
            label = (matched_idxs >= 0).astype(np.float32)
            label[matched_idxs == Matcher.BETWEEN_THRESHOLDS] = -1.0
            labels.append(label)
        return labels, matched_gt_boxes

    def compute_loss(self, objectness, deltas, labels, regression_targets):
        """(loss_objectness, loss_rpn_box_reg) over the sampled anchors of all images, as the module docstring."""
        positive, negative = self.fg_bg_sampler(labels)
        positive = np.nonzero(np.concatenate(positive))[0]
        sampled = np.concatenate([positive, np.nonzero(np.concatenate(negative))[0]])
        labels = np.concatenate(labels)
        regression_targets = np.concatenate(regression_targets).astype(deltas.dtype)
        deltas = deltas.reshape(-1, 4)
        box_loss = smooth_l1_loss(deltas[positive], regression_targets[positive], reduction="sum",
                                  beta=1 / 9) / max(len(sampled), 1)
        objectness_loss = binary_cross_entropy_with_logits(objectness.reshape(-1)[sampled], labels[sampled])
        return objectness_loss, box_loss
