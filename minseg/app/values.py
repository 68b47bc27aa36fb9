"""What each option of the ``minseg`` command accepts: argparse ``type`` functions with their bounds.

A value outside its bounds, NaN, infinite or not a number at all stops the command before anything is
read or allocated, as one line naming the flag, the accepted values and the value given (argparse
prefixes the flag: ``error: argument --lr: must be a number in (0, 1], got 'nan'``). The upper bounds
keep one option from exhausting memory on its own (a 10⁷-pixel ``--resize``, a ``--base`` of a million
channels); ``--help`` shows each one. Checks that need several options or the file system are
``options.check_train_options`` and ``options.check_*``.

Text options (``--scale``, ``--classes``, ``--mask-values``, ``--ignore``) are checked here and kept
as the text given, which is what a checkpoint stores and ``options`` turns into library arguments.
"""
import argparse
import math
import os
from pathlib import Path

__all__ = ["MAX_SIDE", "MAX_ZOOM", "whole", "real", "size", "resize", "path", "scale", "names_a_file", "names",
           "value_map", "ignore_list"]

MAX_SIDE = 4096  # --resize and --crop: each side at most this many pixels
MAX_ZOOM = 4.0   # --scale: a zoom-in of f holds f² times the pixels of the image


def _bad(expected, text):
    return argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")


def whole(low, high):
    """An integer option in ``low..high``; ``bounds`` is the range in words, for ``--help``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise _bad(f"a whole number from {low} to {high}", text) from None
        if not low <= value <= high:
            raise _bad(f"a whole number from {low} to {high}", text)
        return value
    parse.bounds = f"{low} to {high}"
    return parse


def real(low, high, low_open=False, high_open=False):
    """A finite float option in the interval from ``low`` to ``high`` (each end open or closed)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        inside = (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
        if not (math.isfinite(value) and inside):
            raise _bad(f"a number in {interval}", text)
        return value
    parse.bounds = f"in {interval}"
    return parse


def size(text):
    """``"128"`` → (128, 128); ``"96x128"`` → (96, 128); each side 1..MAX_SIDE."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(part.isdigit() and 0 < int(part) <= MAX_SIDE for part in parts):
        raise _bad(f"a size like 128 or 96x128, each side from 1 to {MAX_SIDE}", text)
    return (int(parts[0]),) * 2 if len(parts) == 1 else (int(parts[0]), int(parts[1]))


def resize(text):
    """``"256"`` → 256 (the shorter side); ``"240x320"`` → (240, 320) (exactly)."""
    value = size(text)
    return value[0] if "x" not in text.lower() else value


size.bounds = resize.bounds = f"each side 1 to {MAX_SIDE}"


def path(text):
    """A path; the empty string is refused (it would mean the current folder)."""
    if not text.strip():
        raise _bad("a path", text)
    return Path(text)


def scale(text):
    """``LOW,HIGH`` with 0 < LOW <= HIGH <= MAX_ZOOM, both finite; kept as the text."""
    parts = text.split(",")
    try:
        low, high = (float(part) for part in parts)
    except ValueError:  # not two parts, or not numbers
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high <= MAX_ZOOM):
        raise _bad(f"LOW,HIGH with 0 < LOW <= HIGH <= {MAX_ZOOM:g}, like 0.75,1.25", text)
    return text


scale.bounds = f"0 < LOW <= HIGH <= {MAX_ZOOM:g}"


def names_a_file(text):
    """Whether ``--classes TEXT`` names a file rather than listing names: no comma, and a path separator,
    a ``.txt`` ending or an existing path."""
    text = str(text)
    looks_like_a_path = "/" in text or os.sep in text or text.endswith(".txt") or Path(text).exists()
    return bool(text.strip()) and "," not in text and looks_like_a_path


def names(text):
    """``--classes``: comma-separated names, each once, or a path to a file of names (checked when read)."""
    listed = [part.strip() for part in text.split(",") if part.strip()]
    if len(listed) < 2 and not names_a_file(text):
        raise _bad("two or more class names like road,car,sky, or a file of one name per line", text)
    repeated = sorted({name for name in listed if listed.count(name) > 1})
    if repeated:
        raise _bad(f"each class name once ({', '.join(repeated)} repeats)", text)
    return text


def value_map(text):
    """``--mask-values``: ``0=membrane,255=cell``; values 0..65535, each once; kept as the text."""
    expected = "VALUE=NAME pairs like 0=membrane,255=cell, each value 0 to 65535 and listed once"
    seen = set()
    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        value, _, name = item.partition("=")
        if not value.strip().isdigit() or not name.strip() or int(value) > 65535 or int(value) in seen:
            raise _bad(expected, text)
        seen.add(int(value))
    if len(items) < 2:
        raise _bad(expected + ", two or more", text)
    return text


def ignore_list(text):
    """``--ignore``: mask values 0..65535 (``255,0``) or, with ``--colors``, colours ``R G B`` (``0 0 0``)."""
    items = [item.split() for item in text.split(",") if item.strip()]
    if not items or not all(len(item) in (1, 3) and all(part.isdigit() and int(part) <= 65535 for part in item)
                            for item in items):
        raise _bad("mask values like 255 or 0,255 (with --colors: colours like '0 0 0,128 0 0')", text)
    return text
