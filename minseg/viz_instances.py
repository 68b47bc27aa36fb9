"""Pictures of instance and panoptic results: detections with class and score, instances coloured apart, panoptic maps.

``show_instance_results`` is the instance twin of ``viz.show_results``: one row per image, the image with the
detections scoring at least ``score_threshold`` (box, class, score), their masks, the model's panoptic map and,
given the targets, the ground truth's (``detection.panoptic.panoptic_from_target``). It is built as ``viz``'s
figures are (``matplotlib.figure.Figure``, no pyplot): ``path=None`` returns the figure (a notebook displays it), a
path also writes it, whole or not at all. Images come as ``viz`` takes them: uint8 (N, H, W, 3), or a normalized
float (N, 3, H, W) batch with the ``mean`` and ``std`` that undo it. Outputs and targets follow the instance
conventions (model outputs: "boxes", "labels", "scores", "masks", "panoptic"; targets: "labels", "masks",
"semantic"), as NumPy arrays or Tensors.

The colours: an instance, or a thing segment of a panoptic map, gets a colour of its own (``segment_colors``: hues
a golden angle apart), so two circles side by side never share one, and its box is drawn in its mask's colour; a
stuff category keeps one colour wherever it appears, the run's ``colors`` (one per category, stuff first, as
``InstancePredictor.colors``) or else ``colors.palette``; void is black. The helpers that colour the maps return
RGB floats in [0, 1], what ``imshow`` shows.
"""
import colorsys

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from .colors import as_numpy, class_colors
from .detection.panoptic import LABEL_DIVISOR, panoptic_from_target
from .viz import _display_images, _save

__all__ = ["VOID_COLOR", "segment_colors", "instances_rgb", "panoptic_rgb", "label_segments", "category_legend",
           "show_instance_results"]

VOID_COLOR = (0, 0, 0)  # uint8 RGB of void (unlabelled) pixels in a panoptic map
MASK_BACKGROUND = 0.85  # the light grey under instance masks


# ---------------------------------------------------------------------------------------------
# colouring maps
# ---------------------------------------------------------------------------------------------
def segment_colors(count, seed=0):
    """``count`` distinct bright colours (count, 3), floats in [0, 1], one per instance or thing segment: hues a
    golden angle apart (each next one as far from all before it as it can be) from a start drawn with ``seed``."""
    hues = (np.arange(count) * 0.618034 + np.random.default_rng(seed).uniform()) % 1.0
    return np.array([colorsys.hsv_to_rgb(h, 0.75, 0.95) for h in hues]).reshape(-1, 3)


def instances_rgb(masks, background=MASK_BACKGROUND):
    """(H, W, 3) floats: each of the (N, H, W) masks (bool, or 0/1) in its own ``segment_colors`` colour on grey
    ``background``; where masks overlap, the later one is on top."""
    masks = as_numpy(masks).astype(bool)
    rgb = np.full(masks.shape[1:] + (3,), background)
    for colour, mask in zip(segment_colors(len(masks)), masks):
        rgb[mask] = colour
    return rgb


def panoptic_rgb(panoptic, num_stuff, colors=None):
    """A panoptic map (H, W) (``category * LABEL_DIVISOR + instance``, -1 void) as (H, W, 3) floats: each stuff
    category in its colour (``colors``: one uint8 RGB per category, stuff first; None: ``colors.palette``), each
    thing segment in a ``segment_colors`` colour of its own, void black. Returns the picture and its segments,
    [(segment id, category, (row, column) of the segment's centre)], in increasing id."""
    panoptic = as_numpy(panoptic).astype(np.int64)
    stuff_colors = class_colors(num_stuff, colors)
    rgb = np.zeros(panoptic.shape + (3,))
    ids = [int(i) for i in np.unique(panoptic) if i >= 0]
    things = [i for i in ids if i // LABEL_DIVISOR >= num_stuff]
    colours = dict(zip(things, segment_colors(len(things))))
    segments = []
    for segment in ids:
        region = panoptic == segment
        category = segment // LABEL_DIVISOR
        rgb[region] = colours[segment] if segment in colours else stuff_colors[category] / 255
        rows, cols = np.nonzero(region)
        segments.append((segment, category, (rows.mean(), cols.mean())))
    return rgb, segments


# ---------------------------------------------------------------------------------------------
# labels and legends
# ---------------------------------------------------------------------------------------------
def label_segments(ax, segments, categories, num_stuff):
    """Write "category instance" on each thing segment and the category on each stuff segment, at its centre
    (``segments``: ``panoptic_rgb``'s; ``categories``: every category's name, stuff first)."""
    for segment, category, (row, col) in segments:
        text = categories[category] + (f" {segment % LABEL_DIVISOR}" if category >= num_stuff else "")
        ax.text(col, row, text, ha="center", va="center", fontsize=7,
                bbox=dict(boxstyle="round,pad=0.15", facecolor="white", alpha=0.7, linewidth=0))


def category_legend(figure, names, colors=None, y=-0.02, void=False):
    """A legend in one row under ``figure``: the colour of each of the first ``len(names)`` categories
    (``colors`` as ``panoptic_rgb`` takes them), and void's if ``void``."""
    colours = class_colors(len(names), colors)
    handles = [Patch(facecolor=colour / 255, edgecolor="black", linewidth=0.5, label=name)
               for name, colour in zip(names, colours)]
    if void:
        handles.append(Patch(facecolor=np.asarray(VOID_COLOR) / 255, edgecolor="black", linewidth=0.5,
                             label="void"))
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False,
                  bbox_to_anchor=(0.5, y))


