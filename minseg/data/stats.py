"""Dataset statistics: the per-channel mean and std that normalize a run's images.

Streamed: the images are read one at a time (lazy datasets) or viewed a slice at a time (in-memory
arrays), and each chunk of at most ``CHUNK_PIXELS`` pixels is added to float64 sums, so memory stays
one chunk's float64 copy however large the dataset.
"""
import sys

import numpy as np

__all__ = ["channel_stats", "CHUNK_PIXELS"]

CHUNK_PIXELS = 1 << 20  # pixels per float64 chunk: 24 MB for three channels
_CHANNELS = ("red", "green", "blue")


def _chunks(dataset):
    """Every image's pixels as (P, 3) arrays of at most CHUNK_PIXELS rows, in their stored type."""
    images = getattr(dataset, "images", None)
    sources = images if isinstance(images, np.ndarray) else (dataset[i][0] for i in range(len(dataset)))
    for image in sources:
        pixels = np.asarray(image).reshape(-1, 3)  # a view for contiguous arrays
        for start in range(0, len(pixels), CHUNK_PIXELS):
            yield pixels[start:start + CHUNK_PIXELS]


def channel_stats(dataset):
    """Per-channel ``(mean, std)`` of the images scaled to [0, 1], each float32 of shape (3,).

    The std is the population one (divide by the pixel count). Use the training split's numbers
    to normalize both training and validation batches. Works on any dataset whose ``ds[i]`` is
    ``(image, label)``, reading lazy ones image by image. A channel that holds one value in every
    image (a constant or all-black dataset) has std 0, which no image could be divided by: its std
    is given as 1 (the channel is then only centred), and a note on stderr says so.
    """
    if len(dataset) == 0:
        raise ValueError("channel_stats: the dataset holds no images")
    # float64 sums on purpose: a float32 running sum over ~10^6 pixels would lose digits. The sums are of
    # x - shift (shift = the first pixel), so a constant channel sums to exactly 0 and E[x²] - E[x]² does
    # not cancel into a tiny positive std.
    shift, total, total_sq, count = None, np.zeros(3), np.zeros(3), 0
    for chunk in _chunks(dataset):
        pixels = chunk.astype(np.float64)
        if chunk.dtype == np.uint8:
            pixels /= 255.0
        shift = pixels[0].copy() if shift is None else shift
        pixels -= shift
        total += pixels.sum(axis=0)
        total_sq += np.square(pixels, out=pixels).sum(axis=0)
        count += len(pixels)
    offset = total / count
    std = np.sqrt(np.maximum(total_sq / count - offset ** 2, 0.0))
    constant = [name for name, value in zip(_CHANNELS, std) if value == 0]
    if constant:
        names = " and ".join(constant) if len(constant) < 3 else "red, green and blue"
        which = f"the {names} channel{'s hold' if len(constant) > 1 else ' holds'}"
        print(f"channel_stats: {which} one value in every image (std 0); normalizing divides by 1 there instead",
              file=sys.stderr)
        std[std == 0] = 1.0
    return (shift + offset).astype(np.float32), std.astype(np.float32)
