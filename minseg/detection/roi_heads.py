"""The second stage of Faster / Mask R-CNN: the box head and the mask head run on the RPN's proposals.

In training, ``RoIHeads`` adds the ground-truth boxes to each image's proposals (so the heads see perfect boxes
from the first step), matches proposals to ground truth (``Matcher(0.5, 0.5)``: IoU ≥ 0.5 is the object's class,
below is background), samples 512 per image with at most a quarter positive, and computes ``fastrcnn_loss`` on
them and ``maskrcnn_loss`` on the positive ones. At inference it turns each proposal into one detection per class
(softmax scores, class-specific boxes), drops background, low scores (≤ 0.05) and tiny boxes, suppresses
overlapping boxes of the same class (NMS at 0.5), keeps the 100 best per image, and runs the mask head on those
boxes, pasting the masks into the image. The poolers, the box feature extractor and the mask predictor are
constructor arguments, so PANet can pass its adaptive feature pooling and fused mask branch.
torchvision.models.detection.roi_heads.RoIHeads is the reference for every step and default.
"""
import numpy as np

from .. import nn
from ..autograd import Tensor
from ..functional.boxes import box_iou, clip_boxes_to_image, decode_boxes, encode_boxes, remove_small_boxes
from ..functional.nms import batched_nms
from ..ops import softmax
from .box_head import fastrcnn_loss
from .mask_head import maskrcnn_inference, maskrcnn_loss, paste_masks_in_image
from .matcher import BalancedPositiveNegativeSampler, Matcher

__all__ = ["RoIHeads"]


