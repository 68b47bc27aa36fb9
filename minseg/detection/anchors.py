"""Anchors: the reference boxes a region proposal network scores and refines, at every position of every level.

Each feature-map level gets its own anchor sizes (FPN: 32 px on the stride-4 level up to 512 px on the stride-64
one) and aspect ratios (height / width, usually 0.5, 1, 2). For one level, the *cell anchors* are boxes centred on
(0, 0), one per (ratio, size); the level's anchors are the cell anchors moved to every position (x·stride,
y·stride) of its map. The numbers and their order are ``torchvision.models.detection.anchor_utils.AnchorGenerator``'s:
positions in row-major order, and within a position the cell anchors with the ratio varying slowest.
"""
import numpy as np

from ..autograd import Tensor
from ..nn import Module

__all__ = ["AnchorGenerator", "cell_anchors"]


def cell_anchors(sizes, aspect_ratios, dtype=np.float32):
    """(len(aspect_ratios)·len(sizes), 4) boxes centred on (0, 0): width size/√ratio, height size·√ratio.

    A ratio keeps the area at size², so the anchors of one size cover the same number of pixels. Corners are
    rounded to whole pixels (to even at .5), as torchvision does, in ``dtype``.
    """
    scales = np.asarray(sizes, dtype=dtype)
    h_ratios = np.sqrt(np.asarray(aspect_ratios, dtype=dtype))
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / 2)


class AnchorGenerator(Module):
    """Anchors for a batch of images over a list of feature maps (torchvision's ``AnchorGenerator``).

    ``sizes``: one tuple of sizes per level, e.g. ((32,), (64,), (128,), (256,), (512,)); ``aspect_ratios``: one
    tuple per level, or one tuple for every level. ``forward(images, feature_maps)`` returns one (A, 4) float array per
    image, A = Σ over levels of H_l·W_l·(anchors per location), levels in order. The stride of a level is the
    images' (padded) size divided by its map's size, rounded down.
    """

    def __init__(self, sizes=((128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),)):
        super().__init__()
        if not isinstance(sizes[0], (list, tuple)):  # (32, 64, ...): one size per level
            sizes = tuple((s,) for s in sizes)
        if not isinstance(aspect_ratios[0], (list, tuple)):  # one tuple of ratios shared by every level
            aspect_ratios = (tuple(aspect_ratios),)
        if len(aspect_ratios) == 1:
            aspect_ratios = tuple(aspect_ratios) * len(sizes)
        if len(sizes) != len(aspect_ratios):
            raise ValueError(f"AnchorGenerator: sizes and aspect_ratios must have one entry per feature-map level, "
                             f"got {len(sizes)} sizes and {len(aspect_ratios)} aspect-ratio tuples")
        self.sizes, self.aspect_ratios = tuple(sizes), tuple(aspect_ratios)
        self.cell_anchors = [cell_anchors(s, a) for s, a in zip(self.sizes, self.aspect_ratios)]

    def num_anchors_per_location(self):
        """How many anchors sit at each position of each level: len(sizes) × len(ratios)."""
        return [len(s) * len(a) for s, a in zip(self.sizes, self.aspect_ratios)]

    def grid_anchors(self, grid_sizes, strides):
        """Per level, the cell anchors moved to every position: (H·W·anchors per location, 4) arrays.

        The position (x, y) of map cell (i, j) is (j·stride_w, i·stride_h); every cell anchor is shifted by it.
        """
        if not len(grid_sizes) == len(strides) == len(self.cell_anchors):
            raise ValueError(f"AnchorGenerator: got {len(grid_sizes)} feature maps for {len(self.cell_anchors)} "
                             f"levels of sizes/aspect_ratios; pass one feature map per level")
        anchors = []
        for (height, width), (stride_h, stride_w), base in zip(grid_sizes, strides, self.cell_anchors):
            shift_y, shift_x = np.meshgrid(np.arange(height) * stride_h, np.arange(width) * stride_w, indexing="ij")
            shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
            shifts = np.stack([shift_x, shift_y, shift_x, shift_y], axis=1)
            anchors.append((shifts[:, None, :] + base[None, :, :]).reshape(-1, 4).astype(base.dtype))
        return anchors

    def forward(self, images, feature_maps):
        """One (A, 4) anchor array per image of ``images`` (B, C, H, W), over ``feature_maps`` (one per level)."""
        image_shape = images.shape if isinstance(images, (Tensor, np.ndarray)) else np.shape(images)
        if len(image_shape) != 4:
            raise ValueError(f"AnchorGenerator: images must be the 4-D batch (B, C, H, W) the feature maps were "
                             f"computed from, got shape {tuple(image_shape)}")
        maps = list(feature_maps.values()) if isinstance(feature_maps, dict) else list(feature_maps)
        grid_sizes = [tuple(m.shape[-2:]) for m in maps]
        strides = [(image_shape[-2] // h, image_shape[-1] // w) for h, w in grid_sizes]
        anchors = np.concatenate(self.grid_anchors(grid_sizes, strides))
        dtype = maps[0].dtype if maps and maps[0].dtype.kind == "f" else anchors.dtype
        return [anchors.astype(dtype) for _ in range(image_shape[0])]