# ---------------------------------------------------------------------------------------------
# the figure
# ---------------------------------------------------------------------------------------------
def _listed(values, what):
    """One dict per image: a single dict becomes a list of one."""
    values = [values] if isinstance(values, dict) else list(values)
    if not all(isinstance(value, dict) for value in values):
        raise ValueError(f"show_instance_results: {what} must be one dict per image (the instance conventions' "
                         f"keys), got {[type(value).__name__ for value in values][:3]}")
    return values


def _confident(output, score_threshold, num_things):
    """The boxes, labels, scores and masks (K, H, W) of ``output``'s detections scoring at least the threshold."""
    scores = as_numpy(output["scores"]).reshape(-1)
    keep = scores >= score_threshold
    boxes = as_numpy(output["boxes"]).reshape(-1, 4)[keep]
    labels = as_numpy(output["labels"]).reshape(-1)[keep].astype(np.int64)
    masks = as_numpy(output["masks"])
    masks = masks.reshape(len(masks), *masks.shape[-2:])[keep]
    if labels.size and (labels.min() < 1 or labels.max() > num_things):
        raise ValueError(f"show_instance_results: labels must be thing classes 1..{num_things} (one per name in "
                         f"things), got {sorted(set(labels.tolist()))}; pass the names the model was trained with")
    return boxes, labels, scores[keep], masks


def _draw_detections(ax, picture, detections, things, mask_threshold):
    """The image with each detection's box and "class score" in its colour; returns its masks' picture."""
    boxes, labels, scores, masks = detections
    ax.imshow(picture)
    for (x1, y1, x2, y2), label, score, colour in zip(boxes, labels, scores, segment_colors(len(boxes))):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.2))
        ax.text(x1, y1 - 1, f"{things[label - 1]} {float(score):.2f}", fontsize=6, color="black",
                bbox=dict(facecolor=colour, alpha=0.7, linewidth=0, pad=0.4))
    return instances_rgb(masks >= mask_threshold)


def show_instance_results(images, outputs, targets=None, *, things, stuff, path=None, mean=None, std=None,
                          score_threshold=0.5, mask_threshold=0.5, max_rows=4, colors=None):
    """One row per image (the first ``max_rows``): the image with the detections scoring at least
    ``score_threshold`` (box and "class score", each in its mask's colour) | their masks (pixels with probability
    >= ``mask_threshold``), coloured apart | the predicted panoptic map, when the outputs have one | the ground
    truth's panoptic map, when ``targets`` are given. Panoptic segments are labelled with their category (and
    instance number); a legend gives the stuff colours. ``things``, ``stuff``: the names of the thing classes
    (label k is ``things[k - 1]``) and of the stuff categories; ``colors``: as ``panoptic_rgb`` takes them."""
    outputs = _listed(outputs, "outputs")[:max_rows]
    targets = None if targets is None else _listed(targets, "targets")[:max_rows]
    pictures = _display_images(images, mean, std)[:max_rows]
    things, stuff = list(things), list(stuff)
    if not outputs or len(pictures) != len(outputs) or (targets is not None and len(targets) != len(outputs)):
        raise ValueError(f"show_instance_results: images, outputs and targets must be one per image and at least "
                         f"one, got {len(pictures)} images, {len(outputs)} outputs and "
                         f"{'no' if targets is None else len(targets)} targets (of the first max_rows={max_rows})")
    columns = ["detections", "masks"] + ["prediction"] * all("panoptic" in o for o in outputs) \
        + ["ground truth"] * (targets is not None)
    height, width = pictures.shape[1:3]
    figure = Figure(figsize=(3 * len(columns) * width / height, 3.2 * len(pictures)))
    axes = figure.subplots(len(pictures), len(columns), squeeze=False)
    figure.subplots_adjust(wspace=0.05, hspace=0.15)
    for row, (picture, output) in enumerate(zip(pictures, outputs)):
        detections = _confident(output, score_threshold, len(things))
        axes[row, 1].imshow(_draw_detections(axes[row, 0], picture, detections, things, mask_threshold))
        panoptic_maps = [output.get("panoptic")] * ("prediction" in columns)
        if targets is not None:
            panoptic_maps.append(panoptic_from_target(targets[row], len(stuff)))
        for ax, panoptic in zip(axes[row, 2:], panoptic_maps):
            rgb, segments = panoptic_rgb(panoptic, len(stuff), colors)
            ax.imshow(rgb)
            label_segments(ax, segments, stuff + things, len(stuff))
    titles = {"detections": f"detections scoring ≥ {score_threshold:g}: class, score",
              "masks": "their masks, one colour each", "prediction": "predicted panoptic map",
              "ground truth": "ground truth panoptic map"}
    for ax, column in zip(axes[0], columns):
        ax.set_title(titles[column], fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    category_legend(figure, stuff, colors, y=0.06, void=True)  # a thing segment's colour is its own, not its class's
    return _save(figure, path)
