"""The ``minseg`` command: ``minseg train``, ``minseg evaluate``, ``minseg predict``.

``examples/camvid_tiny.py`` and ``examples/membrane.py`` are this module's ``train`` with their own
defaults. A run lives in its ``--out`` folder: ``checkpoint.npz`` (after every epoch) carries the
run's description next to the weights (model name and options, normalization, classes and colours,
every training option), so ``--resume`` needs only ``--out`` and ``predict`` only the checkpoint.

A user's mistake (a missing folder, a bad dataset, a missing checkpoint, a flag that contradicts
the checkpoint being resumed, ``--device cuda`` without a GPU, an offline download) prints one line
``error: ...`` and exits 2. Divergence prints the ``TrainingDiverged`` message and exits 1. Ctrl-C
says what was saved and prints the command that continues the run, and exits 130.
"""
import argparse
import math
import shlex
import sys
from pathlib import Path

from .. import backend
from ..checkpoint import CheckpointError, load_checkpoint
from ..data import DatasetError, DownloadError, layouts
from ..models import MODELS
from ..predict import AUTO_TILE, DEFAULT_OVERLAP, Predictor
from ..tiling import BLENDS
from ..train import TrainingDiverged
from .files import evaluate_checkpoint, image_files, predict_files
from .options import UsageError, jsonable
from .run import TrainingRun
from .threads import default_threads, limit_threads

__all__ = ["main", "build_parser", "UsageError", "TRAIN_DEFAULTS", "CHANGEABLE_ON_RESUME"]

TRAIN_DEFAULTS = dict(data=None, layout="auto", classes=None, mask_values=None, colors=None, ignore=None,
                      valid_every=5, valid_fraction=None, resize=None, crop=None, scale=None, flip="h", repeat=1,
                      lazy=False, model="unet", encoder=None, base=16, weights=None, loss="ce", epochs=100, lr=3e-3,
                      batch_size=8, weight_decay=1e-2, seed=0, device="cpu", threads=None,
                      out="runs/camvid_tiny", resume=False, progress=True)
# Flags that may differ from the checkpoint being resumed: more (or fewer) epochs re-plan the one-cycle
# schedule over the new total from the step reached; the rest do not change what is computed.
CHANGEABLE_ON_RESUME = ("epochs", "device", "threads", "data", "out", "resume", "progress")


