"""COCO's mask encodings: run-length encoding (RLE), its compressed string form, and polygons.

A COCO instance's ``segmentation`` is one of three things; this module turns each into a uint8 (H, W) mask of
0/1 and back, by the same rules as pycocotools' ``maskApi.c`` (the code every COCO tool uses), written in NumPy:

* **uncompressed RLE** ``{"counts": [c0, c1, ...], "size": [h, w]}``: the mask read in *column-major* order
  (down the first column, then the second, ...) as alternating runs of 0s and 1s, starting with 0s (so ``c0``
  is 0 when the first pixel is 1). The counts sum to h·w.
* **compressed RLE**, the same with ``counts`` a string: each count is replaced by its difference from the
  count two places before (from the third on), then written 5 bits at a time, least significant first, as
  characters ``48 + bits``; bit 0x20 of a character says another follows, and bit 0x10 of the last one is the
  sign (the differences can be negative). ``rle_string_to_counts`` / ``rle_counts_to_string``.
* **polygons**: a list of ``[x1, y1, x2, y2, ...]`` in pixel coordinates (x right, y down, pixel (i, j)
  covering [j, j + 1) x [i, i + 1)); the object is the union of its polygons. ``polygons_to_mask``
  rasterizes as pycocotools' ``rleFrPoly`` does (see ``_polygon_toggles``), so a mask made here agrees with
  the masks COCO's evaluation makes from the same polygons; ``benchmarks/coco_rle.py`` counts the pixels
  that differ on random polygons and masks. Roughly, a pixel is inside when its centre is; the boundary is
  first snapped to a grid of 1/5 pixel, which moves a few pixels along slanted edges (the benchmark counts
  them too).
"""
import numpy as np

__all__ = ["rle_encode", "rle_decode", "rle_counts_to_string", "rle_string_to_counts", "polygons_to_mask",
           "polygon_to_mask"]


# ---------------------------------------------------------------------------------------------
# run lengths
# ---------------------------------------------------------------------------------------------
def rle_encode(mask, compressed=False):
    """The RLE of a (H, W) mask (nonzero = 1): ``{"counts": [...], "size": [H, W]}``, with ``counts`` a string
    when ``compressed``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode: mask must be 2-D (H, W), got shape {mask.shape}")
    height, width = mask.shape
    pixels = (mask != 0).ravel(order="F").astype(np.int8)  # column-major, as COCO
    changes = np.flatnonzero(np.diff(pixels)) + 1           # where a run ends and the next begins
    bounds = np.concatenate([[0], changes, [pixels.size]])
    counts = np.diff(bounds).tolist()
    if pixels.size and pixels[0] == 1:
        counts = [0] + counts  # runs start with 0s
    if not pixels.size:
        counts = [0]
    return {"counts": rle_counts_to_string(counts) if compressed else counts, "size": [height, width]}


def rle_decode(rle):
    """The uint8 (H, W) mask of an RLE dict, ``counts`` a list of run lengths or the compressed string/bytes."""
    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        raise ValueError(f"rle_decode: rle must be a dict with 'counts' and 'size', got {_short(rle)}")
    size = rle["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in size)):
        raise ValueError(f"rle_decode: size must be [height, width] of integers >= 0, got {_short(size)}")
    height, width = int(size[0]), int(size[1])
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = rle_string_to_counts(counts)
    elif (not isinstance(counts, (list, tuple))
          or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in counts)):
        raise ValueError(f"rle_decode: counts must be a list of integers or a compressed string, got {_short(counts)}")
    counts = np.asarray(counts, dtype=np.int64)
    if (counts < 0).any():
        raise ValueError(f"rle_decode: counts must be >= 0, got {counts[counts < 0][0]} among them")
    if counts.sum() != height * width:
        raise ValueError(f"rle_decode: counts must sum to height x width = {height} x {width} = {height * width}, "
                         f"got {counts.sum()}")
    values = np.arange(len(counts), dtype=np.int64) % 2  # 0, 1, 0, 1, ...
    return np.repeat(values.astype(np.uint8), counts).reshape(width, height).T.copy()


# ---------------------------------------------------------------------------------------------
# the compressed string
# ---------------------------------------------------------------------------------------------
def rle_counts_to_string(counts):
    """COCO's compressed string of a list of run lengths (the module docstring says how it is built)."""
    chars = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)  # pycocotools differences from the third on: i > 2
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # Python's >> on negative ints is arithmetic, as C's on a signed long, which the format assumes
            more = x != -1 if c & 0x10 else x != 0
            chars.append(chr((c | 0x20 if more else c) + 48))
    return "".join(chars)


