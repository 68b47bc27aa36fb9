"""The ``minseg`` command: ``minseg train``, ``minseg evaluate``, ``minseg predict``.

``examples/camvid_tiny.py`` and ``examples/membrane.py`` are this module's ``train`` with their own
defaults. A run lives in its ``--out`` folder: ``checkpoint.npz`` (after every epoch, or every
``--checkpoint-every``-th) carries the run's description next to the weights (model name and options,
normalization, classes and colours, every training option, paths made absolute), so ``--resume`` needs only
``--out``, from any folder, and ``predict`` only the checkpoint. While a run trains, ``--out`` is locked
(``lock``: ``--out/train.lock``), so a second run into it is an error instead of a lost run.

A user's mistake (an option value out of its bounds, a missing or wrong kind of file or folder, a
bad dataset, a damaged checkpoint, a flag that contradicts the checkpoint being resumed, ``--device
cuda`` without a GPU, an offline download, a full disk, a locked ``--out``) prints one line ``error: ...`` naming the
flag or file and exits 2; ``tests/test_cli_fuzz.py`` feeds every option each kind of bad value.
``minseg predict`` replaces no file unless ``--overwrite`` says so (``files.plan_outputs``); on an instance
model's checkpoint it writes instance ids and the panoptic map instead (``instance_files``). Divergence
prints the ``TrainingDiverged`` message and exits 1. Ctrl-C says what was saved and prints the
command that continues the run exactly as asked, and exits 130; SIGTERM does the same and exits 143
(``interrupt``). The console script enters through ``console``, which catches a Ctrl-C while this module is
still being imported.

``mpiexec -n K minseg train ...`` trains data-parallel on K ranks (``minseg.app.ranks``): the same flags,
``--batch-size`` the batch of all ranks together, ``--threads`` per rank; rank 0 alone prints and writes
files, and a failure on any rank ends every rank (one ``error:`` line, the same exit statuses).
"""
import argparse
import contextlib
import math
import sys
import traceback
from pathlib import Path

from .. import backend
from ..checkpoint import CheckpointError, load_checkpoint_description
from ..data import DatasetError, DownloadError, layouts
from ..distributed import SingleProcess
from ..instance_predict import declared_task
from ..models import ENCODERS, MODELS
from ..predict import AUTO_TILE, DEFAULT_OVERLAP, Predictor
from ..tiling import BLENDS
from ..train import TrainingDiverged
from . import values
from .files import check_images, evaluate_checkpoint, image_files, plan_outputs, predict_files
from .instance_files import predict_instances
from .interrupt import exit_status, terminate_as_interrupt
from .options import UsageError, check_file, check_folder, check_out
from .ranks import communicator, stop
from .threads import default_threads, limit_threads
from .train_command import CHANGEABLE_ON_RESUME, check_device, train

__all__ = ["main", "build_parser", "UsageError", "TRAIN_DEFAULTS", "CHANGEABLE_ON_RESUME"]

TRAIN_DEFAULTS = dict(data=None, layout="auto", classes=None, mask_values=None, colors=None, ignore=None,
                      valid_every=5, valid_fraction=None, resize=None, crop=None, scale=None, flip="h", repeat=1,
                      lazy=False, model="unet", encoder=None, base=16, weights=None, loss="ce", epochs=100, lr=3e-3,
                      batch_size=8, weight_decay=1e-2, seed=0, device="cpu", threads=None, sync_bn=True,
                      out="runs/camvid_tiny", resume=False, progress=True, checkpoint_every=1,
                      images_dir=None, masks_dir=None, mask_suffix=None)
MAX_THREADS = 256  # --threads: more BLAS threads than this only wait on each other


# ---------------------------------------------------------------------------------------------
# argument parsing
# ---------------------------------------------------------------------------------------------
# What a default of None means, in words, for --help.
_NONE_MEANS = dict(data="download CamVid tiny", classes="the layout's own", mask_values="masks hold class ids",
                   colors="none", ignore="none", valid_fraction="none: --valid-every splits", resize="none",
                   crop="none: whole images", scale="none", encoder="none: the from-scratch model",
                   weights="none: random initial weights", threads="the cores not busy with other work",
                   images_dir="images", masks_dir="masks", mask_suffix="none: photo.jpg pairs with photo.png")