# ---------------------------------------------------------------------------------------------
# argument parsing
# ---------------------------------------------------------------------------------------------
def _size(text):
    """``"128"`` → (128, 128); ``"96x128"`` → (96, 128)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"must be a positive size like 128 or 96x128, got {text!r}")
    return (int(parts[0]),) * 2 if len(parts) == 1 else (int(parts[0]), int(parts[1]))


def _resize(text):
    """``"256"`` → 256 (the shorter side); ``"240x320"`` → (240, 320) (exactly)."""
    size = _size(text)
    return size[0] if "x" not in text.lower() else size


def _positive(kind):
    def parse(text):
        value = kind(text)
        if not value > 0 or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


# What a default of None means, in words, for --help.
_NONE_MEANS = dict(data="download CamVid tiny", classes="the layout's own", mask_values="masks hold class ids",
                   colors="none", ignore="none", valid_fraction="none: --valid-every splits", resize="none",
                   crop="none: whole images", scale="none", encoder="none: the from-scratch model",
                   weights="none: random initial weights", threads="the cores not busy with other work")


def _option(parser, flag, help, defaults, **kwargs):
    """An option whose parsed default is None (so an explicit flag can be told apart) and whose
    help shows the real default from ``defaults``."""
    name = flag.lstrip("-").replace("-", "_")
    shown = defaults.get(name)
    shown = _NONE_MEANS.get(name, "none") if shown is None else "x".join(map(str, shown)) if isinstance(
        shown, (tuple, list)) else shown
    parser.add_argument(flag, default=None, help=f"{help} (default: {shown})", **kwargs)


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (``error: ...``), not the usage block first."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _train_options(parser, defaults):
    data = parser.add_argument_group("data")
    _option(data, "--data", "dataset folder; CamVid tiny is downloaded when not given", defaults, type=Path)
    _option(data, "--layout", "folder layout", defaults, choices=["auto", *layouts.LAYOUTS])
    _option(data, "--classes", "class names, comma-separated, or a file of one name per line", defaults)
    _option(data, "--mask-values", "value map, e.g. 0=membrane,255=cell", defaults)
    _option(data, "--colors", "colour table file of 'R G B Name' lines, for RGB masks", defaults, type=Path)
    _option(data, "--ignore", "mask values left out of the loss and metrics, comma-separated", defaults)
    _option(data, "--valid-every", "every k-th image validates (fastai, folders layouts)", defaults, type=int)
    _option(data, "--valid-fraction", "instead: this seeded fraction validates", defaults, type=float)
    _option(data, "--resize", "resize the shorter side to N, or to HxW exactly", defaults, type=_resize)
    _option(data, "--crop", "train on random HxW crops", defaults, type=_size)
    _option(data, "--scale", "random zoom LOW,HIGH for training, e.g. 0.75,1.25", defaults)
    _option(data, "--flip", "random flips: h (left-right), v (top-bottom), hv (both) or none", defaults,
            choices=["h", "v", "hv", "none"])
    _option(data, "--repeat", "each training image this many times per epoch (own random crop each)", defaults,
            type=_positive(int))
    data.add_argument("--lazy", action="store_const", const=True, default=None,
                      help=f"read files per item instead of into memory (default: {defaults['lazy']})")
    model = parser.add_argument_group("model")
    _option(model, "--model", "architecture", defaults, choices=list(MODELS))
    _option(model, "--encoder", "ResNet encoder for unet, linknet, fpn, pspnet, deeplabv3(plus)", defaults,
            choices=["resnet18", "resnet34"])
    _option(model, "--base", "width of the first stage of the from-scratch models", defaults, type=_positive(int))
    _option(model, "--weights", "initial weights (.safetensors): whole model, or encoder only", defaults, type=Path)
    run = parser.add_argument_group("training")
    _option(run, "--loss", "loss function", defaults, choices=["ce", "dice+ce"])
    _option(run, "--epochs", "total epochs of the run (may change on --resume)", defaults, type=_positive(int))
    _option(run, "--lr", "peak learning rate of the one cycle", defaults, type=_positive(float))
    _option(run, "--batch-size", "images per step", defaults, type=_positive(int))
    _option(run, "--weight-decay", "AdamW's decoupled weight decay", defaults, type=float)
    _option(run, "--seed", "seeds weights, shuffling and augmentation", defaults, type=int)
    _option(run, "--device", "cpu or cuda", defaults, choices=list(backend.DEVICES))
    _option(run, "--threads", "BLAS threads", defaults,
            type=_positive(int))
    _option(run, "--out", "folder for metrics, figures and checkpoint.npz", defaults, type=Path)
    run.add_argument("--resume", action="store_const", const=True, default=None,
                     help="continue the run in --out; every other flag is then read from its checkpoint")
    run.add_argument("--no-progress", dest="progress", action="store_const", const=False, default=None,
                     help="no progress bars (default: shown)")
    parser.set_defaults(command="train")
    return parser


def _checkpoint_parser(subparsers, name, help):
    parser = subparsers.add_parser(name, help=help, description=help)
    parser.add_argument("--checkpoint", type=Path, required=True, help="RUN/checkpoint.npz written by minseg train")
    parser.add_argument("--device", choices=list(backend.DEVICES), default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=_positive(int), default=None,
                        help="BLAS threads (default: the cores not busy with other work)")
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
    group.add_argument("--blend", choices=BLENDS, default="gaussian",
                       help="how overlapping windows' logits are weighed (default: gaussian)")
    group.add_argument("--tta", choices=["none", "h", "v", "hv"], default="none",
                       help="also predict flipped copies and average: h left-right, v top-bottom (default: none)")


def _tiling_options(args):
    """The Predictor's tiling arguments from the flags; an overlap that leaves no step is a usage error."""
    if args.overlap is not None and args.overlap >= (args.tile or AUTO_TILE):
        tile = f"--tile {args.tile}" if args.tile else f"the automatic tile, {AUTO_TILE}"
        raise UsageError(f"--overlap {args.overlap} must be smaller than {tile}; lower --overlap")
    return dict(tile=args.tile, overlap=args.overlap, blend=args.blend, tta=None if args.tta == "none" else args.tta)


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
    evaluate.add_argument("--data", type=Path, default=None, help="dataset folder (default: the run's own)")
    _tiling_flags(evaluate)
    predict = _checkpoint_parser(subparsers, "predict", "write class-id masks and overlays for images of any size")
    predict.add_argument("images", nargs="+", type=Path, help="image files, or folders of them")
    predict.add_argument("--out", type=Path, required=True, help="folder for <stem>_mask.png and <stem>_overlay.png")
    predict.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _tiling_flags(predict)
    return parser, defaults


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------
def _check_device(device):
    if device == "cuda" and not backend.cupy_available():
        raise UsageError("--device cuda needs CuPy and an NVIDIA GPU, and this machine has none usable; "
                         "use --device cpu")


