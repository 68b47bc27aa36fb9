"""The files of ``minseg predict`` and ``minseg evaluate``: images in, palette masks and overlays out.

The model work is the library's ``Predictor`` (in memory); this module reads the image files, writes
``<stem>_mask.png`` (a palette PNG whose pixel values are the class ids) and ``<stem>_overlay.png``
atomically, and evaluates a checkpoint on its run's validation images, one image at a time at full size.
"""
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..checkpoint import load_checkpoint
from ..data import void_class
from ..data.images import list_images, read_image
from ..metrics import SegmentationMetrics
from ..predict import Predictor
from .options import UsageError, open_splits

__all__ = ["image_files", "save_mask_png", "predict_files", "evaluate_checkpoint"]


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
    """Save a Pillow image to ``path`` through a temporary file and a rename (never a half-written PNG)."""
    folder = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(prefix=".", suffix=".png", dir=folder)
    try:
        with os.fdopen(descriptor, "wb") as file:
            image.save(file, format="PNG")
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def save_mask_png(ids, path, colors):
    """Class ids (H, W) as a palette ("P") PNG: the pixel values are the ids, the palette their colours."""
    if len(colors) > 256:
        raise ValueError(f"save_mask_png: a palette PNG holds at most 256 classes, got {len(colors)}")
    image = Image.fromarray(np.asarray(ids, dtype=np.uint8), mode="P")
    image.putpalette(np.asarray(colors, dtype=np.uint8).ravel().tolist())
    _atomic_save(image, path)


def predict_files(predictor, paths, out, progress=True):
    """For each image file write ``<out>/<stem>_mask.png`` (palette PNG of class ids) and
    ``<out>/<stem>_overlay.png``; returns the written mask paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in tqdm(list(paths), desc="predict", unit="image", disable=not progress, leave=False):
        path = Path(path)
        image = read_image(path)
        ids = predictor(image)
        mask_path = out / f"{path.stem}_mask.png"
        save_mask_png(ids, mask_path, predictor.colors)
        _atomic_save(Image.fromarray(predictor.overlay(image, ids)), out / f"{path.stem}_overlay.png")
        written.append(mask_path)
    return written


def evaluate_checkpoint(path, data=None, device="cpu", **tiling):
    """Metrics of a ``minseg train`` checkpoint on its run's validation images (from ``data`` if given),
    predicted one image at a time at full size, exactly as ``minseg predict`` would (``tiling``: the
    ``Predictor``'s tile, overlap, blend and tta arguments)."""
    predictor = Predictor.from_checkpoint(path, device=device, **tiling)
    run = load_checkpoint(path)["run"]
    options = dict(run["args"], lazy=True)
    if data is not None:
        options["data"] = str(data)
    valid = open_splits(options)[2]
    metrics = SegmentationMetrics(len(predictor.classes), ignore_index=run["ignore_index"],
                                  void_class=void_class(predictor.classes))
    for index in range(len(valid)):
        image, label = valid[index]
        metrics.update(predictor(image)[None], label[None])
    results = metrics.compute()
    return {key: (dict(zip(predictor.classes, np.asarray(value, dtype=float).tolist()))
                  if np.ndim(value) else float(value)) for key, value in results.items()}
