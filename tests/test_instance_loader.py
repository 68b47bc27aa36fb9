"""InstanceDataLoader: normalized batches with their targets, seeded passes, padding, and the joint flip."""
import numpy as np
import pytest

from minseg.data.instance_loader import (
    InstanceDataLoader,
    RandomHorizontalFlipInstances,
    hflip_target,
    pad_batch,
)
from minseg.data.loader import normalize
from minseg.data.shapes import ShapesDataset, masks_to_boxes


def small(length=5, seed=0):
    return ShapesDataset(length, size=(32, 40), num_instances=(1, 3), seed=seed, min_area=4, radius=(3, 8))


def test_batches_hold_normalized_images_and_the_datasets_targets():
    ds = small()
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    batches = list(InstanceDataLoader(ds, batch_size=2, mean=mean, std=std))
    assert len(batches) == 3 and [len(targets) for _, targets in batches] == [2, 2, 1]
    images, targets = batches[0]
    assert images.shape == (2, 3, 32, 40) and images.data.dtype == np.float32
    expected = normalize(np.stack([ds[0][0], ds[1][0]]), np.array(mean), np.array(std))
    np.testing.assert_array_equal(images.data, expected)
    for key in ("boxes", "labels", "masks", "semantic"):
        np.testing.assert_array_equal(targets[1][key], ds[1][1][key])


def test_shuffling_is_seeded_per_pass_and_replays_after_a_restart():
    ds = small(7)

    def first_labels(loader):
        return [tuple(target["semantic"][0, :3]) + (len(target["labels"]),) for _, ts in loader for target in ts]

    loader = InstanceDataLoader(ds, batch_size=3, shuffle=True, seed=4)
    passes = [first_labels(loader) for _ in range(3)]
    assert passes[0] != passes[1] or passes[1] != passes[2]
    assert sorted(passes[0]) == sorted(first_labels(InstanceDataLoader(ds, batch_size=3)))
    resumed = InstanceDataLoader(ds, batch_size=3, shuffle=True, seed=4)
    resumed.load_state_dict({"epoch": 2})
    assert first_labels(resumed) == passes[2]
    assert len(InstanceDataLoader(ds, batch_size=3, drop_last=True)) == 2


def test_hflip_mirrors_image_masks_semantic_and_boxes_together():
    image, target = small(seed=2)[0]
    flipped_image, flipped = RandomHorizontalFlipInstances(p=1.0)(image, target, np.random.default_rng(0))
    np.testing.assert_array_equal(flipped_image, image[:, ::-1])
    np.testing.assert_array_equal(flipped["masks"], target["masks"][:, :, ::-1])
    np.testing.assert_array_equal(flipped["semantic"], target["semantic"][:, ::-1])
    np.testing.assert_array_equal(flipped["boxes"], masks_to_boxes(flipped["masks"]))  # boxes still the extents
    np.testing.assert_array_equal(flipped["labels"], target["labels"])
    again = hflip_target(flipped, image.shape[1])
    for key in target:
        np.testing.assert_array_equal(again[key], target[key])
    same_image, same = RandomHorizontalFlipInstances(p=0.0)(image, target, np.random.default_rng(0))
    assert same_image is image and same is target


def test_hflip_box_on_paper():
    target = {"boxes": np.array([[1, 0, 3, 2]], np.float32), "labels": np.array([1]),
              "masks": np.zeros((1, 2, 5), np.uint8), "semantic": np.zeros((2, 5), np.int64)}
    # columns 1..2 of a 5-wide image mirror to columns 2..3: box [2, 0, 4, 2]
    np.testing.assert_array_equal(hflip_target(target, 5)["boxes"], [[2, 0, 4, 2]])


def test_the_loader_applies_the_augmentation_with_its_pass_generator():
    ds = small(4)
    flips = list(InstanceDataLoader(ds, batch_size=4, augment=RandomHorizontalFlipInstances(p=1.0)))
    plain = list(InstanceDataLoader(ds, batch_size=4))
    np.testing.assert_array_equal(flips[0][0].data, plain[0][0].data[..., ::-1])
    for flipped, target in zip(flips[0][1], plain[0][1]):
        np.testing.assert_array_equal(flipped["masks"], target["masks"][:, :, ::-1])


def test_images_of_different_sizes_are_padded_at_the_bottom_right():
    one, two = small(1, seed=0)[0], ShapesDataset(1, size=(20, 50), num_instances=2, seed=1, min_area=4)[0]
    ds = [one, two]
    (images, targets), = InstanceDataLoader(ds, batch_size=2, mean=[0.5] * 3, pad_to_multiple=16)
    assert images.shape == (2, 3, 32, 64)
    np.testing.assert_array_equal(images.data[1, :, 20:], 0)  # the padding is the mean colour: 0
    np.testing.assert_array_equal(images.data[0, :, :, 40:], 0)
    np.testing.assert_array_equal(images.data[1, :, :20, :50], normalize(two[0][None], [0.5] * 3, [1] * 3)[0])
    assert targets[1]["masks"].shape == (len(two[1]["labels"]), 32, 64)
    np.testing.assert_array_equal(targets[1]["masks"][:, :20, :50], two[1]["masks"])
    assert targets[1]["masks"][:, 20:].sum() == 0 and (targets[1]["semantic"][20:] == -100).all()
    np.testing.assert_array_equal(targets[1]["boxes"], two[1]["boxes"])
    batch, same, padding = pad_batch([one[0]], [one[1]])
    assert padding is None and same[0] is one[1] and batch.shape == (1, 32, 40, 3)


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "InstanceDataLoader: batch_size must be a positive integer, got 0"),
    ({"seed": -1}, "InstanceDataLoader: seed must be an integer >= 0, got -1"),
    ({"pad_to_multiple": 0}, "InstanceDataLoader: pad_to_multiple must be a positive integer or None, got 0"),
    ({"std": [1, 0, 1]}, r"InstanceDataLoader: every std must be > 0, got \[1.0, 0.0, 1.0\]"),
    ({"device": "tpu"}, "InstanceDataLoader: device must be one of"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InstanceDataLoader(small(), **kwargs)
    with pytest.raises(ValueError, match=r"RandomHorizontalFlipInstances: p must be in \[0, 1\], got 2"):
        RandomHorizontalFlipInstances(p=2)
