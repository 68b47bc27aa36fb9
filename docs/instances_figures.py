"""The figures of the course page on instances and panoptic segmentation, drawn by minseg from its own code.

    python docs/instances_figures.py                  # the figures that need no trained model, into docs/img/
    python examples/shapes_panoptic.py --save runs/panoptic_fpn.ckpt     # train the example's Panoptic FPN, keep it
    python docs/instances_figures.py --checkpoint runs/panoptic_fpn.ckpt  # the same figures and its predictions
                                                                          # (predictions.png)

Every picture comes from the library: the shapes from ``ShapesDataset``, the anchors from ``AnchorGenerator``,
the surviving boxes from ``minseg.functional.nms``, the sample points and the pooled values from
``minseg.functional.roi_align``, the panoptic maps from ``panoptic_from_target`` and the model's own
``merge_panoptic``, coloured by ``minseg.viz_instances``. Each figure is a function below named after the file it
writes. The trained model is the example's own, read from the checkpoint its ``--save`` writes
(``InstancePredictor.from_checkpoint``), so the predictions figure shows the recipe the page's ablation table
measures, drawn by ``show_instance_results``. The script prints every number the page quotes.
"""
import argparse
import functools
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

import minseg.functional as F
from minseg.checkpoint import CheckpointError
from minseg.data.shapes import ShapesDataset
from minseg.detection import AnchorGenerator, panoptic_from_target
from minseg.instance_predict import InstancePredictor
from minseg.viz_instances import (
    VOID_COLOR,
    category_legend,
    instances_rgb,
    label_segments,
    panoptic_rgb,
    segment_colors,
    show_instance_results,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "shapes_panoptic.py"
UNTRAINED = ["panoptic_tasks.png", "anchors.png", "nms.png", "roi_align.png"]
FIGURES = UNTRAINED + ["predictions.png"]
MAX_BYTES = 150 * 1024  # every image stays under this size
SIZE = 128  # the example's images are 128 x 128
# The image the page's first figures show: several shapes, two of one class overlapping (seed 0, image 12).
SHOWN = dict(size=(SIZE, SIZE), num_instances=(4, 6), seed=0)
SHOWN_INDEX = 12
CATEGORY_COLOURS = np.array([(150, 200, 245), (150, 120, 70), (230, 60, 60), (60, 160, 60), (70, 90, 220)],
                            np.uint8)  # sky, ground, circle, square, triangle: the semantic map's colours


def save(figure, path):
    """Write ``figure`` as a PNG atomically, under this page's MAX_BYTES (``docs/figures.py``'s ``save``)."""
    load_script(ROOT / "docs" / "figures.py").save(figure, path, max_bytes=MAX_BYTES)


def shown_image():
    """The page's shapes image and its target."""
    return ShapesDataset(SHOWN_INDEX + 1, **SHOWN)[SHOWN_INDEX]


# ---------------------------------------------------------------------------------------------
# Colouring maps (instances, thing segments and the legend: minseg.viz_instances)
# ---------------------------------------------------------------------------------------------
def semantic_rgb(semantic):
    """A category map (H, W) as RGB in [0, 1]: CATEGORY_COLOURS, void black."""
    table = np.concatenate([CATEGORY_COLOURS, [VOID_COLOR]]).astype(np.float64) / 255
    return table[np.where(semantic < 0, len(CATEGORY_COLOURS), semantic)]


# ---------------------------------------------------------------------------------------------
# Semantic, instance, panoptic: one image
# ---------------------------------------------------------------------------------------------
def panoptic_tasks_png(path):
    """One shapes image, its semantic map, its instances coloured apart and its panoptic map."""
    image, target = shown_image()
    dataset = ShapesDataset
    panoptic = panoptic_from_target(target, dataset.num_stuff)
    rgb, segments = panoptic_rgb(panoptic, dataset.num_stuff, CATEGORY_COLOURS)
    figure = Figure(figsize=(12, 3.6))
    axes = figure.subplots(1, 4)
    figure.subplots_adjust(wspace=0.06)
    axes[0].imshow(image)
    axes[1].imshow(semantic_rgb(target["semantic"]))
    axes[2].imshow(instances_rgb(target["masks"]))
    axes[3].imshow(rgb)
    label_segments(axes[3], segments, dataset.categories, dataset.num_stuff)
    names = [dataset.things[label - 1] for label in target["labels"]]
    counts = {name: names.count(name) for name in dataset.things if name in names}
    titles = [f"a ShapesDataset image ({image.shape[0]}×{image.shape[1]})\n"
              + ", ".join(f"{n} {name}{'s' if n > 1 else ''}" for name, n in counts.items()),
              "semantic: a category per pixel\n(two circles are one 'circle' region)",
              f"instance: a mask per object\n({len(names)} masks; the stuff has none)",
              "panoptic: (category, instance) per pixel\nstuff once, every thing apart"]
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    category_legend(figure, dataset.categories, CATEGORY_COLOURS)
    save(figure, path)
    print(f"panoptic_tasks: {len(names)} instances ({counts}), {len(segments)} panoptic segments")


# ---------------------------------------------------------------------------------------------
# Anchors
# ---------------------------------------------------------------------------------------------
RECIPE_ANCHOR_SIZES = (8, 16, 32, 64, 128)  # examples/shapes_panoptic.py's anchors on P2 ... P6 at 128 x 128
ASPECT_RATIOS = (0.5, 1.0, 2.0)
STRIDES = (4, 8, 16, 32, 64)


def recipe_anchors(size=SIZE):
    """The recipe's AnchorGenerator and its anchors per level for one size x size image."""
    generator = AnchorGenerator(tuple((s,) for s in RECIPE_ANCHOR_SIZES), (ASPECT_RATIOS,))
    grids = [(size // stride, size // stride) for stride in STRIDES]
    per_level = generator.grid_anchors(grids, [(stride, stride) for stride in STRIDES])
    return generator, grids, per_level


def anchors_png(path, level=2, position=(64, 64)):
    """Left: the cell anchors of every level at one position. Right: one level's anchors at a few positions and
    every position of its grid."""
    image, _ = shown_image()
    generator, grids, per_level = recipe_anchors()
    per_location = generator.num_anchors_per_location()
    colours = segment_colors(len(STRIDES), seed=3)
    figure = Figure(figsize=(10, 5))
    left, right = figure.subplots(1, 2)
    for ax in (left, right):
        ax.imshow(image, alpha=0.45, extent=(0, SIZE, SIZE, 0))
    x, y = position
    for index, (anchors, (height, width), stride) in enumerate(zip(per_level, grids, STRIDES)):
        cell = ((y // stride) * width + x // stride) * per_location[index]
        for x1, y1, x2, y2 in anchors[cell:cell + per_location[index]]:
            left.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colours[index],
                                     linewidth=1.4))
        left.plot([], [], color=colours[index],
                  label=f"P{index + 2}: stride {stride}, size {RECIPE_ANCHOR_SIZES[index]}")
    left.plot([x], [y], "k+", markersize=10)
    left.legend(fontsize=7, loc="lower left", framealpha=0.8)
    left.set_title(f"the {sum(per_location)} anchors centred on ({x}, {y}):\n"
                   f"{len(ASPECT_RATIOS)} ratios (h/w = {', '.join(map(str, ASPECT_RATIOS))}) on each level",
                   fontsize=9)
    anchors, (height, width), stride = per_level[level], grids[level], STRIDES[level]
    centres_x, centres_y = np.meshgrid(np.arange(width) * stride, np.arange(height) * stride)
    right.plot(centres_x.ravel(), centres_y.ravel(), ".", color="black", markersize=3)
    for row, col in ((1, 1), (4, 3), (6, 6)):
        cell = (row * width + col) * per_location[level]
        for x1, y1, x2, y2 in anchors[cell:cell + per_location[level]]:
            right.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colours[level],
                                      linewidth=1.4))
    right.set_title(f"P{level + 2}: {height}×{width} positions × {per_location[level]} = {len(anchors)} anchors\n"
                    f"(three positions drawn; dots: every position, stride {stride})", fontsize=9)
    for ax in (left, right):
        ax.set_xlim(-SIZE / 2, 1.5 * SIZE)
        ax.set_ylim(1.5 * SIZE, -SIZE / 2)
        ax.add_patch(Rectangle((0, 0), SIZE, SIZE, fill=False, edgecolor="black", linewidth=0.8, linestyle=":"))
        ax.set_xticks([0, SIZE])
        ax.set_yticks([0, SIZE])
    save(figure, path)
    total = sum(len(a) for a in per_level)
    print(f"anchors: {per_location} per position on P2..P6, {[len(a) for a in per_level]} per level, "
          f"{total} for a {SIZE}x{SIZE} image")


# ---------------------------------------------------------------------------------------------
# Non-maximum suppression
# ---------------------------------------------------------------------------------------------
def scored_boxes(boxes, per_box=5, seed=0):
    """``per_box`` jittered copies of every box (N, 4) with made-up scores: what a detector proposes around each
    object. Returns (boxes (N·per_box, 4) float32, scores, index of the box each came from)."""
    rng = np.random.default_rng(seed)
    boxes = np.repeat(np.asarray(boxes, np.float32), per_box, axis=0)
    sizes = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)  # (width, height, width, height)
    jittered = boxes + rng.normal(0, 0.07, boxes.shape).astype(np.float32) * sizes
    scores = rng.uniform(0.3, 0.95, len(boxes)).astype(np.float32)
    return jittered, scores, np.repeat(np.arange(len(boxes) // per_box), per_box)


def nms_png(path, iou_threshold=0.5):
    """The jittered, scored boxes around the shown image's objects, before and after ``F.nms``."""
    image, target = shown_image()
    boxes, scores, _ = scored_boxes(target["boxes"])
    keep = F.nms(boxes, scores, iou_threshold)
    figure = Figure(figsize=(10, 5.2))
    axes = figure.subplots(1, 2)
    colour_map = _score_colours(scores)
    for ax, shown in ((axes[0], np.arange(len(boxes))), (axes[1], keep)):
        ax.imshow(image, alpha=0.5)
        for k in shown:
            x1, y1, x2, y2 = boxes[k]
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour_map[k], linewidth=1.2))
        ax.axis("off")
    for k in keep:
        axes[1].text(boxes[k, 0], boxes[k, 1] - 1, f"{scores[k]:.2f}", color=colour_map[k], fontsize=7,
                     bbox=dict(facecolor="white", alpha=0.7, linewidth=0, pad=0.5))
    axes[0].set_title(f"{len(boxes)} scored boxes (darker red: higher score)", fontsize=9)
    axes[1].set_title(f"after nms(boxes, scores, iou_threshold={iou_threshold}): {len(keep)} kept", fontsize=9)
    save(figure, path)
    print(f"nms: {len(boxes)} boxes around {len(target['boxes'])} objects, {len(keep)} kept at IoU "
          f"{iou_threshold}")


