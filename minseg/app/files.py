"""The files of ``minseg predict`` and ``minseg evaluate``: images in, palette masks and overlays out.

The model work is the library's ``Predictor`` (in memory); this module reads the image files, writes
``<stem>_mask.png`` (a palette PNG whose pixel values are the class ids) and ``<stem>_overlay.png``
atomically, and evaluates a checkpoint on its run's validation images, one image at a time at full size.
"""
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..atomic import atomic_write
from ..checkpoint import load_checkpoint
from ..data import void_class
from ..data.images import list_images, read_image
from ..metrics import SegmentationMetrics, boundary_counts
from ..predict import Predictor
from .options import UsageError, open_splits

__all__ = ["image_files", "plan_outputs", "check_images", "save_mask_png", "predict_files", "evaluate_checkpoint"]


def image_files(paths, where="minseg predict"):
    """The image files among ``paths`` (files, or folders of them, in order)."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            try:
                files += list_images(path, where=where)
            except ValueError as error:  # a folder without images
                raise UsageError(str(error)) from error
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{where}: {path}: no such image file or folder")
    return files


def _atomic_save(image, path):
    """Save a Pillow image to ``path`` through a temporary file and a rename (never a half-written PNG), with
    the mode the umask gives (``minseg.atomic``)."""
    with atomic_write(path) as file:
        image.save(file, format="PNG")


def save_mask_png(ids, path, colors):
    """Class ids (H, W) as a palette ("P") PNG: the pixel values are the ids, the palette their colours."""
    if len(colors) > 256:
        raise ValueError(f"save_mask_png: a palette PNG holds at most 256 classes, got {len(colors)}")
    image = Image.fromarray(np.asarray(ids, dtype=np.uint8), mode="P")
    image.putpalette(np.asarray(colors, dtype=np.uint8).ravel().tolist())
    _atomic_save(image, path)


def _listed(names, limit=5):
    shown = ", ".join(map(str, names[:limit]))
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def plan_outputs(paths, out, overwrite=False, suffixes=("_mask.png", "_overlay.png")):
    """``[(image, mask path, overlay path)]`` for each distinct image file in ``paths`` (one output path per
    ``<stem><suffix>`` of ``suffixes``), or a UsageError when writing them would lose a file: two images with
    the same stem (one output for both), an output that is one of the images, or an output that exists
    already (unless ``overwrite``)."""
    out, images = Path(out), list(dict.fromkeys(Path(path).resolve() for path in paths))  # each file once
    by_stem = {}
    for image in images:
        by_stem.setdefault(image.stem, []).append(image)
    clashes = [" and ".join(map(str, same)) for same in by_stem.values() if len(same) > 1]
    if clashes:
        raise UsageError(f"minseg predict: images with the same name would write the same <stem>{suffixes[0]}: "
                         f"{_listed(clashes, 3)}; predict them into separate --out folders, or rename them")
    plan = [(image, *(out / f"{image.stem}{suffix}" for suffix in suffixes)) for image in images]
    outputs = [path for _, *written in plan for path in written]
    inputs = {image for image in images}
    replaced = [path for path in outputs if path.resolve() in inputs]
    if replaced:
        raise UsageError(f"minseg predict: --out {out} would replace the input image {_listed(replaced)}; "
                         "choose another --out")
    existing = [path for path in outputs if path.exists()]
    if existing and not overwrite:
        raise UsageError(f"minseg predict: --out {out} already holds {_listed([p.name for p in existing])}; "
                         "pass --overwrite to replace them, or choose another --out")
    return plan


def check_images(paths):
    """Read every image once before anything is written; one UsageError lists every file that cannot be
    read, decompression bombs (images larger than Pillow's ``Image.MAX_IMAGE_PIXELS``) included."""
    problems = []
    for path in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                read_image(path)
        except ValueError as error:
            problems.append(str(error).removeprefix("cannot read image ").split("\n")[0])
    if problems:
        raise UsageError(f"minseg predict: {len(problems)} of {len(paths)} image{'s' * (len(paths) != 1)} cannot "
                         f"be read, so nothing was written: {'; '.join(problems)}")


def predict_files(predictor, plan, progress=True):
    """For each ``(image, mask path, overlay path)`` of ``plan_outputs``, write the mask (a palette PNG of
    class ids) and the overlay; returns the written mask paths."""
    written = []
    for path, mask_path, overlay_path in tqdm(plan, desc="predict", unit="image", disable=not progress,
                                              leave=False):
        image = read_image(path)
        ids = predictor(image)
        try:
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            save_mask_png(ids, mask_path, predictor.colors)
            _atomic_save(Image.fromarray(predictor.overlay(image, ids)), overlay_path)
        except OSError as error:  # a full disk: say which file, and what is done
            raise UsageError(f"minseg predict: cannot write {mask_path.parent}/{path.stem}_*.png "
                             f"({error.strerror or error}); the masks of {len(written)} of {len(plan)} images "
                             "were written before it") from error
        written.append(mask_path)
    return written


def evaluate_checkpoint(path, data=None, device="cpu", crf=None, **tiling):
    """Metrics of a ``minseg train`` checkpoint on its run's validation images (from ``data`` if given),
    predicted one image at a time at full size, exactly as ``minseg predict`` would (``crf`` and ``tiling``:
    the ``Predictor``'s crf, tile, overlap, blend and tta arguments). "boundary_accuracy" is the pixel
    accuracy within 3 pixels of the label edges (``metrics.boundary_counts``)."""
    predictor = Predictor.from_checkpoint(path, device=device, crf=crf, **tiling)
    run = load_checkpoint(path)["run"]
    options = dict(run["args"], lazy=True)
    if data is not None:
        options["data"] = str(data)
    valid = open_splits(options)[2]
    metrics = SegmentationMetrics(len(predictor.classes), ignore_index=run["ignore_index"],
                                  void_class=void_class(predictor.classes))
    boundary = np.zeros(2, np.int64)
    for index in range(len(valid)):
        image, label = valid[index]
        ids = predictor(image)
        metrics.update(ids[None], label[None])
        boundary += boundary_counts(ids, label, 3, run["ignore_index"])
    results = metrics.compute()
    results["boundary_accuracy"] = boundary[0] / boundary[1] if boundary[1] else float("nan")
    return {key: (dict(zip(predictor.classes, np.asarray(value, dtype=float).tolist()))
                  if np.ndim(value) else float(value)) for key, value in results.items()}
