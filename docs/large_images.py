"""The table and the figure of docs/large_images.md: the membrane slices predicted whole, in tiles, blended, flipped.

    python docs/large_images.py          # trains the recipe's UNet into --run unless it is there, then measures
    python docs/large_images.py --fast   # a tiny model, one epoch, into a temporary folder: checks that it all runs

A UNet (base 16) is trained by ``minseg train`` on random 256x256 crops of the 24 training slices (``RECIPE``);
the 6 validation slices are then predicted at their full 512x512 in every way of ``CASES``. For each the script
prints the Dice of both classes (summed over the slices' pixels, as ``minseg evaluate`` does) and the share of
pixels whose class differs from the whole-image prediction, as a Markdown table, and draws ``tiles_seams.png``:
the membrane probability of one slice predicted in 128x128 tiles without overlap (the seams) and blended.
"""
import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from minseg.app import cli
from minseg.app.options import open_splits
from minseg.checkpoint import load_checkpoint
from minseg.metrics import SegmentationMetrics
from minseg.predict import Predictor

ROOT = Path(__file__).resolve().parent.parent
MEMBRANE = ROOT.parent / "shared" / "data" / "membrane"
RECIPE = dict(crop="256x256", flip="hv", repeat=2, model="unet", base=16, loss="dice+ce", epochs=8, batch_size=4,
              lr=3e-3, seed=0)
FAST = dict(RECIPE, crop="64x64", base=4, epochs=1, repeat=1)
# (label, Predictor options): the whole image, then windows of 256 (half a slice's side), then flips.
CASES = [("whole image", {}),
         ("tiles 256, no overlap", dict(tile=256, overlap=0))]
CASES += [(f"tiles 256, overlap 64, {blend}", dict(tile=256, overlap=64, blend=blend))
          for blend in ("gaussian", "linear", "uniform", "center")]
CASES += [("whole image, flips h", dict(tta="h")),
          ("tiles 256, overlap 64, gaussian, flips h", dict(tile=256, overlap=64, blend="gaussian", tta="h"))]
CHEAP = [case for case in CASES if case[0] != "tiles 256, overlap 64, gaussian, flips h"]  # for --cheap
SEAMS = dict(tile=128, overlap=0), dict(tile=128, overlap=64, blend="gaussian")  # the figure's two predictions
SHOWN = slice(64, 320), slice(64, 320)  # the figure's part of the slice: it holds the tile borders at 128 and 256


def train(run, data, settings):
    """``minseg train`` with the recipe into ``run`` (a folder); returns its checkpoint."""
    argv = ["train", "--data", str(data), "--layout", "membrane", "--out", str(run), "--no-progress"]
    for key, value in settings.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    print("minseg " + " ".join(argv))
    if cli.main(argv) != 0:
        raise SystemExit("training failed")
    return run / "checkpoint.npz"


def membrane_probability(predictor, image):
    logits = predictor.logits(predictor.normalize(image)).numpy()[0]
    shifted = np.exp(logits - logits.max(0))
    return shifted[0] / shifted.sum(0)  # class 0 is the membrane


def measure(checkpoint, slices, cases):
    """Rows (label, Dice membrane, Dice cell, % pixels that differ from the whole image, seconds) of the
    (image, truth) ``slices``."""
    whole, rows = None, []  # the first case, the whole image, is every later case's reference
    for label, options in cases:
        predictor = Predictor.from_checkpoint(checkpoint, **options)
        metrics = SegmentationMetrics(2)
        start = time.perf_counter()
        predictions = [predictor(image) for image, _ in slices]
        whole = whole or predictions
        for ids, (_, truth) in zip(predictions, slices):
            metrics.update(ids[None], truth[None])
        differ = sum(int((ids != reference).sum()) for ids, reference in zip(predictions, whole))
        dice = metrics.compute()["per_class_dice"]
        rows.append((label, dice[0], dice[1], 100 * differ / sum(ids.size for ids in whole),
                     time.perf_counter() - start))
        print(table(rows[-1:], slices).splitlines()[-1], flush=True)  # each row as soon as it is measured
    return rows


def table(rows, slices):
    lines = [f"| the {len(slices)} validation slices (512x512) predicted by | Dice membrane | Dice cell | "
             "pixels whose class differs from the whole image |", "|---|---:|---:|---:|"]
    lines += [f"| {label} | {membrane:.4f} | {cell:.4f} | {differ:.2f}% |" for label, membrane, cell, differ, _ in rows]
    return "\n".join(lines)