def _option(parser, flag, help, defaults, **kwargs):
    """An option whose parsed default is None (so an explicit flag can be told apart) and whose
    help shows the real default from ``defaults``."""
    name = flag.lstrip("-").replace("-", "_")
    shown = defaults.get(name)
    shown = _NONE_MEANS.get(name, "none") if shown is None else "x".join(map(str, shown)) if isinstance(
        shown, (tuple, list)) else shown
    bounds = getattr(kwargs.get("type"), "bounds", None)
    help = f"{help}; {bounds}" if bounds else help
    parser.add_argument(flag, default=None, help=f"{help} (default: {shown})", **kwargs)


def _folder_name(text):
    """A folder inside --data: a relative path that stays inside it."""
    if not text.strip() or "\0" in text or Path(text).is_absolute() or ".." in Path(text).parts:
        raise argparse.ArgumentTypeError(f"must be a folder name inside --data, like images, got {text!r}")
    return text


def _mask_suffix(text):
    """Text added to an image's stem to name its mask: ``_mask`` pairs photo.jpg with photo_mask.png."""
    if "/" in text or "\\" in text or "\0" in text:
        raise argparse.ArgumentTypeError(f"must be text without a path separator, like _mask, got {text!r}")
    return text


def _folder_options(data, defaults):
    """The folders layout's own flags: folder names and a mask suffix (they also pick --layout auto = folders)."""
    _option(data, "--images-dir", "folders layout: the image folder inside --data", defaults, type=_folder_name)
    _option(data, "--masks-dir", "folders layout: the mask folder inside --data", defaults, type=_folder_name)
    _option(data, "--mask-suffix", "folders layout: photo.jpg pairs with photo<SUFFIX>.png, e.g. _mask", defaults,
            type=_mask_suffix)


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (``error: ...``), not the usage block first."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _train_options(parser, defaults):
    data = parser.add_argument_group("data")
    _option(data, "--data", "dataset folder; CamVid tiny is downloaded when not given", defaults, type=values.path)
    _option(data, "--layout", "folder layout", defaults, choices=["auto", *layouts.LAYOUTS])
    _option(data, "--classes", "class names, comma-separated, or a file of one name per line", defaults,
            type=values.names)
    _option(data, "--mask-values", "value map, e.g. 0=membrane,255=cell", defaults, type=values.value_map)
    _option(data, "--colors", "colour table file of 'R G B Name' lines, for RGB masks", defaults,
            type=values.path)
    _option(data, "--ignore", "mask values left out of the loss and metrics, comma-separated (with --colors: "
            "colours 'R G B')", defaults, type=values.ignore_list)
    _option(data, "--valid-every", "every k-th image validates (fastai, folders layouts)", defaults,
            type=values.whole(2, 10**6))
    _option(data, "--valid-fraction", "instead: this seeded fraction validates", defaults,
            type=values.real(0, 1, low_open=True, high_open=True))
    _option(data, "--resize", "resize the shorter side to N, or to HxW exactly", defaults, type=values.resize)
    _option(data, "--crop", "train on random HxW crops", defaults, type=values.size)
    _option(data, "--scale", "random zoom LOW,HIGH for training, e.g. 0.75,1.25", defaults, type=values.scale)
    _option(data, "--flip", "random flips: h (left-right), v (top-bottom), hv (both) or none", defaults,
            choices=["h", "v", "hv", "none"])
    _option(data, "--repeat", "each training image this many times per epoch (own random crop each)", defaults,
            type=values.whole(1, 1000))
    data.add_argument("--lazy", action="store_const", const=True, default=None,
                      help=f"read files per item instead of into memory (default: {defaults['lazy']})")
    _folder_options(data, defaults)
    model = parser.add_argument_group("model")
    _option(model, "--model", "architecture", defaults, choices=list(MODELS))
    _option(model, "--encoder", "encoder for unet, linknet, fpn, pspnet (any), deeplabv3(plus) (the ResNets)",
            defaults, choices=list(ENCODERS))
    _option(model, "--base", "width of the first stage of the from-scratch models", defaults,
            type=values.whole(1, 128))
    _option(model, "--weights", "initial weights (.safetensors): whole model (heads sized for another class "
            "count start afresh), or encoder only", defaults, type=values.path)
    run = parser.add_argument_group("training")
    _option(run, "--loss", "loss function", defaults, choices=["ce", "dice+ce"])
    _option(run, "--epochs", "total epochs of the run (may change on --resume)", defaults,
            type=values.whole(1, 100_000))
    _option(run, "--lr", "peak learning rate of the one cycle", defaults,
            type=values.real(0, 1, low_open=True))
    _option(run, "--batch-size", "images per step", defaults, type=values.whole(1, 1024))
    _option(run, "--weight-decay", "AdamW's decoupled weight decay (lr × weight decay < 1)", defaults,
            type=values.real(0, 1))
    _option(run, "--seed", "seeds weights, shuffling and augmentation", defaults,
            type=values.whole(0, 2**32 - 1))
    _option(run, "--device", "cpu or cuda", defaults, choices=list(backend.DEVICES))
    _option(run, "--threads", "BLAS threads (per rank under mpiexec)", defaults, type=values.whole(1, MAX_THREADS))
    run.add_argument("--no-sync-bn", dest="sync_bn", action="store_const", const=False, default=None,
                     help="under mpiexec, batch norm uses each rank's share of the batch, not the whole batch: "
                          "faster, but no longer what one process computes (default: synchronized)")
    _option(run, "--out", "folder for metrics, figures and checkpoint.npz", defaults, type=values.path)
    _option(run, "--checkpoint-every", "write checkpoint.npz after every N-th epoch (and the last)", defaults,
            type=values.whole(1, 100_000))
    run.add_argument("--resume", action="store_const", const=True, default=None,
                     help="continue the run in --out; every other flag is then read from its checkpoint")
    run.add_argument("--no-progress", dest="progress", action="store_const", const=False, default=None,
                     help="no progress bars (default: shown)")
    parser.set_defaults(command="train")
    return parser


