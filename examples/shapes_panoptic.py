"""Train Panoptic FPN (or PANet) on the synthetic shapes and report mask AP and PQ on held-out images.

    python examples/shapes_panoptic.py                          # Panoptic FPN, the default recipe
    python examples/shapes_panoptic.py --model panet            # PANet, all three additions
    python examples/shapes_panoptic.py --model panet --no-fused-mask --seed 1
    python examples/shapes_panoptic.py --ablation               # the four rows of the ablation, one after another
    python examples/shapes_panoptic.py --epochs 1 --train-images 8 --valid-images 4   # a quick rehearsal
    python examples/shapes_panoptic.py --save runs/panoptic_fpn.ckpt --figure runs/panoptic_fpn.png
                                              # keep the model (for minseg predict) and draw its results

The data: ``ShapesDataset`` (circles, squares, triangles on sky and ground), 128x128 images, training images drawn
with ``--seed`` and held-out ones with another seed, so the two never share an image. The recipe: a small ResNet
(one BasicBlock per stage, widths 16 … 128) under a 32-channel FPN, anchors 8 … 128 pixels on P2 … P6 (the image
is about a sixth of Mask R-CNN's 800 pixels, so the anchors and the level assignment's canonical size are scaled
down with it), horizontal flips, AdamW under a one-cycle schedule, batches of 4, 10 epochs of 960 images. The
default run took 9 min 25 s in all on the project's idle 2-core machine (563 s of training; mask AP 75.7, PQ 90.2,
seed 0; docs/course_8_instances.md has the table). ``--minutes`` stops training early when the time is up (after
the current step) and says so.

Evaluation: every held-out image through ``model.eval()``; COCO mask AP (AP, AP50, AP75) over the three thing
classes (``MeanAveragePrecision``) and PQ over all five categories, things and stuff apart (``PanopticQuality``).
``--ablation`` trains Panoptic FPN and then PANet with its additions switched on one at a time (path augmentation;
+ adaptive feature pooling; + the fused mask branch), same recipe, epochs and seed, and prints one row each.
``--figure PNG`` draws the trained model's results on the first held-out images (``show_instance_results``: the
detections with class and score, their masks coloured apart, the predicted and the true panoptic maps).
"""
import argparse
import sys
import time
from pathlib import Path

import minseg
from minseg.data.instance_loader import InstanceDataLoader, RandomHorizontalFlipInstances
from minseg.data.shapes import ShapesDataset
from minseg.detection import MeanAveragePrecision, PanopticQuality, panoptic_from_target
from minseg.instance_predict import save_instance_checkpoint
from minseg.models import create
from minseg.optim import AdamW
from minseg.schedule import OneCycleLR
from minseg.viz_instances import show_instance_results

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
FIGURE_IMAGES = 4  # held-out images --figure draws
VALID_SEED_OFFSET = 1000  # held-out images are drawn with seed + this, so they never repeat a training image
PANET_FLAGS = ("path_augmentation", "adaptive_pooling", "fused_mask")
ABLATION = [("panoptic_fpn", {}),
            ("panet", {"path_augmentation": True, "adaptive_pooling": False, "fused_mask": False}),
            ("panet", {"path_augmentation": True, "adaptive_pooling": True, "fused_mask": False}),
            ("panet", {"path_augmentation": True, "adaptive_pooling": True, "fused_mask": True})]


def recipe(size):
    """The model options of the recipe for ``size`` x ``size`` images (the module docstring says why)."""
    scale = size / 128
    return dict(encoder="resnet_small", width=16, fpn_channels=32, semantic_channels=32,
                anchor_sizes=tuple(round(s * scale) for s in (8, 16, 32, 64, 128)), canonical_scale=56 * scale,
                representation_size=256, mask_layers=(32, 32, 32, 32), stuff_area=round(100 * scale * scale),
                rpn_options={"pre_nms_top_n": {"training": 300, "testing": 200},
                             "post_nms_top_n": {"training": 200, "testing": 100}, "batch_size_per_image": 128},
                roi_options={"batch_size_per_image": 64, "detections_per_img": 20})


def model_options(name, flags, size):
    """The options ``create`` builds the model with (and a checkpoint records): the recipe, plus PANet's flags."""
    options = recipe(size)
    if name == "panet":
        options.update(flags)
    return options


def build(name, flags, num_things, num_stuff, size, seed):
    minseg.manual_seed(seed)
    return create(name, num_things, num_stuff, **model_options(name, flags, size))


def describe(name, flags):
    if name == "panoptic_fpn":
        return "Panoptic FPN"
    on = [flag for flag in PANET_FLAGS if flags.get(flag, True)]
    return "PANet (" + (", ".join(on) if on else "no additions") + ")"


def train(model, loader, epochs, lr, minutes):
    """AdamW + one-cycle over ``epochs`` passes; returns (seconds, steps done, steps planned, last losses)."""
    optimizer = AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    planned = epochs * len(loader)
    schedule = OneCycleLR(optimizer, max_lr=lr, total_steps=planned)
    start, step, last = time.perf_counter(), 0, {}
    model.train()
    for epoch in range(epochs):
        for images, targets in loader:
            losses = model(images, targets)
            total = sum(losses.values())
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            schedule.step()
            step += 1
            last = {name: loss.item() for name, loss in losses.items()}
            if minutes is not None and time.perf_counter() - start > 60 * minutes:
                return time.perf_counter() - start, step, planned, last
        print(f"epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v:.3f}" for k, v in last.items()), flush=True)
    return time.perf_counter() - start, step, planned, last


