"""The PyTorch twin of examples/shapes_panoptic.py: Panoptic FPN from torchvision's parts, trained by the same recipe.

    python benchmarks/panoptic_torch.py                                   # the example's defaults, seed 0
    python benchmarks/panoptic_torch.py --seeds 0 1 2 --side-by-side      # minseg's row beside each seed's
    python benchmarks/panoptic_torch.py --seeds 0 --side-by-side --same-init   # both start from minseg's weights
    python benchmarks/panoptic_torch.py --check                           # one batch, same weights: differences
    python benchmarks/panoptic_torch.py --epochs 1 --train-images 8 --valid-images 4 --side-by-side   # a rehearsal

Same network. The recipe is read from the example (``shapes_panoptic.recipe``) and the rest of the options from
``minseg.models.PanopticFPN``'s defaults, then built from torchvision.models.detection's parts: a small ResNet of
torchvision ``BasicBlock``s (one per stage, widths 16 … 128) under ``BackboneWithFPN`` (P2 … P5 and P6 = P5
subsampled), ``AnchorGenerator``, ``RPNHead`` + ``RegionProposalNetwork``, ``RoIHeads`` with ``MultiScaleRoIAlign``,
``TwoMLPHead`` + ``FastRCNNPredictor`` and ``MaskRCNNHeads`` + ``MaskRCNNPredictor``; the semantic branch is
segmentation_models_pytorch's FPN blocks, which minseg's ``SemanticHead`` copies. ``check_same_network`` compares
the built twin with the example's minseg model before training: every parameter shape and every setting of the RPN,
the RoI heads and the poolers. ``--same-init`` also copies minseg's initial weights into the twin, which removes the
initialization from the comparison; ``--check`` runs one batch through both from the same weights and prints how far
their outputs and losses differ.

Same training: the example's data (``ShapesDataset`` with the same seeds, minseg's ``InstanceDataLoader`` with the
same shuffling, flips and normalization, so both see the same batches), the same losses and weights (λi on the
five Mask R-CNN losses, λs on the semantic cross-entropy), torch's AdamW and OneCycleLR (which minseg's
reproduce), the same epochs and batch size. Same evaluation: the twin's detections, their masks pasted into the image
(by minseg's ``paste_masks_in_image`` unless ``--paste torchvision``), go into minseg's ``merge_panoptic``,
``MeanAveragePrecision`` and ``PanopticQuality``, so the rows differ by training, not by scoring. Both libraries use
``--threads`` threads (torch's intra-op threads; NumPy's BLAS through threadpoolctl). What is not the same: each
library draws its own random numbers (initial weights unless ``--same-init``; the anchors and proposals its samplers
pick), and float32 sums run in different orders. Needs torch, torchvision and segmentation_models_pytorch; never
imported by minseg.
"""
import argparse
import inspect
import re
import statistics
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn as tnn
import torch.nn.functional as TF
from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.base.initialization import initialize_decoder, initialize_head
from segmentation_models_pytorch.decoders.fpn.decoder import SegmentationBlock
from threadpoolctl import threadpool_limits
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads, paste_masks_in_image
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.resnet import BasicBlock
from torchvision.ops import MultiScaleRoIAlign

import minseg
from minseg.app.threads import default_threads
from minseg.data.instance_loader import InstanceDataLoader, RandomHorizontalFlipInstances
from minseg.data.shapes import ShapesDataset
from minseg.detection import MeanAveragePrecision, PanopticQuality, merge_panoptic, panoptic_from_target
from minseg.detection.mask_head import paste_masks_in_image as minseg_paste_masks_in_image
from minseg.models.panoptic_fpn import PanopticFPN, semantic_target

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import shapes_panoptic as example  # noqa: E402  (examples/shapes_panoptic.py: the recipe, and minseg's side)

METRICS = ("map", "map_50", "map_75", "pq", "pq_things", "pq_stuff")
FEATURE_NAMES = ["0", "1", "2", "3"]  # P2 … P5 in BackboneWithFPN's dict; "pool" (P6) serves the RPN only
# torchvision's MaskRCNN defaults, for every option the recipe leaves alone (check_same_network compares them)
RPN_DEFAULTS = dict(fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=256, positive_fraction=0.5,
                    pre_nms_top_n={"training": 2000, "testing": 1000},
                    post_nms_top_n={"training": 2000, "testing": 1000}, nms_thresh=0.7, score_thresh=0.0)
ROI_DEFAULTS = dict(fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=512, positive_fraction=0.25,
                    bbox_reg_weights=None, score_thresh=0.05, nms_thresh=0.5, detections_per_img=100)