def rle_string_to_counts(string):
    """The run lengths of COCO's compressed RLE string (str or bytes)."""
    codes = [ord(char) for char in string] if isinstance(string, str) else bytes(string)
    counts, x, k = [], 0, 0
    for position, code in enumerate(codes):
        c = code - 48
        if not 0 <= c < 64:
            raise ValueError(f"rle_decode: a compressed counts string holds only characters '0'..'o' "
                             f"(ASCII 48..111), got {chr(code)!r} at position {position}")
        x |= (c & 0x1F) << (5 * k)
        k += 1
        if c & 0x20:
            continue
        if c & 0x10:
            x -= 1 << (5 * k)  # the sign bit: extend with ones
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
        x, k = 0, 0
    if k:
        raise ValueError("rle_decode: the compressed counts string ends in the middle of a number "
                         f"(its last character {chr(codes[-1])!r} says another follows)")
    return counts


# ---------------------------------------------------------------------------------------------
# polygons
# ---------------------------------------------------------------------------------------------
def _trunc(values):
    """C's (int) cast of a double: toward zero."""
    return np.trunc(values).astype(np.int64)


def _boundary_points(xs, ys):
    """Every integer point on the closed polygon's edges (scaled coordinates), walked as ``rleFrPoly`` does:
    each edge stepped one unit along its longer axis, from its end with the smaller coordinate on that axis,
    the other coordinate rounded half up. Returns the points in order, (u, v)."""
    us, vs = [], []
    for xs_, xe, ys_, ye in zip(xs[:-1], xs[1:], ys[:-1], ys[1:]):
        dx, dy = abs(xe - xs_), abs(ye - ys_)
        flip = (dx >= dy and xs_ > xe) or (dx < dy and ys_ > ye)
        if flip:
            xs_, xe, ys_, ye = xe, xs_, ye, ys_
        if dx >= dy:
            t = dx - np.arange(dx + 1) if flip else np.arange(dx + 1)
            slope = (ye - ys_) / dx if dx else 0.0  # a repeated vertex: one point, the vertex
            us.append(t + xs_)
            vs.append(_trunc(ys_ + slope * t + 0.5))
        else:
            t = dy - np.arange(dy + 1) if flip else np.arange(dy + 1)
            vs.append(t + ys_)
            us.append(_trunc(xs_ + (xe - xs_) / dy * t + 0.5))
    return np.concatenate(us), np.concatenate(vs)


def _polygon_toggles(polygon, height, width, scale=5.0):
    """Column-major pixel indices where the filled polygon switches between outside and inside, down each column.

    pycocotools' ``rleFrPoly``: the vertices are scaled by 5 and rounded, the boundary walked through every
    integer point between them (``_boundary_points``); wherever it steps from one scaled column to the next
    across the centre line of pixel column x, the crossing's row is rounded up to the first pixel row whose
    centre lies below it (clamped to 0..H), and that pixel toggles. Between two toggles of a column the
    pixels are inside (even-odd rule).
    """
    xy = np.asarray(polygon, dtype=np.float64)
    xs, ys = _trunc(scale * xy[0::2] + 0.5), _trunc(scale * xy[1::2] + 0.5)
    u, v = _boundary_points(np.append(xs, xs[0]), np.append(ys, ys[0]))
    step = np.flatnonzero(u[1:] != u[:-1]) + 1  # the points j where the scaled column changes from j - 1
    column = np.where(u[step] < u[step - 1], u[step], u[step] - 1).astype(np.float64)
    column = (column + 0.5) / scale - 0.5
    keep = (np.floor(column) == column) & (column >= 0) & (column <= width - 1)  # a pixel centre line
    row = np.minimum(v[step], v[step - 1]).astype(np.float64)
    row = np.ceil(np.clip((row + 0.5) / scale - 0.5, 0, height))
    return column[keep].astype(np.int64) * height + row[keep].astype(np.int64)


def polygon_to_mask(polygon, height, width):
    """uint8 (H, W) mask of one polygon ``[x1, y1, x2, y2, ...]`` (at least 3 points), as pycocotools draws it."""
    polygon = np.asarray(polygon, dtype=np.float64).ravel()
    if polygon.size < 6 or polygon.size % 2 or not np.isfinite(polygon).all():
        raise ValueError(f"polygon_to_mask: polygon must be [x1, y1, x2, y2, ...] with at least 3 finite points, "
                         f"got {polygon.size} numbers{'' if np.isfinite(polygon).all() else ' (not all finite)'}")
    toggles = np.zeros(height * width + 1, dtype=np.int64)  # the last slot takes a toggle past the last pixel
    np.add.at(toggles, _polygon_toggles(polygon, height, width), 1)
    inside = np.cumsum(toggles[:-1]) % 2  # a pixel is inside after an odd number of toggles at or before it
    return inside.astype(np.uint8).reshape(width, height).T.copy()


def polygons_to_mask(polygons, height, width):
    """uint8 (H, W): the union of the polygons (a COCO object split in parts, e.g. by an occluder)."""
    mask = np.zeros((height, width), dtype=np.uint8)
    for polygon in polygons:
        mask |= polygon_to_mask(polygon, height, width)
    return mask


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
