"""Peak memory of ``channel_stats``: streamed in chunks, against one float64 copy of every pixel.

    python benchmarks/stats_memory.py [--images 5] [--size 3000]

Holds ``--images`` random RGB uint8 images of ``--size``² pixels in memory (an in-memory dataset) and
measures, with tracemalloc (which sees NumPy's allocations), the peak memory each computation allocates
beyond the dataset: ``channel_stats`` itself, and the one-pass formula over a float64 copy of all pixels
that it replaces. Prints both peaks in MiB and checks the two give the same float32 statistics.
"""
import argparse
import tracemalloc

import numpy as np

from minseg.data import channel_stats


class InMemory:
    """An in-memory dataset as channel_stats sees one: ``images`` (N, H, W, 3) and ``ds[i]``."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index], None


def one_pass_copy(dataset):
    """Mean and std from a float64 copy of every pixel at once (what streaming avoids)."""
    pixels = dataset.images.reshape(-1, 3).astype(np.float64) / 255.0
    mean = pixels.sum(axis=0) / len(pixels)
    std = np.sqrt(np.maximum(np.square(pixels).sum(axis=0) / len(pixels) - mean ** 2, 0.0))
    return mean.astype(np.float32), std.astype(np.float32)


def peak_mib(function, dataset):
    tracemalloc.start()
    result = function(dataset)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2 ** 20, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--size", type=int, default=3000)
    args = parser.parse_args()
    images = np.random.default_rng(0).integers(0, 256, size=(args.images, args.size, args.size, 3), dtype=np.uint8)
    dataset = InMemory(images)
    print(f"dataset: {args.images} images of {args.size}x{args.size} RGB uint8, {images.nbytes / 2 ** 20:.0f} MiB")
    streamed, (mean, std) = peak_mib(channel_stats, dataset)
    copied, (copy_mean, copy_std) = peak_mib(one_pass_copy, dataset)
    print(f"channel_stats (streamed): peak {streamed:.0f} MiB beyond the dataset")
    print(f"float64 copy of all pixels: peak {copied:.0f} MiB beyond the dataset")
    print(f"same float32 statistics: {np.array_equal(mean, copy_mean) and np.array_equal(std, copy_std)}")


if __name__ == "__main__":
    main()