# ---------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------
def recipe_options(size):
    """minseg's PanopticFPN defaults updated with the example's recipe for ``size`` x ``size`` images."""
    defaults = {name: parameter.default for name, parameter in inspect.signature(PanopticFPN).parameters.items()
                if parameter.default is not inspect.Parameter.empty}
    options = {**defaults, **example.recipe(size)}
    if options["encoder"] != "resnet_small":
        raise ValueError(f"panoptic_torch: the twin builds encoder 'resnet_small' only, got {options['encoder']!r}; "
                         f"add the encoder here")
    return options


def small_resnet(width, blocks=(1, 1, 1, 1)):
    """minseg's SmallResNetEncoder from torchvision's BasicBlock: conv1 … layer4 under torchvision's names."""
    widths = [width * 2 ** index for index in range(4)]
    layers, in_width = OrderedDict(conv1=tnn.Conv2d(3, width, 7, 2, 3, bias=False), bn1=tnn.BatchNorm2d(width),
                                   relu=tnn.ReLU(inplace=True), maxpool=tnn.MaxPool2d(3, 2, 1)), width
    for index, (out_width, count) in enumerate(zip(widths, blocks)):
        stride = 1 if index == 0 else 2
        downsample = None if in_width == out_width else tnn.Sequential(
            tnn.Conv2d(in_width, out_width, 1, stride, bias=False), tnn.BatchNorm2d(out_width))
        stage = [BasicBlock(in_width, out_width, stride, downsample)]
        stage += [BasicBlock(out_width, out_width) for _ in range(count - 1)]
        layers[f"layer{index + 1}"] = tnn.Sequential(*stage)
        in_width = out_width
    body = tnn.Sequential(layers)
    for module in body.modules():  # torchvision's ResNet initialization, as minseg's kaiming_normal_fan_out
        if isinstance(module, tnn.Conv2d):
            tnn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return body, widths


class SemanticHead(tnn.Module):
    """minseg's SemanticHead: P5 … P2 through smp's SegmentationBlocks (3, 2, 1, 0 upsamplings), summed, 1x1, x4."""

    def __init__(self, in_channels, num_classes, channels):
        super().__init__()
        self.seg_blocks = tnn.ModuleList([SegmentationBlock(in_channels, channels, n) for n in (3, 2, 1, 0)])
        self.head = SegmentationHead(channels, num_classes, kernel_size=1, upsampling=4)
        initialize_decoder(self.seg_blocks)
        initialize_head(self.head)

    def forward(self, pyramid):
        return self.head(sum(block(p) for block, p in zip(self.seg_blocks, reversed(pyramid))))


class PanopticFPNTwin(tnn.Module):
    """minseg.models.PanopticFPN's forward in torchvision's parts: losses in training, per-image dicts in eval."""

    def __init__(self, num_things, num_stuff, options, paste="minseg"):
        super().__init__()
        self.num_stuff, self.options, self.paste = num_stuff, options, paste
        channels, ratios = options["fpn_channels"], tuple(options["aspect_ratios"])
        body, widths = small_resnet(options["width"])
        self.backbone = BackboneWithFPN(body, {f"layer{i + 1}": name for i, name in enumerate(FEATURE_NAMES)},
                                        widths, channels)
        anchors = AnchorGenerator(tuple((size,) for size in options["anchor_sizes"]),
                                  (ratios,) * len(options["anchor_sizes"]))
        self.rpn = RegionProposalNetwork(anchors, RPNHead(channels, len(ratios)),
                                         **{**RPN_DEFAULTS, **(options["rpn_options"] or {})})
        box, mask, layers = options["box_resolution"], options["mask_resolution"], tuple(options["mask_layers"])
        self.roi_heads = RoIHeads(
            self.roi_pool(box), TwoMLPHead(channels * box ** 2, options["representation_size"]),
            FastRCNNPredictor(options["representation_size"], num_things + 1),
            mask_roi_pool=self.roi_pool(mask), mask_head=MaskRCNNHeads(channels, layers, 1),
            mask_predictor=MaskRCNNPredictor(layers[-1], layers[-1], num_things + 1),
            **{**ROI_DEFAULTS, **(options["roi_options"] or {})})
        self.semantic_head = SemanticHead(channels, num_stuff + 1, options["semantic_channels"])

    def roi_pool(self, resolution):
        return MultiScaleRoIAlign(FEATURE_NAMES, resolution, 2, canonical_scale=self.options["canonical_scale"])

    def forward(self, images, targets=None):
        features = self.backbone(images)
        image_list = ImageList(images, [tuple(images.shape[-2:])] * images.shape[0])
        proposals, rpn_losses = self.rpn(image_list, features, targets)
        detections, roi_losses = self.roi_heads(features, proposals, image_list.image_sizes, targets)
        semantic = self.semantic_head([features[name] for name in FEATURE_NAMES])
        if self.training:
            weight = self.options["instance_loss_weight"]
            losses = {name: loss * weight for name, loss in {**rpn_losses, **roi_losses}.items()}
            target = torch.stack([torch.from_numpy(semantic_target(t["semantic"], self.num_stuff)) for t in targets])
            losses["loss_semantic"] = TF.cross_entropy(semantic, target) * self.options["semantic_loss_weight"]
            return losses
        return [self.postprocess(detection, logits, image_list.image_sizes[0])
                for detection, logits in zip(detections, semantic)]

    def postprocess(self, detection, semantic_logits, image_size):
        """NumPy arrays in minseg's conventions: the masks pasted into the image, and minseg's panoptic merge.

        torchvision's paste rounds each box to whole pixels and widens it by one pixel (its legacy "+ 1"), so a
        mask can reach one pixel further than minseg's, which pastes into the box itself; ``self.paste`` picks.
        """
        boxes, masks = detection["boxes"], detection["masks"]
        pasted = (paste_masks_in_image(masks, boxes, image_size)[:, 0].numpy() if self.paste == "torchvision" else
                  minseg_paste_masks_in_image(masks.numpy(), boxes.numpy(), image_size))
        result = {"boxes": boxes.numpy(), "labels": detection["labels"].numpy(),
                  "scores": detection["scores"].numpy(), "masks": pasted, "semantic": semantic_logits.numpy()}
        merge = {key: self.options[key] for key in ("overlap_threshold", "score_threshold", "stuff_area")}
        result["panoptic"] = merge_panoptic(result, result["semantic"], self.num_stuff, **merge)
        return result


