"""A training run's data from the options of ``minseg train``: one boundary, errors worded as flags.

``open_splits(options)`` finds the layout, reads the dataset, checks every file (one report for all
problems), and splits it: VOC and SegNet's CamVid bring their own train/val lists; the other layouts
are split every k-th image or by a seeded fraction; ``repeat`` shows each training image that many
times per epoch. ``augmentation(options)`` composes the random zoom, crop and flips the options ask for.
A mistake in the options raises ``UsageError`` naming the flag (``--mask-values``, ``--layout``); the
library below raises its own errors, which name the call, and ``open_splits`` rewords the ones a flag
caused in the flag's words (``classes=[...]`` → ``--classes``, "a colour table" → ``--colors FILE``).
``check_train_options`` checks what needs several options or the file system (every file named
exists and is readable, ``--out`` can be written) before any data is read.
"""
import os
from pathlib import Path

import numpy as np

from ..data import DatasetError, check_together, layouts
from ..data.masks import read_color_table
from ..data.transforms import Compose, RandomCrop, RandomHorizontalFlip, RandomScale, RandomVerticalFlip
from .values import names_a_file

__all__ = ["UsageError", "jsonable", "open_splits", "augmentation", "parse_value_map", "parse_list",
           "check_file", "check_folder", "check_out", "check_train_options"]


class UsageError(ValueError):
    """A mistake in how the command was called; printed as one ``error:`` line, exit status 2."""


def jsonable(value):
    """An option's value as the checkpoint stores it: paths as strings, tuples as lists."""
    return str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value


def parse_list(text, kind=str):
    """``"a,b , c"`` → ["a", "b", "c"] (each converted with ``kind``); None stays None."""
    if text is None:
        return None
    return [kind(part.strip()) for part in str(text).split(",") if part.strip()]


def parse_value_map(text):
    """``"0=membrane,255=cell"`` → {0: "membrane", 255: "cell"}; UsageError saying the form otherwise."""
    mapping = {}
    for item in parse_list(text):
        value, _, name = item.partition("=")
        if not value.strip().isdigit() or not name.strip():
            raise UsageError(f"--mask-values must look like 0=membrane,255=cell, got {text!r}")
        mapping[int(value)] = name.strip()
    return mapping


def _classes(text):
    """A class list from a comma-separated string or a file of one name per line."""
    if text is None:
        return None
    if not names_a_file(text):
        return parse_list(text)
    check_file("--classes", text, "a file of class names, one per line")
    try:
        names = [line.strip() for line in Path(text).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--classes {text}: cannot read it as text ({type(error).__name__}); "
                         "expected a file of class names, one per line") from None
    if len(names) < 2 or len(set(names)) < len(names):
        raise UsageError(f"--classes {text} must list two or more different class names, one per line; "
                         f"it lists {len(names)} ({len(set(names))} different)")
    return names


def _color_table(path):
    """``--colors FILE`` read with the library's reader, its mistakes worded as the flag."""
    check_file("--colors", path, "a colour table file of 'R G B Name' lines")
    try:
        return read_color_table(path)
    except UnicodeDecodeError:
        raise UsageError(f"--colors {path} is not text; expected lines 'R G B Name'") from None
    except ValueError as error:
        raise UsageError(f"--colors {path}: {str(error).partition(': ')[2]}") from None


def _ignored(text, colors):
    """``--ignore``: values, or with ``--colors`` RGB triples 0..255."""
    items = [tuple(int(v) for v in item.split()) for item in parse_list(text)]
    if colors is not None and not all(len(item) == 3 and max(item) <= 255 for item in items):
        raise UsageError(f"--ignore with --colors must list colours 'R G B' (each 0 to 255), like '0 0 0,128 0 0', "
                         f"got {text!r}")
    if colors is None and not all(len(item) == 1 for item in items):
        raise UsageError(f"--ignore must list mask values like 255 or 0,255 (colours 'R G B' need --colors), "
                         f"got {text!r}")
    return items if colors is not None else [item[0] for item in items]