def _score_colours(scores):
    low, high = scores.min(), scores.max()
    share = (scores - low) / max(high - low, 1e-6)
    return [(0.4 + 0.6 * s, 0.5 * (1 - s), 0.5 * (1 - s)) for s in share]


# ---------------------------------------------------------------------------------------------
# RoIAlign, and the RoIPool it replaces
# ---------------------------------------------------------------------------------------------
def _round(value):
    """To the nearest integer, halves away from zero (C's ``round``, which torchvision's kernel calls)."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def roi_pool(feature, box, output_size):
    """RoIPool (Fast R-CNN) of one (H, W) map, written from torchvision's CPU kernel: the box rounded to whole
    pixels, cut into output_size² bins whose edges are rounded out (floor, ceil), each bin's maximum."""
    height, width = feature.shape
    x1, y1, x2, y2 = (_round(v) for v in box)
    bin_h, bin_w = max(y2 - y1 + 1, 1) / output_size, max(x2 - x1 + 1, 1) / output_size
    pooled = np.zeros((output_size, output_size), feature.dtype)
    for i in range(output_size):
        rows = slice(min(max(math.floor(i * bin_h) + y1, 0), height), min(max(math.ceil((i + 1) * bin_h) + y1, 0),
                                                                          height))
        for j in range(output_size):
            cols = slice(min(max(math.floor(j * bin_w) + x1, 0), width),
                         min(max(math.ceil((j + 1) * bin_w) + x1, 0), width))
            region = feature[rows, cols]
            pooled[i, j] = region.max() if region.size else 0
    return pooled


