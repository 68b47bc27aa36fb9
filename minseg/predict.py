"""Apply a trained model to images of any size, in memory: checkpoint → model + preprocessing → class ids.

A checkpoint written by ``minseg train`` carries the run: the model's name and options, the normalization
statistics, the class names and colours. ``Predictor.from_checkpoint`` rebuilds all of it, so predicting
needs nothing but the file::

    predictor = Predictor.from_checkpoint("runs/camvid_tiny/checkpoint.npz")
    ids = predictor(image)          # image: uint8 or float in [0, 1], (H, W, 3) or (H, W); ids: int64 (H, W)

Any size works. A model declares the multiple its input sizes must be (``model.size_multiple``; a UNet
halves the resolution k times and so takes only multiples of 2**k); the normalized image is padded at the
bottom and right with 0 (the mean colour) up to the next multiple, and the padding is cropped from the
prediction again (``models.sizes``). ``DataLoader(pad_to_multiple=...)`` pads validation batches the same
way, so evaluation and prediction see the same pixels. Reading and writing files (``minseg predict``,
``minseg evaluate``) is the command line's: ``minseg.app.files``.

``Predictor(..., crf={})`` refines each prediction with the fully connected CRF (``minseg.crf.dense_crf``, its
options in the dict, ``{}`` for its defaults): the logits' softmax, then mean field on the original image's
colours, then the most likely class per pixel.
"""
import numpy as np

from . import backend
from .autograd import Tensor, no_grad
from .checkpoint import CheckpointError, load_checkpoint, mismatch_error
from .colors import class_colors, overlay
from .crf import dense_crf
from .data.loader import normalize
from .functional.one_hot import to_class_ids
from .models import create
from .models.sizes import crop_padding, pad_to_multiple

__all__ = ["Predictor", "build_model", "check_run", "pad_to_multiple"]


def build_model(spec, num_classes):
    """The model a run description names: ``{"name": ..., "options": {...}}`` → ``models.create``."""
    return create(spec["name"], num_classes, **spec.get("options", {}))