# ---------------------------------------------------------------------------
# The twin against minseg's model
# ---------------------------------------------------------------------------
SETTINGS = [f"{head}.{setting}" for head in ("rpn", "roi_heads") for setting in (
    "proposal_matcher.high_threshold", "proposal_matcher.low_threshold", "proposal_matcher.allow_low_quality_matches",
    "fg_bg_sampler.batch_size_per_image", "fg_bg_sampler.positive_fraction", "nms_thresh", "score_thresh")] + [
    "rpn.min_size", "rpn.anchor_generator.sizes", "rpn.anchor_generator.aspect_ratios", "rpn._pre_nms_top_n",
    "rpn._post_nms_top_n", "roi_heads.detections_per_img"] + [
    f"roi_heads.{pool}.{setting}" for pool in ("box_roi_pool", "mask_roi_pool")
    for setting in ("output_size", "sampling_ratio", "canonical_scale", "canonical_level")]
# settings torchvision fixes in its code instead of storing them: minseg's attribute -> torchvision's value
TORCHVISION_CONSTANTS = {"roi_heads.min_size": 1e-2}


def _setting(model, path):
    for part in path.split("."):
        model = getattr(model, part)
    return model


def torch_name_to_minseg(name):
    """The minseg state-dict key of a twin's key: torchvision's and smp's names where minseg's differ."""
    name = name.replace("backbone.body.", "backbone.encoder.")
    name = re.sub(r"backbone\.fpn\.inner_blocks\.([0-3])\.0\.",
                  lambda m: "backbone.p5." if m[1] == "3" else f"backbone.p{int(m[1]) + 2}.skip_conv.", name)
    name = re.sub(r"backbone\.fpn\.layer_blocks\.(\d)\.0\.", r"backbone.layer_blocks.\1.", name)
    name = name.replace("rpn.head.conv.0.0.", "rpn.head.conv.0.")
    return re.sub(r"roi_heads\.mask_head\.(\d)\.0\.", lambda m: f"roi_heads.mask_head.{2 * int(m[1])}.", name)


def check_same_network(twin, minseg_model):
    """Raise unless the twin has minseg's parameter shapes under the mapped names and all of SETTINGS equal."""
    ours = {name: tuple(np.shape(value)) for name, value in minseg_model.state_dict().items()}
    theirs = {torch_name_to_minseg(name): tuple(value.shape) for name, value in twin.state_dict().items()}
    if ours != theirs:
        differ = sorted(name for name in set(ours) | set(theirs) if ours.get(name) != theirs.get(name))
        raise RuntimeError(f"check_same_network: the state dicts differ at {differ[:6]}")
    pairs = [(path, _setting(twin, path), _setting(minseg_model, path)) for path in SETTINGS]
    pairs += [(path, value, _setting(minseg_model, path)) for path, value in TORCHVISION_CONSTANTS.items()]
    pairs += [("roi_heads.box_coder.weights", tuple(twin.roi_heads.box_coder.weights),
               tuple(minseg_model.roi_heads.bbox_reg_weights))]
    for path, theirs_value, ours_value in pairs:
        if theirs_value != ours_value:
            raise RuntimeError(f"check_same_network: {path} is {theirs_value!r} in torch, {ours_value!r} in minseg")