class RoIHeads(nn.Module):
    """Box head and optional mask head on proposals; torchvision's arguments and Mask R-CNN's defaults.

    box_roi_pool:  called as ``box_roi_pool(features, boxes, image_shapes)`` → (K, C, h, w) Tensor
                   (``MultiScaleRoIAlign(7, 2)`` in torchvision).
    box_head:      (K, C, h, w) → (K, representation) features (``TwoMLPHead``, or PANet's fused pooling head).
    box_predictor: → (class_logits (K, num_classes), box_regression (K, 4·num_classes)) (``FastRCNNPredictor``).
    fg_iou_thresh, bg_iou_thresh, batch_size_per_image, positive_fraction: proposal matching and sampling.
    bbox_reg_weights: the box coder's (wx, wy, ww, wh); (10, 10, 5, 5) when None.
    score_thresh, nms_thresh, detections_per_img, min_size: the inference filter.
    mask_roi_pool, mask_head, mask_predictor: the mask branch (``MultiScaleRoIAlign(14, 2)``, ``MaskRCNNHeads``,
                   ``MaskRCNNPredictor``); all three or none.

    ``forward(features, proposals, image_shapes, targets=None)`` → (detections, losses). features: the list of
    FPN levels; proposals: per-image (k_i, 4) arrays; image_shapes: per-image (H, W); targets: per-image dicts
    with "boxes", "labels" (and "masks" with a mask branch). detections (inference): per-image dicts "boxes"
    (float32 (K, 4)), "labels" (int64), "scores" (float32) and "masks" (float32 (K, H, W) probabilities);
    losses (training): loss_classifier, loss_box_reg (and loss_mask).
    """

    def __init__(self, box_roi_pool, box_head, box_predictor, fg_iou_thresh=0.5, bg_iou_thresh=0.5,
                 batch_size_per_image=512, positive_fraction=0.25, bbox_reg_weights=None, score_thresh=0.05,
                 nms_thresh=0.5, detections_per_img=100, mask_roi_pool=None, mask_head=None, mask_predictor=None,
                 min_size=1e-2):
        super().__init__()
        self.box_roi_pool, self.box_head, self.box_predictor = box_roi_pool, box_head, box_predictor
        self.proposal_matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.bbox_reg_weights = (10.0, 10.0, 5.0, 5.0) if bbox_reg_weights is None else tuple(bbox_reg_weights)
        self.score_thresh, self.nms_thresh, self.min_size = float(score_thresh), float(nms_thresh), float(min_size)
        self.detections_per_img = int(detections_per_img)
        mask_parts = (mask_roi_pool, mask_head, mask_predictor)
        if any(part is None for part in mask_parts) and any(part is not None for part in mask_parts):
            raise ValueError("RoIHeads: mask_roi_pool, mask_head and mask_predictor must be given together, got "
                             f"{['None' if p is None else type(p).__name__ for p in mask_parts]}")
        self.mask_roi_pool, self.mask_head, self.mask_predictor = mask_parts

    def has_mask(self):
        return self.mask_predictor is not None

    def forward(self, features, proposals, image_shapes, targets=None):
        features = list(features.values()) if isinstance(features, dict) else list(features)
        if self.training:
            if targets is None:
                raise ValueError("RoIHeads: targets must be given in training mode (a list of dicts with 'boxes', "
                                 "'labels' and 'masks'); call .eval() to detect")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)

        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
            if self.has_mask():
                losses["loss_mask"] = self._mask_loss(features, proposals, image_shapes, targets, matched_idxs,
                                                      labels)
            return [], losses
        detections = [{"boxes": b, "labels": lab, "scores": s} for b, s, lab in
                      zip(*self.postprocess_detections(class_logits, box_regression, proposals, image_shapes))]
        if self.has_mask():
            self._add_masks(features, detections, image_shapes)
        return detections, {}

    # --- training -------------------------------------------------------------
    def assign_targets_to_proposals(self, proposals, gt_boxes, gt_labels):
        """Per image: the ground truth each proposal learns from (index, clamped to ≥ 0) and its class label.

        Label 0 is background (IoU below bg_iou_thresh), −1 ignored (between the thresholds); an image without
        objects has every proposal background, matched to index 0 (which no loss reads).
        """
        matched_idxs, labels = [], []
        for proposals_in_image, boxes, classes in zip(proposals, gt_boxes, gt_labels):
            if len(boxes) == 0:
                matched_idxs.append(np.zeros(len(proposals_in_image), np.int64))
                labels.append(np.zeros(len(proposals_in_image), np.int64))
                continue
            matches = self.proposal_matcher(box_iou(boxes, proposals_in_image))
            clamped = np.maximum(matches, 0)
            label = np.asarray(classes, np.int64)[clamped]
            label[matches == Matcher.BELOW_LOW_THRESHOLD] = 0
            label[matches == Matcher.BETWEEN_THRESHOLDS] = -1
            matched_idxs.append(clamped)
            labels.append(label)
        return matched_idxs, labels

    def select_training_samples(self, proposals, targets):
        """Proposals plus ground truth, matched and sampled: (proposals, matched_idxs, labels, regression_targets)."""
        gt_boxes = [np.asarray(t["boxes"], np.float32).reshape(-1, 4) for t in targets]
        gt_labels = [np.asarray(t["labels"], np.int64) for t in targets]
        proposals = [np.concatenate([np.asarray(p, np.float32).reshape(-1, 4), b]) for p, b in zip(proposals, gt_boxes)]
        matched_idxs, labels = self.assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        positive, negative = self.fg_bg_sampler(labels)
        regression_targets = []
        for i, boxes in enumerate(gt_boxes):
            sampled = np.nonzero(positive[i] | negative[i])[0]
            proposals[i], matched_idxs[i], labels[i] = (a[sampled] for a in (proposals[i], matched_idxs[i], labels[i]))
            matched = boxes[matched_idxs[i]] if len(boxes) else proposals[i]  # no objects: a zero code, never read
            regression_targets.append(encode_boxes(matched, proposals[i], self.bbox_reg_weights))
        return proposals, matched_idxs, labels, regression_targets

    def _mask_loss(self, features, proposals, image_shapes, targets, matched_idxs, labels):
        """loss_mask on the positive sampled proposals of each image (0 when there are none)."""
        positive = [np.nonzero(lab > 0)[0] for lab in labels]
        if sum(len(k) for k in positive) == 0:  # no object in the batch: nothing for the mask head to learn
            return Tensor(np.zeros((), features[0].dtype))
        mask_proposals = [p[k] for p, k in zip(proposals, positive)]
        mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, mask_proposals, image_shapes)))
        return maskrcnn_loss(mask_logits, mask_proposals, [t["masks"] for t in targets],
                             [t["labels"] for t in targets], [m[k] for m, k in zip(matched_idxs, positive)])

    # --- inference ------------------------------------------------------------
    def postprocess_detections(self, class_logits, box_regression, proposals, image_shapes):
        """Per image: (boxes, scores, labels) after the per-class decode and the filter of the module docstring."""
        num_classes = class_logits.shape[-1]
        scores = softmax(class_logits, dim=-1).numpy()
        counts = [len(p) for p in proposals]
        codes = box_regression.numpy().astype(np.float32, copy=False)
        decoded = decode_boxes(codes, np.concatenate(proposals).astype(np.float32), self.bbox_reg_weights)
        all_boxes, all_scores, all_labels = [], [], []
        for boxes, image_scores, image_shape in zip(np.split(decoded, np.cumsum(counts)[:-1]),
                                                   np.split(scores, np.cumsum(counts)[:-1]), image_shapes):
            boxes = clip_boxes_to_image(boxes.reshape(-1, 4), image_shape).reshape(-1, num_classes, 4)
            labels = np.broadcast_to(np.arange(num_classes), image_scores.shape)
            # Column 0 is the background: not a detection.
            boxes, image_scores, labels = boxes[:, 1:].reshape(-1, 4), image_scores[:, 1:].reshape(-1), \
                labels[:, 1:].reshape(-1)
            keep = np.nonzero(image_scores > self.score_thresh)[0]
            keep = keep[remove_small_boxes(boxes[keep], self.min_size)]
            boxes, image_scores, labels = boxes[keep], image_scores[keep], labels[keep]
            keep = batched_nms(boxes, image_scores, labels, self.nms_thresh)[:self.detections_per_img]
            all_boxes.append(boxes[keep].astype(np.float32))
            all_scores.append(image_scores[keep].astype(np.float32))
            all_labels.append(labels[keep].astype(np.int64))
        return all_boxes, all_scores, all_labels

    def _add_masks(self, features, detections, image_shapes):
        """Each detection's mask: its class's probabilities over its box, pasted into the image."""
        boxes = [d["boxes"] for d in detections]
        if sum(len(b) for b in boxes) == 0:
            for d, shape in zip(detections, image_shapes):
                d["masks"] = np.zeros((0,) + tuple(shape), np.float32)
            return
        mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_shapes)))
        probabilities = maskrcnn_inference(mask_logits, [d["labels"] for d in detections])
        for d, p, shape in zip(detections, probabilities, image_shapes):
            d["masks"] = paste_masks_in_image(p, d["boxes"], shape)
