"""PANet's three additions to Mask R-CNN (Liu et al. 2018, "Path Aggregation Network for Instance Segmentation").

1. **Bottom-up path augmentation** (``BottomUpPath``). FPN's top-down path brings the deep levels' meaning down to
   the fine levels, but a fine level's precise edges reach the coarse levels only through the whole backbone
   (over a hundred layers in the paper's ResNet-50). PANet adds a short path back up: N2 = P2, and each N(i+1) is
   a stride-2 3x3 conv of Ni, plus P(i+1), through one more 3x3 conv (every conv followed by a ReLU), so fewer
   than ten layers lie between the finest level and the coarsest.
2. **Adaptive feature pooling** (``LevelFusion``, ``AdaptiveTwoMLPHead``, ``AdaptiveMaskHead``). FPN pools each RoI
   from one level chosen by its size; two RoIs that differ by a few pixels may see different levels. PANet pools
   every RoI from *every* level, runs each level's grid through its own first layer (fc6 of the box head, the first
   conv of the mask head) and fuses the levels by an element-wise max, so the network picks per feature.
3. **Fused fully connected mask branch** (``FusedMaskPredictor``). The mask head's convolutions see a small
   window each; an fc layer sees the whole RoI at once. From conv3 a second path (conv4_fc, conv5_fc with half the
   channels, an fc to M·M values) predicts one class-agnostic M x M mask, reshaped and added to every class's mask
   logits of the FCN path (conv4, the 2x transposed conv, the 1x1 classifier).

Box and mask heads here take what the RoI heads hand them: a list with one pooled (K, C, S, S) grid per level
for the adaptive heads; a (K, C, S, S) tensor (conv3's output) for the fused predictor.
"""
from .. import functional as F
from .. import nn
from ..ops import max, stack

__all__ = ["BottomUpPath", "LevelFusion", "AdaptiveTwoMLPHead", "AdaptiveMaskHead", "FusedMaskPredictor"]


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def conv3x3_relu(in_channels, out_channels, stride=1):
    """3x3 conv ('same' padding at stride 1) and a ReLU; Kaiming-normal weights (fan_out, ReLU), zero bias."""
    conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
    _kaiming_normal(conv)
    return nn.Sequential(conv, nn.ReLU())


def _kaiming_normal(conv):
    """Mask R-CNN's head initialization: weight ~ N(0, 2 / fan_out), bias 0."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(conv.bias)


# ---------------------------------------------------------------------------
# 1. Bottom-up path augmentation
# ---------------------------------------------------------------------------
class BottomUpPath(nn.Module):
    """[P2, …, P5, P6] → [N2, …, N5, N6]: N2 = P2, N(i+1) = relu(conv(relu(conv_stride2(Ni)) + P(i+1))).

    N6 is N5 subsampled as the FPN's P6 is P5, so the RPN sees the same five strides with or without the path.
    """

    def __init__(self, channels, num_levels=4):
        super().__init__()
        self.downsample = nn.ModuleList([conv3x3_relu(channels, channels, stride=2) for _ in range(num_levels - 1)])
        self.smooth = nn.ModuleList([conv3x3_relu(channels, channels) for _ in range(num_levels - 1)])

    def forward(self, pyramid):
        levels = [pyramid[0]]
        for downsample, smooth, p in zip(self.downsample, self.smooth, pyramid[1:]):
            levels.append(smooth(downsample(levels[-1]) + p))
        return levels + [F.max_pool2d(levels[-1], 1, stride=2)]


# ---------------------------------------------------------------------------
# 2. Adaptive feature pooling
# ---------------------------------------------------------------------------
class LevelFusion(nn.Module):
    """max over levels l of layers[l](grids[l]): one layer per level, fused by an element-wise max.

    The max sends each output element's gradient to the level that won it (ties share it), so each level's layer
    learns from the RoIs and positions where its level was the most telling.
    """

    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, grids):
        if len(grids) != len(self.layers):
            raise ValueError(f"LevelFusion: expected one pooled grid per level ({len(self.layers)}), "
                             f"got {len(grids)}; pool every RoI from every level")
        return max(stack([layer(grid) for layer, grid in zip(self.layers, grids)], 0), dim=0)


class AdaptiveTwoMLPHead(nn.Module):
    """Box head on all levels: flatten each level's grid, fc6 per level, max over levels, ReLU, fc7, ReLU.

    ``TwoMLPHead`` with fc6 split per level: with one level it is exactly that head.
    """

    def __init__(self, num_levels, in_channels, resolution, representation_size):
        super().__init__()
        in_features = in_channels * resolution * resolution
        self.fc6 = LevelFusion([nn.Linear(in_features, representation_size) for _ in range(num_levels)])
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, grids):
        fused = self.fc6([grid.reshape(grid.shape[0], -1) for grid in grids])
        return F.relu(self.fc7(F.relu(fused)))


class AdaptiveMaskHead(nn.Module):
    """Mask head on all levels: mask_fcn1 per level, max over levels, ReLU, then mask_fcn2 … as Mask R-CNN's.

    ``layers`` are the output channels of the convs (Mask R-CNN: four of 256). ``num_levels=1`` with a plain
    tensor input is Mask R-CNN's head, which the fused branch uses when adaptive pooling is off.
    """

    def __init__(self, num_levels, in_channels, layers=(256, 256, 256, 256)):
        super().__init__()
        first = [nn.Conv2d(in_channels, layers[0], 3, padding=1) for _ in range(num_levels)]
        for conv in first:
            _kaiming_normal(conv)
        self.mask_fcn1 = LevelFusion(first)
        self.rest = nn.Sequential(*[conv3x3_relu(a, b) for a, b in zip(layers[:-1], layers[1:])])
        self.out_channels = layers[-1]

    def forward(self, grids):
        grids = grids if isinstance(grids, (list, tuple)) else [grids]
        return self.rest(F.relu(self.mask_fcn1(grids)))


# ---------------------------------------------------------------------------
# 3. The fused fully connected mask branch
# ---------------------------------------------------------------------------
class FusedMaskPredictor(nn.Module):
    """conv3 features (K, C, S, S) → mask logits (K, num_classes, 2S, 2S), the FCN path plus the fc path.

    FCN path: conv4 (3x3 + ReLU), 2x transposed conv + ReLU, 1x1 conv to one logit map per class.
    fc path: conv4_fc (3x3 + ReLU), conv5_fc (3x3 + ReLU, C/2 channels), fc to (2S)² values, one mask for all
    classes, reshaped to (K, 1, 2S, 2S) and broadcast-added to every class's logits.
    """

    def __init__(self, in_channels, num_classes, resolution):
        super().__init__()
        half = in_channels // 2
        self.mask_size = 2 * resolution
        self.conv4 = conv3x3_relu(in_channels, in_channels)
        self.conv5_mask = nn.ConvTranspose2d(in_channels, in_channels, 2, stride=2)
        self.mask_fcn_logits = nn.Conv2d(in_channels, num_classes, 1)
        self.conv4_fc = conv3x3_relu(in_channels, in_channels)
        self.conv5_fc = conv3x3_relu(in_channels, half)
        self.fc = nn.Linear(half * resolution * resolution, self.mask_size * self.mask_size)
        for conv in (self.conv5_mask, self.mask_fcn_logits):
            _kaiming_normal(conv)

    def forward(self, x):
        fcn = self.mask_fcn_logits(F.relu(self.conv5_mask(self.conv4(x))))
        fc = self.fc(self.conv5_fc(self.conv4_fc(x)).reshape(x.shape[0], -1))
        return fcn + fc.reshape(x.shape[0], 1, self.mask_size, self.mask_size)
