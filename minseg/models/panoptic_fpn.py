"""Panoptic FPN (Kirillov et al. 2019, "Panoptic Feature Pyramid Networks"): one FPN, two heads, one merge.

Mask R-CNN finds *things* (countable objects, each with its own mask); a semantic segmentation network labels
*stuff* (sky, road, grass) pixel by pixel. Panoptic FPN computes the FPN once (``FPNBackbone``) and reads it twice:

* the **instance branch** is Mask R-CNN: the RPN proposes boxes on P2 … P6, the RoI heads classify and refine them
  on P2 … P5 and predict a mask for each (``minseg.detection``);
* the **semantic branch** is the head of minseg's semantic ``FPN`` (``fpn.py``): every level through 3x3 conv +
  GroupNorm + ReLU blocks, each upsampling 2x, until stride 4; the four maps summed; a 1x1 conv; 4x bilinear
  upsampling. It predicts the stuff categories plus one class "things" (category ``num_stuff``) for every pixel
  of any thing, so it learns where the instance branch should have found something;
* the **merge** (``minseg.detection.panoptic``) pastes instances by confidence, each pixel to at most one, and
  fills the remaining pixels with the semantic branch's stuff, dropping small stuff regions.

Training minimizes λi (L_objectness + L_rpn_box + L_classifier + L_box + L_mask) + λs L_semantic. The paper tunes
λs per dataset; the defaults here (λi = 1, λs = 0.5) are detectron2's Panoptic FPN configuration for COCO.

``forward(images, targets)`` in training returns the weighted losses by name (their sum is the objective);
in ``eval()`` ``forward(images)`` returns one dict per image (``docs/`` and the instance conventions give the
keys): boxes, labels, scores, masks pasted into the image, the semantic logits and the panoptic map.
"""
import numpy as np

from .. import functional as F
from .. import nn
from ..autograd import Tensor
from ..detection.anchors import AnchorGenerator
from ..detection.box_head import FastRCNNPredictor, TwoMLPHead
from ..detection.mask_head import MaskRCNNHeads, MaskRCNNPredictor
from ..detection.panoptic import merge_panoptic
from ..detection.poolers import MultiScaleRoIAlign
from ..detection.roi_heads import RoIHeads
from ..detection.rpn import RegionProposalNetwork, RPNHead
from .encoder_decoder import SegmentationHead, initialize_decoder, initialize_head
from .fpn import SegmentationBlock
from .fpn_backbone import FPNBackbone
from .sizes import check_divisible

__all__ = ["PanopticFPN", "SemanticHead", "semantic_target"]

NUM_POOLED_LEVELS = 4  # RoIs are pooled from P2 … P5; P6 serves the RPN's largest anchors only


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def semantic_target(semantic, num_stuff):
    """The semantic branch's target: stuff categories kept, every thing category → ``num_stuff``, -100 kept."""
    semantic = np.asarray(semantic, dtype=np.int64)
    return np.where(semantic >= num_stuff, num_stuff, semantic)


