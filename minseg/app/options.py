"""A training run's data from the options of ``minseg train``: one boundary, errors worded as flags.

``open_splits(options)`` finds the layout, reads the dataset, checks every file (one report for all
problems), and splits it: VOC and SegNet's CamVid bring their own train/val lists; the other layouts
are split every k-th image or by a seeded fraction; ``repeat`` shows each training image that many
times per epoch. ``augmentation(options)`` composes the random zoom, crop and flips the options ask for.
A mistake in the options raises ``UsageError`` naming the flag (``--mask-values``, ``--layout``); the
library below raises its own errors, which name the call.
"""
from pathlib import Path

import numpy as np

from ..data import DatasetError, check_together, layouts
from ..data.masks import read_color_table
from ..data.transforms import Compose, RandomCrop, RandomHorizontalFlip, RandomScale, RandomVerticalFlip

__all__ = ["UsageError", "jsonable", "open_splits", "augmentation", "parse_value_map", "parse_list"]


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
    return str(text) if Path(text).is_file() else parse_list(text)


def _dataset_options(options, layout):
    fixed = {"fastai": ("classes", "mask_values", "colors"), "membrane": ("mask_values", "colors", "classes"),
             "segnet": ("classes", "mask_values", "colors"), "voc": ("classes", "mask_values", "colors")}
    for name in fixed.get(layout, ()):
        if options[name] is not None:
            raise UsageError(f"--{name.replace('_', '-')} does not apply to --layout {layout}, which names its "
                             "own classes; use --layout folders to describe the masks yourself")
    kwargs = dict(resize=options["resize"], lazy=options["lazy"], cache=options["lazy"])
    kwargs.update(_folder_names(options, layout))
    if options["mask_values"] is not None:
        kwargs["values"] = parse_value_map(options["mask_values"])
    if options["colors"] is not None:
        kwargs["colors"] = read_color_table(options["colors"])
    if options["classes"] is not None:
        kwargs["classes"] = _classes(options["classes"])
    if options["ignore"] is not None:
        kwargs["ignore"] = ([tuple(int(v) for v in item.split()) for item in parse_list(options["ignore"])]
                            if options["colors"] is not None else parse_list(options["ignore"], int))
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
    if not root.is_dir():
        raise FileNotFoundError(f"--data {root}: no such folder")
    if name != "auto":
        return name
    if any(options.get(flag) is not None for flag in _FOLDER_FLAGS):
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
    except DatasetError:
        raise
    except ValueError as error:
        raise UsageError(str(error)) from error
    if options.get("repeat", 1) > 1:  # each image several times per epoch, each time with its own random crop
        train = train.subset(np.tile(np.arange(len(train)), options["repeat"]))
    return layout, train, valid


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
