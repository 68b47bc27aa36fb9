"""Train a segmentation network from scratch on CamVid tiny and look at what it predicts.

    python examples/camvid_tiny.py --data ../shared/data/camvid_tiny          # or no --data: download
    python examples/camvid_tiny.py --model linknet --epochs 10 --out runs/linknet
    python examples/camvid_tiny.py --resume                                   # continue an interrupted run

This is ``minseg train`` (``minseg/app/cli.py``) with CamVid tiny's defaults; every option of
``minseg train --help`` works here too. The recipe is fastai's: AdamW, a one-cycle schedule,
random horizontal flips, 80 images to train on and 20 to validate on (every 5th). Written into
--out: metrics.json, batch.png, results.png, history.png, per_class_iou.png,
confusion_matrix.png and checkpoint.npz (after every epoch, so --resume picks up where a
stopped run left off, and ``minseg predict --checkpoint`` applies the model to new images).
"""
import sys

from minseg.app import console

# UNet base 16, 100 epochs, lr 3e-3, batch 8: see docs/training.md for what it reaches and how long it takes.
DEFAULTS = dict(model="unet", base=16, epochs=100, lr=3e-3, batch_size=8, seed=0, out="runs/camvid_tiny")


def main(argv=None):
    return console.main(argv, prog="python examples/camvid_tiny.py", defaults=DEFAULTS, train_only=True)


if __name__ == "__main__":
    sys.exit(main())
