"""Pictures of data, predictions and training: every function saves a PNG and returns the figure.

The figures are built with ``matplotlib.figure.Figure`` directly, not ``pyplot``: no global
backend is switched, no window opens, nothing accumulates in pyplot's figure list, and it
works the same in a script, on a headless server or in a notebook (which displays the
returned figure). Class colours are ``minseg.colors``': the dataset's own when it has them (pass
``colors=``, e.g. ``dataset.class_colors``) and otherwise ``palette(C)``.

Images may come in either of the two forms minseg handles: uint8 (N, H, W, 3) arrays as a
``SegmentationDataset`` stores them, or normalized float (N, 3, H, W) batches (Tensors or
arrays) as a ``DataLoader`` yields them; pass that loader's ``mean`` and ``std`` to undo the
normalization for display. The pictures of instance and panoptic results are ``viz_instances``'.
"""
import os

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from .atomic import atomic_write
from .colors import KELLY_COLORS, as_numpy, class_colors, colorize, overlay, palette
from .data.layouts import CAMVID_COLORS

__all__ = ["CAMVID_PALETTE", "KELLY_COLORS", "palette", "class_colors", "colorize", "show_batch", "show_results",
           "plot_history", "plot_per_class_iou", "plot_confusion_matrix", "plot_lr_find"]

# CamVid's label_colors.txt, in the (alphabetical) order of codes.txt (kept under its old name).
CAMVID_PALETTE = CAMVID_COLORS
# palette, class_colors and colorize are minseg.colors' (matplotlib-free), exported here too.


def _display_images(images, mean=None, std=None):
    """RGB floats in [0, 1], (N, H, W, 3), from uint8 (N, H, W, 3) or normalized float (N, 3, H, W)."""
    images = as_numpy(images)
    if images.ndim == 3:
        images = images[None]
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3) or float (N, 3, H, W), got {images.dtype} "
                         f"{images.shape}")
    mean = np.zeros(3) if mean is None else as_numpy(mean).reshape(3)
    std = np.ones(3) if std is None else as_numpy(std).reshape(3)
    pixels = images.transpose(0, 2, 3, 1) * std + mean
    return np.clip(pixels, 0, 1)


def _class_names(codes, num_classes):
    return list(codes) if codes is not None else [str(k) for k in range(num_classes)]


def _legend(ax, class_ids, names, colours):
    handles = [Patch(facecolor=colours[k] / 255.0, edgecolor="black", linewidth=0.5, label=names[k])
               for k in sorted(set(int(k) for k in class_ids))]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False,
              title="classes", title_fontsize=9)


def _save(figure, path):
    """``figure`` written to ``path`` (its folder made if missing) unless ``path`` is None; returns ``figure``.
    The file is written whole or not at all (``atomic.atomic_write``), in the format its suffix names."""
    if path is not None:
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        with atomic_write(path) as file:
            figure.savefig(file, format=os.path.splitext(path)[1][1:].lower() or "png", dpi=100,
                           bbox_inches="tight")
    return figure


def _num_classes(codes, *labels):
    if codes is not None:
        return len(codes)
    return int(max(label.max() for label in labels)) + 1


def spread_indices(count, shown):
    """``shown`` indices spread evenly over ``range(count)`` (all of them when count <= shown)."""
    if count <= shown:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, shown).round().astype(np.int64))


