"""One large image through a UNet: the whole image at once against windows (minseg.tiling), time and peak memory.

    python benchmarks/large_image.py                              # 3000x4000, UNet base 16, 3 runs per case
    python benchmarks/large_image.py --size 600x800 --repeat 1    # a rehearsal in seconds

Each case runs in a fresh subprocess (``_common.measured``, re-run while other programs were busy), which builds
the model (random weights, 2 classes) and a random uint8 image, predicts the class ids ``--repeat`` times after
one untimed warm-up call, and reports the median seconds and its peak resident memory (``ru_maxrss``: the whole
process, Python and NumPy included). The cases: ``whole`` (``Predictor`` with no memory budget: one pass, as
``minseg predict`` ran before it could tile) and ``tiled`` (``--tile`` and ``--overlap`` windows, blended as
``--blend`` says: by default what ``minseg predict`` picks by itself for an image past its memory budget).
"""
import argparse
import json
import math
import resource
import statistics
import sys
import time

import numpy as np
from _common import measured, timed_runs

import minseg
from minseg.models import create
from minseg.predict import AUTO_TILE, DEFAULT_OVERLAP, Predictor


def run_case(args):
    """In the subprocess: time the case and print its result as JSON on the last line."""
    minseg.manual_seed(0)
    model = create("unet", 2, base=args.base)
    options = dict(memory_budget=math.inf) if args.case == "whole" else dict(tile=args.tile, overlap=args.overlap,
                                                                              blend=args.blend)
    predictor = Predictor(model, mean=[0.5] * 3, std=[0.25] * 3, classes=["a", "b"], **options)
    height, width = args.size
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    predictor(image)  # warm-up: first-touch page faults and BLAS start-up are not the case's time
    times, others = timed_runs(lambda: predictor(image), args.repeat)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kilobytes
    print(json.dumps(dict(seconds=statistics.median(times) / 1000, peak_mb=peak_mb, others=others)))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/large_image.py", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="3000x4000", help="image height x width")
    parser.add_argument("--base", type=int, default=16, help="UNet width")
    parser.add_argument("--tile", type=int, default=AUTO_TILE)
    parser.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP)
    parser.add_argument("--blend", default="gaussian")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per case (the median is shown)")
    parser.add_argument("--cases", default="whole,tiled", help="comma-separated: whole, tiled")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # the subprocess's one case
    args = parser.parse_args(argv)
    args.size = tuple(int(part) for part in args.size.lower().split("x"))
    if args.case is not None:
        run_case(args)
        return 0
    print(f"image {args.size[0]}x{args.size[1]}, UNet base {args.base}, tiled: {args.tile}x{args.tile} windows, "
          f"overlap {args.overlap}, {args.blend}; median of {args.repeat} runs after one warm-up")
    print("| case | median time (s) | peak memory (MB, whole process) |\n|---|---:|---:|")
    for case in args.cases.split(","):
        command = [sys.executable, __file__, "--case", case, "--size", "x".join(map(str, args.size)),
                   "--base", str(args.base), "--tile", str(args.tile), "--overlap", str(args.overlap),
                   "--blend", args.blend, "--repeat", str(args.repeat)]
        start = time.perf_counter()
        result = measured(command, attempts=2)
        if "error" in result:
            print(f"| {case} | failed: {result['error']} | |")
            continue
        print(f"| {case} | {result['seconds']:.2f} | {result['peak_mb']:.0f} |", flush=True)
        print(f"  ({case}: {time.perf_counter() - start:.0f} s in all; other programs took "
              f"{result['others']:.0%} of the CPU)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
