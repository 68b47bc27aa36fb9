"""Every figure of the course, made by minseg itself from real data and real models.

    python docs/figures.py         # the committed images, into docs/img/ (trains two models briefly)
    python docs/figures.py --fast  # tiny models, a few steps, into a new temporary folder: what the tests run
    python docs/figures.py --untrained  # only the figures that need no training, into docs/img/

The data: CamVid tiny (``--data``, default ``../shared/data/camvid_tiny`` beside the repository) and the ISBI 2012
membrane slices (``--membrane``). The zoo figure is drawn from the table in ``docs/zoo.md`` (``--zoo``) that
``python benchmarks/zoo.py`` writes; without that file it is skipped with a note. Each figure is a function below
named after the file it writes; the architecture drawings come from running the model objects
(``trace_blocks`` in ``docs/model_trace.py``), so they cannot drift from the code. The script prints every number
the course pages quote.
"""
import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, Patch, Rectangle
from matplotlib.textpath import TextPath

import minseg
import minseg.functional as F
from minseg import metrics, viz
from minseg.checkpoint import load_checkpoint
from minseg.crf import dense_crf
from minseg.data import DataLoader, channel_stats, layouts
from minseg.models import Naive, PaperUNet
from minseg.models.fcn import bilinear_kernel
from minseg.optim import AdamW, OneCycleLR
from minseg.predict import Predictor
from minseg.train import Learner

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
FIGURES = ["four_tasks.png", "task.png", "one_hot.png", "architecture_naive.png", "architecture_unet.png",
           "receptive_field.png", "upsampling.png", "cross_entropy_vs_dice.png", "iou_dice.png", "naive_vs_unet.png",
           "zoo.png", "crf.png"]
# What --untrained redraws: the figures that need no trained model.
UNTRAINED = ["four_tasks.png", "task.png", "one_hot.png", "architecture_naive.png", "architecture_unet.png",
             "receptive_field.png", "upsampling.png", "zoo.png"]
# crf.png refines this checkpoint's predictions; docs/crf.md gives the `minseg train` command that writes it.
CRF_CHECKPOINT = ROOT / "runs" / "crf" / "camvid_deeplabv2" / "checkpoint.npz"
# dense_crf's options for CamVid tiny (docs/crf.md): DeepLab's w1 and θβ ranges, the position widths scaled down
# with the 96x128 images.
CRF_OPTIONS = dict(w1=4.0, theta_alpha=20.0, theta_beta=5.0, w2=3.0, theta_gamma=1.0)
MAX_BYTES = 200 * 1024  # every image stays under this size
# FULL makes the committed images; FAST only proves every figure still draws (tiny widths, a few steps).
FULL = dict(epochs=50, naive_widths=(32, 64, 128, 256), unet_base=16, train_images=None, lr=3e-3)
FAST = dict(epochs=1, naive_widths=(4, 8, 16, 32), unet_base=4, train_images=8, lr=3e-3)


def save(figure, path, max_bytes=MAX_BYTES):
    """Write ``figure`` as a PNG atomically, at the highest of a few resolutions that stays under ``max_bytes``."""
    handle, temporary = tempfile.mkstemp(suffix=".png", dir=os.path.dirname(os.path.abspath(path)))
    os.close(handle)
    for dpi in (80, 70, 60, 50):
        figure.savefig(temporary, dpi=dpi, bbox_inches="tight")
        if os.path.getsize(temporary) <= max_bytes:
            break
    os.chmod(temporary, 0o644)  # mkstemp makes it private; an image is for everyone to read
    os.replace(temporary, path)
    print(f"wrote {path} ({os.path.getsize(path) / 1024:.0f} KB)")


