"""DataLoader: turn a dataset into shuffled, augmented, normalized batches of Tensors.

Each pass over the data (an "epoch") draws its shuffling and its augmentations from one
generator, ``numpy.random.default_rng([seed, epoch])``, where ``epoch`` counts the passes started
so far. The order and augmentations of pass e therefore depend only on (seed, e): a run resumed
from a checkpoint that stored ``state_dict()`` replays exactly the batches an uninterrupted run
would have seen, and the global generator (``minseg.manual_seed``) is never touched.

Batches are assembled with array operations: for a dataset held in memory as one array,
fancy indexing gathers the samples; otherwise (images of different sizes, lazy datasets) each
sample is fetched with ``dataset[i]``. One conversion makes the batch float32 and normalizes all
pixels at once: uint8 images as value / 255, float32 images (files of more than 8 bits, see
``images.read_image``) as they are, in [0, 1]; a batch mixing both is made float32 first. Only
augmentation runs a Python loop, once per sample (never per pixel). With
``device="cuda"`` the uint8 batch is copied to the GPU first and normalized there, moving a
quarter of the bytes.

Images of different sizes need either an augmentation that returns one size (``RandomCrop``) or
``pad_to_multiple=m``: each batch is then padded at the bottom and right to its largest height and
width rounded up to a multiple of m (what a UNet needs), images with 0 after normalization (the
mean colour) and labels with -100, which the loss and the metrics ignore; ``Learner.predict`` and
``minseg.predict`` crop the padding away again.

Data-parallel training (``num_replicas`` ranks, this one ``rank``) splits every batch the way PyTorch's
``DistributedSampler`` does: all ranks draw the same permutation, and rank r takes samples r, r + K, r + 2K, …
of each batch of ``batch_size``, which stays the batch of all ranks together. So the K shares of a step are
exactly one process's batch: with augmentation or padding every rank prepares the whole batch (its random
draws are the one-process draws, in order) and keeps its share. Shares differ by at most one sample; a last
batch with fewer samples than ranks leaves the ranks past its end without a sample, and those skip it
(``len(loader)`` counts the batches this rank takes part in).
"""
import numpy as np

from .. import backend
from ..autograd import Tensor
from ..models.sizes import padded_size
from .images import as_one_kind
from .masks import IGNORE_INDEX

__all__ = ["DataLoader", "normalize"]


