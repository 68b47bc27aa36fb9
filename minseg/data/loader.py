"""DataLoader: turn a dataset into shuffled, augmented, normalized batches of Tensors.

Each pass over the data (an "epoch") draws its shuffling and its augmentations from one
generator, ``numpy.random.default_rng([seed, epoch])``, where ``epoch`` counts the passes started
so far. The order and augmentations of pass e therefore depend only on (seed, e): a run resumed
from a checkpoint that stored ``state_dict()`` replays exactly the batches an uninterrupted run
would have seen, and the global generator (``minseg.manual_seed``) is never touched.

Batches are assembled with array operations: fancy indexing gathers the samples, one
conversion makes them float32 and normalizes all pixels at once. Only augmentation runs a
Python loop, once per sample (never per pixel). With ``device="cuda"`` the uint8 batch is copied
to the GPU first and normalized there, moving a quarter of the bytes.
"""
import numpy as np

from .. import backend
from ..autograd import Tensor

__all__ = ["DataLoader"]


class DataLoader:
    """Batches ``(images (B, 3, H, W) float32, targets (B, H, W) int64)`` from a SegmentationDataset.

    ``images = (pixels / 255 - mean) / std`` per channel (``mean`` 0 and ``std`` 1 when not given:
    then pixels are just scaled to [0, 1]). ``augment(image, label, rng)`` is applied to every
    sample of every batch (see ``minseg.data.transforms``); it must return one fixed size.
    ``len(loader)`` is the number of batches per pass; the last one is smaller unless ``drop_last``.
    """

    def __init__(self, dataset, batch_size=8, shuffle=False, augment=None, mean=None, std=None,
                 drop_last=False, seed=0, device="cpu"):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"DataLoader: seed must be an integer >= 0, got {seed!r}")
        if augment is not None and not callable(augment):
            raise TypeError(f"DataLoader: augment must be callable as augment(image, label, rng), got {augment!r}")
        if device not in backend.DEVICES:
            raise ValueError(f"DataLoader: device must be one of {backend.DEVICES}, got {device!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.augment = augment
        self.mean = _channel_vector(mean, 0.0, "mean")
        self.std = _channel_vector(std, 1.0, "std")
        if not np.all(self.std > 0):
            raise ValueError(f"DataLoader: every std must be > 0, got {self.std.tolist()}")
        self.drop_last = drop_last
        self.seed = int(seed)
        self.device = device
        self.epoch = 0  # passes started so far; the next pass uses default_rng([seed, epoch])

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        # Not a generator function: the pass counts as started when iter() is called,
        # not at the first next(), so state_dict() is right at any moment.
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        n = len(self.dataset)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        return self._batches(order, rng)

    def _batches(self, order, rng):
        # The same generator serves the permutation above and every augmentation below, in order.
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            indices = order[start:start + self.batch_size]
            images = self.dataset.images[indices]
            labels = self.dataset.labels[indices]
            if self.augment is not None:
                images, labels = self._augment(images, labels, rng)
            yield self._to_tensors(images, labels)

    def _augment(self, images, labels, rng):
        pairs = [self.augment(image, label, rng) for image, label in zip(images, labels)]
        try:
            images = np.stack([image for image, _ in pairs])
            labels = np.stack([label for _, label in pairs])
        except ValueError as error:
            sizes = sorted({tuple(image.shape) for image, _ in pairs} | {tuple(label.shape) for _, label in pairs})
            raise ValueError(f"DataLoader: augment returned samples of different sizes {sizes}; use "
                             "transforms with a fixed output size (RandomCrop(size), RandomScale)") from error
        return images, labels

    def _to_tensors(self, images, labels):
        # Transposing uint8 to (B, 3, H, W) first makes the float32 copy contiguous for free.
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        images = backend.to_device(images, self.device)
        labels = backend.to_device(labels, self.device)
        xp = backend.get_array_module(images)
        mean = xp.asarray(self.mean.reshape(1, 3, 1, 1))
        std = xp.asarray(self.std.reshape(1, 3, 1, 1))
        pixels = images.astype(xp.float32)
        pixels /= np.float32(255)
        pixels -= mean
        pixels /= std
        return Tensor(pixels), Tensor(labels)

    # --- resuming --------------------------------------------------------------------------
    def set_epoch(self, epoch):
        """Make the next pass use ``default_rng([seed, epoch])``."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"DataLoader.set_epoch: epoch must be an integer >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def state_dict(self):
        """``{"epoch": passes started}``: all a checkpoint needs to replay the coming passes."""
        return {"epoch": self.epoch}

    def load_state_dict(self, state):
        if "epoch" not in state:
            raise KeyError(f"DataLoader.load_state_dict: state has no 'epoch' entry, got keys {sorted(state)}")
        self.set_epoch(state["epoch"])

    def __repr__(self):
        return (f"DataLoader({len(self.dataset)} samples, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"augment={self.augment!r}, seed={self.seed}, device={self.device!r})")


def _channel_vector(values, default, name):
    """``values`` as float32 of shape (3,), or ``default`` repeated when None."""
    if values is None:
        return np.full(3, default, dtype=np.float32)
    if isinstance(values, Tensor):
        values = values.data
    vector = np.asarray(backend.to_device(values, "cpu"), dtype=np.float32)  # also accepts lists
    if vector.shape != (3,):
        raise ValueError(f"DataLoader: {name} must have 3 values (one per RGB channel), got shape {vector.shape}")
    return vector
