"""One training run built from the options of ``minseg train``: data, model, Learner, then figures and metrics.

``minseg.app.cli`` parses the command line and handles errors, threads and Ctrl-C; ``TrainingRun`` does the
work, from a dict of options (the keys of ``cli.TRAIN_DEFAULTS``) and, on ``--resume``, the checkpoint's
state. What it stores in every checkpoint as the Learner's ``run`` (model name and options,
normalization, classes and colours, ignore index, layout, every option) is what ``--resume``,
``minseg predict`` and ``minseg evaluate`` rebuild the run from.

From a folder to batches: ``options.open_splits`` (layout → ``SegmentationDataset`` train and valid
splits), then the two ``DataLoader``s built in ``TrainingRun.__init__``.

Data-parallel (``comm`` of K ranks, ``minseg.app.ranks``): each loader gives this rank its share of every batch,
batch norm becomes ``SyncBatchNorm`` (unless ``--no-sync-bn``), and rank 0 alone writes the checkpoint, figures
and metrics.json. A last training batch with fewer images than ranks is dropped (every rank must take part in
every step); every other batch is the batch one process would take. Evaluation uses every image.

A step of one image (per rank, unless batch norm is synchronized) is tried once before training, and refused
naming --batch-size when a batch norm would get one value per channel (``TrainingRun._check_one_image_steps``).
"""
import inspect
import json
import math
import time
from pathlib import Path

import numpy as np

from .. import backend, data, nn
from .. import functional as F
from ..atomic import atomic_write
from ..autograd import Tensor, no_grad
from ..checkpoint import mismatch_error
from ..data import DataLoader, channel_stats, void_class
from ..distributed import SingleProcess
from ..models import MODELS, compare_weights, load_weights
from ..models.sizes import padded_size
from ..optim import AdamW, OneCycleLR
from ..predict import build_model
from ..random import get_state, manual_seed, set_state
from ..train import Learner
from .options import UsageError, augmentation, jsonable, open_splits

__all__ = ["TrainingRun", "create_model", "write_json"]