class DataLoader:
    """Batches ``(images (B, 3, H, W) float32, targets (B, H, W) int64)`` from a SegmentationDataset.

    ``images = (pixels / 255 - mean) / std`` per channel (``mean`` 0 and ``std`` 1 when not given:
    then pixels are just scaled to [0, 1]); float32 images, already in [0, 1], skip the division.
    ``augment(image, label, rng)`` is applied to every sample of every batch (see ``minseg.data.transforms``);
    it must return one fixed size.
    ``len(loader)`` is the number of batches per pass; the last one is smaller unless ``drop_last``.

    A shuffling (training) loader never ends a pass with a batch of one sample: that sample joins the
    batch before it, which then holds ``batch_size + 1``. Batch norm in training mode normalizes by the
    batch's own statistics, and one sample pooled to 1×1 (DeepLabV3's image pooling, the deepest stage
    of many models on a small crop) has one value per channel and no variance. Without shuffling
    (evaluation: batch norm uses its running statistics) the batch of one stays.

    ``num_replicas`` and ``rank``: this rank's share of every batch, as the module docstring says.
    """

    augment_call = "augment(image, label, rng)"  # how ``augment`` is called, for the error that says so

    def __init__(self, dataset, batch_size=8, shuffle=False, augment=None, mean=None, std=None,
                 drop_last=False, seed=0, device="cpu", pad_to_multiple=None, num_replicas=1, rank=0):
        where = type(self).__name__  # the subclass InstanceDataLoader shares these checks
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"{where}: batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"{where}: seed must be an integer >= 0, got {seed!r}")
        if augment is not None and not callable(augment):
            raise TypeError(f"{where}: augment must be callable as {self.augment_call}, got {augment!r}")
        if device not in backend.DEVICES:
            raise ValueError(f"{where}: device must be one of {backend.DEVICES}, got {device!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.augment = augment
        self.mean = _channel_vector(mean, 0.0, "mean", where)
        self.std = _channel_vector(std, 1.0, "std", where)
        if not np.all(self.std > 0):
            raise ValueError(f"{where}: every std must be > 0, got {self.std.tolist()}")
        self.drop_last = drop_last
        self.seed = int(seed)
        self.device = device
        if pad_to_multiple is not None and (not isinstance(pad_to_multiple, (int, np.integer)) or pad_to_multiple < 1):
            raise ValueError(f"{where}: pad_to_multiple must be a positive integer or None, got {pad_to_multiple!r}")
        self.pad_to_multiple = pad_to_multiple
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, (int, np.integer)) or num_replicas < 1:
            raise ValueError(f"DataLoader: num_replicas must be a positive integer, got {num_replicas!r}")
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < num_replicas:
            raise ValueError(f"DataLoader: rank must be an integer in 0 … num_replicas − 1 = {num_replicas - 1}, "
                             f"got {rank!r}")
        if num_replicas > batch_size:
            raise ValueError(f"DataLoader: batch_size is the batch of all num_replicas={num_replicas} ranks together, "
                             f"so it must be at least {num_replicas}, got {batch_size}")
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.epoch = 0  # passes started so far; the next pass uses default_rng([seed, epoch])

    def __len__(self):
        batches = self._global_batches()
        last = len(self.dataset) - (batches - 1) * self.batch_size  # samples in the last batch
        return batches - 1 if batches and last <= self.rank else batches

    def batch_sizes(self):
        """The number of samples in each batch of a pass, all ranks together (rank r takes samples r, r + K, …)."""
        batches = self._global_batches()
        sizes = [self.batch_size] * batches
        if batches and not self.drop_last:  # the last batch: the rest, or batch_size + 1 when it merged a one
            sizes[-1] = len(self.dataset) - (batches - 1) * self.batch_size
        return sizes

    def _global_batches(self):
        """Batches per pass of all ranks together."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size) - self._merges_last(n)

    def _merges_last(self, n):
        """True when a shuffled pass over ``n`` samples would end with a batch of one after others."""
        return bool(self.shuffle and not self.drop_last and self.batch_size > 1 and n > self.batch_size
                    and n % self.batch_size == 1)

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
        share = slice(self.rank, None, self.num_replicas)
        whole = self.num_replicas > 1 and (self.augment is not None or self.pad_to_multiple is not None)
        batches = self._global_batches()
        for start in range(0, batches * self.batch_size, self.batch_size):
            last = start == (batches - 1) * self.batch_size
            stop = len(order) if last and self._merges_last(len(order)) else start + self.batch_size
            indices = order[start:stop]
            if not len(indices[share]):
                continue  # a last batch with fewer samples than ranks
            images, labels = _gather(self.dataset, indices if whole else indices[share])
            if self.augment is not None:
                images, labels = [list(samples) for samples in zip(*(
                    self.augment(image, label, rng) for image, label in zip(images, labels)))]
            if self.pad_to_multiple is not None:
                arrays = _pad_batch(images, labels, self.pad_to_multiple)
            else:
                arrays = self._stack(images, labels)
            if whole:
                arrays = [None if array is None else array[share] for array in arrays]
            yield self._to_tensors(*arrays)

    def _stack(self, images, labels):
        if isinstance(images, np.ndarray):
            return images, labels
        pairs = list(zip(images, labels))
        try:
            images = np.stack([image for image, _ in pairs])
            labels = np.stack([label for _, label in pairs])
        except ValueError as error:
            sizes = sorted({tuple(image.shape) for image, _ in pairs} | {tuple(label.shape) for _, label in pairs})
            raise ValueError(f"DataLoader: the samples of a batch have different sizes {sizes}; use an augment "
                             "with a fixed output size (RandomCrop(size)), resize the dataset, or pass "
                             "pad_to_multiple") from error
        return images, labels

    def _to_tensors(self, images, labels, padding=None):
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        pixels = normalize(backend.to_device(images, self.device), self.mean, self.std)
        labels = backend.to_device(labels, self.device)
        if padding is not None:
            pixels *= backend.to_device(~padding[:, None], self.device)  # 0 is the mean colour after normalizing
        return Tensor(pixels), Tensor(labels)

    # --- resuming --------------------------------------------------------------------------
    def set_epoch(self, epoch):
        """Make the next pass use ``default_rng([seed, epoch])``."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"{type(self).__name__}.set_epoch: epoch must be an integer >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def state_dict(self):
        """``{"epoch": passes started}``: all a checkpoint needs to replay the coming passes."""
        return {"epoch": self.epoch}

    def load_state_dict(self, state):
        if "epoch" not in state:
            raise KeyError(f"{type(self).__name__}.load_state_dict: state has no 'epoch' entry, got keys "
                           f"{sorted(state)}")
        self.set_epoch(state["epoch"])

    def __repr__(self):
        shard = f", rank {self.rank} of num_replicas={self.num_replicas}" if self.num_replicas > 1 else ""
        return (f"{type(self).__name__}({len(self.dataset)} samples, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, "
                f"augment={self.augment!r}, seed={self.seed}, device={self.device!r}{shard})")


