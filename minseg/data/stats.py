"""Dataset statistics: the per-channel mean and std that normalize a run's images."""
import numpy as np

__all__ = ["channel_stats"]


def channel_stats(dataset):
    """Per-channel ``(mean, std)`` of the images scaled to [0, 1], each float32 of shape (3,).

    The std is the population one (divide by the pixel count). Use the training split's numbers
    to normalize both training and validation batches. Works on any dataset whose ``ds[i]`` is
    ``(image, label)``, reading lazy ones image by image.
    """
    if len(dataset) == 0:
        raise ValueError("channel_stats: the dataset holds no images")
    images = getattr(dataset, "images", None)
    chunks = [images] if isinstance(images, np.ndarray) else (dataset[i][0] for i in range(len(dataset)))
    # float64 sums on purpose: a float32 running sum over ~10^6 pixels would lose digits.
    total, total_sq, count = np.zeros(3), np.zeros(3), 0
    for chunk in chunks:
        pixels = chunk.reshape(-1, 3).astype(np.float64) / 255.0
        total += pixels.sum(axis=0)
        total_sq += np.square(pixels).sum(axis=0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return mean.astype(np.float32), std.astype(np.float32)
