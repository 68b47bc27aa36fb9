"""Apply a trained model to images of any size: checkpoint → model + preprocessing → class ids → PNGs.

A checkpoint written by ``minseg train`` (``minseg.cli``) carries the run: the model's name and
options, the normalization statistics, the class names and colours. ``Predictor.from_checkpoint``
rebuilds all of it, so predicting needs nothing but the file::

    predictor = Predictor.from_checkpoint("runs/camvid_tiny/checkpoint.npz")
    ids = predictor(image)          # image: uint8 (H, W, 3) or (H, W); ids: int64 (H, W)

Any size works. A UNet halves the resolution k times and so takes only multiples of 2**k; the
normalized image is padded at the bottom and right with 0 (the mean colour) up to the next multiple,
and the padding is cropped from the prediction again. ``DataLoader(pad_to_multiple=...)`` pads
validation batches the same way, so evaluation and prediction see the same pixels.
"""
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from . import backend
from .autograd import Tensor, no_grad
from .checkpoint import load_checkpoint
from .data.dataset import read_image
from .functional.one_hot import to_class_ids
from .viz import class_colors

__all__ = ["Predictor", "size_multiple", "pad_to_multiple", "build_model", "save_mask_png", "predict_files",
           "evaluate_checkpoint"]


def size_multiple(model):
    """The multiple a model's input height and width must be: ``model.size_multiple`` when it says,
    2**depth (UNet) or 2**levels (Naive), else 32, which every model with five stride-2 stages takes."""
    if getattr(model, "size_multiple", None):
        return int(model.size_multiple)
    for name in ("depth", "levels"):
        if isinstance(getattr(model, name, None), int):
            return 2 ** getattr(model, name)
    return 32


def pad_to_multiple(images, multiple):
    """Normalized (N, C, H, W) images padded with 0 at the bottom and right to multiples of ``multiple``."""
    height, width = images.shape[-2:]
    rows, cols = -height % multiple, -width % multiple
    if not rows and not cols:
        return images
    xp = backend.get_array_module(images)
    return xp.pad(images, ((0, 0), (0, 0), (0, rows), (0, cols)))


def build_model(spec, num_classes):
    """The model a run description names: ``{"name": ..., "options": {...}}`` → ``models.create``."""
    from .models import create
    return create(spec["name"], num_classes, **spec.get("options", {}))


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


class Predictor:
    """``model`` + the preprocessing of its training run; ``predictor(image)`` → class ids (H, W)."""

    def __init__(self, model, mean, std, classes, colors=None, device="cpu"):
        self.model = model.to(device)
        self.model.eval()
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
        self.classes = list(classes)
        self.colors = class_colors(len(self.classes), colors)
        self.device = device
        self.multiple = size_multiple(model)

    @classmethod
    def from_checkpoint(cls, path, device="cpu"):
        """The model and preprocessing a ``minseg train`` checkpoint describes, with its weights loaded."""
        state = load_checkpoint(path)
        run = state.get("run")
        if not run or "model" not in run:
            raise ValueError(f"Predictor.from_checkpoint: {path} holds no run description (model name, "
                             "normalization, classes); it was not written by `minseg train`")
        model = build_model(run["model"], len(run["classes"]))
        model.load_state_dict(state["model"])
        return cls(model, run["mean"], run["std"], run["classes"], run.get("colors"), device=device)

    def normalize(self, image):
        """uint8 (H, W, 3) or (H, W) → float32 (1, 3, H, W), as the training loader normalized."""
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"Predictor: image must be uint8 (H, W, 3) or (H, W), got {image.dtype} {image.shape}")
        pixels = image.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255)
        return (pixels - self.mean) / self.std

    def logits(self, pixels):
        """Logits (N, C, H, W) of normalized images of any size (padded for the model, cropped back)."""
        height, width = pixels.shape[-2:]
        padded = backend.to_device(pad_to_multiple(pixels, self.multiple), self.device)
        with no_grad():
            return self.model(Tensor(padded))[:, :, :height, :width]

    def __call__(self, image):
        return to_class_ids(self.logits(self.normalize(image))).numpy()[0]

    def overlay(self, image, ids, alpha=0.5):
        """uint8 (H, W, 3): the image with the class colours blended in."""
        image = np.asarray(image)
        image = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image
        blended = (1 - alpha) * image.astype(np.float32) + alpha * self.colors[ids].astype(np.float32)
        return np.round(blended).astype(np.uint8)


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


def evaluate_checkpoint(path, data=None, device="cpu"):
    """Metrics of a ``minseg train`` checkpoint on its run's validation images (from ``data`` if given),
    predicted one image at a time at full size, exactly as ``minseg predict`` would."""
    from .data.recipe import open_splits
    from .metrics import SegmentationMetrics
    predictor = Predictor.from_checkpoint(path, device=device)
    run = load_checkpoint(path)["run"]
    options = dict(run["args"], lazy=True)
    if data is not None:
        options["data"] = str(data)
    valid = open_splits(options)[2]
    void = predictor.classes.index("Void") if "Void" in predictor.classes else None
    metrics = SegmentationMetrics(len(predictor.classes), ignore_index=run["ignore_index"], void_class=void)
    for index in range(len(valid)):
        image, label = valid[index]
        metrics.update(predictor(image)[None], label[None])
    results = metrics.compute()
    return {key: (dict(zip(predictor.classes, np.asarray(value, dtype=float).tolist()))
                  if np.ndim(value) else float(value)) for key, value in results.items()}
