"""Apply a trained instance or panoptic model to images of any size, in memory: checkpoint → model → instances.

The semantic ``Predictor`` (``predict.py``) reads a checkpoint written by ``minseg train``; an instance model
(``models.INSTANCE_MODELS``: Panoptic FPN, PANet) is trained by its own loop (``examples/shapes_panoptic.py``),
which writes its checkpoint with ``save_instance_checkpoint``. The file is ``minseg.checkpoint``'s format, written
atomically, and its run description says what ``InstancePredictor.from_checkpoint`` needs to rebuild the model::

    {"model": {"name": "panoptic_fpn", "options": {...}}, "task": "panoptic" or "instances",
     "things": ["circle", ...], "stuff": ["sky", ...], "mean": [r, g, b], "std": [r, g, b], "colors": ...}

``task`` marks the checkpoint as an instance model's ("panoptic": the model's panoptic map is part of the result;
"instances": boxes, labels, scores and masks only). Categories follow the instance conventions: stuff first, then
things, so category ``len(stuff) + label - 1`` is thing class ``label``.

``predictor(image)`` normalizes the image as the run says, pads it at the bottom and right to the model's
``size_multiple`` (``models.sizes``), and crops the result back: boxes clipped to the image, detections that lay
in the padding alone dropped, masks and semantic logits cropped, and the panoptic map merged again from the
cropped parts (``detection.panoptic.merge_panoptic``, with the model's merge options and the predictor's
``score_threshold``). ``instance_ids`` turns a result into one map of instance ids, the form ``minseg predict``
writes (``minseg.app.instance_files``).
"""
import json

import numpy as np

from . import backend
from .autograd import Tensor, no_grad
from .checkpoint import CheckpointError, load_checkpoint, mismatch_error, save_checkpoint
from .colors import as_numpy
from .data.loader import normalize
from .detection.panoptic import merge_panoptic
from .functional.boxes import box_area, clip_boxes_to_image
from .models import INSTANCE_MODELS, create
from .models.sizes import pad_to_multiple
from .predict import check_image
from .random import get_state, set_state

__all__ = ["INSTANCE_TASKS", "save_instance_checkpoint", "declared_task", "check_instance_run",
           "build_instance_model", "InstancePredictor", "instance_ranking", "instance_ids"]

INSTANCE_TASKS = ("panoptic", "instances")
DEFAULT_SCORE_THRESHOLD = 0.5  # Panoptic FPN's merge keeps instances from this score (the paper's value)


# ---------------------------------------------------------------------------------------------
# the run description
# ---------------------------------------------------------------------------------------------
def _is_names(value, allow_empty):
    return isinstance(value, list) and (allow_empty or value) and all(isinstance(n, str) and n for n in value)


def _is_numbers(value, positive=False):
    array = np.asarray(value) if isinstance(value, (list, tuple, np.ndarray)) else None
    return (array is not None and array.shape == (3,) and np.issubdtype(array.dtype, np.number)
            and bool(np.isfinite(array).all()) and (not positive or bool((array > 0).all())))


def _is_colors(value, count):
    if value is None:
        return True
    array = np.asarray(value) if isinstance(value, list) else None
    return (array is not None and array.shape == (count, 3) and np.issubdtype(array.dtype, np.integer)
            and bool(((array >= 0) & (array <= 255)).all()))


def declared_task(state):
    """The task a checkpoint's state (or its description, ``load_checkpoint_description``) declares: "panoptic"
    or "instances" for an instance model's, anything else found under "task" as it is (``check_instance_run``
    refuses it), None for a checkpoint without one (a semantic run of ``minseg train``)."""
    run = state.get("run") if isinstance(state, dict) else None
    return run.get("task") if isinstance(run, dict) and "task" in run else None


def check_instance_run(state, path, where):
    """The run description of an instance checkpoint's ``state``, checked so that its model can be rebuilt;
    ``CheckpointError`` saying in one line what is wrong otherwise (``where``: the call that read it)."""
    run = state.get("run") if isinstance(state, dict) else None
    if not isinstance(run, dict) or "task" not in run:
        raise CheckpointError(f"{where}: {path} holds no instance model's run description (task, model, things, "
                              "stuff, normalization); it was not written by save_instance_checkpoint")
    spec, things, stuff = run.get("model"), run.get("things"), run.get("stuff")
    checks = [(run["task"] in INSTANCE_TASKS, f"its task must be one of {', '.join(INSTANCE_TASKS)}, got "
                                              f"{run['task']!r}"),
              (isinstance(spec, dict) and spec.get("name") in INSTANCE_MODELS
               and isinstance(spec.get("options", {}), dict),
               f"its model is not {{name, options}} naming one of {', '.join(INSTANCE_MODELS)}"),
              (_is_names(things, allow_empty=False), "its things are not a list of one or more names"),
              (_is_names(stuff, allow_empty=True), "its stuff is not a list of names"),
              (_is_numbers(run.get("mean")) and _is_numbers(run.get("std"), positive=True),
               "its mean and std are not 3 finite numbers each (std positive)"),
              (_is_colors(run.get("colors"), len(things or []) + len(stuff or [])),
               "its colors are not one R, G, B triple (0..255) per category"),
              (isinstance(state.get("model"), dict), "it holds no model weights")]
    for passed, problem in checks:
        if not passed:
            raise CheckpointError(f"{where}: {path} has a damaged run description: {problem}")
    return run