def sample_points(box, output_size, sampling_ratio):
    """RoIAlign's sample points (x, y) of ``box`` in the box's own coordinates (``aligned=True``: a pixel i
    covers [i, i + 1] and its value sits at its centre), and the bin edges along x and y."""
    x1, y1, x2, y2 = box
    edges_x = np.linspace(x1, x2, output_size + 1)
    edges_y = np.linspace(y1, y2, output_size + 1)
    offsets = (np.arange(output_size * sampling_ratio) + 0.5) / (output_size * sampling_ratio)
    xs, ys = x1 + offsets * (x2 - x1), y1 + offsets * (y2 - y1)
    return np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2), edges_x, edges_y


def roi_align_png(path, box=(1.3, 0.8, 5.6, 4.6), output_size=2, sampling_ratio=2, grid=7):
    """Left: RoIAlign's bins and sample points on a feature map, one point's four neighbours. Middle: RoIPool's
    rounded box and bins. Right: a 1×1 pooled value of a ramp as the box slides by fractions of a pixel."""
    figure = Figure(figsize=(14, 4.6))
    left, middle, right = figure.subplots(1, 3)
    for ax in (left, middle):
        for i in range(grid + 1):
            ax.plot([0, grid], [i, i], color="0.8", linewidth=0.8)
            ax.plot([i, i], [0, grid], color="0.8", linewidth=0.8)
        centres = np.arange(grid) + 0.5
        ax.plot(*np.meshgrid(centres, centres), ".", color="0.6", markersize=3)
        ax.set_xlim(-0.2, grid + 0.2)
        ax.set_ylim(grid + 0.2, -0.2)
        ax.set_aspect("equal")
        ax.set_xticks(range(grid + 1))
        ax.set_yticks(range(grid + 1))
        ax.tick_params(labelsize=7)
        ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, edgecolor="tab:blue",
                               linewidth=2))
    points, edges_x, edges_y = sample_points(box, output_size, sampling_ratio)
    for x in edges_x[1:-1]:
        left.plot([x, x], [box[1], box[3]], color="tab:blue", linewidth=1, linestyle="--")
    for y in edges_y[1:-1]:
        left.plot([box[0], box[2]], [y, y], color="tab:blue", linewidth=1, linestyle="--")
    left.plot(points[:, 0], points[:, 1], "o", color="tab:red", markersize=4)
    px, py = points[0]
    for cx in (math.floor(px - 0.5) + 0.5, math.floor(px - 0.5) + 1.5):
        for cy in (math.floor(py - 0.5) + 0.5, math.floor(py - 0.5) + 1.5):
            left.plot([px, cx], [py, cy], color="tab:red", linewidth=0.8)
            left.plot([cx], [cy], "s", color="tab:red", markersize=3)
    left.set_title(f"RoIAlign: box {tuple(box)}, {output_size}×{output_size} bins,\n"
                   f"{sampling_ratio}×{sampling_ratio} samples per bin, each bilinear in 4 pixels", fontsize=9)
    x1, y1, x2, y2 = (_round(v) for v in box)
    bin_w, bin_h = (x2 - x1 + 1) / output_size, (y2 - y1 + 1) / output_size
    for i in range(output_size):
        for j in range(output_size):
            cx0, cx1 = math.floor(j * bin_w) + x1, math.ceil((j + 1) * bin_w) + x1
            cy0, cy1 = math.floor(i * bin_h) + y1, math.ceil((i + 1) * bin_h) + y1
            middle.add_patch(Rectangle((cx0 + 0.06, cy0 + 0.06), cx1 - cx0 - 0.12, cy1 - cy0 - 0.12,
                                       facecolor=segment_colors(4, seed=1)[i * output_size + j], alpha=0.35,
                                       edgecolor="none"))
    middle.set_title(f"RoIPool: box rounded to pixels {x1}…{x2}, {y1}…{y2};\n"
                     "shaded: each bin's pixels (rounded out), max taken", fontsize=9)
    shifts, align, pool = ramp_responses()
    right.plot(shifts - shifts[0], align - align[0], color="tab:blue", label="roi_align (aligned=True)")
    right.plot(shifts - shifts[0], pool - pool[0], color="tab:orange", label="RoIPool")
    right.set_xlabel("how far the 4-pixel-wide box has moved right (pixels)", fontsize=8)
    right.set_ylabel("change of its 1×1 pooled value\non the ramp f(row, column) = column", fontsize=8)
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    right.tick_params(labelsize=7)
    right.set_title("slide the box: RoIAlign follows it,\nRoIPool jumps a whole pixel at a time", fontsize=9)
    save(figure, path)


