"""The numbers of the course's evaluation section (page 4): how a split, a seed and a metric move a score.

    python benchmarks/evaluation.py            # 15 epochs, seeds 0 1 2: twelve trainings of the naive model
    python benchmarks/evaluation.py --smoke    # 1 epoch, one seed, 16 training images: checks that it runs

One model and one recipe, the zoo's (``benchmarks/zoo.py``): the naive model at the zoo's widths, AdamW, one-cycle
to lr 3e-3, batch 8, flips, 15 epochs (the zoo trains 25). It is trained on four splits of CamVid tiny, once per seed:

- ``every 5th``: the example's split (frames 5, 10, 15, ... validate). Frames are about a second apart, so every
  validation frame has near-duplicates of the same drive in the training set.
- ``by sequence``: the 18 frames of drive 0001TP validate, the other three drives train (no drive on both sides).
- ``leaky`` and ``clean``: the same 9 validation frames (every other 0001TP frame) and 82 training frames each;
  ``leaky`` trains on the other 9 0001TP frames and 73 of the other drives, ``clean`` on 82 frames of the other
  drives. Only the presence of the same drive differs, so the gap between the two is the leak alone.

For the first seed of ``every 5th`` it also prints what the page reads off one model: the share of Void pixels,
pixel accuracy and mean IoU with and without Void, the pooled mean IoU beside the mean of per-image mean IoUs,
and the largest off-diagonal entries of the row-normalized confusion matrix. A CamVid tiny file name encodes
its drive: ``0001TP_008670.png`` is frame 8670 of drive 0001TP.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "camvid_tiny"
HELD_OUT = "0001TP"
RECIPE = dict(lr=3e-3, weight_decay=1e-2, batch_size=8, widths=(16, 32, 64, 128))  # the zoo's naive row


def drive(stem):
    return stem.split("_")[0]


def splits(dataset):
    """{name: (train indices, valid indices)} for the four splits in the module docstring."""
    index = np.arange(len(dataset))
    held = np.array([drive(stem) == HELD_OUT for stem in dataset.stems])
    every5 = index % 5 == 4
    held_index, other_index = index[held], index[~held]
    valid, neighbours = held_index[1::2], held_index[0::2]
    others = np.random.default_rng(0).permutation(other_index)
    leaky = np.sort(np.concatenate([neighbours, others[:len(other_index) - len(neighbours)]]))
    return {"every 5th": (index[~every5], index[every5]), "by sequence": (other_index, held_index),
            "leaky": (leaky, valid), "clean": (other_index, valid)}


def train(dataset, train_index, valid_index, epochs, seed):
    import minseg
    import minseg.functional as F
    from minseg.data import DataLoader, RandomHorizontalFlip, channel_stats
    from minseg.models import Naive
    from minseg.optim import AdamW, OneCycleLR
    from minseg.train import Learner

    train_set, valid_set = dataset.subset(train_index), dataset.subset(valid_index)
    mean, std = channel_stats(train_set)
    train_loader = DataLoader(train_set, batch_size=RECIPE["batch_size"], shuffle=True,
                              augment=RandomHorizontalFlip(), mean=mean, std=std, seed=seed)
    valid_loader = DataLoader(valid_set, batch_size=RECIPE["batch_size"], mean=mean, std=std)
    minseg.manual_seed(seed)
    model = Naive(dataset.num_classes, widths=RECIPE["widths"])
    optimizer = AdamW(model.parameters(), lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"])
    scheduler = OneCycleLR(optimizer, max_lr=RECIPE["lr"], total_steps=epochs * len(train_loader))
    learner = Learner(model, train_loader, valid_loader, F.cross_entropy, optimizer, scheduler,
                      num_classes=dataset.num_classes, void_class=dataset.classes.index("Void"), progress=False)
    for _ in range(epochs):
        learner.train_one_epoch()
    return learner, valid_loader


def read_one_model(learner, loader, classes):
    """What page 4 reads off one trained model: Void, pooled vs per-image IoU, the confusion matrix."""
    from minseg import metrics

    void = classes.index("Void")
    results = learner.evaluate(loader)
    cm = results["confusion_matrix"]
    print(f"  Void: {cm[void].sum() / cm.sum():.1%} of the validation pixels")
    print(f"  pixel accuracy {metrics.pixel_accuracy(cm):.3f}, without Void pixels "
          f"{results['foreground_accuracy']:.3f}")
    no_void = np.delete(np.delete(cm, void, 0), void, 1)
    print(f"  mean IoU over {len(cm)} classes {metrics.mean_iou(cm):.3f}; with Void pixels and the Void class "
          f"left out {metrics.mean_iou(no_void):.3f}")
    per_image = []
    for images, targets in loader:
        targets = targets.numpy() if hasattr(targets, "numpy") else np.asarray(targets)
        for prediction, target in zip(learner.predict(images), targets):
            per_image.append(metrics.mean_iou(metrics.confusion_matrix(prediction, target, len(classes))))
    print(f"  mean IoU pooled over all validation pixels {metrics.mean_iou(cm):.3f}; mean over images of each "
          f"image's mean IoU {np.mean(per_image):.3f} (min {np.min(per_image):.3f}, max {np.max(per_image):.3f})")
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    np.fill_diagonal(rows, 0)
    print("  largest row-normalized confusions (share of a true class's pixels predicted as another):")
    rows[cm.sum(axis=1) < 0.005 * cm.sum()] = 0  # classes under 0.5% of the pixels: too few to read
    for flat in np.argsort(-rows, axis=None)[:6]:
        truth, guess = np.unravel_index(flat, rows.shape)
        print(f"    {classes[truth]} -> {classes[guess]}: {rows[truth, guess]:.2f} "
              f"({cm[truth].sum()} {classes[truth]} pixels; recall {cm[truth, truth] / cm[truth].sum():.2f})")


def majority_baseline(dataset):
    """Pixel accuracy and mean IoU of a "model" that predicts the most frequent class everywhere."""
    from minseg import metrics

    majority = np.bincount(dataset.labels.ravel()).argmax()
    cm = metrics.confusion_matrix(np.full_like(dataset.labels, majority), dataset.labels, dataset.num_classes)
    print(f"predicting {dataset.classes[majority]} everywhere on all {len(dataset)} frames: pixel accuracy "
          f"{metrics.pixel_accuracy(cm):.3f}, mean IoU {metrics.mean_iou(cm):.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="CamVid tiny (fastai layout)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, each trains every split once")
    parser.add_argument("--smoke", action="store_true", help="1 epoch, seed 0, 16 training images")
    args = parser.parse_args(argv)
    from minseg.data import layouts

    dataset = layouts.fastai(args.data)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    chosen = splits(dataset)
    if args.smoke:
        args.epochs, seeds = 1, [0]
        chosen = {name: (train_index[:16], valid_index) for name, (train_index, valid_index) in chosen.items()}
    majority_baseline(dataset)
    scores = {name: [] for name in chosen}
    for seed in seeds:
        for name, (train_index, valid_index) in chosen.items():
            learner, loader = train(dataset, train_index, valid_index, args.epochs, seed)
            results = learner.evaluate()
            scores[name].append(results["mean_iou"])
            print(f"{name:<12} seed {seed}: {len(train_index)} train / {len(valid_index)} valid frames, pixel "
                  f"accuracy {results['pixel_accuracy']:.3f}, mean IoU {results['mean_iou']:.3f}", flush=True)
            if name == "every 5th" and seed == seeds[0]:
                read_one_model(learner, loader, dataset.classes)
    for name, values in scores.items():
        print(f"{name:<12} mean IoU over seeds {seeds}: {np.mean(values):.3f} "
              f"(min {np.min(values):.3f}, max {np.max(values):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
