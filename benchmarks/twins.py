"""PyTorch twins of minseg's models: the same definitions in torch.nn, for the benchmarks' comparisons.

Each twin has the same layers, in the same order and under the same names as the minseg model, so a minseg
``state_dict()`` loads into it (``load_minseg_weights``) and ``benchmarks/history.py --check`` compares the
outputs. ``TWINS`` maps ``minseg.models.create``'s names to them: the from-scratch models (naive, UNet, LinkNet;
``benchmarks/models.py``, ``benchmarks/gpu.py``, ``benchmarks/membrane_torch.py``) and the history models
(FCN-32s/16s/8s, SegNet-Basic, SegNet, ENet, PointRend; ``benchmarks/history.py``). The ResNet encoder is
torchvision's ResNet-18 (minseg's copies its names), PointRend's FPN is segmentation_models_pytorch's (minseg's
copies its names). Imported only by the benchmarks: minseg never imports torch.
"""
import numpy as np
import torch
import torch.nn as tnn
import torch.nn.functional as TF


# --- the from-scratch models: naive, UNet, LinkNet ---------------------------------------------------------
def cbr(c_in, c_out, k, s=1, p=0, bias=True):
    return [tnn.Conv2d(c_in, c_out, k, s, p, bias=bias), tnn.BatchNorm2d(c_out), tnn.ReLU()]


class Naive(tnn.Module):
    def __init__(self, num_classes, in_channels=3, widths=(32, 64, 128, 256)):
        super().__init__()
        self.encoder = tnn.Sequential(*[layer for a, b in zip((in_channels,) + widths, widths)
                                        for layer in cbr(a, b, 3, 2, 1)])
        up = widths[::-1] + widths[:1]
        self.decoder = tnn.Sequential(*[layer for a, b in zip(up, up[1:])
                                        for layer in (tnn.ConvTranspose2d(a, b, 2, 2), tnn.BatchNorm2d(b), tnn.ReLU())])
        self.head = tnn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x):
        return self.head(self.decoder(self.encoder(x)))


def double_conv(c_in, c_out):
    return tnn.Sequential(*cbr(c_in, c_out, 3, 1, 1), *cbr(c_out, c_out, 3, 1, 1))


class PaperUNet(tnn.Module):
    """minseg.models.UNet in torch.nn, layer for layer (same state-dict names)."""

    def __init__(self, num_classes, in_channels=3, base=16, depth=4):
        super().__init__()
        widths = [base * 2 ** level for level in range(depth + 1)]
        self.encoder = tnn.ModuleList([double_conv(a, b) for a, b in zip([in_channels] + widths[:-1], widths[:-1])])
        self.pool = tnn.MaxPool2d(2)
        self.bottleneck = double_conv(widths[-2], widths[-1])
        self.upsample = tnn.ModuleList([tnn.ConvTranspose2d(2 * w, w, 2, stride=2) for w in reversed(widths[:-1])])
        self.decoder = tnn.ModuleList([double_conv(2 * w, w) for w in reversed(widths[:-1])])
        self.head = tnn.Conv2d(base, num_classes, 1)

    def forward(self, x):
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for upsample, level, skip in zip(self.upsample, self.decoder, reversed(skips)):
            x = level(torch.cat([skip, upsample(x)], dim=1))
        return self.head(x)


class Block(tnn.Module):
    def __init__(self, a, b, s=1):
        super().__init__()
        self.residual = tnn.Sequential(*cbr(a, b, 3, s, 1, False), tnn.Conv2d(b, b, 3, 1, 1, bias=False),
                                       tnn.BatchNorm2d(b))
        self.shortcut = (tnn.Identity() if s == 1 and a == b else
                         tnn.Sequential(tnn.Conv2d(a, b, 1, s, bias=False), tnn.BatchNorm2d(b)))

    def forward(self, x):
        return (self.residual(x) + self.shortcut(x)).relu()


