"""minseg.data.rle against pycocotools: RLE encoding and decoding, and polygon rasterization, pixel for pixel.

    python benchmarks/coco_rle.py [--cases 300] [--seed 0]

Random masks (uniform noise at several densities and blobby shapes, sizes 1 to 200) are encoded by both
libraries (compressed strings compared character for character) and each one's RLE is decoded by the other.
Random polygons (convex, star-shaped, self-intersecting, integer and fractional vertices, partly outside the
image, a COCO-sized image with 20 to 60 vertices, several parts united) are rasterized by both. Each row
counts the pixels where minseg and pycocotools differ, over every case of that kind.

The last rows set both against the plain definition "a pixel is inside when its centre is" (even-odd rule,
exact arithmetic on the original vertices): how far pycocotools' 1/5-pixel boundary walk lands from it,
i.e. what a simpler rasterizer would lose. Needs pycocotools (imported only here, never by minseg).
"""
import argparse

import numpy as np
from pycocotools import mask as coco_mask

from minseg.data.rle import polygons_to_mask, rle_decode, rle_encode


def random_mask(rng):
    height, width = (int(v) for v in rng.integers(1, 200, size=2))
    if rng.random() < 0.5:
        return (rng.random((height, width)) < rng.choice([0.0, 0.01, 0.3, 0.7, 1.0])).astype(np.uint8)
    ys, xs = np.mgrid[0:height, 0:width]
    mask = np.zeros((height, width), dtype=np.uint8)
    for _ in range(rng.integers(1, 5)):  # a few discs: long runs, as real masks have
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(1, max(height, width) / 2)
        mask |= ((ys - cy) ** 2 + (xs - cx) ** 2 <= r * r).astype(np.uint8)
    return mask


def random_polygons(rng, kind):
    """(polygons, height, width) of one case of ``kind``."""
    height, width = (int(v) for v in rng.integers(5, 120, size=2))
    count = int(rng.integers(3, 12))
    centre, size = np.array([width, height]) / 2, min(height, width) / 2
    if kind == "coco-sized":
        height, width, count, size = 480, 640, int(rng.integers(20, 61)), rng.uniform(10, 200)
        centre = rng.uniform([0, 0], [width, height])
    if kind in ("convex", "integer", "coco-sized", "union"):
        angles = np.sort(rng.uniform(0, 2 * np.pi, count))
        radii = size * (rng.uniform(0.3, 1.0) if kind != "coco-sized" else rng.uniform(0.5, 1.0, count))
    elif kind == "star":
        angles = np.sort(rng.uniform(0, 2 * np.pi, count))
        radii = size * rng.uniform(0.1, 1.0, count)
    elif kind == "self-intersecting":
        angles, radii = rng.uniform(0, 2 * np.pi, count), size * rng.uniform(0.1, 1.0, count)
    else:  # outside: vertices anywhere within a margin around the image
        points = rng.uniform([-20, -20], [width + 20, height + 20], size=(count, 2))
        return [points.ravel().tolist()], height, width
    points = centre + np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    if kind == "integer":
        points = np.round(points)
    polygons = [points.ravel().tolist()]
    if kind == "union":
        polygons.append((points[::-1] + rng.uniform(-size, size, 2)).ravel().tolist())
    return polygons, height, width


def centre_inside(polygons, height, width):
    """The definition: pixel (i, j) is inside when (j + 0.5, i + 0.5) is, by the even-odd rule; parts united."""
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    union = np.zeros((height, width), dtype=bool)
    for polygon in polygons:
        points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        inside = np.zeros((height, width), dtype=bool)
        for (x1, y1), (x2, y2) in zip(points, np.roll(points, -1, axis=0)):
            if y1 == y2:
                continue
            crosses = (y1 > ys) != (y2 > ys)
            inside ^= crosses & (xs < x1 + (ys - y1) * (x2 - x1) / (y2 - y1))
        union |= inside
    return union.astype(np.uint8)


def pycocotools_polygons(polygons, height, width):
    """What COCO's API does with a polygon segmentation (``annToRLE``): one RLE per part, merged, decoded."""
    return coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygons, height, width)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=300, help="cases of each kind")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    rows = []

    strings, decoded_ours, decoded_theirs, pixels = 0, 0, 0, 0
    for _ in range(args.cases):
        mask = random_mask(rng)
        theirs = coco_mask.encode(np.asfortranarray(mask))
        ours = rle_encode(mask, compressed=True)
        strings += ours["counts"] != theirs["counts"].decode("ascii")
        decoded_ours += int((rle_decode(theirs) != mask).sum())             # their string, our decoder
        decoded_theirs += int((coco_mask.decode(coco_mask.frPyObjects(rle_encode(mask), *mask.shape)) != mask).sum())
        pixels += mask.size
    rows.append(("RLE encode: strings differing", args.cases, pixels, strings))
    rows.append(("RLE decode of pycocotools' string", args.cases, pixels, decoded_ours))
    rows.append(("pycocotools' decode of our counts", args.cases, pixels, decoded_theirs))

    kinds = ("convex", "integer", "star", "self-intersecting", "outside", "coco-sized", "union")
    against_definition = []
    for kind in kinds:
        differing, cases_differing, pixels, definition, inside = 0, 0, 0, 0, 0
        for _ in range(args.cases):
            polygons, height, width = random_polygons(rng, kind)
            theirs = pycocotools_polygons(polygons, height, width)
            ours = polygons_to_mask(polygons, height, width)
            wrong = int((ours != theirs).sum())
            differing, cases_differing, pixels = differing + wrong, cases_differing + (wrong > 0), pixels + ours.size
            definition += int((centre_inside(polygons, height, width) != theirs).sum())
            inside += int(theirs.sum())
        rows.append((f"polygons, {kind} (cases differing: {cases_differing})", args.cases, pixels, differing))
        against_definition.append((kind, inside, definition))

    print(f"{'minseg vs pycocotools':<58} {'cases':>6} {'pixels':>11} {'differing':>10}")
    for name, cases, total, wrong in rows:
        print(f"{name:<58} {cases:>6} {total:>11} {wrong:>10}")
    print(f"\n{'pycocotools vs pixel centre inside (even-odd)':<58} {'inside':>11} {'differing':>10}")
    for kind, inside, definition in against_definition:
        print(f"{'polygons, ' + kind:<58} {inside:>11} {definition:>10}  ({100 * definition / max(inside, 1):.2f} %)")


if __name__ == "__main__":
    main()