def build_instance_model(run):
    """The model a checked run description names: ``create(name, len(things), len(stuff), **options)``."""
    spec = run["model"]
    return create(spec["name"], len(run["things"]), len(run["stuff"]), **spec.get("options", {}))


def _check_spec_builds(model, run):
    """The model that ``run`` rebuilds has ``model``'s parameter names and shapes; ValueError otherwise. The
    random generator is put back afterwards, so saving in the middle of a run leaves its random draws alone."""
    where = "save_instance_checkpoint"
    spec = run["model"]
    if not isinstance(model, INSTANCE_MODELS[spec["name"]]):
        raise ValueError(f"{where}: model must be the {INSTANCE_MODELS[spec['name']].__name__} that model_spec "
                         f"names ({spec['name']!r}), got {type(model).__name__}")
    if (model.num_things, model.num_stuff) != (len(run["things"]), len(run["stuff"])):
        raise ValueError(f"{where}: things and stuff must name the model's {model.num_things} thing classes and "
                         f"{model.num_stuff} stuff categories, got {len(run['things'])} and {len(run['stuff'])}")
    state = get_state()
    try:
        rebuilt = build_instance_model(run)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: model_spec's options must build {spec['name']!r}: {error}") from error
    finally:
        set_state(state)
    shapes = {name: tuple(array.shape) for name, array in rebuilt.state_dict().items()}
    own = {name: tuple(array.shape) for name, array in model.state_dict().items()}
    if shapes != own:
        different = sorted(set(shapes.items()) ^ set(own.items()))[:3]
        raise ValueError(f"{where}: model_spec's options must rebuild the model saved, but its parameters differ "
                         f"({', '.join(f'{name} {shape}' for name, shape in different)} ...); pass the options "
                         "the model was created with")


def save_instance_checkpoint(path, model, model_spec, things, stuff, mean, std, task="panoptic", colors=None,
                             extra=None):
    """Write ``model``'s weights and its run description to ``path`` atomically (``checkpoint.save_checkpoint``),
    so that ``InstancePredictor.from_checkpoint`` and ``minseg predict`` can use it; returns the file's size.

    ``model_spec``: ``{"name": ..., "options": {...}}``, the name and keyword arguments ``models.create`` built
    ``model`` from (JSON values; tuples become lists). ``things``, ``stuff``: the thing classes' and the stuff
    categories' names. ``mean``, ``std``: the normalization of the images it was trained on (3 numbers each).
    ``task``: "panoptic" or "instances". ``colors``: None, or one (R, G, B) per category (stuff, then things).
    ``extra``: further state to store beside them (e.g. {"epoch": 10, "metrics": {...}}; not "model" or "run").
    A spec that would not rebuild ``model`` is refused here, rather than when the file is loaded."""
    spec = {"name": model_spec.get("name"), "options": dict(model_spec.get("options", {}))} \
        if isinstance(model_spec, dict) else model_spec
    run = {"model": spec, "task": task, "things": list(things), "stuff": list(stuff),
           "mean": [float(v) for v in np.asarray(mean, dtype=np.float64).reshape(-1)],
           "std": [float(v) for v in np.asarray(std, dtype=np.float64).reshape(-1)],
           "colors": None if colors is None else np.asarray(colors).tolist()}
    run = json.loads(json.dumps(run))  # exactly what will be read back: tuples as lists
    extra = dict(extra or {})
    if {"model", "run"} & set(extra):
        raise ValueError(f"save_instance_checkpoint: extra must not hold 'model' or 'run', got keys {sorted(extra)}")
    state = {**extra, "model": model.state_dict(), "run": run}
    try:
        check_instance_run(state, path, "save_instance_checkpoint")
    except CheckpointError as error:
        raise ValueError(str(error).replace("has a damaged run description", "cannot be written")) from error
    _check_spec_builds(model, run)
    return save_checkpoint(path, state)


# ---------------------------------------------------------------------------------------------
# the predictor
# ---------------------------------------------------------------------------------------------
def _check_threshold(name, value, where):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0 <= value <= 1:
        raise ValueError(f"{where}: {name} must be a number in [0, 1], got {value!r}")
    return float(value)