def _gather(dataset, indices):
    """The samples at ``indices``: fancy indexing of an in-memory array, else ``dataset[i]`` one by one."""
    images = getattr(dataset, "images", None)
    if isinstance(images, np.ndarray):
        return images[indices], dataset.labels[indices]
    pairs = [dataset[int(i)] for i in indices]
    return [image for image, _ in pairs], [label for _, label in pairs]


def _pad_batch(images, labels, multiple):
    """Images (of one kind), labels padded at the bottom/right to the batch's size rounded up to ``multiple``,
    and a boolean (B, H, W) mask of the padded pixels."""
    images = as_one_kind(images)
    height = padded_size(max(label.shape[0] for label in labels), multiple)
    width = padded_size(max(label.shape[1] for label in labels), multiple)
    batch = np.zeros((len(images), height, width, 3), dtype=np.asarray(images[0]).dtype)
    targets = np.full((len(images), height, width), IGNORE_INDEX, dtype=np.int64)
    padding = np.ones((len(images), height, width), dtype=bool)
    for k, (image, label) in enumerate(zip(images, labels)):
        rows, cols = label.shape
        batch[k, :rows, :cols], targets[k, :rows, :cols], padding[k, :rows, :cols] = image, label, False
    return batch, targets, padding if padding.any() else None


def normalize(images, mean, std):
    """Images (N, H, W, 3), NumPy or CuPy, → float32 (N, 3, H, W): ``(pixels - mean) / std`` per channel
    (``mean`` and ``std`` of shape (3,)), ``pixels`` in [0, 1]: uint8 divided by 255, float32 as given.
    The one normalization of the loader and the Predictor."""
    xp = backend.get_array_module(images)
    if images.dtype not in (np.uint8, np.float32):
        raise TypeError(f"normalize: images must be uint8 (0..255) or float32 (0..1), got {images.dtype}")
    # Transposing to (N, 3, H, W) first makes the float32 copy contiguous for free.
    pixels = xp.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(xp.float32)
    if images.dtype == np.uint8:
        pixels /= np.float32(255)
    pixels -= xp.asarray(np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1))
    pixels /= xp.asarray(np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1))
    return pixels


def _channel_vector(values, default, name, where="DataLoader"):
    """``values`` as float32 of shape (3,), or ``default`` repeated when None."""
    if values is None:
        return np.full(3, default, dtype=np.float32)
    if isinstance(values, Tensor):
        values = values.data
    vector = np.asarray(backend.to_device(values, "cpu"), dtype=np.float32)  # also accepts lists
    if vector.shape != (3,):
        raise ValueError(f"{where}: {name} must have 3 values (one per RGB channel), got shape {vector.shape}")
    return vector
