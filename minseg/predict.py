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
way, so evaluation and prediction see the same pixels.

Large images go through the model in windows (``tile=``, ``overlap=``, ``blend=``; ``minseg.tiling``), and
``tta="h"`` or ``"hv"`` averages the logits of flipped copies. Class ids of a tiled image are made one row of
windows at a time (``minseg.tiled_stream``), so the memory does not grow with the image's logits; the CRF,
which needs all of them, makes them whole first. With no ``tile`` the predictor estimates the memory a
whole-image pass takes (``estimate_bytes``) and, past ``memory_budget``, tiles by itself with ``AUTO_TILE`` and
says so through ``report``. Reading and writing files (``minseg predict``,
``minseg evaluate``) is the command line's: ``minseg.app.files``.

``Predictor(..., crf={})`` refines each prediction with the fully connected CRF (``minseg.crf.dense_crf``, its
options in the dict, ``{}`` for its defaults): the logits' softmax, then mean field on the original image's
colours, then the most likely class per pixel.
"""
import numpy as np

from .autograd import Tensor
from .checkpoint import CheckpointError, load_checkpoint, mismatch_error
from .colors import class_colors, overlay
from .crf import dense_crf
from .data.loader import normalize
from .functional.one_hot import to_class_ids
from .models import create
from .models.sizes import pad_to_multiple, padded_size
from .tiled_stream import tiled_class_ids
from .tiling import AVERAGES, BLENDS, FLIPS, forward_bytes_per_pixel, tiled_logits, whole_logits

__all__ = ["Predictor", "build_model", "check_run", "pad_to_multiple", "AUTO_TILE", "DEFAULT_OVERLAP", "MEMORY_BUDGET"]

AUTO_TILE = 512  # the window the predictor picks by itself: one per batch (tiling.BATCH_PIXELS)
# The overlap unless given: the band a window's border spoils is set by the receptive field, in pixels, whatever
# the tile, so the default is a number of pixels too (at most half the tile).
DEFAULT_OVERLAP = 64
MEMORY_BUDGET = 2 ** 30  # bytes a whole-image pass may take before the predictor tiles by itself


def build_model(spec, num_classes):
    """The model a run description names: ``{"name": ..., "options": {...}}`` → ``models.create``."""
    return create(spec["name"], num_classes, **spec.get("options", {}))


def _as_rgb(image, where="Predictor"):
    """An (H, W, 3) array: a greyscale (H, W) image repeated over three channels; the shape checked."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3 or not (image.dtype == np.uint8 or image.dtype.kind == "f"):
        raise ValueError(f"{where}: image must be uint8 or float, (H, W, 3) or (H, W), got {image.dtype} "
                         f"{image.shape}")
    return image


