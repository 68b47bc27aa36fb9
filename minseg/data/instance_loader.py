"""Batches for instance models: normalized images as one Tensor, the targets as a list of dicts.

``InstanceDataLoader(dataset, batch_size, shuffle, augment, seed)`` reads any dataset whose items are
``(image (H, W, 3) uint8, target)`` with the instance target ``{"boxes", "labels", "masks", "semantic"}``
(``ShapesDataset``, ``CocoInstances``) and yields ``(images, targets)``: ``images`` a float32 Tensor
(B, 3, H, W) normalized exactly as the semantic ``DataLoader`` does (``loader.normalize``), ``targets`` a list
of B target dicts of NumPy arrays, as torchvision's detection models take them.

Shuffling and augmentation follow the semantic loader's rule: pass e draws everything from
``numpy.random.default_rng([seed, e])``, so a resumed run (``state_dict`` / ``load_state_dict``) replays the
same batches. An augmentation is called as ``augment(image, target, rng)`` and returns the new pair;
``RandomHorizontalFlipInstances`` mirrors the image, every mask, the semantic map and the boxes together.

Images of different sizes (COCO) are padded at the bottom and right to the batch's largest height and
width, rounded up to ``pad_to_multiple`` when given (torchvision's ``GeneralizedRCNNTransform`` pads the same
way): the padded pixels are 0 after normalization (the mean colour), masks are padded with 0 and the
semantic map with -100, and boxes need no change since the top-left corner stays where it was.
"""
import numpy as np

from .. import backend
from ..autograd import Tensor
from ..models.sizes import padded_size
from .images import as_one_kind
from .loader import _channel_vector, normalize
from .masks import IGNORE_INDEX

__all__ = ["InstanceDataLoader", "RandomHorizontalFlipInstances", "hflip_target", "pad_batch"]


# ---------------------------------------------------------------------------------------------
# augmentation
# ---------------------------------------------------------------------------------------------
def hflip_target(target, width):
    """The target of the image mirrored left-right: masks and semantic map reversed along x, and each box
    [x1, y1, x2, y2] becomes [W - x2, y1, W - x1, y2] (pixel-edge coordinates mirror exactly)."""
    flipped = dict(target)
    boxes = np.asarray(target["boxes"], dtype=np.float32)
    flipped["boxes"] = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)
    flipped["masks"] = np.ascontiguousarray(target["masks"][:, :, ::-1])
    flipped["semantic"] = np.ascontiguousarray(target["semantic"][:, ::-1])
    return flipped


class RandomHorizontalFlipInstances:
    """Mirror image and instance target left-right with probability ``p`` (``hflip_target`` says how)."""

    def __init__(self, p=0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlipInstances: p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, image, target, rng):
        if rng.random() < self.p:
            return np.ascontiguousarray(image[:, ::-1]), hflip_target(target, image.shape[1])
        return image, target

    def __repr__(self):
        return f"RandomHorizontalFlipInstances(p={self.p})"