def evaluate(model, dataset, num_stuff):
    """Mask AP over the thing classes and PQ over every category, on every image of ``dataset``."""
    average_precision = MeanAveragePrecision(dataset.num_things, iou_type="segm")
    quality = PanopticQuality(dataset.num_things, num_stuff)
    loader = InstanceDataLoader(dataset, batch_size=4, mean=MEAN, std=STD)
    model.eval()
    with minseg.no_grad():
        for images, targets in loader:
            outputs = model(images)
            average_precision.update(outputs, targets)
            for output, target in zip(outputs, targets):
                quality.update(output["panoptic"], panoptic_from_target(target, num_stuff))
    return {**average_precision.compute(), **quality.compute()}


def draw_results(model, dataset, path):
    """``show_instance_results`` of ``model`` on the first FIGURE_IMAGES images of ``dataset``, written to ``path``."""
    images, targets = next(iter(InstanceDataLoader(dataset, batch_size=FIGURE_IMAGES, mean=MEAN, std=STD)))
    model.eval()
    with minseg.no_grad():
        outputs = model(images)
    show_instance_results(images, outputs, targets, things=dataset.things, stuff=dataset.stuff, path=path,
                          mean=MEAN, std=STD, max_rows=FIGURE_IMAGES)


def run(name, flags, args):
    train_set = ShapesDataset(args.train_images, size=args.size, seed=args.seed)
    valid_set = ShapesDataset(args.valid_images, size=args.size, seed=args.seed + VALID_SEED_OFFSET)
    model = build(name, flags, train_set.num_things, train_set.num_stuff, args.size, args.seed)
    loader = InstanceDataLoader(train_set, batch_size=args.batch_size, shuffle=True, mean=MEAN, std=STD,
                                augment=RandomHorizontalFlipInstances(), seed=args.seed)
    print(f"training {describe(name, flags)}: {sum(p.size for p in model.parameters()):,} parameters, "
          f"{args.epochs} epochs of {len(loader)} steps, seed {args.seed}", flush=True)
    seconds, steps, planned, _ = train(model, loader, args.epochs, args.lr, args.minutes)
    if steps < planned:
        print(f"--minutes {args.minutes}: stopped after {steps} of {planned} steps", flush=True)
    if args.save is not None:
        spec = {"name": name, "options": model_options(name, flags, args.size)}
        save_instance_checkpoint(args.save, model, spec, train_set.things, train_set.stuff, MEAN, STD)
        print(f"wrote {args.save} (minseg predict --checkpoint {args.save} IMAGES --out FOLDER)", flush=True)
    metrics = evaluate(model, valid_set, train_set.num_stuff)
    if args.figure is not None:
        draw_results(model, valid_set, args.figure)
        print(f"wrote {args.figure} (the results on the first {min(FIGURE_IMAGES, len(valid_set))} held-out "
              "images)", flush=True)
    return {"model": describe(name, flags), "seconds": seconds, "steps": steps, **metrics}


def print_table(rows, args):
    print(f"\n{args.train_images} training and {args.valid_images} held-out {args.size}x{args.size} shapes images, "
          f"seed {args.seed}, {args.epochs} epochs")
    header = (f"{'model':<64}{'steps':>6}{'train s':>9}{'AP':>7}{'AP50':>7}{'AP75':>7}{'PQ':>7}{'PQth':>7}"
              f"{'PQst':>7}")
    print(header)
    print("-" * len(header))
    for row in rows:
        values = [100 * row[key] for key in ("map", "map_50", "map_75", "pq", "pq_things", "pq_stuff")]
        print(f"{row['model']:<64}{row['steps']:>6}{row['seconds']:>9.0f}" + "".join(f"{v:>7.1f}" for v in values))


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python examples/shapes_panoptic.py", description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("panoptic_fpn", "panet"), default="panoptic_fpn")
    for flag in PANET_FLAGS:
        parser.add_argument(f"--no-{flag.replace('_', '-')}", dest=flag, action="store_false",
                            help=f"PANet without {flag.replace('_', ' ')}")
    parser.add_argument("--ablation", action="store_true", help="Panoptic FPN, then PANet's additions one by one")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=None, help="stop training after this many minutes")
    parser.add_argument("--train-images", type=int, default=960)
    parser.add_argument("--valid-images", type=int, default=64)
    parser.add_argument("--size", type=int, default=128, help="image height and width, a multiple of 32")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path, default=None, metavar="CHECKPOINT",
                        help="write the trained model here (for minseg predict); not with --ablation")
    parser.add_argument("--figure", type=Path, default=None, metavar="PNG",
                        help="draw the trained model's results on the first held-out images here; not with "
                             "--ablation")
    args = parser.parse_args(argv)
    for flag, keeps in (("save", "keeps one model"), ("figure", "draws one model")):
        path = getattr(args, flag)
        if path is not None and args.ablation:
            parser.error(f"--{flag} {keeps}; --ablation trains four: leave one of them out")
        if path is not None and path.exists():
            parser.error(f"--{flag} {path}: the file exists; choose a new name (nothing is overwritten)")
    if args.save is not None and args.save == args.figure:
        parser.error(f"--save and --figure must be two files, got {args.save} for both")
    if args.size % 32 or args.size < 64:
        parser.error(f"--size must be a multiple of 32 and at least 64, got {args.size}")
    for name in ("epochs", "train_images", "valid_images", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    flags = {flag: getattr(args, flag) for flag in PANET_FLAGS}
    runs = ABLATION if args.ablation else [(args.model, flags)]
    rows = [run(name, run_flags, args) for name, run_flags in runs]
    print_table(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
