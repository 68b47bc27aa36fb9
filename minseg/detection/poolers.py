"""Pooling RoIs from a feature pyramid: which level each box reads, and RoIAlign on that level.

A large box is best described by a coarse level, a small one by a fine level. The FPN paper (Lin et al. 2017,
eq. 1) assigns a box of width w and height h to level

    k = ⌊k0 + log2(√(wh) / 224)⌋,   k0 = 4,

so an ImageNet-sized box (224²) reads level 4 (stride 16) and each halving of its side moves it one level finer;
k is clamped to the levels that exist. ``MultiScaleRoIAlign`` pools every box from its own level
(``torchvision.ops.MultiScaleRoIAlign``'s numbers); ``roi_align_all_levels`` pools every box from every level,
which PANet's adaptive feature pooling fuses. Both return Tensors, so gradients reach the feature maps.
"""
import numpy as np

from ..backend import to_device
from ..functional.boxes import as_array, box_area
from ..functional.roi_align import convert_boxes_to_roi_format, roi_align
from ..nn import Module
from ..ops import cat

__all__ = ["LevelMapper", "infer_scale", "MultiScaleRoIAlign", "roi_align_all_levels"]


class LevelMapper:
    """Level of each box by FPN's eq. 1, counted from ``k_min`` (0 = the finest map given).

    ``eps`` nudges a box of exactly 224·2^j pixels to level k0 + j despite log2's rounding (torchvision's 1e-6).
    """

    def __init__(self, k_min, k_max, canonical_scale=224, canonical_level=4, eps=1e-6):
        self.k_min, self.k_max = k_min, k_max
        self.canonical_scale, self.canonical_level, self.eps = canonical_scale, canonical_level, eps

    def __call__(self, boxlists):
        """int64 level indices (0-based from k_min) of the boxes of every image, images one after another."""
        areas = [box_area(to_device(as_array(b, "LevelMapper"), "cpu")) for b in boxlists]
        s = np.sqrt(np.concatenate(areas)) if areas else np.zeros(0, np.float32)
        # In the boxes' dtype, as torchvision computes it, so that boxes on a level boundary go the same way.
        # A box of zero area has log2(0) = −inf: the finest level.
        with np.errstate(divide="ignore"):
            levels = np.floor(self.canonical_level + np.log2(s / s.dtype.type(self.canonical_scale))
                              + s.dtype.type(self.eps))
        return np.clip(levels, self.k_min, self.k_max).astype(np.int64) - self.k_min


def infer_scale(feature_shape, original_size):
    """The feature map's scale relative to the image: 2^round(log2(map height / image height)).

    Feature maps are assumed to be the image downsampled by a power of 2 (torchvision reads the height only).
    """
    approx_scale = np.float32(float(feature_shape[-2]) / float(original_size[0]))
    return float(2 ** float(np.round(np.log2(approx_scale))))


def _level_features(x, featmap_names, where):
    """The feature maps to pool from, finest first: from a dict by name (in the dict's order, as torchvision),
    from a list by position, or the first ``featmap_names`` maps when it is a count."""
    if isinstance(featmap_names, int):
        maps = list(x.values()) if isinstance(x, dict) else list(x)
        if featmap_names > len(maps):
            raise ValueError(f"{where}: featmap_names asks for {featmap_names} levels, but only {len(maps)} feature "
                             f"maps came; pass fewer levels or more maps")
        return maps[:featmap_names]
    if isinstance(x, dict):
        chosen = [value for key, value in x.items() if key in featmap_names]
    else:
        chosen = [value for position, value in enumerate(x) if position in featmap_names]
    if not chosen:
        raise ValueError(f"{where}: none of featmap_names {list(featmap_names)} is among the feature maps "
                         f"{list(x.keys()) if isinstance(x, dict) else list(range(len(x)))}")
    return chosen


def _scales_and_mapper(features, image_shapes, canonical_scale, canonical_level):
    """Each level's spatial_scale (inferred from its size and the largest image), and the LevelMapper over them."""
    if not image_shapes:
        raise ValueError("MultiScaleRoIAlign: image_shapes must list the (height, width) of every image, got none")
    original_size = (max(s[0] for s in image_shapes), max(s[1] for s in image_shapes))
    scales = [infer_scale(f.shape, original_size) for f in features]
    k_min = int(-np.log2(np.float32(scales[0])))
    k_max = int(-np.log2(np.float32(scales[-1])))
    return scales, LevelMapper(k_min, k_max, canonical_scale, canonical_level)


def roi_align_all_levels(features, boxes, output_size, scales, sampling_ratio=-1):
    """Every RoI pooled from every level: one (K, C, Ho, Wo) Tensor per feature map (PANet's adaptive pooling).

    ``boxes``: per-image (k_i, 4) arrays in image coordinates; ``scales``: each map's spatial_scale.
    """
    rois = convert_boxes_to_roi_format(boxes)
    return [roi_align(feature, rois, output_size, scale, sampling_ratio) for feature, scale in zip(features, scales)]


class MultiScaleRoIAlign(Module):
    """RoIAlign of each box from its pyramid level (torchvision's ``MultiScaleRoIAlign``; aligned=False as it).

    ``featmap_names``: the names (dict keys) or positions (list indices) of the maps to pool from, finest first, or
    a number n for the first n maps. ``forward(x, boxes, image_shapes)``: ``x`` the feature maps (a dict or a list),
    ``boxes`` a list of per-image (k_i, 4) arrays in image coordinates, ``image_shapes`` the images' (height, width)
    before padding; returns a (Σ k_i, C, Ho, Wo) Tensor, RoIs in the order given. Each map's spatial_scale is
    inferred from its size (``infer_scale``) on every call, and its FPN level from that scale.
    """

    def __init__(self, featmap_names, output_size, sampling_ratio, *, canonical_scale=224, canonical_level=4):
        super().__init__()
        self.featmap_names = featmap_names if isinstance(featmap_names, int) else list(featmap_names)
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        self.sampling_ratio = sampling_ratio
        self.canonical_scale, self.canonical_level = canonical_scale, canonical_level

    def _setup(self, x, image_shapes):
        features = _level_features(x, self.featmap_names, "MultiScaleRoIAlign")
        return (features,) + _scales_and_mapper(features, image_shapes, self.canonical_scale, self.canonical_level)

    def forward(self, x, boxes, image_shapes):
        features, scales, mapper = self._setup(x, image_shapes)
        rois = convert_boxes_to_roi_format(boxes)
        if len(features) == 1:
            return roi_align(features[0], rois, self.output_size, scales[0], self.sampling_ratio)
        levels = mapper(boxes)
        pooled, order = [], []
        for level, (feature, scale) in enumerate(zip(features, scales)):
            in_level = np.nonzero(levels == level)[0]
            if in_level.size:
                pooled.append(roi_align(feature, rois[in_level], self.output_size, scale, self.sampling_ratio))
                order.append(in_level)
        if not pooled:  # no RoIs at all
            return roi_align(features[0], rois, self.output_size, scales[0], self.sampling_ratio)
        # The levels' results one after another; row r of that belongs to RoI order[r], so put each back in place.
        grouped = cat(pooled, dim=0) if len(pooled) > 1 else pooled[0]
        return grouped[np.argsort(np.concatenate(order))]

    def forward_all_levels(self, x, boxes, image_shapes):
        """Every RoI from every level: a list of (Σ k_i, C, Ho, Wo) Tensors, finest level first (PANet)."""
        features, scales, _ = self._setup(x, image_shapes)
        return roi_align_all_levels(features, boxes, self.output_size, scales, self.sampling_ratio)
