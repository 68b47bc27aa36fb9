"""A pretrained encoder, end to end, on weights this machine can make: pretrain on the membrane slices, fine-tune
on CamVid tiny, compare with the same model from scratch.

    python benchmarks/pretrained.py             # pretraining 3 epochs, fine-tuning 15 epochs, seeds 0 1
    python benchmarks/pretrained.py --smoke     # 1 epoch each, a few images: checks that it runs

ImageNet weights are the usual start for an encoder, and fetching them needs a network (docs/models.md,
"Starting from ImageNet weights"). The mechanism does not depend on where the weights come from: train a model on
one data set, keep its encoder's state dict, load it into a new model for another data set, and train on. Here
the first data set is the ISBI 2012 membrane slices (two classes, greyscale read as RGB), cut into 96×128
tiles, and the second is CamVid tiny. The model is the naive encoder–decoder at the zoo's widths, whose encoder
is the attribute ``encoder``: only the keys that start with ``encoder.`` are carried over, the decoder and
the head (2 classes here, 32 there) start fresh. Fine-tuning uses the zoo's recipe (AdamW, one-cycle to lr 3e-3,
batch 8, flips, the every-5th split) for both models, so the only difference is the encoder's starting weights.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
WIDTHS = (16, 32, 64, 128)  # the zoo's naive model
TILE = (96, 128)


class Tiles:
    """The membrane slices cut into non-overlapping 96×128 tiles: what the DataLoader needs, nothing more."""

    def __init__(self, slices, labels):
        rows, cols = slices.shape[1] // TILE[0], slices.shape[2] // TILE[1]
        cut = [(r * TILE[0], c * TILE[1]) for r in range(rows) for c in range(cols)]
        self.images = np.stack([s[r:r + TILE[0], c:c + TILE[1]] for s in slices for r, c in cut])
        self.labels = np.stack([m[r:r + TILE[0], c:c + TILE[1]] for m in labels for r, c in cut])
        self.num_classes = 2

    def __len__(self):
        return len(self.images)


def fit(model, train, valid, epochs, seed, void_class=None):
    """Train ``model`` with the zoo's recipe; the Learner's final validation results."""
    import minseg.functional as F
    from minseg.data import DataLoader, RandomHorizontalFlip, channel_stats
    from minseg.optim import AdamW, OneCycleLR
    from minseg.train import Learner

    mean, std = channel_stats(train)
    train_loader = DataLoader(train, batch_size=8, shuffle=True, augment=RandomHorizontalFlip(), mean=mean,
                              std=std, seed=seed)
    valid_loader = DataLoader(valid, batch_size=8, mean=mean, std=std)
    optimizer = AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    scheduler = OneCycleLR(optimizer, max_lr=3e-3, total_steps=epochs * len(train_loader))
    learner = Learner(model, train_loader, valid_loader, F.cross_entropy, optimizer, scheduler,
                      num_classes=train.num_classes, void_class=void_class, progress=False)
    for _ in range(epochs):
        learner.train_one_epoch()
    return learner.evaluate()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    import minseg
    from minseg.data import layouts
    from minseg.models import Naive

    membrane = layouts.membrane(args.data / "membrane")
    camvid = layouts.fastai(args.data / "camvid_tiny")
    train, valid = camvid.split(valid_every=5)
    pre_train, pre_valid = Tiles(membrane.images[:24], membrane.labels[:24]), Tiles(membrane.images[24:],
                                                                                  membrane.labels[24:])
    seeds = [int(seed) for seed in args.seeds.split(",")]
    if args.smoke:
        args.pretrain_epochs, args.epochs, seeds = 1, 1, seeds[:1]
        pre_train.images, pre_train.labels = pre_train.images[:16], pre_train.labels[:16]
        train = train.subset(np.arange(16))
    void = camvid.classes.index("Void")
    for seed in seeds:
        minseg.manual_seed(seed)
        source = Naive(2, widths=WIDTHS)
        results = fit(source, pre_train, pre_valid, args.pretrain_epochs, seed)
        print(f"seed {seed}: pretrained on {len(pre_train)} membrane tiles for {args.pretrain_epochs} epochs: "
              f"held-out slices' pixel accuracy {results['pixel_accuracy']:.3f}, mean IoU {results['mean_iou']:.3f}")
        encoder = {name: value for name, value in source.state_dict().items() if name.startswith("encoder.")}
        for start in ("scratch", "membrane encoder"):
            minseg.manual_seed(seed)
            model = Naive(camvid.num_classes, widths=WIDTHS)
            if start == "membrane encoder":
                model.load_state_dict(encoder, strict=False)  # decoder and head keep their fresh weights
                loaded = model.state_dict()
                assert all(np.array_equal(loaded[name], value) for name, value in encoder.items())
            results = fit(model, train, valid, args.epochs, seed, void_class=void)
            print(f"seed {seed}: CamVid tiny from {start:<16}: {args.epochs} epochs, pixel accuracy "
                  f"{results['pixel_accuracy']:.3f}, mean IoU {results['mean_iou']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