def decoder_block(a, b, s):
    m = a // 4
    return tnn.Sequential(*cbr(a, m, 1, bias=False), tnn.ConvTranspose2d(m, m, 3, s, 1, s - 1, bias=False),
                          tnn.BatchNorm2d(m), tnn.ReLU(), *cbr(m, b, 1, bias=False))


class PaperLinkNet(tnn.Module):
    def __init__(self, num_classes, in_channels=3, base=64):
        super().__init__()
        w = [base, 2 * base, 4 * base, 8 * base]
        self.stem = tnn.Sequential(*cbr(in_channels, base, 7, 2, 3, False), tnn.MaxPool2d(3, 2, 1))
        self.encoder = tnn.ModuleList([tnn.Sequential(Block(a, b, 1 if a == b else 2), Block(b, b))
                                       for a, b in zip(w[:1] + w[:-1], w)])
        self.decoder = tnn.ModuleList([decoder_block(a, b, 1 if a == b else 2)
                                       for a, b in zip(w[::-1], w[-2::-1] + w[:1])])
        self.head = tnn.Sequential(tnn.ConvTranspose2d(base, base // 2, 3, 2, 1, 1, bias=False),
                                   tnn.BatchNorm2d(base // 2), tnn.ReLU(),
                                   *cbr(base // 2, base // 2, 3, 1, 1, False),
                                   tnn.ConvTranspose2d(base // 2, num_classes, 2, 2))

    def forward(self, x):
        features = [self.stem(x)]
        for stage in self.encoder:
            features.append(stage(features[-1]))
        x = features.pop()
        for block, skip in zip(self.decoder, reversed(features)):
            x = block(x) + skip
        return self.head(x)

# --- FCN -------------------------------------------------------------------------------------------------
def bilinear_kernel(channels, factor):
    size, centre = 2 * factor, factor - 0.5
    profile = 1 - np.abs(np.arange(size) - centre) / factor
    weight = np.zeros((channels, channels, size, size), np.float32)
    weight[np.arange(channels), np.arange(channels)] = np.outer(profile, profile)
    return torch.from_numpy(weight)


class ResNetEncoder(tnn.Module):
    """torchvision's resnet18 without avgpool/fc; forward returns the features at strides 1 … 32."""

    def __init__(self, name="resnet18"):
        super().__init__()
        import torchvision
        net = getattr(torchvision.models, name)(weights=None)
        for part in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, part, getattr(net, part))
        self.out_channels = (3, 64, 64, 128, 256, 512)

    def forward(self, x):
        features = [x, self.relu(self.bn1(self.conv1(x)))]
        features.append(self.layer1(self.maxpool(features[-1])))
        for layer in (self.layer2, self.layer3, self.layer4):
            features.append(layer(features[-1]))
        return features


class FCN(tnn.Module):
    def __init__(self, num_classes, skips=2):
        super().__init__()
        self.encoder = ResNetEncoder()
        widths = self.encoder.out_channels[::-1][:skips + 1]
        self.score = tnn.ModuleList([tnn.Conv2d(w, num_classes, 1) for w in widths])
        for conv in self.score:
            tnn.init.zeros_(conv.weight)
            tnn.init.zeros_(conv.bias)
        self.upsample = tnn.ModuleList([tnn.ConvTranspose2d(num_classes, num_classes, 4, 2, 1, bias=False)
                                        for _ in range(skips)])
        with torch.no_grad():
            for layer in self.upsample:
                layer.weight.copy_(bilinear_kernel(num_classes, 2))

    def forward(self, x):
        features = self.encoder(x)[::-1]
        scores = self.score[0](features[0])
        for up2, score, feature in zip(self.upsample, self.score[1:], features[1:]):
            scores = up2(scores) + score(feature)
        return TF.interpolate(scores, size=x.shape[2:], mode="bilinear", align_corners=False)


# --- SegNet ------------------------------------------------------------------------------------------------
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def conv_bn(c_in, c_out, k, relu, bias):
    layers = [tnn.Conv2d(c_in, c_out, k, padding=k // 2, bias=bias), tnn.BatchNorm2d(c_out)]
    return tnn.Sequential(*layers, tnn.ReLU()) if relu else tnn.Sequential(*layers)


class PooledEncoderDecoder(tnn.Module):
    def forward(self, x):
        switches = []
        for stage in self.encoder:
            y = stage(x)
            x, indices = TF.max_pool2d(y, 2, return_indices=True)
            switches.append((indices, y.shape[2:]))
        for stage, (indices, size) in zip(self.decoder, reversed(switches)):
            x = stage(TF.max_unpool2d(x, indices, 2, output_size=size))
        return self.classifier(x)


class SegNetBasic(PooledEncoderDecoder):
    def __init__(self, num_classes, in_channels=3, width=64, depth=4, kernel_size=7):
        super().__init__()
        self.encoder = tnn.ModuleList([conv_bn(in_channels if i == 0 else width, width, kernel_size, True, False)
                                       for i in range(depth)])
        self.decoder = tnn.ModuleList([conv_bn(width, width, kernel_size, False, False) for _ in range(depth)])
        self.classifier = tnn.Conv2d(width, num_classes, 1)


class SegNet(PooledEncoderDecoder):
    def __init__(self, num_classes, in_channels=3, base=64):
        super().__init__()
        stages = [tuple(w * base // 64 for w in stage) for stage in VGG16_STAGES]
        encoder, decoder, c_in = [], [], in_channels
        for stage in stages:
            encoder.append(tnn.Sequential(*[conv_bn(a, b, 3, True, True) for a, b in zip((c_in,) + stage, stage)]))
            c_in = stage[-1]
        for s in reversed(range(len(stages))):
            widths = stages[s][::-1] + ((stages[s - 1][-1],) if s > 0 else ())
            decoder.append(tnn.Sequential(*[conv_bn(a, b, 3, True, True) for a, b in zip(widths, widths[1:])]))
        self.encoder, self.decoder = tnn.ModuleList(encoder), tnn.ModuleList(decoder)
        self.classifier = tnn.Conv2d(stages[0][0], num_classes, 3, padding=1)


# --- ENet ---------------------------------------------------------------------------------------------------
EPS = 1e-3
STAGE_2 = ["regular", "dilated 2", "asymmetric 5", "dilated 4", "regular", "dilated 8", "asymmetric 5", "dilated 16"]


def e_conv_bn(c_in, c_out, k, stride=1):
    return [tnn.Conv2d(c_in, c_out, k, stride, bias=False), tnn.BatchNorm2d(c_out, eps=EPS)]


def act(channels, encoder):
    return tnn.PReLU(channels) if encoder else tnn.ReLU()


def main_conv(c, kind):
    if kind == "regular":
        return [tnn.Conv2d(c, c, 3, padding=1)]
    name, size = kind.split()
    if name == "dilated":
        return [tnn.Conv2d(c, c, 3, padding=int(size), dilation=int(size))]
    k = int(size)
    return [tnn.Conv2d(c, c, (k, 1), padding=(k // 2, 0), bias=False), tnn.Conv2d(c, c, (1, k), padding=(0, k // 2))]


class InitialBlock(tnn.Module):
    def __init__(self, c_in=3, c_out=16):
        super().__init__()
        self.conv = tnn.Conv2d(c_in, c_out - c_in, 3, 2, 1)
        self.bn = tnn.BatchNorm2d(c_out, eps=EPS)
        self.prelu = tnn.PReLU(c_out)

    def forward(self, x):
        return self.prelu(self.bn(torch.cat([self.conv(x), TF.max_pool2d(x, 2)], 1)))


class Bottleneck(tnn.Module):
    def __init__(self, c, kind="regular", dropout=0.1, encoder=True):
        super().__init__()
        i = c // 4
        self.main = tnn.Sequential(*e_conv_bn(c, i, 1), act(i, encoder), *main_conv(i, kind),
                                   tnn.BatchNorm2d(i, eps=EPS), act(i, encoder), *e_conv_bn(i, c, 1),
                                   *([tnn.Dropout2d(dropout)] if encoder else []))
        self.activation = act(c, encoder)

    def forward(self, x):
        return self.activation(x + self.main(x))


class DownsamplingBottleneck(tnn.Module):
    def __init__(self, c_in, c_out, dropout):
        super().__init__()
        i = c_out // 4
        self.extra = c_out - c_in
        self.main = tnn.Sequential(*e_conv_bn(c_in, i, 2, 2), tnn.PReLU(i), tnn.Conv2d(i, i, 3, padding=1),
                                   tnn.BatchNorm2d(i, eps=EPS), tnn.PReLU(i), *e_conv_bn(i, c_out, 1),
                                   tnn.Dropout2d(dropout))
        self.activation = tnn.PReLU(c_out)

    def forward(self, x):
        shortcut, indices = TF.max_pool2d(x, 2, return_indices=True)
        shortcut = TF.pad(shortcut, (0, 0, 0, 0, 0, self.extra))
        return self.activation(shortcut + self.main(x)), indices


class UpsamplingBottleneck(tnn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        i = c_out // 4
        self.main = tnn.Sequential(*e_conv_bn(c_in, i, 1), tnn.ReLU(), tnn.ConvTranspose2d(i, i, 3, 2, 1, 1),
                                   tnn.BatchNorm2d(i, eps=EPS), tnn.ReLU(), *e_conv_bn(i, c_out, 1))
        self.shortcut = tnn.Sequential(*e_conv_bn(c_in, c_out, 1))
        self.activation = tnn.ReLU()

    def forward(self, x, indices):
        return self.activation(TF.max_unpool2d(self.shortcut(x), indices, 2) + self.main(x))


class ENet(tnn.Module):
    def __init__(self, num_classes, in_channels=3):
        super().__init__()
        self.initial = InitialBlock(in_channels, 16)
        self.down1 = DownsamplingBottleneck(16, 64, 0.01)
        self.stage1 = tnn.Sequential(*[Bottleneck(64, dropout=0.01) for _ in range(4)])
        self.down2 = DownsamplingBottleneck(64, 128, 0.1)
        self.stage2 = tnn.Sequential(*[Bottleneck(128, kind) for kind in STAGE_2])
        self.stage3 = tnn.Sequential(*[Bottleneck(128, kind) for kind in STAGE_2])
        self.up4 = UpsamplingBottleneck(128, 64)
        self.stage4 = tnn.Sequential(*[Bottleneck(64, encoder=False) for _ in range(2)])
        self.up5 = UpsamplingBottleneck(64, 16)
        self.stage5 = Bottleneck(16, encoder=False)
        self.fullconv = tnn.ConvTranspose2d(16, num_classes, 2, 2)

    def forward(self, x):
        x, indices1 = self.down1(self.initial(x))
        x, indices2 = self.down2(self.stage1(x))
        x = self.stage3(self.stage2(x))
        x = self.stage4(self.up4(x, indices2))
        return self.fullconv(self.stage5(self.up5(x, indices1)))


# --- PointRend ----------------------------------------------------------------------------------------------
def point_sample(x, points):
    return TF.grid_sample(x, 2 * points[:, :, None] - 1, align_corners=False)[..., 0]


def uncertainty(logits):
    top_two = logits.topk(2, dim=1).values
    return top_two[:, 1] - top_two[:, 0]


def select_training_points(coarse, num_points, oversample, importance):
    n = coarse.shape[0]
    kept = int(round(importance * num_points))
    candidates = torch.rand(n, oversample * num_points, 2)
    with torch.no_grad():
        order = uncertainty(point_sample(coarse, candidates)).topk(kept, dim=1).indices
    chosen = candidates.gather(1, order[:, :, None].expand(-1, -1, 2))
    return torch.cat([chosen, torch.rand(n, num_points - kept, 2)], 1)


def uncertain_grid_points(logits, count):
    n, _, h, w = logits.shape
    count = min(count, h * w)
    indices = uncertainty(logits).reshape(n, h * w).topk(count, dim=1).indices
    centres = torch.stack([(indices % w + 0.5) / w, (indices // w + 0.5) / h], 2)
    return indices, centres


def labels_at_points(target, points):
    n, h, w = target.shape
    rows = (points[..., 1] * h).floor().long().clamp(0, h - 1)
    cols = (points[..., 0] * w).floor().long().clamp(0, w - 1)
    return target.reshape(n, h * w).gather(1, rows * w + cols)


class PointHead(tnn.Module):
    def __init__(self, fine_channels, num_classes, fc_dim=256, num_fc=3):
        super().__init__()
        widths = [fine_channels] + [fc_dim] * num_fc
        self.fc = tnn.ModuleList([tnn.Conv2d(a + num_classes, b, 1) for a, b in zip(widths, widths[1:])])
        self.predictor = tnn.Conv2d(fc_dim + num_classes, num_classes, 1)

    def forward(self, fine, coarse):
        coarse = coarse[..., None]
        x = fine[..., None]
        for layer in self.fc:
            x = layer(torch.cat([x, coarse], 1)).relu()
        return self.predictor(torch.cat([x, coarse], 1))[..., 0]


class PointRend(tnn.Module):
    def __init__(self, num_classes, num_points=256, oversample=3, importance=0.75, subdivision_points=1024):
        super().__init__()
        import segmentation_models_pytorch as smp
        self.coarse = smp.FPN("resnet18", encoder_weights=None, classes=num_classes)
        self.point_head = PointHead(64, num_classes)
        self.num_points, self.oversample, self.importance = num_points, oversample, importance
        self.subdivision_points = subdivision_points
        self.last_points = None

    def coarse_prediction(self, x):
        features = self.coarse.encoder(x)
        return self.coarse.segmentation_head[0](self.coarse.decoder(features)), features[2]

    def point_logits(self, coarse, fine, points):
        return self.point_head(point_sample(fine, points), point_sample(coarse, points))

    def forward(self, x):
        coarse, fine = self.coarse_prediction(x)
        if not self.training:
            return self.subdivide(coarse, fine, x.shape[2:])
        points = select_training_points(coarse.detach(), self.num_points, self.oversample, self.importance)
        output = TF.interpolate(coarse, size=x.shape[2:], mode="bilinear", align_corners=False)
        self.last_points = (output, points, self.point_logits(coarse, fine, points))
        return output

    @torch.no_grad()
    def subdivide(self, coarse, fine, size):
        logits = coarse
        while logits.shape[2] < size[0]:
            logits = TF.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
            indices, points = uncertain_grid_points(logits, self.subdivision_points)
            refined = self.point_logits(coarse, fine, points)
            n, c, h, w = logits.shape
            logits = logits.reshape(n, c, h * w).scatter(2, indices[:, None].expand(-1, c, -1), refined)
            logits = logits.reshape(n, c, h, w)
        return logits

    def loss(self, output, target):
        loss = TF.cross_entropy(output, target)
        last, self.last_points = self.last_points, None
        if last is None or last[0] is not output:
            return loss
        return loss + TF.cross_entropy(last[2], labels_at_points(target, last[1]))


# --- names, construction and weights -----------------------------------------------------------------------
TWINS = {"naive": Naive, "unet": PaperUNet, "linknet": PaperLinkNet,
         "fcn32s": lambda n: FCN(n, skips=0), "fcn16s": lambda n: FCN(n, skips=1), "fcn8s": lambda n: FCN(n, skips=2),
         "segnet_basic": SegNetBasic, "segnet": SegNet, "enet": ENet, "pointrend": PointRend}


def load_minseg_weights(twin, minseg_model):
    """Copy every parameter and buffer of ``minseg_model`` into ``twin`` by name; the key sets must match."""
    ours = {name: np.asarray(value) for name, value in minseg_model.state_dict().items()}
    theirs = twin.state_dict()
    if set(ours) != set(theirs):
        raise KeyError(f"state dicts differ: only minseg {sorted(set(ours) - set(theirs))[:5]}, "
                       f"only torch {sorted(set(theirs) - set(ours))[:5]}")
    twin.load_state_dict({name: torch.from_numpy(np.array(ours[name])).to(theirs[name].dtype) for name in theirs})
    return twin