def class_legend(figure, labels, classes, colors, columns=8):
    """A legend under ``figure`` naming the colour of every class that occurs in ``labels`` (arrays of ids)."""
    present = sorted(set(np.unique(np.concatenate([np.ravel(label) for label in labels])).tolist()) - {-100})
    handles = [Patch(facecolor=np.asarray(colors[k]) / 255, edgecolor="black", linewidth=0.5, label=classes[k])
               for k in present]
    figure.legend(handles=handles, loc="lower center", ncol=min(columns, len(handles)), fontsize=8, frameon=False,
                  bbox_to_anchor=(0.5, -0.01 - 0.035 * ((len(handles) - 1) // columns)))


# ---------------------------------------------------------------------------------------------
# Data and training (the example's recipe: AdamW, one-cycle, flips, every 5th image validates)
# ---------------------------------------------------------------------------------------------
def train_model(model, train, valid, settings):
    """Train ``model`` for ``settings["epochs"]`` epochs; the Learner, its last metrics and the seconds taken."""
    mean, std = channel_stats(train)
    train_loader = DataLoader(train, batch_size=8, shuffle=True, augment=minseg.data.RandomHorizontalFlip(),
                              mean=mean, std=std, seed=0)
    valid_loader = DataLoader(valid, batch_size=8, mean=mean, std=std)
    optimizer = AdamW(model.parameters(), lr=settings["lr"])
    scheduler = OneCycleLR(optimizer, max_lr=settings["lr"], total_steps=settings["epochs"] * len(train_loader))
    learner = Learner(model, train_loader, valid_loader, F.cross_entropy, optimizer, scheduler,
                      void_class=train.classes.index("Void"), progress=False)
    start = time.perf_counter()
    learner.fit(settings["epochs"])
    seconds = time.perf_counter() - start
    record = learner.history[-1]
    print(f"{type(model).__name__}: {sum(p.size for p in model.parameters()):,} parameters, {settings['epochs']} "
          f"epochs in {seconds:.0f} s; validation pixel accuracy {record['pixel_accuracy']:.3f}, "
          f"mean IoU {record['mean_iou']:.3f}")
    return learner, (mean, std)


def normalized(images, stats):
    """uint8 (N, H, W, 3) images → the float (N, 3, H, W) batch the loaders make."""
    mean, std = stats
    return ((images.astype(np.float32) / 255 - mean) / std).transpose(0, 3, 1, 2)


def softmax(scores):
    """The softmax over the class axis 0 of (C, H, W) scores, in float64."""
    exp = np.exp(np.asarray(scores, np.float64) - scores.max(axis=0))
    return exp / exp.sum(axis=0)


def logits_of(learner, images, stats):
    learner.model.eval()
    with minseg.no_grad():
        return learner.model(minseg.Tensor(normalized(images, stats))).numpy()


# ---------------------------------------------------------------------------------------------
# The task and its targets
# ---------------------------------------------------------------------------------------------
def task_png(camvid, membrane, path):
    """A CamVid frame and a membrane slice, each beside its class-id mask."""
    figure = Figure(figsize=(11, 6.4))
    axes = figure.subplots(2, 2)
    image, label = camvid[0]
    axes[0, 0].imshow(image)
    axes[0, 1].imshow(viz.colorize(label, camvid.num_classes, camvid.class_colors))
    slice_, cells = membrane[0]
    axes[1, 0].imshow(slice_)
    axes[1, 1].imshow(cells, cmap="gray", vmin=0, vmax=1)
    class_legend(figure, [label], camvid.classes, camvid.class_colors)
    titles = [f"CamVid {camvid.stems[0]} ({image.shape[0]}×{image.shape[1]})",
              f"its mask: one of {camvid.num_classes} class ids per pixel",
              f"membrane slice {membrane.stems[0]} ({slice_.shape[0]}×{slice_.shape[1]})",
              "its mask: 0 = membrane (black), 1 = cell (white)"]
    for ax, title in zip(axes.flat, titles):
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    save(figure, path)


# CamVid's movable objects: the classes whose pixels group into countable things (the rest is "stuff").
THINGS = ["Bicyclist", "Car", "CartLuggagePram", "Child", "MotorcycleScooter", "OtherMoving", "Pedestrian",
          "SUVPickupTruck", "Truck_Bus"]


def components(mask):
    """Label the 4-connected regions of a boolean mask 1, 2, ... (0 outside): a plain flood fill."""
    labels = np.zeros(mask.shape, np.int64)
    count = 0
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        count += 1
        labels[start], stack = count, [start]
        while stack:
            row, col = stack.pop()
            for r, c in ((row - 1, col), (row + 1, col), (row, col - 1), (row, col + 1)):
                if 0 <= r < mask.shape[0] and 0 <= c < mask.shape[1] and mask[r, c] and not labels[r, c]:
                    labels[r, c] = count
                    stack.append((r, c))
    return labels


def four_tasks_png(camvid, path, min_pixels=20):
    """One frame, four tasks: classification, detection, semantic and instance segmentation."""
    image, label = camvid[0]
    objects = []  # (class id, boolean mask) for each connected region of a movable class
    for name in THINGS:
        regions = components(label == camvid.classes.index(name))
        objects += [(camvid.classes.index(name), regions == k) for k in range(1, regions.max() + 1)
                    if (regions == k).sum() >= min_pixels]
    figure = Figure(figsize=(12, 3.3))
    axes = figure.subplots(1, 4)
    figure.subplots_adjust(wspace=0.08)
    for ax in axes[:2]:
        ax.imshow(image)
    largest = camvid.classes[np.bincount(label.ravel()).argmax()]
    for class_id, region in objects:
        rows, cols = np.nonzero(region)
        colour = np.asarray(camvid.class_colors[class_id]) / 255
        axes[1].add_patch(Rectangle((cols.min() - 0.5, rows.min() - 0.5), np.ptp(cols) + 1, np.ptp(rows) + 1,
                                    fill=False, edgecolor=colour, linewidth=1.5))
        if region.sum() >= 400:  # name the large objects only; the colours are the mask's
            axes[1].text(cols.min(), rows.min() - 2, camvid.classes[class_id], color=colour, fontsize=7)
    axes[2].imshow(viz.colorize(label, camvid.num_classes, camvid.class_colors))
    instances = np.full(label.shape + (3,), 0.85)
    palette = np.random.default_rng(0).uniform(0.1, 0.9, (len(objects), 3))
    for colour, (_, region) in zip(palette, objects):
        instances[region] = colour
    axes[3].imshow(instances)
    titles = [f"classification\none label for the image\n(its largest class: {largest})",
              f"detection\na box and a class per object\n({len(objects)} objects)",
              "semantic segmentation\na class for every pixel\n(this course)",
              "instance segmentation\nan object for every object pixel\n(each its own colour)"]
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    class_legend(figure, [label], camvid.classes, camvid.class_colors, columns=10)
    save(figure, path)


def one_hot_png(camvid, path, shown=8):
    """A mask and the one-hot channels of its ``shown`` most frequent classes (``F.one_hot``)."""
    _, label = camvid[0]
    channels = F.one_hot(label[None], camvid.num_classes).numpy()[0]  # (C, H, W)
    order = np.argsort(-channels.sum((1, 2)))[:shown]
    figure = Figure(figsize=(12, 4.6))
    axes = figure.subplots(2, (shown + 2) // 2)
    axes.flat[0].imshow(viz.colorize(label, camvid.num_classes, camvid.class_colors))
    axes.flat[0].set_title(f"class ids {label.shape}", fontsize=9)
    for ax, class_id in zip(axes.flat[1:], order):
        ax.imshow(channels[class_id], cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"channel {class_id}: {camvid.classes[class_id]}\n{channels[class_id].mean():.1%} of pixels",
                     fontsize=9)
    empty = int((channels.sum((1, 2)) == 0).sum())
    axes.flat[-1].text(0.5, 0.5, f"… {camvid.num_classes - shown} more channels,\n{empty} of them all zero here",
                       ha="center", va="center", fontsize=10)
    for ax in axes.flat:
        ax.axis("off")
    class_legend(figure, [label], camvid.classes, camvid.class_colors)
    figure.suptitle(f"one_hot(mask, {camvid.num_classes}) has shape {(1,) + channels.shape}: "
                    f"the {shown} fullest channels", fontsize=11)
    save(figure, path)


# ---------------------------------------------------------------------------------------------
# Architectures, traced from the model objects (docs/model_trace.py)
# ---------------------------------------------------------------------------------------------
OPERATION_COLOURS = ["#dbe8f6", "#fde2c4", "#d9f0d3", "#f3d1e6", "#e6e0f5", "#fff2b3", "#d0ecec"]
SKIP_COLOUR = "#c0392b"
BOX_FONT = 8  # points: the box text stays readable when a 9-inch drawing is shown 800 pixels wide
ARCHITECTURE_GAP = 0.4  # inches between two rows of boxes: the arrows between levels and the skip arcs


def _runs(levels):
    """Split the boxes into runs of consecutive boxes on one resolution level: [(level, [box index, ...]), ...]."""
    runs = []
    for index, level in enumerate(levels):
        if runs and runs[-1][0] == level:
            runs[-1][1].append(index)
        else:
            runs.append((level, [index]))
    return runs


def architecture_columns(levels):
    """The column of each box, in box widths: a U whose arms step half a column per level.

    Boxes one after another on one level sit side by side (a pool, then its convolutions). A run's second box (its
    only one if alone) sits half a column right of the box before the run, so the run's first box sits half a column
    left of it, one row down or up: the encoder steps down, the decoder up. A run that would come within one free
    column of a box already on its row moves right until it does not: the decoder's arm clears the encoder's.
    """
    columns, placed, last = [0.0] * len(levels), {}, -0.5
    for level, run in _runs(levels):
        start = last + 0.5 - (len(run) > 1)
        while any(abs(start + k - other) < 2 for k in range(len(run)) for other in placed.get(level, ())):
            start += 0.5
        for k, index in enumerate(run):
            columns[index] = start + k
        placed.setdefault(level, []).extend(start + k for k in range(len(run)))
        last = start + len(run) - 1
    return [column - min(columns) for column in columns]


def _edges(source, target, width, tall):
    """Where the main path's arrow leaves ``source`` and meets ``target`` (box centres): the facing sides on one
    row, else the middle of the bottom or top edges."""
    (x0, y0), (x1, y1) = source, target
    if y0 == y1:
        side = width / 2 if x1 > x0 else -width / 2
        return (x0 + side, y0), (x1 - side, y1)
    edge = tall / 2 if y1 > y0 else -tall / 2
    return (x0, y0 + edge), (x1, y1 - edge)


def architecture_boxes(calls, x):
    """The boxes of a traced forward (``trace_blocks``), the input first: each one's operation, lines of text (name,
    the concatenated channels if it reads several boxes, output shape), resolution level and source boxes."""
    shapes = [(1,) + tuple(x.shape[1:])] + [shape for _, _, shape, _ in calls]  # box 0 is the input, call i box i+1
    names = ["input"] + [name for name, _, _, _ in calls]
    texts = ["image"] + [text for _, text, _, _ in calls]
    sources = [set()] + [{source + 1 for source in sources} for _, _, _, sources in calls]
    levels = [int(round(np.log2(x.shape[2] / shape[2]))) for shape in shapes]
    lines = [[name] + ([f"cat {'+'.join(str(shapes[s][1]) for s in sorted(read))}"] if len(read) > 1 else [])
             + ["×".join(map(str, shape[1:]))] for name, read, shape in zip(names, sources, shapes)]
    return texts, lines, levels, sources


def _arrows(ax, centres, sources, skips, width, tall):
    """The main path in black, box edge to box edge; each skip in red, an arc from the top of its source's right
    part to the top of its target's left part, rising into the gap above the row."""
    for target, read in enumerate(sources):
        for source in read - {s for s, t in skips if t == target}:
            ax.add_patch(FancyArrowPatch(*_edges(centres[source], centres[target], width, tall), arrowstyle="-|>",
                                         mutation_scale=9, linewidth=0.9, shrinkA=0, shrinkB=0, color="black"))
    rise = 0.45 * ARCHITECTURE_GAP
    for source, target in skips:
        (x0, y0), (x1, y1) = centres[source], centres[target]
        start, end = (x0 + 0.3 * width, y0 + tall / 2), (x1 - 0.36 * width, y1 + tall / 2)
        ax.add_patch(FancyArrowPatch(start, end, connectionstyle=f"arc3,rad={-2 * rise / max(end[0] - start[0], 0.1)}",
                                     arrowstyle="-|>", mutation_scale=11, linewidth=1.6, color=SKIP_COLOUR))


def architecture_png(model, x, path):
    """Each block as a box on its resolution level (rows), its name, the channels it reads and its output shape,
    coloured by its operation (legend below); the main path in black, skip connections in red over the top."""
    # Imported here, not at the top: benchmarks/zoo.py loads this file by its path for zoo_png alone, and a file
    # loaded so finds no module beside it (a script run as python docs/figures.py does).
    from model_trace import trace_blocks  # docs/model_trace.py

    calls = trace_blocks(model, x)
    texts, lines, levels, sources = architecture_boxes(calls, x)
    # Sizes in inches, from the widest line of text: the axes' data units are inches, so arcs keep their shape.
    width = max(TextPath((0, 0), line, size=BOX_FONT).get_extents().width for box in lines for line in box) / 72 + 0.1
    tall, margin = 3 * 1.3 * BOX_FONT / 72 + 0.1, 0.75  # three lines of text; room for the resolution axis
    pitch, row = width + 0.15, tall + ARCHITECTURE_GAP
    centres = [(column * pitch, -level * row) for column, level in zip(architecture_columns(levels), levels)]
    right, bottom = max(cx for cx, _ in centres) + width / 2 + 0.05, -max(levels) * row - tall / 2 - 0.2
    top = tall / 2 + ARCHITECTURE_GAP + 0.2  # the skips over the top row rise above it
    figure = Figure(figsize=(right + width / 2 + margin, top - bottom))
    ax = figure.add_axes((0, 0, 1, 1), xlim=(-width / 2 - margin, right), ylim=(bottom, top), aspect="equal")
    ax.axis("off")
    operations = list(dict.fromkeys(texts))
    colour = {text: OPERATION_COLOURS[i % len(OPERATION_COLOURS)] for i, text in enumerate(operations)}
    for (cx, cy), text, box in zip(centres, texts, lines):
        ax.add_patch(Rectangle((cx - width / 2, cy - tall / 2), width, tall, facecolor=colour[text], edgecolor="black"))
        ax.text(cx, cy, "\n".join(box), ha="center", va="center", fontsize=BOX_FONT, linespacing=1.3)
    skips = [(s, t) for t, read in enumerate(sources) for s in read if s != t - 1]
    _arrows(ax, centres, sources, skips, width, tall)
    for level in range(max(levels) + 1):  # the resolution axis: one row per level
        size = f"{x.shape[2] // 2 ** level}×{x.shape[3] // 2 ** level}"
        ax.text(-width / 2 - 0.15, -level * row, f"1/{2 ** level}\n{size}", ha="right", va="center", fontsize=9)
    ax.text(-width / 2 - 0.15, tall / 2 + 0.05, "resolution", ha="right", va="bottom", fontsize=9, style="italic")
    handles = [Patch(facecolor=colour[text], edgecolor="black", label=text) for text in operations]
    handles.append(Line2D([], [], color=SKIP_COLOUR, linewidth=1.6,
                          label="skip connection (cat a+b: the channels concatenated)"))
    figure.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0), ncol=2 if right < 6 else 3,
                  fontsize=9, frameon=False)
    parameters = sum(p.size for p in model.parameters())
    figure.suptitle(f"{type(model).__name__}: {parameters:,} parameters, {len(calls)} block calls, "
                    f"{len(skips)} skip connections\ntraced from a forward pass", y=1.0, va="bottom", fontsize=10)
    save(figure, path)


# ---------------------------------------------------------------------------------------------
# Receptive fields: backpropagate a one-hot gradient from the centre output pixel
# ---------------------------------------------------------------------------------------------
def receptive_field(dilations, size=33):
    """d(centre output)/d(input) through 3×3 convolutions of all-one weights with the given dilations."""
    x = minseg.Tensor(np.zeros((1, 1, size, size), np.float32), requires_grad=True)
    weight = minseg.Tensor(np.ones((1, 1, 3, 3), np.float32))
    y = x
    for dilation in dilations:
        y = F.conv2d(y, weight, padding=dilation, dilation=dilation)
    grad = np.zeros(y.shape, np.float32)
    grad[0, 0, size // 2, size // 2] = 1
    y.backward(grad)
    return x.grad[0, 0]


def receptive_field_png(path):
    stacks = [("3 stacked 3×3 convolutions", (1, 1, 1)), ("7 stacked 3×3 convolutions", (1,) * 7),
              ("3 dilated 3×3 convolutions, dilation 1, 2, 4", (1, 2, 4))]
    figure = Figure(figsize=(12, 4.3))
    for ax, (title, dilations) in zip(figure.subplots(1, 3), stacks):
        field = receptive_field(dilations)
        rows, cols = np.nonzero(field)
        shown = ax.imshow(np.log1p(field), cmap="magma")
        figure.colorbar(shown, ax=ax, fraction=0.046, label="log(1 + number of paths)")
        ax.set_title(f"{title}\nreceptive field {np.ptp(rows) + 1}×{np.ptp(cols) + 1}, {len(dilations) * 9} weights",
                     fontsize=9)
        ax.axis("off")
    figure.suptitle("which input pixels reach the centre output pixel, and by how many paths (from backward); "
                    "dilated taps land on a lattice, so the path count alternates", fontsize=10)
    save(figure, path)


def upsampling_png(camvid, path):
    """One feature map, max-pooled, then upsampled x2 by nearest, bilinear, max-unpooling and transposed convs."""
    image, _ = camvid[0]
    grey = image.astype(np.float32).mean(-1) / 255
    grey = grey.reshape(grey.shape[0] // 2, 2, grey.shape[1] // 2, 2).mean((1, 3))  # a 48x64 "feature map"
    fine = minseg.Tensor(grey[None, None])
    pooled, indices = F.max_pool2d(fine, 2, return_indices=True)
    random_kernel = np.random.default_rng(0).normal(0.5, 0.5, (1, 1, 2, 2)).astype(np.float32)
    panels = [
        (f"the map, {grey.shape[0]}×{grey.shape[1]}", fine),
        (f"max-pooled 2×2, {pooled.shape[2]}×{pooled.shape[3]}", pooled),
        ("nearest neighbour", F.interpolate(pooled, scale_factor=2, mode="nearest")),
        ("bilinear", F.interpolate(pooled, scale_factor=2, mode="bilinear", align_corners=False)),
        ("max-unpooling (the pool's indices)", F.max_unpool2d(pooled, indices, 2)),
        ("transposed conv, 4×4 stride 2,\nFCN's bilinear initialization",
         F.conv_transpose2d(pooled, minseg.Tensor(bilinear_kernel(1, 2)), stride=2, padding=1)),
        ("transposed conv, 2×2 stride 2,\na random kernel (untrained)",
         F.conv_transpose2d(pooled, minseg.Tensor(random_kernel), stride=2)),
    ]
    figure = Figure(figsize=(12, 5.2))
    axes = figure.subplots(2, 4)
    for ax, (title, value) in zip(axes.flat, panels):
        shown = ax.imshow(value.numpy()[0, 0], cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    figure.colorbar(shown, ax=list(axes.flat), fraction=0.02, label="value (one scale for every panel)")
    figure.suptitle("one feature map brought back ×2 four ways (from a CamVid tiny frame's grey levels)", fontsize=10)
    save(figure, path)


# ---------------------------------------------------------------------------------------------
# Losses and metrics on a real prediction
# ---------------------------------------------------------------------------------------------
def _gradient_norm(loss_of, logits):
    z = minseg.Tensor(logits, requires_grad=True)
    loss_of(z).backward()
    return np.sqrt((z.grad ** 2).sum(1))[0]


def cross_entropy_vs_dice_png(image, label, logits, classes, path):
    """Per-pixel cross-entropy, the per-pixel gradient of cross-entropy and of soft Dice, and who gets it."""
    target = minseg.Tensor(label[None])
    per_pixel = F.cross_entropy(minseg.Tensor(logits), target, reduction="none").numpy()[0]
    grad_ce = _gradient_norm(lambda z: F.cross_entropy(z, target), logits)
    grad_dice = _gradient_norm(lambda z: F.dice_loss(z, target), logits)
    figure = Figure(figsize=(14, 7.6))
    axes = figure.subplots(2, 3)
    figure.subplots_adjust(wspace=0.3, hspace=0.35)
    axes[0, 0].imshow(image)
    axes[0, 1].imshow(viz.colorize(label, len(classes), layouts.CAMVID_COLORS))
    shown = axes[0, 2].imshow(per_pixel, cmap="viridis")
    figure.colorbar(shown, ax=axes[0, 2], fraction=0.035)
    top = max(np.percentile(grad / grad.mean(), 99) for grad in (grad_ce, grad_dice))  # one scale for both maps
    for ax, grad, name in ((axes[1, 0], grad_ce, "cross-entropy"), (axes[1, 1], grad_dice, "1 − soft Dice")):
        shown = ax.imshow(grad / grad.mean(), cmap="magma", vmin=0, vmax=top)
        figure.colorbar(shown, ax=ax, fraction=0.035)
        ax.set_title(f"|∂({name})/∂logits| per pixel\n(÷ its mean)", fontsize=9)
    titles = ["validation image", "ground truth", f"per-pixel cross-entropy\n(mean {per_pixel.mean():.3f})"]
    for ax, title in zip(axes[0], titles):
        ax.set_title(title, fontsize=9)
    for ax in list(axes[0]) + list(axes[1, :2]):
        ax.axis("off")
    present = np.argsort(-np.bincount(label.ravel(), minlength=len(classes)))
    present = [c for c in present if (label == c).any()][:10]
    shares = [[(label == c).mean() for c in present]] + [[grad[label == c].sum() / grad.sum() for c in present]
                                                         for grad in (grad_ce, grad_dice)]
    for offset, share, name in zip((-0.27, 0, 0.27), shares, ("pixels", "CE gradient", "Dice gradient")):
        axes[1, 2].bar(np.arange(len(present)) + offset, share, width=0.27, label=name)
    axes[1, 2].set_xticks(range(len(present)), [classes[c] for c in present], rotation=60, fontsize=7)
    axes[1, 2].set_title("share of the pixels and of each\ngradient, by true class", fontsize=9)
    axes[1, 2].legend(fontsize=8)
    class_legend(figure, [label], classes, layouts.CAMVID_COLORS)
    save(figure, path)
    smallest = present[-1]
    print(f"cross_entropy_vs_dice: {classes[smallest]} holds {shares[0][-1]:.2%} of the pixels, "
          f"{shares[1][-1]:.2%} of the cross-entropy gradient, {shares[2][-1]:.2%} of the Dice gradient")


def iou_dice_png(image, label, prediction, classes, path):
    """For the largest and a small class: true positives, false positives, false negatives, IoU and Dice."""
    cm = metrics.confusion_matrix(prediction, label, len(classes))
    iou, dice = metrics.per_class_iou(cm), metrics.per_class_dice(cm)
    counts = np.bincount(label.ravel(), minlength=len(classes))
    hit = [c for c in np.argsort(counts) if counts[c] and cm[c, c]]
    chosen = [hit[-1], hit[0]] if len(hit) > 1 else hit * 2
    figure = Figure(figsize=(12, 3.4))
    axes = figure.subplots(1, 3)
    axes[0].imshow(image)
    axes[0].set_title("validation image", fontsize=9)
    for ax, c in zip(axes[1:], chosen):
        truth, guess = label == c, prediction == c
        picture = 0.35 * image.astype(np.float32).mean(-1, keepdims=True).repeat(3, -1) / 255
        for mask, colour in ((truth & guess, (0.1, 0.8, 0.2)), (guess & ~truth, (0.9, 0.15, 0.1)),
                             (truth & ~guess, (0.15, 0.35, 1.0))):
            picture[mask] = colour
        ax.imshow(picture)
        tp, fp, fn = (truth & guess).sum(), (guess & ~truth).sum(), (truth & ~guess).sum()
        ax.set_title(f"{classes[c]}: TP {tp} (green), FP {fp} (red), FN {fn} (blue)\n"
                     f"IoU {iou[c]:.3f}, Dice {dice[c]:.3f}", fontsize=9)
        print(f"iou_dice: {classes[c]} TP {tp} FP {fp} FN {fn} IoU {iou[c]:.3f} Dice {dice[c]:.3f}")
    for ax in axes:
        ax.axis("off")
    save(figure, path)


def naive_vs_unet_png(images, labels, predictions, classes, path):
    """The same validation frames: image, truth, the naive model's and UNet's predictions."""
    columns = ["image", "ground truth"] + list(predictions)
    figure = Figure(figsize=(3.2 * len(columns), 2.5 * len(images)))
    axes = figure.subplots(len(images), len(columns), squeeze=False)
    for row, (image, label) in enumerate(zip(images, labels)):
        pictures = [image, viz.colorize(label, len(classes), layouts.CAMVID_COLORS)]
        pictures += [viz.colorize(p[row], len(classes), layouts.CAMVID_COLORS) for p in predictions.values()]
        for column, (ax, picture) in enumerate(zip(axes[row], pictures)):
            ax.imshow(picture)
            title = columns[column] if row == 0 else ""
            if column >= 2:
                prediction = list(predictions.values())[column - 2][row]
                title += f"\npixel accuracy {(prediction == label).mean():.3f}"
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    class_legend(figure, list(labels) + list(predictions.values()), classes, layouts.CAMVID_COLORS, columns=6)
    save(figure, path)


# ---------------------------------------------------------------------------------------------
# The fully connected CRF on a prediction (docs/crf.md, the history table's DeepLab row)
# ---------------------------------------------------------------------------------------------
def crf_png(image, label, probabilities, classes, path, model_name):
    """A CamVid image, the model's prediction, the CRF-refined one (``CRF_OPTIONS``) and the truth, with the pixel
    accuracy and the accuracy within 3 pixels of the label edges, and a legend of the classes shown."""
    raw = probabilities.argmax(axis=0)
    refined = dense_crf(probabilities, image, **CRF_OPTIONS).argmax(axis=0)
    titles = []
    for title, ids in ((f"{model_name}: raw prediction", raw), ("after the CRF", refined)):
        scores = f"pixel accuracy {(ids == label).mean():.3f}\nwithin 3 px of an edge " \
                 f"{metrics.boundary_accuracy(ids, label, 3):.3f}"
        print(f"crf: {title}: {scores.replace(chr(10), ', ')}")
        titles.append(f"{title}\n{scores}")
    colors = layouts.CAMVID_COLORS
    pictures = [image] + [viz.colorize(ids, len(classes), colors) for ids in (raw, refined, label)]
    figure = Figure(figsize=(13, 4))
    for ax, title, picture in zip(figure.subplots(1, 4), ["image", *titles, "ground truth"], pictures):
        ax.imshow(picture)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    shown = np.unique(np.concatenate([raw.ravel(), refined.ravel(), label.ravel()]))
    handles = [Rectangle((0, 0), 1, 1, color=np.asarray(colors[c]) / 255) for c in shown]
    figure.legend(handles, [classes[c] for c in shown], loc="lower center", ncol=min(len(shown), 8), fontsize=8,
                  frameon=False, bbox_to_anchor=(0.5, -0.02))
    save(figure, path)


def crf_probabilities(checkpoint, image):
    """The softmax (C, H, W) of a ``minseg train`` checkpoint's model on one uint8 image, and the model's name."""
    predictor = Predictor.from_checkpoint(checkpoint)
    scores = predictor.logits(predictor.normalize(image)).numpy()[0].astype(np.float64)
    model = load_checkpoint(checkpoint)["run"]["model"]
    name = model["name"] + (f" {model['options']['encoder']}" if "encoder" in model.get("options", {}) else "")
    return softmax(scores), name


# ---------------------------------------------------------------------------------------------
# The zoo: mean IoU against training time, from docs/zoo.md
# ---------------------------------------------------------------------------------------------
def _number(text):
    match = re.search(r"-?\d[\d,]*\.?\d*", text)
    return float(match.group().replace(",", "")) if match else None


def _tables(markdown):
    """Each Markdown table of ``markdown`` as a list of rows of stripped cells (the header first)."""
    tables, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.strip().startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def zoo_points(markdown):
    """(x heading, y heading, [(model, training time, mean IoU)]) from the first table with both columns."""
    for header, _, *rows in (table for table in _tables(markdown) if len(table) >= 2):
        lowered = [cell.lower() for cell in header]
        time_column = next((i for i, cell in enumerate(lowered) if "training time" in cell), None)
        iou_column = next((i for i, cell in enumerate(lowered) if "mean iou" in cell), None)
        if time_column is None or iou_column is None:
            continue
        points = [(row[0].strip("*` "), _number(row[time_column]), _number(row[iou_column]))
                  for row in rows if len(row) == len(header)]
        return header[time_column], header[iou_column], [p for p in points if None not in p]
    raise ValueError("zoo_points: found no table with a 'training time' and a 'mean IoU' column")


NOISE = 0.01  # mean IoU differences zoo.md reads as noise (one seed, 20 validation images)


def on_resnet18(name):
    """Whether zoo row ``name`` starts from a ResNet-18 encoder (benchmarks/zoo.py: the smp family, FCN, PointRend)."""
    return name.endswith("_resnet18") or name in ("fcn8s", "pointrend")


def label_offsets(points, min_gap=0.0065):
    """Vertical text offsets (in mean IoU) that keep labels of nearby points from overlapping, in one sweep."""
    placed, offsets = [], {}
    for name, x, y in sorted(points, key=lambda point: point[2]):
        text_y = y
        for other_x, other_y in placed:
            if abs(np.log10(x) - np.log10(other_x)) < 0.25 and text_y - other_y < min_gap:
                text_y = other_y + min_gap
        placed.append((x, text_y))
        offsets[name] = text_y - y
    return offsets


def zoo_png(zoo, path):
    if not zoo.is_file():
        print(f"note: {zoo} does not exist yet: skipping {path.name} (python benchmarks/zoo.py writes it)")
        return
    x_heading, y_heading, points = zoo_points(zoo.read_text(encoding="utf-8"))
    figure = Figure(figsize=(8.5, 5.8))
    ax = figure.add_subplot()
    offsets = label_offsets(points)
    for name, x, y in points:
        encoder = on_resnet18(name)
        ax.errorbar(x, y, yerr=NOISE, fmt="o" if encoder else "s", color="#2c7fb8" if encoder else "#d95f0e",
                    capsize=2, markersize=5, linewidth=0.8)
        ax.annotate(name, (x, y + offsets[name]), textcoords="offset points", xytext=(6, -3), fontsize=8)
    naive = [y for name, _, y in points if name == "naive"]
    if naive:
        ax.axhspan(naive[0] - NOISE, naive[0] + NOISE, color="grey", alpha=0.15, linewidth=0)
    ax.errorbar([], [], yerr=[], fmt="o", color="#2c7fb8", label="on a ResNet-18 encoder")
    ax.errorbar([], [], yerr=[], fmt="s", color="#d95f0e", label="from scratch, no encoder")
    ax.fill_between([], [], color="grey", alpha=0.15, label=f"naive ± {NOISE} (bars: ± {NOISE}, one seed's noise)")
    times = [x for _, x, _ in points]
    if times and min(times) > 0 and max(times) > 10 * min(times):
        ax.set_xscale("log")  # the models' training times span orders of magnitude
    ax.set_xlabel(x_heading)
    ax.set_ylabel(y_heading)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"the zoo: {len(points)} models, one recipe (from {zoo.name})", fontsize=10)
    save(figure, path)


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------
def make_figures(data, membrane_root, out, zoo, settings, untrained_only=False, crf_checkpoint=CRF_CHECKPOINT):
    camvid = layouts.fastai(data)
    train, valid = camvid.split(valid_every=5)
    if settings["train_images"] is not None:
        train, valid = train.subset(range(settings["train_images"])), valid.subset(range(4))
    membrane = layouts.membrane(membrane_root)
    four_tasks_png(camvid, out / "four_tasks.png")
    task_png(camvid, membrane, out / "task.png")
    one_hot_png(camvid, out / "one_hot.png")
    x = np.zeros((1, 3) + camvid.images.shape[1:3], np.float32)
    minseg.manual_seed(0)
    naive = Naive(camvid.num_classes, widths=settings["naive_widths"])
    unet = PaperUNet(camvid.num_classes, base=settings["unet_base"])
    architecture_png(naive, x, out / "architecture_naive.png")
    architecture_png(unet, x, out / "architecture_unet.png")
    receptive_field_png(out / "receptive_field.png")
    upsampling_png(camvid, out / "upsampling.png")
    zoo_png(zoo, out / "zoo.png")
    if untrained_only:
        return
    naive_learner, stats = train_model(naive, train, valid, settings)
    unet_learner, _ = train_model(unet, train, valid, settings)
    shown = viz.spread_indices(len(valid), 3)
    images, labels = valid.images[shown], valid.labels[shown]
    logits = logits_of(unet_learner, images, stats)
    cross_entropy_vs_dice_png(images[0], labels[0], logits[:1], camvid.classes, out / "cross_entropy_vs_dice.png")
    iou_dice_png(images[0], labels[0], logits[0].argmax(0), camvid.classes, out / "iou_dice.png")
    predictions = {"naive model": logits_of(naive_learner, images, stats).argmax(1), "UNet": logits.argmax(1)}
    naive_vs_unet_png(images, labels, predictions, camvid.classes, out / "naive_vs_unet.png")
    if settings is FAST:  # the fast mode only proves the drawing: the tiny UNet's softmax stands in
        crf_png(images[0], labels[0], softmax(logits[0]), camvid.classes, out / "crf.png", "UNet (tiny)")
    elif crf_checkpoint.is_file():
        probabilities, name = crf_probabilities(crf_checkpoint, images[0])
        crf_png(images[0], labels[0], probabilities, camvid.classes, out / "crf.png", name)
    else:
        print(f"note: {crf_checkpoint} does not exist: skipping crf.png (docs/crf.md says how to train it)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python docs/figures.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="tiny models and a few steps (checks the drawing only)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder the PNGs go to; None: docs/img/, or with --fast a new temporary folder")
    parser.add_argument("--data", type=Path, default=DATA / "camvid_tiny", help="CamVid tiny (fastai layout)")
    parser.add_argument("--membrane", type=Path, default=DATA / "membrane", help="the ISBI 2012 membrane slices")
    parser.add_argument("--zoo", type=Path, default=ROOT / "docs" / "zoo.md", help="the zoo table to plot")
    parser.add_argument("--crf-checkpoint", type=Path, default=CRF_CHECKPOINT,
                        help="the DeepLab v2 run whose prediction crf.png refines (docs/crf.md)")
    parser.add_argument("--untrained", action="store_true",
                        help="redraw only the figures that need no trained model: " + ", ".join(UNTRAINED))
    args = parser.parse_args(argv)
    for flag, folder in (("--data", args.data), ("--membrane", args.membrane)):
        if not folder.is_dir():
            print(f"error: {flag} {folder}: no such folder; pass the dataset's folder", file=sys.stderr)
            return 2
    if args.out is None:  # the fast mode's drawings are checks, never the committed images
        args.out = Path(tempfile.mkdtemp(prefix="minseg-figures-")) if args.fast else ROOT / "docs" / "img"
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    make_figures(args.data, args.membrane, args.out, args.zoo, FAST if args.fast else FULL, args.untrained,
                 args.crf_checkpoint)
    mode = ("fast" if args.fast else "full") + (" (untrained figures only)" if args.untrained else "")
    print(f"{mode} mode: {time.perf_counter() - start:.0f} s")
    print(f"the figures are in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
