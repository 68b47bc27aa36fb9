"""Apply a trained model to images of any size, in memory: checkpoint → model + preprocessing → class ids.

A checkpoint written by ``minseg train`` carries the run: the model's name and options, the normalization
statistics, the class names and colours. ``Predictor.from_checkpoint`` rebuilds all of it, so predicting
needs nothing but the file::

    predictor = Predictor.from_checkpoint("runs/camvid_tiny/checkpoint.npz")
    ids = predictor(image)          # image: uint8 (H, W, 3) or (H, W); ids: int64 (H, W)

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
from .checkpoint import load_checkpoint
from .colors import class_colors, overlay
from .crf import dense_crf
from .data.loader import normalize
from .functional.one_hot import to_class_ids
from .models import create
from .models.sizes import crop_padding, pad_to_multiple

__all__ = ["Predictor", "build_model", "pad_to_multiple"]


def build_model(spec, num_classes):
    """The model a run description names: ``{"name": ..., "options": {...}}`` → ``models.create``."""
    return create(spec["name"], num_classes, **spec.get("options", {}))


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
        """The model and preprocessing a ``minseg train`` checkpoint describes, with its weights loaded."""
        state = load_checkpoint(path)
        run = state.get("run")
        if not run or "model" not in run:
            raise ValueError(f"Predictor.from_checkpoint: {path} holds no run description (model name, "
                             "normalization, classes); it was not written by `minseg train`")
        model = build_model(run["model"], len(run["classes"]))
        model.load_state_dict(state["model"])
        return cls(model, run["mean"], run["std"], run["classes"], run.get("colors"), device=device, crf=crf)

    def normalize(self, image):
        """uint8 (H, W, 3) or (H, W) → float32 (1, 3, H, W), as the training loader normalized."""
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"Predictor: image must be uint8 (H, W, 3) or (H, W), got {image.dtype} {image.shape}")
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
        with ``self.crf``'s options on the image's own colours."""
        scores = logits.numpy()[0].astype(np.float64)
        probabilities = np.exp(scores - scores.max(axis=0))
        return dense_crf(probabilities / probabilities.sum(axis=0), np.asarray(image), **self.crf)

    def overlay(self, image, ids, alpha=0.5):
        """uint8 (H, W, 3): the image with the class colours blended in."""
        image = np.asarray(image)
        image = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image
        return overlay(image, ids, self.colors, alpha)