def load_minseg_weights(twin, minseg_model):
    """Copy minseg's parameters and buffers into the twin (names mapped by ``torch_name_to_minseg``)."""
    ours = minseg_model.state_dict()
    twin.load_state_dict({name: torch.as_tensor(np.array(ours[torch_name_to_minseg(name)])).to(value.dtype)
                          for name, value in twin.state_dict().items()})


def check_forward(args):
    """One batch through both models from the same weights: the largest differences in eval, the losses in train.

    The training losses of the RPN's objectness and the box classifier also depend on the anchors and proposals
    each library's sampler draws at random, so those two differ a little where the others agree."""
    dataset = ShapesDataset(args.batch_size, size=args.size, seed=args.seeds[0])
    minseg_model = example.build("panoptic_fpn", {}, dataset.num_things, dataset.num_stuff, args.size, args.seeds[0])
    twin = PanopticFPNTwin(dataset.num_things, dataset.num_stuff, recipe_options(args.size), args.paste)
    check_same_network(twin, minseg_model)
    load_minseg_weights(twin, minseg_model)
    images, targets = next(iter(InstanceDataLoader(dataset, batch_size=args.batch_size, mean=example.MEAN,
                                                   std=example.STD)))
    torch_images, torch_targets = to_torch(images, targets)
    minseg_model.eval()
    twin.eval()
    with minseg.no_grad(), torch.no_grad():
        levels = [np.abs(a.data - b.numpy()).max() for a, b in
                  zip(minseg_model.backbone(images), twin.backbone(torch_images).values())]
        ours, theirs = minseg_model(images), twin(torch_images)
    print(f"same weights, {len(ours)} images: P2 … P6 differ by at most {max(levels):.1e}")
    for index, (a, b) in enumerate(zip(ours, theirs)):
        same = len(a["boxes"]) == len(b["boxes"])
        boxes = (f"boxes ±{np.abs(a['boxes'] - b['boxes']).max(initial=0):.1e}, pasted masks "
                 f"±{np.abs(a['masks'] - b['masks']).max(initial=0):.1e}, " if same else "")
        print(f"  image {index}: semantic logits ±{np.abs(a['semantic'] - b['semantic']).max():.1e}, "
              f"{len(a['boxes'])} and {len(b['boxes'])} detections, {boxes}"
              f"panoptic maps agree on {100 * np.mean(a['panoptic'] == b['panoptic']):.1f}% of the pixels")
    minseg_model.train()
    twin.train()
    ours, theirs = minseg_model(images, targets), twin(torch_images, torch_targets)
    print("training losses (minseg / torch): " + ", ".join(f"{name} {ours[name].item():.4f} / {theirs[name].item():.4f}"
                                                           for name in ours))
    return 0


# ---------------------------------------------------------------------------
# Training and evaluation, as the example's train() and evaluate()
# ---------------------------------------------------------------------------
def to_torch(images, targets):
    """A minseg batch (Tensor, list of NumPy dicts) as torch: boxes, labels, masks as tensors; semantic stays NumPy."""
    return torch.from_numpy(np.asarray(images.data)), [
        {"boxes": torch.from_numpy(t["boxes"]), "labels": torch.from_numpy(t["labels"]),
         "masks": torch.from_numpy(t["masks"]), "semantic": t["semantic"]} for t in targets]


def train(model, loader, epochs, lr):
    """AdamW + one-cycle over ``epochs`` passes; returns (seconds, steps)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * len(loader))
    start, step = time.perf_counter(), 0
    model.train()
    for epoch in range(epochs):
        for images, targets in loader:
            losses = model(*to_torch(images, targets))
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            schedule.step()
            step += 1
        print(f"epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v.item():.3f}" for k, v in losses.items()),
              flush=True)
    return time.perf_counter() - start, step


def evaluate(model, dataset, num_stuff):
    """Mask AP over the thing classes and PQ over every category, with minseg's metric classes."""
    average_precision = MeanAveragePrecision(dataset.num_things, iou_type="segm")
    quality = PanopticQuality(dataset.num_things, num_stuff)
    model.eval()
    with torch.no_grad():
        for images, targets in InstanceDataLoader(dataset, batch_size=4, mean=example.MEAN, std=example.STD):
            outputs = model(to_torch(images, targets)[0])
            average_precision.update(outputs, targets)
            for output, target in zip(outputs, targets):
                quality.update(output["panoptic"], panoptic_from_target(target, num_stuff))
    return {**average_precision.compute(), **quality.compute()}