def tiles_seams_png(checkpoint, image, path):
    """The membrane probability of one slice (the part ``SHOWN``): whole, tiles without overlap, blended tiles;
    each tiling's difference from the whole-image prediction."""
    whole = membrane_probability(Predictor.from_checkpoint(checkpoint), image)[SHOWN]
    tiled = [membrane_probability(Predictor.from_checkpoint(checkpoint, **options), image)[SHOWN]
             for options in SEAMS]
    figure = Figure(figsize=(12, 8.4))
    axes = figure.subplots(2, 3)
    axes[0, 0].imshow(image[SHOWN], cmap="gray", extent=(64, 320, 320, 64))
    axes[0, 0].set_title("validation slice, rows and columns 64 to 320", fontsize=9)
    for ax, picture, title in ((axes[0, 1], whole, "whole image: P(membrane)"),
                               (axes[0, 2], tiled[0], "128x128 tiles, no overlap"),
                               (axes[1, 0], tiled[1], "128x128 tiles, overlap 64, gaussian blend")):
        ax.imshow(picture, cmap="magma", vmin=0, vmax=1, extent=(64, 320, 320, 64))
        ax.set_title(title, fontsize=9)
    top = max(np.abs(t - whole).max() for t in tiled)
    for ax, picture, title in ((axes[1, 1], tiled[0], "no overlap"), (axes[1, 2], tiled[1], "blended")):
        shown = ax.imshow(np.abs(picture - whole), cmap="viridis", vmin=0, vmax=top, extent=(64, 320, 320, 64))
        figure.colorbar(shown, ax=ax, fraction=0.046)
        ax.set_title(f"|{title} − whole|: largest {np.abs(picture - whole).max():.3f}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([128, 256])
        ax.set_yticks([128, 256])
        ax.tick_params(labelsize=7)
    figure.suptitle("the seams of unblended tiles (borders at 128 and 256), and the same tiles blended "
                    "(membrane probability)", fontsize=10)
    save_quantized(figure, path)


def save_quantized(figure, path, max_bytes=200 * 1024):
    """Write ``figure`` as a 256-colour PNG, atomically, at the highest of a few resolutions under ``max_bytes``:
    the slice's texture makes a full-colour PNG of readable size too large."""
    for dpi in (100, 90, 80, 70, 60):
        buffer = io.BytesIO()
        figure.savefig(buffer, dpi=dpi, bbox_inches="tight")
        buffer.seek(0)
        packed = io.BytesIO()
        Image.open(buffer).convert("RGB").quantize(colors=256).save(packed, format="PNG", optimize=True)
        if packed.tell() <= max_bytes:
            break
    handle, temporary = tempfile.mkstemp(suffix=".png", dir=Path(path).parent)
    with os.fdopen(handle, "wb") as file:
        file.write(packed.getvalue())
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
    print(f"wrote {path} ({os.path.getsize(path) / 1024:.0f} KB, {dpi} dpi)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python docs/large_images.py", description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="tiny model, one epoch, two cases, temporary folder")
    parser.add_argument("--data", type=Path, default=MEMBRANE, help="the ISBI 2012 membrane slices")
    parser.add_argument("--run", type=Path, default=None,
                        help="the training run's folder (default: runs/membrane_tiles; with --fast a temporary one)")
    parser.add_argument("--out", type=Path, default=None, help="folder of the figure (default: docs/img)")
    parser.add_argument("--slices", type=int, default=None, help="only the first N validation slices (default: all)")
    parser.add_argument("--cheap", action="store_true", help="leave out the case that costs most (tiles and flips)")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"error: --data {args.data}: no such folder; pass the membrane slices' folder", file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="minseg-large-images-")) if args.fast else None
    run = args.run or (scratch / "run" if args.fast else ROOT / "runs" / "membrane_tiles")
    out = args.out or (scratch if args.fast else ROOT / "docs" / "img")
    checkpoint = run / "checkpoint.npz"
    if not checkpoint.is_file():
        train(run, args.data, FAST if args.fast else RECIPE)
    run_args = load_checkpoint(checkpoint)["run"]["args"]
    valid = open_splits(dict(run_args, data=str(args.data), lazy=True))[2]
    slices = [valid[index] for index in range(min(len(valid), args.slices or len(valid)))]
    tiles_seams_png(checkpoint, slices[0][0], out / "tiles_seams.png")
    rows = measure(checkpoint, slices, CASES[:2] if args.fast else CHEAP if args.cheap else CASES)
    print(table(rows, slices))
    return 0


if __name__ == "__main__":
    sys.exit(main())
