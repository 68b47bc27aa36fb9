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
from .loader import DataLoader, normalize
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
class InstanceDataLoader(DataLoader):
    """Batches ``(images (B, 3, H, W) float32 Tensor, [target, ...])`` from an instance dataset.

    ``mean``, ``std``: per-channel normalization, ``(pixels / 255 - mean) / std`` (0 and 1 when not given).
    ``augment(image, target, rng)``: applied to every sample of every batch. ``pad_to_multiple``: see the
    module docstring (without it, images of different sizes are still padded, to the batch's largest size).
    ``device="cuda"`` moves the images there; the targets stay NumPy arrays.
    ``len(loader)`` is the number of batches per pass; the last one is smaller unless ``drop_last``.
    The argument checks, the seeded passes and ``state_dict`` are the semantic ``DataLoader``'s (one process: no
    ``num_replicas``); what differs is how a batch is assembled.
    """

    augment_call = "augment(image, target, rng)"

    def __init__(self, dataset, batch_size=4, shuffle=False, augment=None, mean=None, std=None, drop_last=False,
                 seed=0, device="cpu", pad_to_multiple=None):
        if isinstance(pad_to_multiple, bool):
            raise ValueError(f"InstanceDataLoader: pad_to_multiple must be a positive integer or None, "
                             f"got {pad_to_multiple!r}")
        super().__init__(dataset, batch_size, shuffle, augment, mean, std, drop_last, seed, device, pad_to_multiple)

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

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