# --- data and predictions ---------------------------------------------------------------------
def show_batch(images, labels, path=None, codes=None, mean=None, std=None, max_images=8, ncols=4, alpha=0.5,
               colors=None, title="images with their label masks blended in", image_titles=None):
    """A grid of images with their label masks blended in, and a legend of the classes shown; each image is
    titled with its entry of ``image_titles`` (default: its index among ``images``), the figure with ``title``.

    With more than ``max_images`` images, the ones shown are spread evenly over all of them (neighbouring
    video frames are near-duplicates, so the first eight would show one scene eight times).
    """
    chosen = spread_indices(len(labels), max_images)
    pictures = _display_images(images, mean, std)[chosen]
    labels = as_numpy(labels)[chosen]
    num_classes = _num_classes(codes, labels)
    colours, names = class_colors(num_classes, colors), _class_names(codes, num_classes)
    nrows = -(-len(pictures) // ncols)
    ncols = min(ncols, len(pictures))
    height, width = pictures.shape[1:3]
    figure = Figure(figsize=(2.6 * ncols * width / height + 1.5, 2.6 * nrows))
    axes = figure.subplots(nrows, ncols, squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index < len(pictures):
            ax.imshow(overlay(pictures[index], labels[index], colours, alpha))
            ax.set_title(image_titles[chosen[index]] if image_titles else f"image {chosen[index]}", fontsize=9)
    _legend(axes[0, -1], np.unique(labels[labels >= 0]), names, colours)
    if title:
        figure.suptitle(f"{title} (opacity {alpha})", fontsize=11)
    return _save(figure, path)


def show_results(images, targets, predictions, path=None, codes=None, mean=None, std=None, max_rows=6,
                 colors=None):
    """One row per image: the image | its ground truth | the model's prediction (ignored pixels black)."""
    pictures = _display_images(images, mean, std)[:max_rows]
    targets, predictions = as_numpy(targets)[:max_rows], as_numpy(predictions)[:max_rows]
    num_classes = _num_classes(codes, targets, predictions)
    colours, names = class_colors(num_classes, colors), _class_names(codes, num_classes)
    height, width = pictures.shape[1:3]
    figure = Figure(figsize=(3 * 2.4 * width / height + 1.8, 2.4 * len(pictures)))
    axes = figure.subplots(len(pictures), 3, squeeze=False)
    for row, (picture, target, prediction) in enumerate(zip(pictures, targets, predictions)):
        axes[row, 0].imshow(picture)
        axes[row, 1].imshow(colorize(target, num_classes, colours))
        axes[row, 2].imshow(colorize(prediction, num_classes, colours))
        counted = target >= 0
        accuracy = f"pixel accuracy {(target == prediction)[counted].mean():.3f}"
        titles = ("image", "ground truth", "prediction\n" + accuracy) if row == 0 else ("", "", accuracy)
        for ax, title in zip(axes[row], titles):
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    _legend(axes[0, 2], np.union1d(np.unique(targets[targets >= 0]), np.unique(predictions)), names, colours)
    return _save(figure, path)


# --- training curves and metrics ----------------------------------------------------------------
def plot_history(history, path=None):
    """Loss curves (train, validation) and validation metrics per epoch, from ``Learner.history``."""
    if len(history) == 0:
        raise ValueError("plot_history: history is empty (train at least one epoch first)")
    epochs = [record["epoch"] for record in history]
    figure = Figure(figsize=(11, 4))
    loss_ax, metric_ax = figure.subplots(1, 2)
    for key, label in (("train_loss", "training"), ("valid_loss", "validation")):
        if key in history[0]:
            loss_ax.plot(epochs, [record[key] for record in history], marker=".", label=label)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    loss_ax.legend()
    for key, label in (("pixel_accuracy", "pixel accuracy"), ("foreground_accuracy", "foreground accuracy"),
                       ("mean_iou", "mean IoU"), ("mean_dice", "mean Dice")):
        if key in history[0]:
            metric_ax.plot(epochs, [record[key] for record in history], marker=".", label=label)
    metric_ax.set(xlabel="epoch", title="validation metrics", ylim=(0, 1))
    for ax in (loss_ax, metric_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 1.5" ticks on short runs
    metric_ax.grid(alpha=0.3)
    metric_ax.legend()
    figure.tight_layout()
    return _save(figure, path)


def plot_per_class_iou(per_class_iou, path=None, codes=None, colors=None):
    """Horizontal bars of each class's IoU, each with its number; a zero shows as "0.00" on a thin tick,
    and a class absent from the data (NaN) is marked "absent" instead of a bar."""
    values = np.asarray(per_class_iou, dtype=np.float64)
    names = _class_names(codes, len(values))
    colours = class_colors(len(values), colors) / 255.0
    figure = Figure(figsize=(7, 0.28 * len(values) + 1.2))
    ax = figure.subplots()
    positions = np.arange(len(values))
    absent = np.isnan(values)
    ax.barh(positions, np.where(absent, 0, values), color=colours, edgecolor="black", linewidth=0.5)
    for position, value in zip(positions, values):
        if np.isnan(value):
            ax.text(0.01, position, "absent", va="center", fontsize=7, color="grey")
        else:
            if value == 0:
                ax.plot([0, 0.004], [position, position], color="black", linewidth=3, solid_capstyle="butt")
            ax.text(value + 0.01, position, f"{value:.2f}", va="center", fontsize=7)
    ax.set_yticks(positions, labels=names, fontsize=8)
    ax.invert_yaxis()
    mean = np.nanmean(values) if not absent.all() else float("nan")
    ax.axvline(mean, color="black", linestyle="--", linewidth=1, label=f"mean IoU {mean:.3f}")
    ax.set(xlim=(0, 1.08), xlabel="IoU", title="IoU per class")
    ax.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def plot_confusion_matrix(cm, path=None, codes=None):
    """The confusion matrix with each row divided by its total: row i shows where class i's pixels went."""
    cm = as_numpy(cm).astype(np.float64)
    totals = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = np.where(totals > 0, cm / totals, np.nan)  # a class that never occurs: blank row
    names = _class_names(codes, len(cm))
    size = 3 + 0.22 * len(cm)
    figure = Figure(figsize=(size + 1, size))
    ax = figure.subplots()
    image = ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ticks = np.arange(len(cm))
    ax.set_xticks(ticks, labels=names, rotation=90, fontsize=7)
    ax.set_yticks(ticks, labels=names, fontsize=7)
    ax.set(xlabel="predicted class", ylabel="true class", title="confusion matrix (rows normalized)")
    figure.tight_layout()
    return _save(figure, path)


def plot_lr_find(lrs, losses, path=None, suggested_lr=None):
    """Smoothed loss against learning rate (log scale), with the suggested lr marked."""
    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    if suggested_lr is not None:
        ax.axvline(suggested_lr, color="red", linestyle="--", label=f"suggested lr {suggested_lr:.2g}")
        ax.legend()
    ax.set(xlabel="learning rate", ylabel="smoothed loss", title="learning-rate range test")
    ax.grid(alpha=0.3, which="both")
    figure.tight_layout()
    return _save(figure, path)