def _checkpoint_parser(subparsers, name, help):
    parser = subparsers.add_parser(name, help=help, description=help)
    parser.add_argument("--checkpoint", type=values.path, required=True,
                        help="RUN/checkpoint.npz written by minseg train")
    parser.add_argument("--device", choices=list(backend.DEVICES), default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=values.whole(1, MAX_THREADS), default=None,
                        help=f"BLAS threads; 1 to {MAX_THREADS} (default: the cores not busy with other work)")
    return parser


# ---------------------------------------------------------------------------------------------
# tiled prediction and test-time flips: --tile, --overlap, --blend, --tta (evaluate and predict)
# ---------------------------------------------------------------------------------------------
MAX_TILE = 16384  # a window side past this would not fit in memory anyway


def _pixels(minimum):
    """A whole number of pixels from ``minimum`` to MAX_TILE: refuses 0.5, nan, inf, 1e9 and words in one line."""
    def parse(text):
        if not (text.strip().isascii() and text.strip().isdigit()) or not minimum <= int(text) <= MAX_TILE:
            raise argparse.ArgumentTypeError(f"must be a whole number of pixels from {minimum} to {MAX_TILE}, "
                                             f"got {text!r}")
        return int(text)
    return parse


def _tiling_flags(parser):
    group = parser.add_argument_group("large images (docs/large_images.md)")
    group.add_argument("--tile", type=_pixels(1), default=None,
                       help=f"predict in TILE x TILE windows (default: the whole image, or {AUTO_TILE} when it "
                            "would not fit the memory budget)")
    group.add_argument("--overlap", type=_pixels(0), default=None,
                       help=f"pixels neighbouring windows share (default: {DEFAULT_OVERLAP}, at most half the tile)")
    group.add_argument("--blend", choices=BLENDS, default=None,
                       help="how overlapping windows' logits are weighed (default: gaussian)")
    group.add_argument("--tta", choices=["none", "h", "v", "hv"], default="none",
                       help="also predict flipped copies and average: h left-right, v top-bottom (default: none)")


def _tiling_options(args):
    """The Predictor's tiling arguments from the flags; an overlap that leaves no step is a usage error."""
    if args.overlap is not None and args.overlap >= (args.tile or AUTO_TILE):
        tile = f"--tile {args.tile}" if args.tile else f"the automatic tile, {AUTO_TILE}"
        raise UsageError(f"--overlap {args.overlap} must be smaller than {tile}; lower --overlap")
    return dict(tile=args.tile, overlap=args.overlap, blend=args.blend or "gaussian",
                tta=None if args.tta == "none" else args.tta)