# ---------------------------------------------------------------------------
# The semantic branch
# ---------------------------------------------------------------------------
class SemanticHead(nn.Module):
    """[P2, P3, P4, P5] → (N, num_classes, 4·H2, 4·W2) logits: the semantic FPN's upsample-and-sum head.

    P5 goes through three Conv3x3GNReLU blocks that each upsample 2x, P4 two, P3 one, P2 one that does not
    (``fpn.SegmentationBlock``); the sum goes through a 1x1 conv and 4x bilinear upsampling
    (``SegmentationHead``). ``channels`` must be a multiple of 32, GroupNorm's group count.
    """

    def __init__(self, in_channels, num_classes, channels=128):
        super().__init__()
        if channels % 32:
            raise ValueError(f"SemanticHead: channels must be a multiple of 32 (GroupNorm's 32 groups), "
                             f"got {channels}")
        self.seg_blocks = nn.ModuleList([SegmentationBlock(in_channels, channels, n_upsamples)
                                         for n_upsamples in (3, 2, 1, 0)])
        self.head = SegmentationHead(channels, num_classes, kernel_size=1, upsampling=4)
        initialize_decoder(self.seg_blocks)
        initialize_head(self.head)

    def forward(self, pyramid):
        p2, p3, p4, p5 = pyramid[:4]
        levels = [block(p) for block, p in zip(self.seg_blocks, (p5, p4, p3, p2))]
        return self.head(levels[0] + levels[1] + levels[2] + levels[3])


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------
class PanopticFPN(nn.Module):
    """``FPNBackbone`` + RPN + RoI heads (Mask R-CNN) + ``SemanticHead``, merged into a panoptic map.

    num_things: thing classes (labels 1 … num_things; 0 is background). num_stuff: stuff categories.
    encoder: "resnet18" (default), "resnet34" or "resnet_small" (``width`` channels in its first stage).
    fpn_channels, semantic_channels: the pyramid's and the semantic head's widths (paper: 256 and 128).
    anchor_sizes: one anchor size per level P2 … P6 (torchvision: 32 … 512 for 800-pixel images; scale them with
    the image). box_resolution, mask_resolution: RoIAlign's output sizes (7 and 14; masks come out twice that).
    representation_size, mask_layers: the box head's fc width and the mask head's conv widths (1024; 4 x 256).
    canonical_scale: the RoI size that FPN's level assignment sends to P4 (224; scale it with the anchors).
    semantic_loss_weight, instance_loss_weight: λs and λi. overlap_threshold, score_threshold, stuff_area:
    the panoptic merge's (``merge_panoptic``). rpn_options, roi_options: further keyword arguments for
    ``RegionProposalNetwork`` and ``RoIHeads`` (torchvision's names), for example {"box_detections_per_img": 50}.
    """

    def __init__(self, num_things, num_stuff, encoder="resnet18", in_channels=3, fpn_channels=256,
                 semantic_channels=128, width=16, anchor_sizes=(32, 64, 128, 256, 512), aspect_ratios=(0.5, 1.0, 2.0),
                 box_resolution=7, mask_resolution=14, representation_size=1024, mask_layers=(256, 256, 256, 256),
                 canonical_scale=224, semantic_loss_weight=0.5, instance_loss_weight=1.0, overlap_threshold=0.5,
                 score_threshold=0.5, stuff_area=4096, rpn_options=None, roi_options=None):
        super().__init__()
        if int(num_things) < 1 or int(num_stuff) < 0:
            raise ValueError(f"PanopticFPN: num_things must be >= 1 and num_stuff >= 0, got num_things="
                             f"{num_things!r}, num_stuff={num_stuff!r}")
        self.num_things, self.num_stuff = int(num_things), int(num_stuff)
        self.semantic_loss_weight, self.instance_loss_weight = semantic_loss_weight, instance_loss_weight
        self.merge_options = {"overlap_threshold": overlap_threshold, "score_threshold": score_threshold,
                              "stuff_area": stuff_area}
        self.canonical_scale = canonical_scale
        self.box_resolution, self.mask_resolution = box_resolution, mask_resolution
        self.representation_size, self.mask_layers = representation_size, tuple(mask_layers)
        self.backbone = FPNBackbone(encoder, in_channels, fpn_channels, width)
        anchors = AnchorGenerator(tuple((size,) for size in anchor_sizes), (tuple(aspect_ratios),) * len(anchor_sizes))
        self.rpn = RegionProposalNetwork(anchors, RPNHead(fpn_channels, len(aspect_ratios)), **(rpn_options or {}))
        self.roi_heads = RoIHeads(
            self.roi_pool(box_resolution),
            TwoMLPHead(fpn_channels * box_resolution ** 2, representation_size),
            FastRCNNPredictor(representation_size, self.num_things + 1),
            mask_roi_pool=self.roi_pool(mask_resolution),
            mask_head=MaskRCNNHeads(fpn_channels, tuple(mask_layers), 1),
            mask_predictor=MaskRCNNPredictor(mask_layers[-1], mask_layers[-1], self.num_things + 1),
            **(roi_options or {}))
        self.semantic_head = SemanticHead(fpn_channels, self.num_stuff + 1, semantic_channels)

    @property
    def size_multiple(self):
        return self.backbone.size_multiple

    def forward(self, images, targets=None):
        images = images if isinstance(images, Tensor) else Tensor(np.asarray(images, dtype=np.float32))
        model_name = type(self).__name__
        check_divisible(images, self.size_multiple, model_name)
        if self.training and targets is None:
            raise ValueError(f"{model_name}.forward: targets must be given in training (one dict per image with "
                             f"boxes, labels, masks, semantic); call model.eval() to predict")
        image_sizes = [tuple(images.shape[-2:])] * images.shape[0]
        pyramid = self.backbone(images)
        instance_pyramid = self.instance_features(pyramid)
        proposals, rpn_losses = self.rpn(images, instance_pyramid, targets)
        detections, roi_losses = self.roi_heads(instance_pyramid, proposals, image_sizes, targets)
        semantic = self.semantic_head(pyramid)
        if self.training:
            losses = {name: loss * self.instance_loss_weight for name, loss in {**rpn_losses, **roi_losses}.items()}
            target = np.stack([semantic_target(t["semantic"], self.num_stuff) for t in targets])
            losses["loss_semantic"] = F.cross_entropy(semantic, target) * self.semantic_loss_weight
            return losses
        return [self._postprocess(detection, semantic.data[index]) for index, detection in enumerate(detections)]

    def roi_pool(self, resolution):
        """RoIAlign from P2 … P5, each RoI from its own level (FPN eq. 1, ``canonical_scale`` at level 4)."""
        return MultiScaleRoIAlign(NUM_POOLED_LEVELS, resolution, 2, canonical_scale=self.canonical_scale)

    def instance_features(self, pyramid):
        """What the instance branch reads: the FPN's levels themselves (PANet adds a bottom-up path here)."""
        return pyramid

    def _postprocess(self, detection, semantic_logits):
        """One image's outputs: the RoI heads' detections (masks already pasted), semantic logits, panoptic map."""
        result = dict(detection)
        result["semantic"] = semantic_logits
        result["panoptic"] = merge_panoptic(result, semantic_logits, self.num_stuff, **self.merge_options)
        return result
