"""Train a segmentation network from scratch on CamVid tiny and look at what it predicts.

    python examples/camvid_tiny.py --data ../shared/data/camvid_tiny          # or no --data: download
    python examples/camvid_tiny.py --model linknet --epochs 10 --out runs/linknet
    python examples/camvid_tiny.py --resume                                   # continue an interrupted run

The recipe is fastai's: AdamW, a one-cycle schedule, random horizontal flips, 80 images to
train on and 20 to validate on (every 5th). Written into --out: metrics.json, batch.png,
results.png, history.png, per_class_iou.png, confusion_matrix.png and checkpoint.npz
(after every epoch, so --resume picks up where a stopped run left off).
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import minseg
import minseg.functional as F
from minseg import viz
from minseg.data import DataLoader, RandomHorizontalFlip, SegmentationDataset, channel_stats, download_camvid_tiny
from minseg.models import create
from minseg.optim import AdamW, OneCycleLR
from minseg.train import Learner, TrainingDiverged

# The defaults, in one place. They aim at "under ~10 minutes on a 2-core CPU, validation
# pixel accuracy >= 0.83" with the UNet (measured on a 2-core CPU: base 16, 100 epochs, lr 3e-3:
# pixel accuracy 0.836, mean IoU 0.268, 465 s of training; at 80 epochs it was 0.830).
DEFAULTS = dict(model="unet", epochs=100, lr=3e-3, batch_size=8, seed=0, device="cpu", out="runs/camvid_tiny")
DEFAULT_BASE = {"naive": 16, "unet": 16, "linknet": 16}  # channels of the first stage, doubling with depth
WEIGHT_DECAY = 1e-2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", type=Path, default=None,
                        help="CamVid tiny folder (images/, labels/, codes.txt); default: download it")
    parser.add_argument("--model", choices=["naive", "unet", "linknet"], default=DEFAULTS["model"])
    parser.add_argument("--base", type=int, default=None,
                        help=f"width of the first stage; default per model: {DEFAULT_BASE}")
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="total epochs of the run")
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="peak learning rate of the one cycle")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seeds weights, shuffling and flips")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=DEFAULTS["device"])
    parser.add_argument("--out", type=Path, default=Path(DEFAULTS["out"]), help="folder for metrics, figures, checkpoint")
    parser.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.npz")
    args = parser.parse_args(argv)
    if args.base is None:
        args.base = DEFAULT_BASE[args.model]
    for name in ("epochs", "base", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    return args


def build_model(name, num_classes, base):
    if name == "naive":
        return create(name, num_classes, widths=(base, 2 * base, 4 * base, 8 * base))
    return create(name, num_classes, base=base)


def finite_or_none(value):
    """JSON has no NaN: a class absent from the validation images gets null."""
    return None if value is None or math.isnan(value) else float(value)


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    root = args.data if args.data is not None else download_camvid_tiny()
    dataset = SegmentationDataset(root)
    train_set, valid_set = dataset.split()
    mean, std = channel_stats(train_set)  # the training images' statistics normalize both splits
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, augment=RandomHorizontalFlip(),
                              mean=mean, std=std, seed=args.seed, device=args.device)
    valid_loader = DataLoader(valid_set, batch_size=args.batch_size, mean=mean, std=std, device=args.device)

    minseg.manual_seed(args.seed)
    model = build_model(args.model, dataset.num_classes, args.base).to(args.device)
    optimizer = AdamW(model.parameters(), lr=args.lr, weight_decay=WEIGHT_DECAY)
    scheduler = OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * len(train_loader))
    void_class = dataset.codes.index("Void") if "Void" in dataset.codes else None
    args.out.mkdir(parents=True, exist_ok=True)
    learner = Learner(model, train_loader, valid_loader, F.cross_entropy, optimizer, scheduler,
                      num_classes=dataset.num_classes, void_class=void_class,
                      checkpoint_path=args.out / "checkpoint.npz")
    if args.resume:
        learner.load_checkpoint()
        print(f"resumed {args.out / 'checkpoint.npz'} after epoch {learner.epoch} of {args.epochs}")

    print(f"{args.model} (base {args.base}): {sum(p.size for p in model.parameters()):,} parameters; "
          f"{len(train_set)} training and {len(valid_set)} validation images of "
          f"{dataset.images.shape[1]}x{dataset.images.shape[2]}, {dataset.num_classes} classes")
    viz.show_batch(train_set.images[:8], train_set.labels[:8], args.out / "batch.png", codes=dataset.codes)
    try:
        learner.fit(max(args.epochs - learner.epoch, 0))
    except TrainingDiverged as error:
        sys.exit(str(error))

    results = learner.evaluate()
    images, targets = next(iter(valid_loader))
    predictions = learner.predict(images)
    viz.show_results(images, targets, predictions, args.out / "results.png", codes=dataset.codes, mean=mean, std=std)
    if learner.history:
        viz.plot_history(learner.history, args.out / "history.png")
    viz.plot_per_class_iou(results["per_class_iou"], args.out / "per_class_iou.png", codes=dataset.codes)
    viz.plot_confusion_matrix(results["confusion_matrix"], args.out / "confusion_matrix.png", codes=dataset.codes)

    metrics = {
        "model": args.model, "base": args.base,
        "pixel_accuracy": finite_or_none(results["pixel_accuracy"]),
        "foreground_accuracy": finite_or_none(results.get("foreground_accuracy")),
        "mean_iou": finite_or_none(results["mean_iou"]),
        "per_class_iou": {name: finite_or_none(iou) for name, iou in zip(dataset.codes, results["per_class_iou"])},
        "epochs": learner.epoch,
        "seconds": sum(record["seconds"] for record in learner.history),  # training + validation, all epochs
        "wall_seconds": time.perf_counter() - started,  # this invocation, data loading and figures included
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"validation after {learner.epoch} epochs ({metrics['seconds']:.0f} s): pixel accuracy "
          f"{results['pixel_accuracy']:.4f}, foreground accuracy {results.get('foreground_accuracy', math.nan):.4f}, "
          f"mean IoU {results['mean_iou']:.4f}; results in {args.out}/")
    return metrics


if __name__ == "__main__":
    main()
