"""The PyTorch twin of examples/membrane.py: the same recipe, so the two results can stand side by side.

    python benchmarks/membrane_torch.py                                   # same defaults as the example
    python benchmarks/membrane_torch.py --minseg runs/membrane/metrics.json   # and print both results

Same data and batches: minseg's own reader, split and DataLoader (every 5th slice held out, random
128x128 crops, 4 per slice per epoch, left-right and top-bottom flips, seed 0) feed both, so only
the model code differs. Same model: the paper UNet at base 16 (conv-BN-ReLU twice per level, 2x2 max
pooling, 2x2 transposed convolutions, concatenated skips), written in torch.nn in ``benchmarks/twins.py``. Same loss
(cross-entropy + soft multi-class Dice, smooth 1), optimizer (AdamW, weight decay 1e-2), one-cycle
schedule (torch's OneCycleLR, which minseg.optim reproduces) and metrics (minseg.metrics on the six
whole validation slices). Needs torch; never imported by the library or its tests.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as TF
from twins import PaperUNet  # benchmarks/twins.py, beside this script

from minseg.app.options import augmentation
from minseg.data import DataLoader, channel_stats, layouts
from minseg.metrics import SegmentationMetrics

MEMBRANE = Path(__file__).resolve().parents[2] / "shared" / "data" / "membrane"


def dice_plus_cross_entropy(logits, targets, smooth=1.0):
    """minseg's F.cross_entropy + F.dice_loss(ignore_index=-100), in torch."""
    valid = (targets != -100)
    one_hot = TF.one_hot(targets.clamp(min=0), logits.shape[1]).permute(0, 3, 1, 2).float() * valid[:, None]
    probs = logits.softmax(1) * valid[:, None]
    dims = (0, 2, 3)
    dice = (2 * (probs * one_hot).sum(dims) + smooth) / (probs.sum(dims) + one_hot.sum(dims) + smooth)
    return TF.cross_entropy(logits, targets, ignore_index=-100) + (1 - dice.mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=MEMBRANE, help=f"membrane folder (default: {MEMBRANE})")
    parser.add_argument("--epochs", type=int, default=20, help="epochs (default: 20, as the example)")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default: 3e-3)")
    parser.add_argument("--batch-size", type=int, default=4, help="crops per step (default: 4)")
    parser.add_argument("--seed", type=int, default=0, help="seeds weights and batches (default: 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--minseg", type=Path, default=None,
                        help="minseg's metrics.json to print beside (default: none)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    dataset = layouts.membrane(args.data)
    train_set, valid_set = dataset.split(valid_every=5)
    train_set = train_set.subset(np.tile(np.arange(len(train_set)), 4))
    mean, std = channel_stats(train_set)
    options = dict(scale=None, crop=(128, 128), flip="hv")
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, augment=augmentation(options),
                              mean=mean, std=std, seed=args.seed)
    valid_loader = DataLoader(valid_set, batch_size=args.batch_size, mean=mean, std=std)

    model = PaperUNet(dataset.num_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr,
                                                    total_steps=args.epochs * len(train_loader))
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        losses = []
        for images, targets in train_loader:
            loss = dice_plus_cross_entropy(model(torch.from_numpy(images.data)), torch.from_numpy(targets.data))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        metrics = SegmentationMetrics(dataset.num_classes, ignore_index=-100)
        model.eval()
        with torch.no_grad():
            for images, targets in valid_loader:
                metrics.update(model(torch.from_numpy(images.data)).argmax(1).numpy(), targets.data)
        results = metrics.compute()
        print(f"epoch {epoch:>3}  train loss {np.mean(losses):.4f}  pixel accuracy {results['pixel_accuracy']:.4f}  "
              f"mean Dice {results['mean_dice']:.4f}  {time.perf_counter() - started:.0f} s", flush=True)
    seconds = time.perf_counter() - started
    rows = [("PyTorch", results["pixel_accuracy"], results["per_class_dice"], results["per_class_iou"], seconds)]
    if args.minseg is not None:
        theirs = json.loads(args.minseg.read_text())
        rows.insert(0, ("minseg", theirs["pixel_accuracy"], [theirs["per_class_dice"][c] for c in dataset.classes],
                        [theirs["per_class_iou"][c] for c in dataset.classes], theirs["seconds"]))
    names = dataset.classes
    print(f"\n| run | pixel accuracy | {' | '.join(f'Dice {n}' for n in names)} | "
          f"{' | '.join(f'IoU {n}' for n in names)} | training + validation |")
    print("|---|---|" + "---|" * (2 * len(names)) + "---|")
    for name, accuracy, dice, iou, time_taken in rows:
        print(f"| {name} | {accuracy:.4f} | {' | '.join(f'{v:.4f}' for v in dice)} | "
              f"{' | '.join(f'{v:.4f}' for v in iou)} | {time_taken:.0f} s |")


if __name__ == "__main__":
    main()