def ramp_responses(width=4.0, grid=12):
    """x1 shifts, and the 1×1 RoIAlign and RoIPool outputs of a [x1, 2, x1 + width, 6] box on the ramp
    f(row, column) = column."""
    ramp = np.tile(np.arange(grid, dtype=np.float32), (grid, 1))
    shifts = np.round(np.arange(1.0, 4.01, 0.05), 2)
    boxes = np.array([[0, x, 2, x + width, 6] for x in shifts], np.float32)
    align = F.roi_align(ramp[None, None], boxes, 1, sampling_ratio=2, aligned=True).numpy().reshape(-1)
    pool = np.array([roi_pool(ramp, box[1:], 1)[0, 0] for box in boxes])
    return shifts, align, pool


# ---------------------------------------------------------------------------------------------
# A trained model's predictions
# ---------------------------------------------------------------------------------------------
@functools.cache
def load_script(path):
    """The Python file ``path`` (a script beside the package: the example, figures.py) as a module, loaded once."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_example():
    """examples/shapes_panoptic.py as a module (its recipe, training loop and normalization)."""
    return load_script(EXAMPLE)


def predictions_png(predictor, dataset, path, shown=3):
    """``show_instance_results`` of ``predictor`` on the first ``shown`` images of ``dataset`` beside their ground
    truth. ``predictor``: an ``InstancePredictor`` (or anything called on one uint8 image that returns its result
    dict in the instance conventions and has ``things``, ``stuff``, ``score_threshold`` and ``mask_threshold``)."""
    images = np.stack([dataset[i][0] for i in range(shown)])
    targets = [dataset[i][1] for i in range(shown)]
    results = [predictor(image) for image in images]
    figure = show_instance_results(images, results, targets, things=predictor.things, stuff=predictor.stuff,
                                   score_threshold=predictor.score_threshold, mask_threshold=predictor.mask_threshold,
                                   max_rows=shown, colors=CATEGORY_COLOURS)
    save(figure, path)


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------
def make_figures(out):
    """The figures that need no trained model, into the folder ``out``."""
    panoptic_tasks_png(out / "panoptic_tasks.png")
    anchors_png(out / "anchors.png")
    nms_png(out / "nms.png")
    roi_align_png(out / "roi_align.png")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python docs/instances_figures.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="folder the PNGs go to")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a checkpoint of examples/shapes_panoptic.py's model (written by its --save): "
                             "predictions.png draws its predictions on the first held-out images")
    parser.add_argument("--seed", type=int, default=0,
                        help="the --seed the checkpoint was trained with: the held-out images are the example's")
    args = parser.parse_args(argv)
    predictor = None
    if args.checkpoint is not None:
        if not args.checkpoint.is_file():
            print(f"error: --checkpoint {args.checkpoint}: no such file; write it with python "
                  f"examples/shapes_panoptic.py --save {args.checkpoint}", file=sys.stderr)
            return 2
        try:
            predictor = InstancePredictor.from_checkpoint(args.checkpoint)
        except CheckpointError as error:
            print(f"error: --checkpoint {args.checkpoint}: {error}", file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    make_figures(args.out)
    if predictor is None:
        print("note: no --checkpoint: skipping predictions.png (the module docstring gives the commands)")
    else:
        held_out = ShapesDataset(3, size=SIZE, seed=args.seed + load_example().VALID_SEED_OFFSET)
        predictions_png(predictor, held_out, args.out / "predictions.png")
    print(f"the figures are in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
