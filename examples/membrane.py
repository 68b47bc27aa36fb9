"""Segment cell membranes in electron microscopy: the U-Net paper's own data and task.

    python examples/membrane.py                               # ../shared/data/membrane, about 5 minutes on 2 cores
    python examples/membrane.py --data DIR --epochs 40 --out runs/membrane40
    python examples/membrane.py --resume                      # continue an interrupted run

The ISBI 2012 training stack (30 greyscale 512x512 slices of a Drosophila nerve cord; masks 0 =
membrane, 255 = cell interior) read as it ships (``image/<k>.png``, ``label/<k>.png``) through
``minseg.data.layouts.membrane``. The recipe: every 5th slice held out (24 slices train, 6
validate), random 128x128 crops (each slice 4 times per epoch) with left-right and top-bottom
flips, a UNet (base 16), soft Dice + cross-entropy, AdamW under a one-cycle schedule; the
validation slices are predicted whole. It prints pixel accuracy and each class's Dice and IoU.
This is ``minseg train`` with these defaults (``minseg/app/cli.py``, started through ``console``): every option of
``minseg train --help`` works here too. ``benchmarks/membrane_torch.py`` is the same recipe in
PyTorch.
"""
import json
import sys
from pathlib import Path

from minseg.app import console

MEMBRANE = Path(__file__).resolve().parents[2] / "shared" / "data" / "membrane"
DEFAULTS = dict(data=str(MEMBRANE) if MEMBRANE.is_dir() else None, layout="membrane", valid_every=5,
                crop=(128, 128), flip="hv", repeat=4, model="unet", base=16, loss="dice+ce", epochs=20, lr=3e-3,
                batch_size=4, seed=0, out="runs/membrane")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if DEFAULTS["data"] is None and "--data" not in argv and "--resume" not in argv and "-h" not in argv:
        print("error: the membrane data is not at ../shared/data/membrane; pass --data DIR "
              "(a folder with image/ and label/)", file=sys.stderr)
        return 2
    status = console.main(argv, prog="python examples/membrane.py", defaults=DEFAULTS, train_only=True)
    if status != 0:
        return status
    from minseg.app import cli  # console.main has imported it
    out = Path(cli.build_parser(defaults=DEFAULTS, train_only=True)[0].parse_args(argv).out or DEFAULTS["out"])
    if (out / "metrics.json").is_file():
        metrics = json.loads((out / "metrics.json").read_text())
        print(f"pixel accuracy {metrics['pixel_accuracy']:.4f}")
        print(f"{'class':<10}{'Dice':>8}{'IoU':>8}")
        for name in metrics["per_class_dice"]:
            print(f"{name:<10}{metrics['per_class_dice'][name]:>8.4f}{metrics['per_class_iou'][name]:>8.4f}")
    return status


if __name__ == "__main__":
    sys.exit(main())