def check_image(image, where="Predictor"):
    """(H, W, 3) uint8 or float in [0, 1] (a greyscale (H, W) image repeated), or a ValueError saying why not
    (``where``: the caller it names)."""
    image = _as_rgb(image, where)
    if image.dtype != np.uint8 and not np.all((image >= 0) & (image <= 1)):  # False for NaN too
        raise ValueError(f"{where}: a float image must hold values in [0, 1] (what read_image gives), "
                         f"got values in {np.nanmin(image)}..{np.nanmax(image)}"
                         f"{' and NaN' if np.isnan(image).any() else ''}; scale it first")
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
    if run.get("task") in ("panoptic", "instances"):
        raise CheckpointError(f"{where}: {path} holds an instance model ({run['task']}), which predicts instances, "
                              "not class ids per pixel; read it with minseg.instance_predict.InstancePredictor")
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
    """``model`` + the preprocessing of its training run; ``predictor(image)`` → class ids (H, W).

    ``tile``, ``overlap``, ``blend``, ``window_batch``: predict in windows (``tiling.tiled_logits``; class ids
    one row of windows at a time: ``tiled_stream.tiled_class_ids``); ``tta`` (None, "h", "v", "hv") and
    ``tta_average`` ("logits", "probabilities"): flipped copies averaged
    (``tiling.flip_logits``); ``memory_budget`` (bytes; None: ``MEMORY_BUDGET``, ``math.inf``: never) and
    ``report`` (called with one line when the predictor tiles by itself): ``plan``; ``progress``: a bar over
    the windows. ``crf``: None, or a dict of ``dense_crf`` options ({} for its defaults) to refine each
    prediction with the fully connected CRF (``refine``)."""

    def __init__(self, model, mean, std, classes, colors=None, device="cpu", tile=None, overlap=None,
                 blend="gaussian", tta=None, tta_average="logits", window_batch=None, memory_budget=None,
                 progress=False, report=None, crf=None):
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
        self._tiling_options(tile, overlap, blend, tta, tta_average, window_batch, memory_budget)
        self.progress, self.report = progress, report
        self._bytes_per_pixel = None  # measured once, when first needed (estimate_bytes)

    def _tiling_options(self, tile, overlap, blend, tta, tta_average, window_batch, memory_budget):
        def positive(name, value, allow_zero=False):
            if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool)
                                      or value < (0 if allow_zero else 1)):
                raise ValueError(f"Predictor: {name} must be a {'non-negative' if allow_zero else 'positive'} "
                                 f"int or None, got {value!r}")
            return value
        self.tile, self.overlap = positive("tile", tile), positive("overlap", overlap, allow_zero=True)
        if overlap is not None and overlap >= (tile or AUTO_TILE):
            raise ValueError(f"Predictor: overlap must be smaller than tile, got overlap {overlap} and tile "
                             f"{tile or AUTO_TILE}")
        for name, value, allowed in (("blend", blend, BLENDS), ("tta", tta, (None, *FLIPS)),
                                     ("tta_average", tta_average, AVERAGES)):
            if value not in allowed:
                raise ValueError(f"Predictor: {name} must be one of {', '.join(map(str, allowed))}, got {value!r}")
        self.blend, self.tta, self.tta_average = blend, tta, tta_average
        self.window_batch = positive("window_batch", window_batch)  # None: tiling.BATCH_PIXELS worth
        self.memory_budget = MEMORY_BUDGET if memory_budget is None else memory_budget  # math.inf: never tile

    @classmethod
    def from_checkpoint(cls, path, device="cpu", **options):
        """The model and preprocessing a ``minseg train`` checkpoint describes, with its weights loaded;
        ``options``: the tiling, flip and crf arguments of ``Predictor``.

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
        return cls(model, run["mean"], run["std"], run["classes"], run.get("colors"), device=device, **options)

    def normalize(self, image):
        """(H, W, 3) or (H, W), uint8 (0..255) or float in [0, 1] (what ``read_image`` gives) → float32
        (1, 3, H, W), as the training loader normalized."""
        return self._normalized(check_image(image))

    def _normalized(self, image):
        return normalize((image if image.dtype == np.uint8 else image.astype(np.float32))[None], self.mean, self.std)

    def estimate_bytes(self, height, width):
        """Memory a whole-image pass over one ``height`` x ``width`` image takes: the model's peak bytes per
        pixel (measured once on two small inputs: ``tiling.forward_bytes_per_pixel``) times the padded pixels,
        plus the image's own arrays (float32 input and logits, int64 class ids)."""
        if self._bytes_per_pixel is None:
            self._bytes_per_pixel = forward_bytes_per_pixel(self.model)
        padded = padded_size(height, self.multiple) * padded_size(width, self.multiple)
        return int(self._bytes_per_pixel * padded + (4 * 3 + 4 * len(self.classes) + 8) * height * width)

    def plan(self, height, width):
        """The (tile, overlap) an image of ``height`` x ``width`` is predicted with; None: in one pass.

        Without ``tile``, the whole image goes through at once unless ``estimate_bytes`` exceeds
        ``memory_budget`` (on the CPU, where the estimate is measured), and then windows of ``AUTO_TILE``."""
        tile = self.tile
        if tile is None:
            if self.device != "cpu" or max(height, width) <= AUTO_TILE:
                return None
            needed = self.estimate_bytes(height, width)
            if needed <= self.memory_budget:
                return None
            tile = AUTO_TILE
            if self.report is not None:
                self.report(f"a {height}x{width} image needs about {needed / 2 ** 30:.1f} GiB in one pass, more "
                            f"than the budget of {self.memory_budget / 2 ** 30:.1f} GiB: predicting it in "
                            f"{tile}x{tile} windows (--tile sets them)")
        return tile, min(DEFAULT_OVERLAP, tile // 2) if self.overlap is None else self.overlap

    def logits(self, pixels):
        """Logits (N, C, H, W) of normalized images of any size: in one pass (padded for the model, cropped
        back) or window by window (``plan``), each with the flipped copies ``tta`` asks for."""
        return self._logits(pixels, self.plan(*pixels.shape[-2:]))

    def _logits(self, pixels, plan):
        if plan is None:
            return Tensor(whole_logits(self.model, pixels, self.tta, self.tta_average, self.device))
        return Tensor(tiled_logits(self.model, pixels, plan[0], plan[1], self.blend, self.window_batch, self.tta,
                                   self.tta_average, self.device, self.progress, where="Predictor"))

    def __call__(self, image):
        """Class ids (H, W), int64. Tiled without ``crf``, the windows' logits become class ids one row of
        windows at a time (``tiled_stream``): memory for the image, its ids and one band of logits, whatever
        the image's height. The CRF needs every pixel's probabilities at once, so with ``crf`` (and for a
        whole-image pass) the image's logits are made whole first (``logits``)."""
        image = check_image(image)
        plan = self.plan(*image.shape[:2])
        if plan is not None and self.crf is None:
            return tiled_class_ids(self.model, image[None], self.mean, self.std, plan[0], plan[1], self.blend,
                                   self.window_batch, self.tta, self.tta_average, self.device, self.progress,
                                   where="Predictor")[0]
        logits = self._logits(self._normalized(image), plan)
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