def _dataset_options(options, layout):
    fixed = {"fastai": ("classes", "mask_values", "colors"), "membrane": ("mask_values", "colors", "classes"),
             "segnet": ("classes", "mask_values", "colors"), "voc": ("classes", "mask_values", "colors")}
    for name in fixed.get(layout, ()):
        if options[name] is not None:
            raise UsageError(f"--{name.replace('_', '-')} does not apply to --layout {layout}, which names its "
                             "own classes; use --layout folders to describe the masks yourself")
    kwargs = dict(resize=options["resize"], lazy=options["lazy"], cache=options["lazy"])
    kwargs.update(_folder_names(options, layout))
    if layout == "folders" and all(options[name] is None for name in ("classes", "mask_values", "colors")):
        raise UsageError("--layout folders needs to know what the mask values mean: --classes a,b,c (masks hold "
                         "class ids 0, 1, 2), --mask-values 0=a,255=b, or --colors FILE (RGB masks)")
    if options["mask_values"] is not None and options["colors"] is not None:
        raise UsageError("--mask-values and --colors both say what the mask values mean; pass one of them")
    if options["mask_values"] is not None:
        kwargs["values"] = parse_value_map(options["mask_values"])
    if options["colors"] is not None:
        kwargs["colors"] = _color_table(options["colors"])
    if options["classes"] is not None:
        kwargs["classes"] = _classes(options["classes"])
    if options["ignore"] is not None:
        kwargs["ignore"] = _ignored(options["ignore"], options["colors"])
    return kwargs


_FOLDER_FLAGS = {"images_dir": "images", "masks_dir": "masks", "mask_suffix": "mask_suffix"}  # flag → folders()


def _folder_names(options, layout):
    """``folders``' arguments from --images-dir, --masks-dir and --mask-suffix; an error for other layouts."""
    given = {flag: options[flag] for flag in _FOLDER_FLAGS if options.get(flag) is not None}
    if given and layout != "folders":
        flag = next(iter(given))
        raise UsageError(f"--{flag.replace('_', '-')} applies to --layout folders only, got --layout {layout}")
    return {_FOLDER_FLAGS[flag]: value for flag, value in given.items()}


def _layout(root, name, options):
    check_folder("--data", root, "a dataset folder")
    if name != "auto":
        return name
    if any(options.get(flag) is not None for flag in _FOLDER_FLAGS):
        for flag in ("images_dir", "masks_dir"):
            if options.get(flag) is not None:
                check_folder(f"--{flag.replace('_', '-')}", root / options[flag], "a folder inside --data")
        return "folders"  # only that layout takes these flags
    detected = layouts.detect(root)
    if detected is None:
        raise FileNotFoundError(f"--data {root}: found no known layout (fastai codes.txt + labels/, SegNet "
                                "train/ + trainannot/, VOC JPEGImages/, image/ + label/, images/ + masks/); "
                                "name one with --layout")
    return detected


def _read_splits(root, layout, options):
    """``(train, valid)`` as the layout's own lists or the split options say, each checked whole."""
    kwargs = _dataset_options(options, layout)
    preset = layouts.LAYOUTS[layout]
    if layout in ("segnet", "voc"):  # two folders: both checked before either is reported
        return check_together(lambda: preset(root, "train", **kwargs), lambda: preset(root, "val", **kwargs))
    dataset = preset(root, **kwargs).check()  # checked whole, so one report covers both splits
    return (dataset.split(valid_fraction=options["valid_fraction"], seed=options["seed"])
            if options["valid_fraction"] is not None else dataset.split(valid_every=options["valid_every"]))


def open_splits(options):
    """``(layout name, train, valid)`` for the dict ``options`` (the keys of ``cli.TRAIN_DEFAULTS``).

    A DatasetError (the files' problems) passes through; any other ValueError from the library (a colour
    table, a split option) becomes a UsageError."""
    root = Path(options["data"])
    layout = _layout(root, options["layout"], options)
    try:
        train, valid = _read_splits(root, layout, options)
    except DatasetError as error:
        error.problems = [_in_flag_words(problem, options) for problem in error.problems]
        error.args = (_in_flag_words(str(error), options),)
        raise
    except UsageError:
        raise
    except ValueError as error:
        raise UsageError(_in_flag_words(str(error), options)) from error
    if len(train) == 0:
        split = (f"--valid-fraction {options['valid_fraction']}" if options["valid_fraction"] is not None
                 else f"--valid-every {options['valid_every']}")
        raise UsageError(f"{split} leaves none of the {len(valid)} images of {root} to train on; "
                         "validate on fewer of them, or add images")
    if options.get("repeat", 1) > 1:  # each image several times per epoch, each time with its own random crop
        train = train.subset(np.tile(np.arange(len(train)), options["repeat"]))
    return layout, train, valid