def main(argv=None, prog="minseg", defaults=None, train_only=False):
    """Run one command; returns the process exit status (the console script passes it to sys.exit).

    ``prog``, ``defaults`` and ``train_only`` let an example be ``minseg train`` with its own defaults."""
    parser, defaults = build_parser(prog, defaults, train_only)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.train_only = train_only
    try:
        command = {"train": lambda: train(args, defaults, prog, argv), "evaluate": lambda: evaluate(args),
                   "predict": lambda: predict(args)}[args.command]
        return command()
    except (UsageError, DatasetError, CheckpointError, DownloadError, FileNotFoundError, NotADirectoryError) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------
def _resolve(args, defaults):
    """The run's options: the checkpoint's on --resume (an explicit flag that contradicts one is an
    error, except CHANGEABLE_ON_RESUME), else the flags over the defaults. Also returns the checkpoint."""
    explicit = {key: value for key, value in vars(args).items() if value is not None and key in defaults}
    out = Path(explicit.get("out", defaults["out"]))
    path = out / "checkpoint.npz"
    if not explicit.get("resume"):
        if path.exists():
            raise UsageError(f"--out {out} already holds a run (checkpoint.npz); pass --resume to continue it, "
                             "or choose another --out")
        return {**defaults, **explicit}, None
    if not path.is_file():
        raise UsageError(f"--resume: there is no checkpoint at {path}; start the run without --resume")
    state = load_checkpoint(path)
    saved = (state.get("run") or {}).get("args")
    if saved is None:
        raise UsageError(f"--resume: {path} was not written by minseg train (it holds no run description)")
    for key, value in explicit.items():
        if key not in CHANGEABLE_ON_RESUME and jsonable(value) != saved.get(key):
            raise UsageError(f"--{key.replace('_', '-')} {jsonable(value)} contradicts the checkpoint being resumed, "
                             f"which has {saved.get(key)}; drop the flag, or start a new run in another --out")
    return {**defaults, **saved, **{key: explicit[key] for key in explicit if key in CHANGEABLE_ON_RESUME}}, state


def train(args, defaults, prog, argv):
    options, state = _resolve(args, defaults)
    _check_device(options["device"])
    options["out"] = str(options["out"])
    threads = options["threads"] or default_threads()
    with limit_threads(threads):
        run = None
        train_word = [] if args.train_only else ["train"]
        resume_command = command_line(prog, [*train_word, "--out", options["out"], "--resume"])
        try:
            run = TrainingRun(options, state)
            run.threads = threads
            run.fit()
        except KeyboardInterrupt:
            epoch = run.saved_epoch() if run is not None else 0
            if epoch:
                print(f"\ninterrupted: {run.checkpoint_path} holds the run after epoch {epoch} of "
                      f"{options['epochs']}; continue with:\n  {resume_command}", file=sys.stderr)
            else:
                print(f"\ninterrupted before the first epoch ended, so nothing was saved; start again with:\n  "
                      f"{command_line(prog, argv)}", file=sys.stderr)
            return 130
        run.report()
    return 0


# ---------------------------------------------------------------------------------------------
# evaluate and predict
# ---------------------------------------------------------------------------------------------
def evaluate(args):
    _check_device(args.device)
    with limit_threads(args.threads or default_threads()):
        results = evaluate_checkpoint(args.checkpoint, args.data, args.device, **_tiling_options(args))
    scalars = {key: value for key, value in results.items() if not isinstance(value, dict)}
    print("  ".join(f"{key} {value:.4f}" for key, value in scalars.items()))
    for key in (key for key, value in results.items() if isinstance(value, dict)):
        print(f"{key}: " + ", ".join(f"{name} {value:.3f}" for name, value in results[key].items()))
    return 0


def predict(args):
    _check_device(args.device)
    if not args.checkpoint.is_file():
        raise FileNotFoundError(f"--checkpoint {args.checkpoint}: no such file")
    files = image_files(args.images)
    options = _tiling_options(args)
    with limit_threads(args.threads or default_threads()):
        predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, progress=args.progress,
                                              report=lambda line: print(f"note: {line}", file=sys.stderr),
                                              **options)
        written = predict_files(predictor, files, args.out, progress=args.progress)
    print(f"wrote {len(written)} masks (<stem>_mask.png, palette PNGs of class ids) and overlays to {args.out}/")
    return 0


def _one_line(error):
    """An error's message on one line; a dataset report keeps its first problems after a colon."""
    if isinstance(error, DatasetError):
        shown = "; ".join(error.problems[:3])
        more = f" (and {len(error.problems) - 3} more; see the list above)" if len(error.problems) > 3 else ""
        if len(error.problems) > 3:
            print(str(error), file=sys.stderr)
        return f"{str(error).splitlines()[0]} {shown}{more}"
    return " ".join(str(error).split())


def command_line(prog, argv):
    """The shell command that runs ``prog`` with ``argv``, quoted so it can be pasted."""
    return " ".join([prog] + [shlex.quote(str(part)) for part in argv])


if __name__ == "__main__":
    sys.exit(main())
