"""The fully connected CRF on a trained model: its validation metrics with and without the CRF, and (``--time``)
the time per image -> the table in docs/crf.md.

    python benchmarks/crf.py --checkpoint runs/crf/camvid_deeplabv2/checkpoint.npz
    python benchmarks/crf.py --checkpoint RUN/checkpoint.npz --crf w1=4,theta_alpha=20,theta_gamma=1
    python benchmarks/crf.py --checkpoint RUN/checkpoint.npz --time --runs 3     # on a quiet machine

The metrics are ``minseg evaluate``'s (``minseg.app.files.evaluate_checkpoint``: the run's validation images, one
at a time at full size), without and then with ``Predictor(crf=...)``; ``--crf`` sets ``dense_crf`` options
(its defaults otherwise). ``--time`` adds the median milliseconds of ``predictor(image)`` per validation image,
with and without the CRF.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

from minseg.app.files import evaluate_checkpoint
from minseg.app.options import open_splits
from minseg.checkpoint import load_checkpoint
from minseg.predict import Predictor


def crf_options(text):
    """``"w1=4,theta_alpha=20"`` → {"w1": 4.0, "theta_alpha": 20.0} (``iterations`` and ``method`` as given)."""
    options = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        options[key] = int(value) if key == "iterations" else value if key == "method" else float(value)
    return options


def median_ms_per_image(checkpoint, crf, runs):
    predictor = Predictor.from_checkpoint(checkpoint, crf=crf)
    valid = open_splits(dict(load_checkpoint(checkpoint)["run"]["args"], lazy=True))[2]
    times = []
    for index in range(len(valid)):
        image = valid[index][0]
        predictor(image)  # warm-up
        for _ in range(runs):
            start = time.perf_counter()
            predictor(image)
            times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="RUN/checkpoint.npz written by minseg train")
    parser.add_argument("--crf", type=crf_options, default={}, help="dense_crf options, e.g. w1=4,theta_alpha=20")
    parser.add_argument("--time", action="store_true", help="also time predictor(image), with and without the CRF")
    parser.add_argument("--runs", type=int, default=3, help="timed calls per image")
    args = parser.parse_args(argv)
    print(f"{args.checkpoint}, CRF options {args.crf or 'dense_crf defaults'}")
    for name, crf in (("without CRF", None), ("with CRF", args.crf)):
        results = evaluate_checkpoint(args.checkpoint, crf=crf)
        line = (f"{name:<12} mean IoU {results['mean_iou']:.4f}  pixel accuracy {results['pixel_accuracy']:.4f}  "
                f"within 3 px of an edge {results['boundary_accuracy']:.4f}")
        if args.time:
            line += f"  {median_ms_per_image(args.checkpoint, crf, args.runs):.0f} ms / image"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