TRAIN_DESCRIPTION = "Train a segmentation model and write metrics, figures and checkpoint.npz into --out."


def build_parser(prog="minseg", defaults=None, train_only=False):
    """The parser of ``minseg``, or with ``train_only`` of ``minseg train`` alone (what the examples run)."""
    defaults = {**TRAIN_DEFAULTS, **(defaults or {})}
    if train_only:
        return _train_options(_Parser(prog=prog, description=TRAIN_DESCRIPTION), defaults), defaults
    parser = _Parser(prog=prog, description="Semantic segmentation from scratch in NumPy.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate,predict}")
    _train_options(subparsers.add_parser("train", help="train a model; results and checkpoint go to --out",
                                         description=TRAIN_DESCRIPTION), defaults)
    evaluate = _checkpoint_parser(subparsers, "evaluate", "evaluate a checkpoint on its run's validation images")
    evaluate.add_argument("--data", type=values.path, default=None, help="dataset folder (default: the run's own)")
    _tiling_flags(evaluate)
    predict = _checkpoint_parser(subparsers, "predict", "write class-id masks and overlays for images of any size")
    predict.add_argument("images", nargs="+", type=values.path, help="image files, or folders of them")
    predict.add_argument("--out", type=values.path, required=True,
                         help="folder for <stem>_mask.png and <stem>_overlay.png (instance models: "
                              "<stem>_instances.png, <stem>_panoptic.png, ...)")
    predict.add_argument("--overwrite", action="store_true",
                         help="replace output files already in --out, such as <stem>_mask.png (default: refuse)")
    predict.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    predict.add_argument("--score-threshold", type=values.real(0, 1), default=None,
                         help="instance models: the lowest score an instance is kept with; in [0, 1] (default: the "
                              "model's own, 0.5 for Panoptic FPN and PANet)")
    _tiling_flags(predict)
    # --crf: the fully connected CRF after the model (minseg.crf), with its defaults
    for command in (evaluate, predict):
        command.add_argument("--crf", action="store_true",
                             help="refine each prediction with the fully connected CRF on the image (minseg.crf)")
    return parser, defaults


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------
def main(argv=None, prog="minseg", defaults=None, train_only=False):
    """Run one command; returns the process exit status (the console script passes it to sys.exit).

    ``prog``, ``defaults`` and ``train_only`` let an example be ``minseg train`` with its own defaults."""
    parser, defaults = build_parser(prog, defaults, train_only)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.train_only = train_only
    comm = SingleProcess()
    try:
        if args.command == "train":
            comm = communicator()
        command = {"train": lambda: train(args, defaults, prog, argv, comm), "evaluate": lambda: evaluate(args),
                   "predict": lambda: predict(args)}[args.command]
        with terminate_as_interrupt():
            return command()
    except KeyboardInterrupt as interrupt:  # train says more itself; here: evaluate, predict, or train's setup
        return stop(comm, f"\ninterrupted: minseg {args.command} stopped", exit_status(interrupt))
    # OSError: a missing file, or the file system's answer (a full disk, no permission, a file for a folder).
    except (UsageError, DatasetError, CheckpointError, DownloadError, OSError) as error:
        return stop(comm, f"error: {_one_line(error)}", 2)
    except TrainingDiverged as error:
        return stop(comm, f"error: {error}", 1)
    except MemoryError:
        return stop(comm, f"error: {args.command} ran out of memory; use a smaller --batch-size, --crop, --resize "
                          "or --base, or --lazy", 2)
    except Exception as error:
        if comm.size == 1:
            raise
        traceback.print_exc()  # a bug: every rank that hit it shows where
        return stop(comm, f"error: internal error ({type(error).__name__}: {error}); the traceback above shows "
                          "where", 1)


# ---------------------------------------------------------------------------------------------
# evaluate and predict
# ---------------------------------------------------------------------------------------------
_CHECKPOINT = "a checkpoint.npz written by minseg train"