# ---------------------------------------------------------------------------------------------
# the loader
# ---------------------------------------------------------------------------------------------
class InstanceDataLoader:
    """Batches ``(images (B, 3, H, W) float32 Tensor, [target, ...])`` from an instance dataset.

    ``mean``, ``std``: per-channel normalization, ``(pixels / 255 - mean) / std`` (0 and 1 when not given).
    ``augment(image, target, rng)``: applied to every sample of every batch. ``pad_to_multiple``: see the
    module docstring (without it, images of different sizes are still padded, to the batch's largest size).
    ``device="cuda"`` moves the images there; the targets stay NumPy arrays.
    ``len(loader)`` is the number of batches per pass; the last one is smaller unless ``drop_last``.
    """

    def __init__(self, dataset, batch_size=4, shuffle=False, augment=None, mean=None, std=None, drop_last=False,
                 seed=0, device="cpu", pad_to_multiple=None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"InstanceDataLoader: batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"InstanceDataLoader: seed must be an integer >= 0, got {seed!r}")
        if augment is not None and not callable(augment):
            raise TypeError(f"InstanceDataLoader: augment must be callable as augment(image, target, rng), "
                            f"got {augment!r}")
        if device not in backend.DEVICES:
            raise ValueError(f"InstanceDataLoader: device must be one of {backend.DEVICES}, got {device!r}")
        if pad_to_multiple is not None and (isinstance(pad_to_multiple, bool) or
                                            not isinstance(pad_to_multiple, (int, np.integer)) or pad_to_multiple < 1):
            raise ValueError(f"InstanceDataLoader: pad_to_multiple must be a positive integer or None, "
                             f"got {pad_to_multiple!r}")
        self.dataset, self.batch_size, self.shuffle, self.augment = dataset, int(batch_size), shuffle, augment
        self.mean, self.std = _channel_vector(mean, 0.0, "mean"), _channel_vector(std, 1.0, "std")
        if not np.all(self.std > 0):
            raise ValueError(f"InstanceDataLoader: every std must be > 0, got {self.std.tolist()}")
        self.drop_last, self.seed, self.device, self.pad_to_multiple = drop_last, int(seed), device, pad_to_multiple
        self.epoch = 0  # passes started so far; the next pass uses default_rng([seed, epoch])

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        # Not a generator function: the pass counts as started when iter() is called (state_dict is right).
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        order = rng.permutation(len(self.dataset)) if self.shuffle else np.arange(len(self.dataset))
        return self._batches(order, rng)

    def _batches(self, order, rng):
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            samples = [self.dataset[int(i)] for i in order[start:start + self.batch_size]]
            if self.augment is not None:
                samples = [self.augment(image, target, rng) for image, target in samples]
            images, targets, padding = pad_batch([image for image, _ in samples], [target for _, target in samples],
                                                 self.pad_to_multiple or 1)
            pixels = normalize(backend.to_device(images, self.device), self.mean, self.std)
            if padding is not None:
                pixels *= backend.to_device(~padding[:, None], self.device)  # 0 is the mean colour after normalizing
            yield Tensor(pixels), targets

    def set_epoch(self, epoch):
        """Make the next pass use ``default_rng([seed, epoch])``."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"InstanceDataLoader.set_epoch: epoch must be an integer >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def state_dict(self):
        """``{"epoch": passes started}``: all a checkpoint needs to replay the coming passes."""
        return {"epoch": self.epoch}

    def load_state_dict(self, state):
        if "epoch" not in state:
            raise KeyError(f"InstanceDataLoader.load_state_dict: state has no 'epoch' entry, got keys {sorted(state)}")
        self.set_epoch(state["epoch"])

    def __repr__(self):
        return (f"InstanceDataLoader({len(self.dataset)} samples, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, augment={self.augment!r}, seed={self.seed}, device={self.device!r})")


def pad_batch(images, targets, multiple=1):
    """Images stacked (B, Hb, Wb, 3), targets padded to match, and a (B, Hb, Wb) bool map of the padded pixels
    (None when there are none); Hb and Wb are the largest height and width rounded up to ``multiple``. Masks are
    padded with 0, semantic maps with -100 (the module docstring says why)."""
    images = as_one_kind(images)
    height = padded_size(max(image.shape[0] for image in images), multiple)
    width = padded_size(max(image.shape[1] for image in images), multiple)
    if all(image.shape[:2] == (height, width) for image in images):
        return np.stack(images), list(targets), None
    batch = np.zeros((len(images), height, width, 3), dtype=np.asarray(images[0]).dtype)
    padding = np.ones((len(images), height, width), dtype=bool)
    padded = []
    for k, (image, target) in enumerate(zip(images, targets)):
        rows, cols = image.shape[:2]
        batch[k, :rows, :cols], padding[k, :rows, :cols] = image, False
        masks = np.zeros((len(target["masks"]), height, width), dtype=np.uint8)
        masks[:, :rows, :cols] = target["masks"]
        semantic = np.full((height, width), IGNORE_INDEX, dtype=np.int64)
        semantic[:rows, :cols] = target["semantic"]
        padded.append(dict(target, masks=masks, semantic=semantic))
    return batch, padded, padding