def run_torch(args):
    train_set = ShapesDataset(args.train_images, size=args.size, seed=args.seed)
    valid_set = ShapesDataset(args.valid_images, size=args.size, seed=args.seed + example.VALID_SEED_OFFSET)
    torch.manual_seed(args.seed)
    model = PanopticFPNTwin(train_set.num_things, train_set.num_stuff, recipe_options(args.size), args.paste)
    minseg_model = example.build("panoptic_fpn", {}, train_set.num_things, train_set.num_stuff, args.size, args.seed)
    check_same_network(model, minseg_model)
    if args.same_init:
        load_minseg_weights(model, minseg_model)
    loader = InstanceDataLoader(train_set, batch_size=args.batch_size, shuffle=True, mean=example.MEAN,
                                std=example.STD, augment=RandomHorizontalFlipInstances(), seed=args.seed)
    print(f"training PyTorch twin: {sum(p.numel() for p in model.parameters()):,} parameters, {args.epochs} epochs "
          f"of {len(loader)} steps, seed {args.seed}{', minseg initial weights' if args.same_init else ''}", flush=True)
    seconds, steps = train(model, loader, args.epochs, args.lr)
    return {"model": "PyTorch (torchvision parts)", "seconds": seconds, "steps": steps,
            **evaluate(model, valid_set, train_set.num_stuff)}


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------
def print_table(rows, args):
    print(f"\n{args.train_images} training and {args.valid_images} held-out {args.size}x{args.size} shapes images, "
          f"{args.epochs} epochs, batch {args.batch_size}, {args.threads} threads")
    header = f"{'model':<30}{'seed':>5}{'AP':>7}{'AP50':>7}{'AP75':>7}{'PQ':>7}{'PQth':>7}{'PQst':>7}{'train s':>9}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['model']:<30}{row['seed']:>5}" + "".join(f"{100 * row[key]:>7.1f}" for key in METRICS)
              + f"{row['seconds']:>9.0f}")
    models = list(dict.fromkeys(row["model"] for row in rows))
    if len(rows) > len(models):
        print("-" * len(header))
        for model in models:
            values = [[100 * row[key] for row in rows if row["model"] == model] for key in METRICS]
            seconds = statistics.mean(row["seconds"] for row in rows if row["model"] == model)
            print(f"{model:<30}{'mean':>5}" + "".join(f"{statistics.mean(v):>7.1f}" for v in values)
                  + f"{seconds:>9.0f}")
            print(f"{'':<30}{'sd':>5}" + "".join(f"{statistics.stdev(v) if len(v) > 1 else 0.0:>7.1f}"
                                                 for v in values))


def parse_args(argv):
    defaults = example.parse_args([])
    parser = argparse.ArgumentParser(prog="python benchmarks/panoptic_torch.py", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[defaults.seed], help="one run per seed")
    parser.add_argument("--side-by-side", action="store_true", help="also train minseg's model (the example's run)")
    parser.add_argument("--same-init", action="store_true", help="start the twin from minseg's initial weights")
    parser.add_argument("--paste", choices=("minseg", "torchvision"), default="minseg",
                        help="whose paste_masks_in_image the twin's masks go through (default: minseg's)")
    parser.add_argument("--check", action="store_true",
                        help="only compare one batch's forward from the same weights, then stop")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for torch and NumPy's BLAS (default: the cores not busy now, as minseg's)")
    for name in ("epochs", "train_images", "valid_images", "size", "batch_size", "lr"):
        value = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value,
                            help=f"as examples/shapes_panoptic.py (default: {value})")
    args = parser.parse_args(argv)
    example.parse_args([f"--{name.replace('_', '-')}={getattr(args, name)}"  # the example's checks of the values
                        for name in ("epochs", "train_images", "valid_images", "size", "batch_size", "lr")])
    if args.threads is None:
        args.threads = default_threads()
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):
        if args.check:
            return check_forward(args)
        rows = []
        for seed in args.seeds:  # minseg's run, then the twin's, seed after seed: both see the machine alike
            args.seed, args.minutes = seed, None
            if args.side_by_side:
                rows.append({**example.run("panoptic_fpn", {}, args), "seed": seed, "model": "minseg"})
            rows.append({**run_torch(args), "seed": seed})
    print_table(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