def _as_rgb(image):
    """An (H, W, 3) array: a greyscale (H, W) image repeated over three channels; the shape checked."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3 or not (image.dtype == np.uint8 or image.dtype.kind == "f"):
        raise ValueError(f"Predictor: image must be uint8 or float, (H, W, 3) or (H, W), got {image.dtype} "
                         f"{image.shape}")
    return image


def _is_numbers(value, length):
    array = np.asarray(value) if isinstance(value, (list, np.ndarray)) else None
    return (array is not None and array.shape == (length,) and np.issubdtype(array.dtype, np.number)
            and bool(np.isfinite(array).all()))


def check_run(state, path, where):
    """The run description of a checkpoint's ``state``, checked so that a model can be rebuilt from it;
    ``CheckpointError`` saying what is wrong otherwise (``where`` is the call that read it)."""
    run = state.get("run") if isinstance(state, dict) else None
    if not isinstance(run, dict) or "model" not in run:
        raise CheckpointError(f"{where}: {path} holds no run description (model name, normalization, classes); "
                              "it was not written by `minseg train`")
    spec, classes = run["model"], run.get("classes")
    model_named = isinstance(spec, dict) and isinstance(spec.get("name"), str)
    checks = [(model_named and isinstance(spec.get("options", {}), dict), "its model is not {name, options}"),
              (isinstance(classes, list) and classes and all(isinstance(name, str) for name in classes),
               "its classes are not a list of names"),
              (_is_numbers(run.get("mean"), 3) and _is_numbers(run.get("std"), 3),
               "its mean and std are not 3 finite numbers each"),
              (isinstance(state.get("model"), dict), "it holds no model weights")]
    for passed, problem in checks:
        if not passed:
            raise CheckpointError(f"{where}: {path} has a damaged run description: {problem}")
    return run


class Predictor:
    """``model`` + the preprocessing of its training run; ``predictor(image)`` → class ids (H, W)."""

    def __init__(self, model, mean, std, classes, colors=None, device="cpu", crf=None):
        self.model = model.to(device)
        self.model.eval()
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3)
        self.std = np.asarray(std, dtype=np.float32).reshape(3)
        self.classes = list(classes)
        self.colors = class_colors(len(self.classes), colors)
        self.device = device
        self.multiple = model.size_multiple
        if crf is not None and not isinstance(crf, dict):
            raise ValueError(f"Predictor: crf must be None or a dict of dense_crf options ({{}} for its defaults), "
                             f"got {crf!r}")
        self.crf = crf

    @classmethod
    def from_checkpoint(cls, path, device="cpu", crf=None):
        """The model and preprocessing a ``minseg train`` checkpoint describes, with its weights loaded.

        ``CheckpointError`` when the file is damaged, describes no run, holds the weights of another model or
        class count, or holds NaN or inf weights (a diverged run would predict garbage)."""
        state = load_checkpoint(path)
        run = check_run(state, path, "Predictor.from_checkpoint")
        try:
            model = build_model(run["model"], len(run["classes"]))
            model.load_state_dict(state["model"])
        except (KeyError, ValueError, TypeError) as error:  # weights of another model or class count
            raise mismatch_error("Predictor.from_checkpoint", path, f"the model it describes ({run['model']['name']}, "
                                 f"{len(run['classes'])} classes)", error) from error
        not_finite = [name for name, array in model.state_dict().items() if not np.isfinite(array).all()]
        if not_finite:
            raise CheckpointError(f"Predictor.from_checkpoint: {path} holds NaN or inf weights ({not_finite[0]}"
                                  f"{' and more' if len(not_finite) > 1 else ''}); its run diverged, so its "
                                  "predictions would be meaningless; use a checkpoint of a run that did not")
        return cls(model, run["mean"], run["std"], run["classes"], run.get("colors"), device=device, crf=crf)

    def normalize(self, image):
        """(H, W, 3) or (H, W), uint8 (0..255) or float in [0, 1] (what ``read_image`` gives) → float32
        (1, 3, H, W), as the training loader normalized."""
        image = _as_rgb(image)
        if image.dtype != np.uint8:
            image = image.astype(np.float32)
            if not np.all((image >= 0) & (image <= 1)):  # False for NaN too
                raise ValueError("Predictor: a float image must hold values in [0, 1] (what read_image gives), "
                                 f"got values in {np.nanmin(image)}..{np.nanmax(image)}"
                                 f"{' and NaN' if np.isnan(image).any() else ''}; scale it first")
        return normalize(image[None], self.mean, self.std)

    def logits(self, pixels):
        """Logits (N, C, H, W) of normalized images of any size (padded for the model, cropped back)."""
        height, width = pixels.shape[-2:]
        padded = backend.to_device(pad_to_multiple(pixels, self.multiple), self.device)
        with no_grad():
            return crop_padding(self.model(Tensor(padded)), height, width)

    def __call__(self, image):
        logits = self.logits(self.normalize(image))
        if self.crf is not None:
            return self.refine(image, logits).argmax(axis=0)
        return to_class_ids(logits).numpy()[0]

    def refine(self, image, logits):
        """The CRF's marginals (C, H, W) for one image: softmax of its logits (1, C, H, W), then ``dense_crf``
        with ``self.crf``'s options on the image's own colours, on the 0..255 scale its colour widths assume
        (a float image in [0, 1] is scaled up)."""
        scores = logits.numpy()[0].astype(np.float64)
        probabilities = np.exp(scores - scores.max(axis=0))
        image = _as_rgb(image)
        colours = image if image.dtype == np.uint8 else image.astype(np.float64) * 255
        return dense_crf(probabilities / probabilities.sum(axis=0), colours, **self.crf)

    def overlay(self, image, ids, alpha=0.5):
        """uint8 (H, W, 3): the image (uint8, or float in [0, 1] shown as 8 bits) with the class colours blended in."""
        image = _as_rgb(image)
        if image.dtype != np.uint8:
            image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
        return overlay(image, ids, self.colors, alpha)