class InstancePredictor:
    """An instance model + the normalization of its run; ``predictor(image)`` → one result dict (module docstring).

    ``things``, ``stuff``: the category names (stuff first in the category numbering). ``score_threshold``: the
    lowest score ``instance_ids`` keeps and the panoptic merge pastes (None: the model's merge option, else 0.5;
    the merge runs again with it, ``merge_options``, and the model is left unchanged); ``mask_threshold``: a
    mask's pixels are those with probability >= it."""

    def __init__(self, model, mean, std, things, stuff, colors=None, task="panoptic", device="cpu",
                 score_threshold=None, mask_threshold=0.5):
        where = "InstancePredictor"
        self.model = model.to(device)
        self.model.eval()
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3)
        self.std = np.asarray(std, dtype=np.float32).reshape(3)
        self.things, self.stuff, self.colors, self.task = list(things), list(stuff), colors, task
        self.device, self.multiple = device, model.size_multiple
        merge = getattr(model, "merge_options", None)
        if score_threshold is None:
            score_threshold = merge["score_threshold"] if merge else DEFAULT_SCORE_THRESHOLD
        self.score_threshold = _check_threshold("score_threshold", score_threshold, where)
        self.mask_threshold = _check_threshold("mask_threshold", mask_threshold, where)
        # The panoptic map keeps the instances instance_ids keeps; the model's own options stay as they are.
        self.merge_options = None if merge is None else {**merge, "score_threshold": self.score_threshold}

    @classmethod
    def from_checkpoint(cls, path, device="cpu", **options):
        """The model a ``save_instance_checkpoint`` file describes, with its weights loaded; ``options``:
        ``score_threshold``, ``mask_threshold``. ``CheckpointError`` when the file is damaged, is not an instance
        model's, holds the weights of another model, or holds NaN or inf weights."""
        where = "InstancePredictor.from_checkpoint"
        state = load_checkpoint(path)
        run = check_instance_run(state, path, where)
        try:
            model = build_instance_model(run)
            model.load_state_dict(state["model"])
        except (KeyError, ValueError, TypeError) as error:
            raise mismatch_error(where, path, f"the model it describes ({run['model']['name']}, "
                                 f"{len(run['things'])} things, {len(run['stuff'])} stuff)", error) from error
        not_finite = [name for name, array in model.state_dict().items() if not np.isfinite(array).all()]
        if not_finite:
            raise CheckpointError(f"{where}: {path} holds NaN or inf weights ({not_finite[0]}"
                                  f"{' and more' if len(not_finite) > 1 else ''}); its training diverged")
        return cls(model, run["mean"], run["std"], run["things"], run["stuff"], run.get("colors"), run["task"],
                   device=device, **options)

    @property
    def categories(self):
        """Every category's name, stuff first: category ``len(stuff) + label - 1`` is thing class ``label``."""
        return self.stuff + self.things

    def __call__(self, image):
        image = check_image(image, "InstancePredictor")
        if image.dtype != np.uint8:
            image = image.astype(np.float32)
        height, width = image.shape[:2]
        pixels = pad_to_multiple(normalize(image[None], self.mean, self.std), self.multiple)
        with no_grad():
            result = self.model(Tensor(backend.to_device(pixels, self.device)))[0]
        result = {key: as_numpy(value) for key, value in result.items()}
        return self._crop(result, height, width)

    def _crop(self, result, height, width):
        """``result`` of the padded image cut back to ``height`` x ``width``, its panoptic map merged again from
        the cropped parts with ``merge_options`` (module docstring)."""
        if result["masks"].shape[-2:] != (height, width):
            boxes = clip_boxes_to_image(result["boxes"], (height, width))
            keep = box_area(boxes) > 0
            result = {**result, "boxes": boxes[keep], "labels": result["labels"][keep],
                      "scores": result["scores"][keep], "masks": result["masks"][keep][..., :height, :width]}
            if "semantic" in result:
                result["semantic"] = result["semantic"][..., :height, :width]
        if "panoptic" in result:
            result["panoptic"] = merge_panoptic(result, result["semantic"], len(self.stuff), **self.merge_options)
        return result


# ---------------------------------------------------------------------------------------------
# instance ids
# ---------------------------------------------------------------------------------------------
def instance_ranking(result, score_threshold=DEFAULT_SCORE_THRESHOLD):
    """Indices into ``result``'s detections scoring at least ``score_threshold``, highest score first (ties in
    the order given): instance id k of ``instance_ids`` is detection ``instance_ranking(result)[k - 1]``."""
    score_threshold = _check_threshold("score_threshold", score_threshold, "instance_ranking")
    scores = as_numpy(result["scores"]).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    return order[scores[order] >= score_threshold]


def instance_ids(result, score_threshold=DEFAULT_SCORE_THRESHOLD, mask_threshold=0.5):
    """int32 (H, W): 0 where no instance is, k where the k-th instance by decreasing score is (``instance_ranking``);
    where masks overlap the higher score wins. A mask is its pixels with probability >= ``mask_threshold``."""
    where = "instance_ids"
    mask_threshold = _check_threshold("mask_threshold", mask_threshold, where)
    masks = as_numpy(result["masks"])
    if masks.ndim not in (3, 4) or len(masks) != np.size(result["scores"]):
        raise ValueError(f"{where}: result['masks'] must be (K, H, W) or (K, 1, H, W) with one mask per score, got "
                         f"{masks.shape} for {np.size(result['scores'])} scores")
    masks = masks.reshape(len(masks), *masks.shape[-2:])
    ids = np.zeros(masks.shape[1:], np.int32)
    ranking = instance_ranking(result, score_threshold)
    for rank in range(len(ranking), 0, -1):  # the lowest score first, so a higher one paints over it
        ids[masks[ranking[rank - 1]] >= mask_threshold] = rank
    return ids
