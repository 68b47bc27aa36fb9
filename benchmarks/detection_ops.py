"""minseg's detection ops against torchvision's: the same random inputs, the same numbers out, and the time of each.

    python benchmarks/detection_ops.py            # the full table
    python benchmarks/detection_ops.py --quick    # small sizes, one timed run: checks that everything runs

For every case both libraries get the same float32 arrays: random boxes (clustered, so that NMS has overlaps to
suppress), scores, feature maps and upstream gradients. "max|diff|" is the largest absolute difference between the
two outputs (for ``roi_align``, of the output and of the input gradient); for the index-valued ops (nms,
batched_nms, anchors' equality, level assignment) it says whether the results are identical. Times are medians
of back-to-back calls after warm-up calls (``_common.median_ms``), forward only for "fwd" rows and forward plus
backward for "bwd" rows. Needs torch and torchvision (imported only here, never by minseg).
"""
import argparse
import math
from collections import OrderedDict

import numpy as np
from _common import median_ms


def random_boxes(rng, n, image_size, spread=0.0):
    """(n, 4) float32 boxes on an image of (height, width), sides from 4 pixels to half the image, clustered
    around n / 8 centres; ``spread`` > 0 lets them stick out of the image by that share of its size."""
    height, width = image_size
    centres = rng.uniform((0, 0), (width, height), (max(1, n // 8), 2))[rng.integers(0, max(1, n // 8), n)]
    centres = np.clip(centres + rng.normal(0, 6, (n, 2)), 0, (width, height))  # no box wholly outside
    sides = np.exp(rng.uniform(math.log(4), math.log(min(height, width) / 2), (n, 2)))
    boxes = np.concatenate([centres - sides / 2, centres + sides / 2], axis=1)
    low, high = -spread * np.array([width, height] * 2), (1 + spread) * np.array([width, height] * 2)
    return np.clip(boxes, low, high).astype(np.float32)


def max_abs_diff(ours, theirs):
    """max |ours − theirs|, where equal infinities and a nan in both (the IoU of two empty boxes) agree."""
    agree = (ours == theirs) | (np.isnan(ours) & np.isnan(theirs))
    with np.errstate(invalid="ignore"):
        return float(np.abs(np.where(agree, 0, ours - theirs)).max()) if ours.size else 0.0


def rois_of(rng, boxes, batch):
    return np.concatenate([rng.integers(0, batch, (len(boxes), 1)).astype(np.float32), boxes], axis=1)


# ---------------------------------------------------------------------------------------------
# Cases: each returns (max|diff| as text, minseg call, torchvision call)
# ---------------------------------------------------------------------------------------------
def nms_case(rng, n, threshold, categories=0):
    import torch
    import torchvision

    import minseg.functional as F

    boxes, scores = random_boxes(rng, n, (512, 640)), rng.random(n).astype(np.float32)
    idxs = rng.integers(0, max(categories, 1), n)
    tb, ts, ti = torch.tensor(boxes), torch.tensor(scores), torch.tensor(idxs)
    if categories:
        ours, theirs = (lambda: F.batched_nms(boxes, scores, idxs, threshold),
                        lambda: torchvision.ops.batched_nms(tb, ts, ti, threshold))
    else:
        ours, theirs = (lambda: F.nms(boxes, scores, threshold), lambda: torchvision.ops.nms(tb, ts, threshold))
    keep, expected = ours(), theirs().numpy()
    same = keep.shape == expected.shape and np.array_equal(keep, expected)
    return ("identical" if same else f"DIFFERENT ({len(keep)} vs {len(expected)} kept)"), ours, theirs


def boxes_case(rng, n, op):
    import torch
    import torchvision
    from torchvision.models.detection._utils import BoxCoder as TorchBoxCoder

    import minseg.functional as F

    a, b = random_boxes(rng, n, (512, 640)), random_boxes(rng, n, (512, 640))
    codes = rng.normal(0, 2, (n, 8)).astype(np.float32)  # two classes; some dw, dh past the clamp
    ta, tb, tcodes = torch.tensor(a), torch.tensor(b), torch.tensor(codes)
    ours_coder, theirs_coder = F.BoxCoder((10, 10, 5, 5)), TorchBoxCoder((10, 10, 5, 5))
    if op == "box_iou":
        ours, theirs = lambda: F.box_iou(a, b), lambda: torchvision.ops.box_iou(ta, tb)
    elif op == "encode":
        ours, theirs = lambda: ours_coder.encode_single(a, b), lambda: theirs_coder.encode_single(ta, tb)
    else:
        ours, theirs = (lambda: ours_coder.decode_single(codes, b),
                        lambda: theirs_coder.decode_single(tcodes, tb))
    return f"{max_abs_diff(ours(), theirs().numpy()):.2e}", ours, theirs


def roi_align_case(rng, batch, channels, size, k, output_size, scale, sampling_ratio, aligned, backward):
    import torch
    import torchvision

    import minseg.functional as F
    from minseg import Tensor

    x = rng.standard_normal((batch, channels) + size).astype(np.float32)
    image = (round(size[0] / scale), round(size[1] / scale))
    rois = rois_of(rng, random_boxes(rng, k, image, spread=0.1), batch)
    grad = rng.standard_normal((k, channels) + output_size).astype(np.float32)
    args = (output_size, scale, sampling_ratio, aligned)

    def ours():
        xm = Tensor(x, requires_grad=backward)
        y = F.roi_align(xm, rois, *args)
        if backward:
            y.backward(grad)
        return y.numpy(), xm.grad

    def theirs():
        xt = torch.tensor(x, requires_grad=backward)
        y = torchvision.ops.roi_align(xt, torch.tensor(rois), *args)
        if backward:
            y.backward(torch.tensor(grad))
        return y.detach().numpy(), None if xt.grad is None else xt.grad.numpy()

    (y, gx), (yt, gxt) = ours(), theirs()
    diff = np.abs(gx - gxt).max() if backward else np.abs(y - yt).max()
    return f"{diff:.2e}", ours, theirs


def anchors_case(rng, image_size):
    import torch
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchAnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    from minseg.detection import AnchorGenerator

    sizes, ratios = ((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5
    maps = [np.zeros((2, 1, image_size[0] // s, image_size[1] // s), np.float32) for s in (4, 8, 16, 32, 64)]
    images = np.zeros((2, 3) + image_size, np.float32)
    ours_generator, theirs_generator = AnchorGenerator(sizes, ratios), TorchAnchorGenerator(sizes, ratios)
    torch_maps, image_list = [torch.tensor(m) for m in maps], ImageList(torch.tensor(images), [image_size] * 2)

    def ours():
        return ours_generator(images, maps)

    def theirs():
        return theirs_generator(image_list, torch_maps)

    same = all(np.array_equal(a, b.numpy()) for a, b in zip(ours(), theirs()))
    return ("identical" if same else "DIFFERENT"), ours, theirs


def levels_case(rng, n):
    import torch
    from torchvision.ops.poolers import LevelMapper as TorchLevelMapper

    from minseg.detection import LevelMapper

    boxes = [random_boxes(rng, n, (800, 1024)) for _ in range(2)]
    # Boxes exactly on the boundaries between levels too: 224·2^j pixels square.
    edges = np.array([[0, 0, s, s] for s in (56, 112, 224, 448, 896)], np.float32)
    boxes.append(edges)
    torch_boxes = [torch.tensor(b) for b in boxes]
    ours_mapper, theirs_mapper = LevelMapper(2, 5), TorchLevelMapper(2, 5)

    def ours():
        return ours_mapper(boxes)

    def theirs():
        return theirs_mapper(torch_boxes)

    same = np.array_equal(ours(), theirs().numpy())
    return ("identical" if same else "DIFFERENT"), ours, theirs


def multiscale_case(rng, k, backward):
    import torch
    from torchvision.ops import MultiScaleRoIAlign as TorchMultiScaleRoIAlign

    from minseg import Tensor
    from minseg.detection import MultiScaleRoIAlign

    image_size, names = (256, 320), ["0", "1", "2", "3"]
    maps = OrderedDict((name, rng.standard_normal((2, 8, image_size[0] // s, image_size[1] // s)).astype(np.float32))
                       for name, s in zip(names, (4, 8, 16, 32)))
    boxes = [random_boxes(rng, k, image_size) for _ in range(2)]
    grad = rng.standard_normal((2 * k, 8, 7, 7)).astype(np.float32)
    ours_pooler, theirs_pooler = MultiScaleRoIAlign(names, 7, 2), TorchMultiScaleRoIAlign(names, 7, 2)

    def ours():
        inputs = OrderedDict((name, Tensor(m, requires_grad=backward)) for name, m in maps.items())
        y = ours_pooler(inputs, boxes, [image_size] * 2)
        if backward:
            y.backward(grad)
        return y.numpy(), [np.zeros_like(m) if t.grad is None else t.grad for m, t in zip(maps.values(),
                                                                                          inputs.values())]

    def theirs():
        inputs = OrderedDict((name, torch.tensor(m, requires_grad=backward)) for name, m in maps.items())
        y = theirs_pooler(inputs, [torch.tensor(b) for b in boxes], [image_size] * 2)
        if backward:
            y.backward(torch.tensor(grad))
        return y.detach().numpy(), [None if t.grad is None else t.grad.numpy() for t in inputs.values()]

    (y, grads), (yt, grads_t) = ours(), theirs()
    diff = max(np.abs(g - gt).max() for g, gt in zip(grads, grads_t)) if backward else np.abs(y - yt).max()
    return f"{diff:.2e}", ours, theirs


def cases(quick):
    """(name, function building the case) for every row of the table."""
    k, n = (16, 200) if quick else (256, 2000)
    size = (24, 32) if quick else (64, 80)
    channels = 4 if quick else 64
    rows = [
        (f"nms N={n} iou 0.5", lambda rng: nms_case(rng, n, 0.5)),
        (f"nms N={n} iou 0.7", lambda rng: nms_case(rng, n, 0.7)),
        (f"batched_nms N={n} 5 classes iou 0.5", lambda rng: nms_case(rng, n, 0.5, categories=5)),
        (f"box_iou {n}x{n}", lambda rng: boxes_case(rng, n, "box_iou")),
        (f"encode_boxes N={n} weights (10, 10, 5, 5)", lambda rng: boxes_case(rng, n, "encode")),
        (f"decode_boxes N={n}, 2 classes, weights (10, 10, 5, 5)", lambda rng: boxes_case(rng, n, "decode")),
    ]
    for output_size, scale, sampling_ratio, aligned in [((7, 7), 0.25, 2, False), ((14, 14), 0.25, -1, True),
                                                        ((7, 5), 0.125, -1, False)]:
        for backward in (False, True):
            name = (f"roi_align {'bwd' if backward else 'fwd'} K={k} C={channels} {size[0]}x{size[1]} "
                    f"out {output_size[0]}x{output_size[1]} scale {scale} sr {sampling_ratio} aligned {aligned}")
            rows.append((name, lambda rng, a=(output_size, scale, sampling_ratio, aligned, backward):
                         roi_align_case(rng, 2, channels, size, k, *a[:4], backward=a[4])))
    rows += [
        ("anchors 5 levels 512x640" if not quick else "anchors 5 levels 128x192",
         lambda rng: anchors_case(rng, (128, 192) if quick else (512, 640))),
        (f"level assignment 2x{n} boxes", lambda rng: levels_case(rng, n)),
        (f"MultiScaleRoIAlign fwd 4 levels 2x{k // 2} RoIs", lambda rng: multiscale_case(rng, k // 2, False)),
        (f"MultiScaleRoIAlign bwd 4 levels 2x{k // 2} RoIs", lambda rng: multiscale_case(rng, k // 2, True)),
    ]
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and one timed run (a rehearsal)")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per case (default 10, 1 with --quick)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 2, 0 with --quick)")
    args = parser.parse_args()
    runs = args.runs if args.runs is not None else (1 if args.quick else 10)
    warmup = args.warmup if args.warmup is not None else (0 if args.quick else 2)
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; float32; median of {runs} runs "
          f"after {warmup} warm-up runs")
    print("| case | max\\|diff\\| | minseg ms | torchvision ms |\n|---|---|---|---|")
    for index, (name, build) in enumerate(cases(args.quick)):
        diff, ours, theirs = build(np.random.default_rng(index))
        ours_ms, theirs_ms = median_ms(ours, runs, warmup), median_ms(theirs, runs, warmup)
        print(f"| {name} | {diff} | {ours_ms:.2f} | {theirs_ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()