# The library's words for what a flag of minseg train sets, the flag (None: always) whose words replace them.
_FLAG_WORDS = [("(classes=[...] or a codes file)", "(--classes a,b,c)", None), ("classes=[...]", "--classes", None),
               ("pass a colour table", "pass --colors FILE (lines 'R G B Name')", None),
               ("colours the colour table does not list", "colours --colors does not list", "colors"),
               ("values the value map does not list", "values --mask-values does not list", "mask_values")]


def _in_flag_words(message, options):
    """``message`` with the library's words for what the user's flags set replaced by the flags (a layout's
    own value map, such as the membrane layout's, keeps the library's words)."""
    for library, flag, option in _FLAG_WORDS:
        if option is None or options[option] is not None:
            message = message.replace(library, flag)
    return message


# ---------------------------------------------------------------------------------------------
# files the user names
# ---------------------------------------------------------------------------------------------
def check_file(flag, path, expected):
    """``path`` must be a readable file; else a UsageError naming ``flag``, ``expected`` and what is there."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; expected {expected}")
    if not path.exists():
        raise UsageError(f"{flag} {path}: no such file; expected {expected}")
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise UsageError(f"{flag} {path}: cannot read it ({error.strerror}); expected {expected}") from None


def check_folder(flag, path, expected):
    """``path`` must be a folder whose listing can be read."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file; expected {expected}")
    if not path.is_dir():
        raise UsageError(f"{flag} {path}: no such folder; expected {expected}")
    try:
        with os.scandir(path) as entries:
            next(entries, None)
    except OSError as error:
        raise UsageError(f"{flag} {path}: cannot read it ({error.strerror}); expected {expected}") from None


def check_out(flag, path):
    """``path`` must be a folder that can be written, or a new one whose nearest existing parent can be."""
    path = Path(path)
    existing = next(folder for folder in (path, *path.absolute().parents) if folder.exists())
    if not existing.is_dir():
        what = "is a file" if existing == path else f"is inside {existing}, which is a file"
        raise UsageError(f"{flag} {path} {what}; expected a folder (new or existing) to write into")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == path else f" (its parent {existing} is not)"
        raise UsageError(f"{flag} {path}: cannot write there{where}; choose a folder you may write into")


def check_train_options(options, resuming=False):
    """What ``minseg train`` checks before reading any data: the files named, --out, lr × weight decay.
    ``--weights`` only starts a run, so a resumed run does not need the file any more."""
    if options["data"] is not None:
        check_folder("--data", options["data"], "a dataset folder")
    if options["colors"] is not None:
        check_file("--colors", options["colors"], "a colour table file of 'R G B Name' lines")
    if options["classes"] is not None and names_a_file(options["classes"]):
        check_file("--classes", options["classes"], "a file of class names, one per line")
    if options["weights"] is not None and not resuming:
        check_file("--weights", options["weights"], "a .safetensors file")
    check_out("--out", options["out"])
    if options["lr"] * options["weight_decay"] >= 1:
        raise UsageError(f"--weight-decay {options['weight_decay']} with --lr {options['lr']}: AdamW multiplies "
                         f"every weight by 1 - lr × weight decay each step, so lr × weight decay must be < 1")
    if options["ignore"] is not None:
        _ignored(options["ignore"], options["colors"])


def augmentation(options):
    """The training transforms: random zoom, then random crop, then a horizontal flip (each if asked)."""
    transforms = []
    if options["scale"] is not None:
        try:
            low, high = parse_list(options["scale"], float)
            transforms.append(RandomScale((low, high)))
        except ValueError as error:  # not two numbers, or not 0 < low <= high
            raise UsageError(f"--scale must be LOW,HIGH with 0 < LOW <= HIGH, like 0.75,1.25, "
                             f"got {options['scale']!r}") from error
    if options["crop"] is not None:
        transforms.append(RandomCrop(tuple(options["crop"]), pad_if_needed=True))
    if "h" in options["flip"]:
        transforms.append(RandomHorizontalFlip())
    if "v" in options["flip"]:
        transforms.append(RandomVerticalFlip())
    return Compose(transforms) if transforms else None
