"""PANet (Liu et al. 2018, "Path Aggregation Network for Instance Segmentation") as Panoptic FPN with three swaps.

``PANet`` is ``PanopticFPN`` with each of PANet's additions (``panet_heads.py`` explains them) switched on by a flag:

* ``path_augmentation``: the instance branch reads N2 … N6 from ``BottomUpPath`` instead of P2 … P6 (the RPN too,
  so proposals and RoIs come from the same maps); the semantic branch keeps reading P2 … P5.
* ``adaptive_pooling``: both RoI poolers pool every RoI from all four levels; the box head's fc6 and the mask
  head's first conv become one layer per level, fused by an element-wise max.
* ``fused_mask``: the mask head stops after conv3 and ``FusedMaskPredictor`` adds the fc path to the FCN path.

With all three off it is exactly ``PanopticFPN``, and with the same seed every flag setting starts the backbone,
the RPN and the semantic head from the same weights (the swapped parts are drawn after them), so an ablation
that turns the flags on one at a time compares the instance branches alone.
"""
from ..detection.poolers import MultiScaleRoIAlign
from .panet_heads import AdaptiveMaskHead, AdaptiveTwoMLPHead, BottomUpPath, FusedMaskPredictor
from .panoptic_fpn import NUM_POOLED_LEVELS, PanopticFPN

__all__ = ["PANet", "AllLevelsRoIAlign"]


class AllLevelsRoIAlign(MultiScaleRoIAlign):
    """Every RoI pooled from every level: a list of (K, C, S, S) Tensors, finest first (adaptive pooling).

    ``MultiScaleRoIAlign.forward_all_levels`` as the pooler's call, so the RoI heads use it unchanged.
    """

    def forward(self, x, boxes, image_shapes):
        return self.forward_all_levels(x, boxes, image_shapes)


class PANet(PanopticFPN):
    """``PanopticFPN`` whose instance branch has PANet's three additions, each behind its flag (all on by default).

    Every other argument is ``PanopticFPN``'s.
    """

    def __init__(self, num_things, num_stuff, encoder="resnet18", in_channels=3, path_augmentation=True,
                 adaptive_pooling=True, fused_mask=True, **options):
        super().__init__(num_things, num_stuff, encoder, in_channels, **options)
        self.path_augmentation = bool(path_augmentation)
        self.adaptive_pooling = bool(adaptive_pooling)
        self.fused_mask = bool(fused_mask)
        channels, heads = self.backbone.out_channels, self.roi_heads
        if self.path_augmentation:
            self.bottom_up = BottomUpPath(channels, NUM_POOLED_LEVELS)
        if self.adaptive_pooling:
            heads.box_roi_pool = AllLevelsRoIAlign(NUM_POOLED_LEVELS, self.box_resolution, 2)
            heads.box_head = AdaptiveTwoMLPHead(NUM_POOLED_LEVELS, channels, self.box_resolution,
                                                self.representation_size)
            heads.mask_roi_pool = AllLevelsRoIAlign(NUM_POOLED_LEVELS, self.mask_resolution, 2)
        if self.adaptive_pooling or self.fused_mask:
            levels = NUM_POOLED_LEVELS if self.adaptive_pooling else 1
            layers = self.mask_layers[:3] if self.fused_mask else self.mask_layers
            heads.mask_head = AdaptiveMaskHead(levels, channels, layers)
        if self.fused_mask:
            heads.mask_predictor = FusedMaskPredictor(self.mask_layers[2], self.num_things + 1, self.mask_resolution)

    def instance_features(self, pyramid):
        return self.bottom_up(pyramid) if self.path_augmentation else pyramid

    def extra_repr(self):
        return (f"path_augmentation={self.path_augmentation}, adaptive_pooling={self.adaptive_pooling}, "
                f"fused_mask={self.fused_mask}")