@contextlib.contextmanager
def _naming_the_checkpoint(path):
    """A CheckpointError (a damaged or foreign file) as a mistake in --checkpoint."""
    try:
        yield
    except CheckpointError as error:
        raise UsageError(f"--checkpoint {path}: {str(error).removeprefix('load_checkpoint: ')}") from error


def evaluate(args):
    check_file("--checkpoint", args.checkpoint, _CHECKPOINT)
    if args.data is not None:
        check_folder("--data", args.data, "a dataset folder")
    check_device(args.device)
    with _naming_the_checkpoint(args.checkpoint):
        run = load_checkpoint_description(args.checkpoint)
    if declared_task(run) is not None:
        raise UsageError(f"--checkpoint {args.checkpoint}: instance models are evaluated by "
                         "examples/shapes_panoptic.py (mask AP and PQ); minseg evaluate measures semantic runs")
    run = run.get("run") if isinstance(run, dict) else None
    if not isinstance(run, dict) or not isinstance(run.get("args"), dict):
        raise UsageError(f"--checkpoint {args.checkpoint}: holds no options of a minseg train run, so its "
                         "validation images are unknown; it was not written by minseg train")
    with limit_threads(args.threads or default_threads()), _naming_the_checkpoint(args.checkpoint):
        results = evaluate_checkpoint(args.checkpoint, args.data, args.device, crf={} if args.crf else None,
                                      **_tiling_options(args))
    if math.isnan(results["pixel_accuracy"]):
        raise UsageError(f"--checkpoint {args.checkpoint}: its run's validation images hold no labelled pixel (no "
                         "image, or every pixel ignored), so there is nothing to measure; pass --data with a "
                         "dataset that has some")
    scalars = {key: value for key, value in results.items() if not isinstance(value, dict)}
    print("  ".join(f"{key} {_number(value, 4)}" for key, value in scalars.items()))
    for key in (key for key, value in results.items() if isinstance(value, dict)):
        print(f"{key}: " + ", ".join(f"{name} {_number(value, 3)}" for name, value in results[key].items()))
    if any(math.isnan(value) for scores in results.values() if isinstance(scores, dict) for value in scores.values()):
        print("n/a: a class absent from the validation images (and never predicted) has no IoU or Dice")
    return 0


def _number(value, digits):
    """A metric as printed: ``n/a`` where it is undefined (NaN: the class is absent from images and predictions)."""
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def predict(args):
    check_file("--checkpoint", args.checkpoint, _CHECKPOINT)
    check_out("--out", args.out)
    check_device(args.device)
    try:
        description = load_checkpoint_description(args.checkpoint)
    except CheckpointError:  # damaged: named below, after the images, by the Predictor
        description = None
    if declared_task(description) is not None:
        with limit_threads(args.threads or default_threads()):
            return predict_instances(args, description["run"], _naming_the_checkpoint)
    if args.score_threshold is not None:
        raise UsageError(f"--score-threshold is for instance models; --checkpoint {args.checkpoint} holds a "
                         "semantic segmentation model, whose masks have no scores; leave it out")
    plan = plan_outputs(image_files(args.images), args.out, overwrite=args.overwrite)
    check_images([image for image, _, _ in plan])
    with limit_threads(args.threads or default_threads()):
        with _naming_the_checkpoint(args.checkpoint):
            predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, crf={} if args.crf else None,
                                                  progress=args.progress,
                                                  report=lambda line: print(f"note: {line}", file=sys.stderr),
                                                  **_tiling_options(args))
        written = predict_files(predictor, plan, progress=args.progress)
    print(f"wrote {len(written)} mask{'s' * (len(written) != 1)} (<stem>_mask.png, palette PNGs of class ids) "
          f"and overlay{'s' * (len(written) != 1)} to {args.out}/")
    return 0


def _one_line(error):
    """An error's message on one line; a dataset report keeps its first problems after a colon."""
    if isinstance(error, OSError) and error.strerror:  # raised by the system, not a message of ours
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    if isinstance(error, DatasetError):
        shown = "; ".join(error.problems[:3])
        more = f" (and {len(error.problems) - 3} more; see the list above)" if len(error.problems) > 3 else ""
        if len(error.problems) > 3:
            print(str(error), file=sys.stderr)
        return f"{str(error).splitlines()[0]} {shown}{more}"
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