class TrainingRun:
    """Everything one ``minseg train`` builds from its options: data, model, Learner; then figures and metrics."""

    def __init__(self, options, state, comm=None):
        self.options, self.comm = options, SingleProcess() if comm is None else comm
        if options["data"] is None:
            if self.comm.rank == 0:  # one download; the other ranks then find it in place
                data.download_camvid_tiny()
            self.comm.barrier()
            options["data"] = str(Path(data.download_camvid_tiny()).absolute())
        self.layout, self.train_set, self.valid_set = open_splits(options)
        _check_split(options, self.layout, self.train_set, self.valid_set)
        self.classes = list(self.train_set.classes)
        saved = state["run"] if state is not None else None
        self.mean, self.std = (saved["mean"], saved["std"]) if saved else channel_stats(self.train_set)
        manual_seed(options["seed"])
        self.model_spec = _model_spec(options)
        # On --resume the checkpoint holds the weights: the --weights file is not read again (it may be gone).
        weights = options["weights"] if state is None else None
        self.model = create_model(self.model_spec, len(self.classes), weights).to(options["device"])
        if self.comm.size > 1 and options.get("sync_bn", True):
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model, self.comm)
        self.train_loader, self.valid_loader = self._loaders(self.model.size_multiple)
        self._check_one_image_steps()
        optimizer = AdamW(self.model.parameters(), lr=options["lr"], weight_decay=options["weight_decay"])
        total_steps = options["epochs"] * len(self.train_loader)
        scheduler = OneCycleLR(optimizer, max_lr=options["lr"], total_steps=total_steps)
        self.checkpoint_path = Path(options["out"]) / "checkpoint.npz"
        Path(options["out"]).mkdir(parents=True, exist_ok=True)
        self.learner = Learner(self.model, self.train_loader, self.valid_loader, _loss(options["loss"]), optimizer,
                               scheduler, num_classes=len(self.classes), void_class=void_class(self.classes),
                               checkpoint_path=self.checkpoint_path, progress=options["progress"], table=True,
                               run=self._run(), comm=self.comm,
                               checkpoint_every=options.get("checkpoint_every") or 1)
        if state is not None:
            self._resume(state, total_steps)

    def _resume(self, state, total_steps):
        """Continue from the checkpoint's ``state``; CheckpointError if it does not fit the run it describes."""
        try:
            state["scheduler"]["total_steps"] = total_steps  # --epochs may change: re-plan the cycle from here
            self.learner.load_state_dict(state)
        except (KeyError, ValueError, TypeError, AttributeError, IndexError) as error:  # another model, damage
            raise mismatch_error("--resume", self.checkpoint_path, f"the run it describes ({self.options['model']}, "
                                 f"{len(self.classes)} classes)", error) from error
        self.learner.run = self._run()
        print(f"resumed {self.checkpoint_path} after epoch {self.learner.epoch} of {self.options['epochs']}")

    def _loaders(self, multiple):
        """The training and validation DataLoaders: augmented, normalized, padded to the model's multiple."""
        options, crop, ranks = self.options, self.options["crop"], self.comm.size
        if options["batch_size"] < ranks:
            raise UsageError(f"--batch-size {options['batch_size']} is the batch of all {ranks} ranks together, "
                             f"so it must be at least {ranks}; use --batch-size {ranks} or more, or fewer ranks")
        last = len(self.train_set) % options["batch_size"]
        shares = dict(num_replicas=ranks, rank=self.comm.rank)
        if crop is not None and (crop[0] % multiple or crop[1] % multiple):
            raise UsageError(f"--crop {crop[0]}x{crop[1]}: {options['model']} needs sizes divisible by {multiple}; "
                             f"use --crop {crop[0] // multiple * multiple or multiple}x"
                             f"{crop[1] // multiple * multiple or multiple}")
        train = DataLoader(self.train_set, batch_size=options["batch_size"], shuffle=True,
                           augment=augmentation(options), mean=self.mean, std=self.std, seed=options["seed"],
                           device=options["device"], drop_last=0 < last < ranks,
                           pad_to_multiple=None if crop else _padding(self.train_set, multiple), **shares)
        valid = DataLoader(self.valid_set, batch_size=options["batch_size"], mean=self.mean, std=self.std,
                           device=options["device"], pad_to_multiple=_padding(self.valid_set, multiple), **shares)
        return train, valid

    def _check_one_image_steps(self):
        """A step of one image (per rank, unless batch norm is synchronized) in a model whose batch norm then meets
        a 1×1 feature map fails in training (one value per channel): a UsageError now, naming --batch-size."""
        options, ranks = self.options, self.comm.size
        if ranks > 1 and options.get("sync_bn", True):
            return  # synchronized batch norm normalizes over the step's whole batch: at least ranks ≥ 2 images
        if min(max(size // ranks, 1) for size in self.train_loader.batch_sizes()) > 1:
            return
        size = next((size for size in self._one_image_sizes()
                     if _batch_norm_fails_on_one_image(self.model, size, options["device"])), None)
        if size is None:
            return
        model = f"--model {options['model']}" + (f" --encoder {options['encoder']}" if options["encoder"] else "")
        why = (f"{model} has batch norm on a 1×1 feature map for a {size[0]}x{size[1]} image, so a step of one "
               "image leaves it one value per channel to normalize by")
        if ranks > 1:
            raise UsageError(f"--batch-size {options['batch_size']} over {ranks} ranks with --no-sync-bn gives a rank "
                             f"one image in a step, and {why}; synchronize batch norm (leave out --no-sync-bn), or "
                             "use a --batch-size that gives every rank two or more images in every step")
        if len(self.train_set) == 1:
            raise UsageError(f"--data {options['data']}: the training split holds one image, and {why}; add images, "
                             "or choose a split that leaves two or more for training (--batch-size 2 then works)")
        raise UsageError(f"--batch-size 1: {why}; use --batch-size 2 or more")

    def _one_image_sizes(self):
        """The input sizes a step of one image can have: the crop, or each training image's size padded to the
        model's multiple (with --lazy the first image's), keeping those no other fits inside: a larger input has
        larger feature maps. Few: one for a dataset of one image size."""
        if self.options["crop"] is not None:
            return [tuple(self.options["crop"])]
        multiple = self.model.size_multiple
        images = self.train_set.images if self.train_set.in_memory else [self.train_set[0][0]]
        sizes = {(padded_size(h, multiple), padded_size(w, multiple)) for h, w in (im.shape[:2] for im in images)}
        return sorted(size for size in sizes if not any(other != size and other[0] <= size[0] and other[1] <= size[1]
                                                        for other in sizes))

    def _run(self):
        colors = self.train_set.class_colors
        return {"model": self.model_spec, "classes": self.classes, "colors": colors, "mean": self.mean,
                "std": self.std, "ignore_index": self.train_set.ignore_index, "layout": self.layout,
                "args": {key: jsonable(value) for key, value in self.options.items()}}

    def fit(self):
        options, train_set = self.options, self.train_set
        size = "x".join(map(str, train_set[0][0].shape[:2])) if len(train_set) else "?"
        print(f"{options['model']}{' ' + options['encoder'] if options['encoder'] else ''}: "
              f"{sum(p.size for p in self.model.parameters()):,} parameters; {len(train_set)} training and "
              f"{len(self.valid_set)} validation images ({self.layout} layout, first {size}), "
              f"{len(self.classes)} classes; {self._layout()}")
        self.started = time.perf_counter()
        if self.learner.epoch >= options["epochs"]:
            print(f"nothing to train: {self.checkpoint_path} already holds epoch {self.learner.epoch} of "
                  f"{options['epochs']}; pass --resume --epochs N with N > {self.learner.epoch} to train further. "
                  "Writing the results again.")
        self.learner.fit(max(options["epochs"] - self.learner.epoch, 0))

    def _layout(self):
        """"2 BLAS threads", or under mpiexec "2 ranks × 1 BLAS thread" (and whether batch norm is synchronized)."""
        threads = f"{self.threads} BLAS thread{'s' * (self.threads > 1)}"
        if self.comm.size == 1:
            return threads
        norm = "synchronized" if self.options.get("sync_bn", True) else "per-rank"
        return f"{self.comm.size} ranks × {threads} each, {norm} batch norm"

    def report(self):
        """Figures, metrics.json and the last line; returns the metrics."""
        out, learner, classes = Path(self.options["out"]), self.learner, self.classes
        results = learner.evaluate()  # every rank takes part: the metrics are summed over the ranks' shares
        if self.comm.rank != 0:
            return None
        self._figures(out, results)
        metrics = {"model": self.options["model"], "encoder": self.options["encoder"], "base": self.options["base"],
                   **{key: _finite_or_none(results.get(key)) for key in
                      ("pixel_accuracy", "foreground_accuracy", "mean_iou", "mean_dice")},
                   "per_class_iou": dict(zip(classes, map(_finite_or_none, results["per_class_iou"]))),
                   "per_class_dice": dict(zip(classes, map(_finite_or_none, results["per_class_dice"]))),
                   "epochs": learner.epoch,
                   "seconds": sum(record["seconds"] for record in learner.history),  # training + validation
                   "wall_seconds": time.perf_counter() - self.started}
        write_json(out / "metrics.json", metrics)
        print(f"validation after {learner.epoch} epoch{'s' * (learner.epoch != 1)} ({metrics['seconds']:.0f} s): "
              f"pixel accuracy {results['pixel_accuracy']:.4f}, mean IoU {results['mean_iou']:.4f}, mean Dice "
              f"{results['mean_dice']:.4f}; results in {out}/")
        return metrics

    def _figures(self, out, results):
        """batch.png, results.png, history.png, per_class_iou.png and confusion_matrix.png in ``out``."""
        from .. import viz  # matplotlib alone takes longer to import than all of minseg (-X importtime)
        learner, classes, colors = self.learner, self.classes, self.train_set.class_colors
        indices = viz.spread_indices(len(self.train_set), 8)
        shown = self.train_set.subset(indices)
        images, labels = next(iter(DataLoader(shown, batch_size=8, mean=self.mean, std=self.std, pad_to_multiple=1)))
        viz.show_batch(images, labels, out / "batch.png", codes=classes, mean=self.mean, std=self.std, colors=colors,
                       title=f"{len(indices)} of the {len(self.train_set)} training images, with their masks",
                       image_titles=[f"training image {index}" for index in indices])
        images, targets = next(iter(self.valid_loader))
        viz.show_results(images, targets, learner.predict(images), out / "results.png", codes=classes,
                         mean=self.mean, std=self.std, colors=colors)
        if learner.history:
            viz.plot_history(learner.history, out / "history.png")
        viz.plot_per_class_iou(results["per_class_iou"], out / "per_class_iou.png", codes=classes, colors=colors)
        viz.plot_confusion_matrix(results["confusion_matrix"], out / "confusion_matrix.png", codes=classes)


def _check_split(options, layout, train, valid):
    """A run needs training and validation images: a clean error before training, not NaN metrics after it."""
    if len(train) and len(valid):
        return
    how = ("the dataset's own train/val lists" if layout in ("segnet", "voc") else
           f"--valid-fraction {options['valid_fraction']}" if options["valid_fraction"] is not None else
           f"--valid-every {options['valid_every']}")
    raise UsageError(f"--data {options['data']}: {how} leaves {len(train)} training and {len(valid)} validation "
                     "images; minseg train needs at least one of each (to report validation metrics), so choose "
                     "a split that leaves both, or add images")


def _batch_norm_fails_on_one_image(model, size, device):
    """True when ``model``, training on one image of ``size``, gives a batch norm one value per channel (its
    ValueError). One forward without gradients; the weights, running statistics, mode and generator are restored."""
    state, training, generator = model.state_dict(), model.training, get_state()
    image = Tensor(backend.to_device(np.zeros((1, 3, *size), np.float32), device))
    try:
        with no_grad():
            model.train()(image)
    except ValueError as error:
        if not str(error).startswith(_BATCH_NORM_ON_ONE_VALUE):
            raise
        return True
    finally:
        model.load_state_dict(state)
        model.train(training)
        set_state(generator)
    return False


_BATCH_NORM_ON_ONE_VALUE = "batch_norm: expected more than 1 value per channel"  # F.batch_norm's message


def _finite_or_none(value):
    """JSON has no NaN: a class absent from the validation images gets null."""
    return None if value is None or math.isnan(value) else float(value)


def _padding(dataset, multiple):
    """``multiple`` when batches of ``dataset`` need padding for the model (mixed or indivisible sizes), else None."""
    if dataset.same_size and not (dataset.images.shape[1] % multiple or dataset.images.shape[2] % multiple):
        return None
    return multiple


def _model_spec(options):
    """``{"name", "options"}`` for ``models.create``: the encoder, or the base width of a from-scratch model."""
    name, encoder, base = options["model"], options["encoder"], options["base"]
    if encoder is not None:
        return {"name": name, "options": {"encoder": encoder}}
    parameters = inspect.signature(MODELS[name]).parameters
    if "base" in parameters:
        return {"name": name, "options": {"base": base}}
    if name == "naive":
        return {"name": name, "options": {"widths": [base, 2 * base, 4 * base, 8 * base]}}
    return {"name": name, "options": {}}


def create_model(spec, num_classes, weights=None):
    """``models.create`` for a run description, then the ``--weights`` file: the whole model (heads sized for
    another class count start afresh, and the run says which), else its encoder."""
    try:
        model = build_model(spec, num_classes)
    except ValueError as error:  # an unknown model or encoder name, or a --base too small for the model
        flags = " ".join(f"--{key} {value}" for key, value in spec["options"].items() if key in ("base", "encoder"))
        hint = "; try a larger --base" if "base" in spec["options"] else ""
        raise UsageError(f"cannot build --model {spec['name']} {flags}: {error}{hint}".replace("  ", " ")) from error
    if weights is None:
        return model
    try:
        report = compare_weights(model, weights)
    except (OSError, ValueError) as error:  # missing, or not a .safetensors file
        raise UsageError(f"--weights {weights}: {str(error).removeprefix('load_weights: ')}") from None
    if len(report.missing_keys) < len(_tensors(model)):  # names in common: a whole model's file
        loaded = _load_whole(model, weights, report, num_classes)
    elif hasattr(model, "encoder"):
        try:
            report = load_weights(model.encoder, weights, strict=False)
        except ValueError as error:
            raise UsageError(f"--weights {weights}: fits neither the whole model nor its encoder: {error}") from error
        skipped = list(report.unexpected_keys) + [key for key, _, _ in report.mismatched_keys]
        loaded = f"initial weights: {weights} into model.encoder; not used: {', '.join(skipped) or 'nothing'}"
    else:
        raise UsageError(f"--weights {weights} shares no tensor name with {type(model).__name__}; it must hold "
                         f"a {spec['name']} model's weights")
    _check_finite(model, weights)
    print(loaded)
    return model


def _tensors(model):
    """Name → Tensor for every parameter and buffer (the names of ``state_dict``, without copying)."""
    return dict(list(model.named_parameters()) + list(model.named_buffers()))


def _listed(names, limit=4):
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _class_count_heads(mismatched, num_classes):
    """The names in ``mismatched`` (name, model shape, file shape) that differ only by the class count: every
    dimension that differs does so by the same ``num_classes - file's class count``."""
    differing = [(m, f) for _, model_shape, file_shape in mismatched if len(model_shape) == len(file_shape)
                 for m, f in zip(model_shape, file_shape) if m != f]
    file_classes = {f for m, f in differing if m == num_classes}
    if len(file_classes) != 1:
        return []
    delta = num_classes - file_classes.pop()
    return [name for name, model_shape, file_shape in mismatched if len(model_shape) == len(file_shape)
            and all(m == f or m - f == delta for m, f in zip(model_shape, file_shape))]


def _load_whole(model, weights, report, num_classes):
    """Load a whole model's file: every name must match; shapes may differ only in the heads sized by the class
    count, which keep their fresh initial weights. Returns the line that says so."""
    if report.missing_keys or report.unexpected_keys:
        raise UsageError(f"--weights {weights} does not fit {type(model).__name__} with these options: "
                         + "; ".join(f"{what} {_listed(keys)}" for what, keys in
                                     (("the model's names missing from the file:", report.missing_keys),
                                      ("the file's names the model lacks:", report.unexpected_keys)) if keys)
                         + "; check --model, --encoder and --base against the run that wrote it")
    heads = _class_count_heads(report.mismatched_keys, num_classes)
    other = [f"{name} {shape} in the model but {stored} in the file" for name, shape, stored
             in report.mismatched_keys if name not in heads]
    if other:
        raise UsageError(f"--weights {weights} does not fit {type(model).__name__} with these options: "
                         f"{_listed(other, 3)}; check --model, --encoder and --base against the run that wrote it")
    load_weights(model, weights, strict=False)
    fresh = f"; for {num_classes} classes these start afresh: {', '.join(heads)}" if heads else ""
    return f"initial weights: {weights} (whole model){fresh}"


def _check_finite(model, weights):
    """NaN or infinite initial weights would stop training at its first step with a misleading cause."""
    arrays = {name: tensor.numpy() for name, tensor in _tensors(model).items()}
    broken = [name for name, array in arrays.items()
              if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all()]
    if broken:
        raise UsageError(f"--weights {weights} holds NaN or infinite values (in {_listed(broken)}); "
                         "training cannot start from them: use the file of a run that did not diverge")


def _loss(name):
    if name == "ce":
        return F.cross_entropy

    def dice_plus_cross_entropy(logits, targets):
        """Soft Dice + cross-entropy, both skipping ignored pixels (-100)."""
        return F.cross_entropy(logits, targets) + F.dice_loss(logits, targets, ignore_index=-100)
    return dice_plus_cross_entropy


def write_json(path, document):
    """``document`` to ``path`` as JSON, atomically (``minseg.atomic``: temporary file + rename)."""
    with atomic_write(path) as file:
        file.write((json.dumps(document, indent=2) + "\n").encode())
