"""DataLoader: batch shapes, normalization, seeded shuffling and augmentation, exact resume."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minseg import Tensor, backend
from minseg.data import Compose, DataLoader, RandomCrop, RandomHorizontalFlip, SegmentationDataset, channel_stats

CAMVID_TINY = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid_tiny"
N_IMAGES, HEIGHT, WIDTH = 10, 13, 17
# Class k is painted in COLOURS[k], so an image pixel tells which label must lie under it.
COLOURS = np.array([[220, 20, 60], [0, 128, 64], [70, 70, 250], [250, 170, 30], [128, 64, 128]], np.uint8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Ten painted images in fastai's layout; pixel (0, 0) of label k is k % 5 and varies per image."""
    root = tmp_path_factory.mktemp("loader") / "data"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "codes.txt").write_text("a\nb\nc\nd\ne\n")
    rng = np.random.default_rng(0)
    for k in range(N_IMAGES):
        label = rng.integers(0, 5, size=(HEIGHT, WIDTH)).astype(np.uint8)
        Image.fromarray(COLOURS[label]).save(root / "images" / f"im{k:02d}.png")
        Image.fromarray(label).save(root / "labels" / f"im{k:02d}_P.png")
    return SegmentationDataset(root)


def sample_ids(loader_pass, dataset):
    """Which dataset sample each target of a pass is (targets are unique random maps)."""
    ids = []
    for _, targets in loader_pass:
        for target in targets.numpy():
            ids.append(next(k for k in range(len(dataset)) if np.array_equal(dataset.labels[k], target)))
    return ids


def collect(loader):
    return [(images.numpy().copy(), targets.numpy().copy()) for images, targets in loader]


def test_batches_have_the_promised_shapes_and_dtypes(dataset):
    loader = DataLoader(dataset, batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 and [t.shape[0] for _, t in batches] == [4, 4, 2]
    images, targets = batches[0]
    assert isinstance(images, Tensor) and images.shape == (4, 3, HEIGHT, WIDTH) and images.dtype == np.float32
    assert targets.shape == (4, HEIGHT, WIDTH) and targets.dtype == np.int64
    assert not images.requires_grad and images.numpy().flags.c_contiguous
    dropped = DataLoader(dataset, batch_size=4, drop_last=True)
    assert len(dropped) == 2 and [t.shape[0] for _, t in dropped] == [4, 4]
    assert len(DataLoader(dataset, batch_size=32, drop_last=True)) == 0


def test_without_shuffle_batches_follow_dataset_order(dataset):
    images, targets = next(iter(DataLoader(dataset, batch_size=10)))
    np.testing.assert_array_equal(targets.numpy(), dataset.labels)
    np.testing.assert_allclose(images.numpy() * 255, dataset.images.transpose(0, 3, 1, 2), atol=1e-4)


def test_normalization_by_hand(dataset):
    mean, std = [0.5, 0.25, 0.1], [0.5, 0.2, 0.4]
    images, _ = next(iter(DataLoader(dataset, batch_size=3, mean=mean, std=std)))
    red, green, blue = dataset.images[1, 2, 5]  # pixel (2, 5) of the second image
    np.testing.assert_allclose(images.numpy()[1, :, 2, 5],
                               [(red / 255 - 0.5) / 0.5, (green / 255 - 0.25) / 0.2, (blue / 255 - 0.1) / 0.4],
                               rtol=1e-6, atol=1e-6)
    # With the dataset's own statistics every channel comes out with mean 0 and std 1.
    mean, std = channel_stats(dataset)
    images, _ = next(iter(DataLoader(dataset, batch_size=10, mean=mean, std=std)))
    np.testing.assert_allclose(images.numpy().mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(images.numpy().std(axis=(0, 2, 3)), 1, atol=1e-4)


def test_shuffle_is_seeded_and_changes_every_epoch(dataset):
    loader = DataLoader(dataset, batch_size=3, shuffle=True, seed=11)
    orders = [sample_ids(loader, dataset) for _ in range(3)]
    for order in orders:
        assert sorted(order) == list(range(N_IMAGES))  # each sample exactly once per pass
    assert orders[0] != orders[1] and orders[1] != orders[2]
    # The order of pass e is default_rng([seed, e]).permutation(n): nothing else drives it.
    assert orders[1] == np.random.default_rng([11, 1]).permutation(N_IMAGES).tolist()
    again = DataLoader(dataset, batch_size=3, shuffle=True, seed=11)
    assert [sample_ids(again, dataset) for _ in range(3)] == orders
    other_seed = DataLoader(dataset, batch_size=3, shuffle=True, seed=12)
    assert sample_ids(other_seed, dataset) != orders[0]


def test_augmentation_keeps_pixels_on_their_labels(dataset):
    augment = Compose([RandomHorizontalFlip(), RandomCrop((8, 9))])
    loader = DataLoader(dataset, batch_size=4, shuffle=True, augment=augment, seed=3)
    flipped = 0
    for images, targets in loader:
        assert images.shape[1:] == (3, 8, 9) and targets.shape[1:] == (8, 9)
        pixels = np.rint(images.numpy() * 255).astype(np.uint8).transpose(0, 2, 3, 1)
        np.testing.assert_array_equal(pixels, COLOURS[targets.numpy()])
        for target in targets.numpy():  # a flipped crop is found in the mirrored label
            flipped += not any(np.array_equal(label[r:r + 8, c:c + 9], target)
                               for label in dataset.labels for r in range(6) for c in range(9))
    assert 0 < flipped < N_IMAGES


def test_state_dict_resume_replays_the_same_batches(dataset):
    augment = Compose([RandomHorizontalFlip(), RandomCrop(7, padding=2)])

    def make():
        return DataLoader(dataset, batch_size=4, shuffle=True, augment=augment, seed=5)

    uninterrupted = make()
    passes = [collect(uninterrupted) for _ in range(3)]
    first = make()
    collect(first)
    state = first.state_dict()
    assert state == {"epoch": 1}
    resumed = make()
    resumed.load_state_dict(state)
    for expected in passes[1:]:
        for (images, targets), (want_images, want_targets) in zip(collect(resumed), expected, strict=True):
            np.testing.assert_array_equal(images, want_images)
            np.testing.assert_array_equal(targets, want_targets)
    # set_epoch(0) goes back to the first pass.
    resumed.set_epoch(0)
    np.testing.assert_array_equal(collect(resumed)[2][1], passes[0][2][1])


def test_a_pass_counts_as_started_when_iteration_begins(dataset):
    loader = DataLoader(dataset, batch_size=4)
    iterator = iter(loader)
    assert loader.state_dict() == {"epoch": 1}
    next(iterator)
    assert loader.epoch == 1


def test_augment_that_changes_size_per_sample_is_reported(dataset):
    def uneven(image, label, rng):
        cut = int(rng.integers(5, 10))
        return image[:cut], label[:cut]

    with pytest.raises(ValueError, match="different sizes"):
        next(iter(DataLoader(dataset, batch_size=10, augment=uneven)))


def test_bad_arguments_name_themselves(dataset):
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(dataset, batch_size=0)
    with pytest.raises(ValueError, match="mean must have 3 values"):
        DataLoader(dataset, mean=[0.5, 0.5])
    with pytest.raises(ValueError, match="std must be > 0"):
        DataLoader(dataset, std=[0.2, 0.0, 0.2])
    with pytest.raises(ValueError, match="seed"):
        DataLoader(dataset, seed=-1)
    with pytest.raises(ValueError, match="device"):
        DataLoader(dataset, device="tpu")
    with pytest.raises(TypeError, match="augment"):
        DataLoader(dataset, augment="flip")
    with pytest.raises(ValueError, match="epoch"):
        DataLoader(dataset).set_epoch(-2)
    with pytest.raises(KeyError, match="epoch"):
        DataLoader(dataset).load_state_dict({})


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cupy_available(), reason="needs CuPy and an NVIDIA GPU")
def test_cuda_batches_equal_cpu_batches(dataset):
    augment = RandomHorizontalFlip()
    kwargs = dict(batch_size=4, shuffle=True, augment=augment, mean=[0.4, 0.4, 0.4], std=[0.3, 0.3, 0.3])
    for (gpu_images, gpu_targets), (images, targets) in zip(DataLoader(dataset, device="cuda", **kwargs),
                                                            DataLoader(dataset, **kwargs), strict=True):
        assert gpu_images.device == "cuda" and gpu_targets.device == "cuda"
        assert gpu_images.dtype == np.float32 and gpu_targets.dtype == np.int64
        np.testing.assert_allclose(gpu_images.numpy(), images.numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(gpu_targets.numpy(), targets.numpy())


@pytest.mark.skipif(not CAMVID_TINY.is_dir(), reason="../shared/data/camvid_tiny not present")
def test_real_camvid_tiny_batches():
    train, valid = SegmentationDataset(CAMVID_TINY).split()
    mean, std = channel_stats(train)
    loader = DataLoader(train, batch_size=8, shuffle=True, augment=RandomHorizontalFlip(), mean=mean, std=std)
    batches = list(loader)
    assert len(batches) == 10 and all(images.shape == (8, 3, 96, 128) for images, _ in batches)
    pixels = np.concatenate([images.numpy() for images, _ in batches])
    np.testing.assert_allclose(pixels.mean(axis=(0, 2, 3)), 0, atol=1e-4)  # flips keep channel statistics
    assert len(DataLoader(valid, batch_size=8)) == 3


def test_a_shuffled_pass_never_ends_with_a_batch_of_one(dataset):
    """10 = 3 + 3 + 4 when shuffling (training); 3 + 3 + 3 + 1 in order (evaluation keeps every batch)."""
    from minseg.functional import batch_norm
    train = DataLoader(dataset, batch_size=3, shuffle=True, seed=1)
    assert len(train) == 3
    for epoch in range(2):
        batches = list(train)
        assert [len(targets.numpy()) for _, targets in batches] == [3, 3, 4]
        train.set_epoch(epoch)
        assert sorted(sample_ids(train, dataset)) == list(range(N_IMAGES))  # every sample, once
        for images, _ in batches:  # each pooled to 1×1, as DeepLabV3 does: more than one value per channel
            pooled = images.numpy().mean(axis=(2, 3), keepdims=True)
            assert np.isfinite(batch_norm(pooled, None, None, training=True).numpy()).all()
    in_order = DataLoader(dataset, batch_size=3)
    assert len(in_order) == 4 and [len(t.numpy()) for _, t in in_order] == [3, 3, 3, 1]
    assert [len(t.numpy()) for _, t in DataLoader(dataset, batch_size=3, shuffle=True, drop_last=True)] == [3] * 3
    assert [len(t.numpy()) for _, t in DataLoader(dataset, batch_size=1, shuffle=True)] == [1] * N_IMAGES
    with pytest.raises(ValueError, match="expected more than 1 value per channel"):
        batch_norm(np.ones((1, 3, 1, 1), np.float32), None, None, training=True)


@pytest.mark.parametrize("kwargs, sizes", [
    (dict(batch_size=3, shuffle=True), [3, 3, 4]), (dict(batch_size=3), [3, 3, 3, 1]),
    (dict(batch_size=3, shuffle=True, drop_last=True), [3, 3, 3]), (dict(batch_size=4, shuffle=True), [4, 4, 2]),
    (dict(batch_size=1, shuffle=True), [1] * N_IMAGES), (dict(batch_size=12, shuffle=True), [N_IMAGES]),
    (dict(batch_size=3, shuffle=True, num_replicas=2, rank=1), [3, 3, 4])])
def test_batch_sizes_are_the_batches_a_pass_yields_all_ranks_together(dataset, kwargs, sizes):
    loader = DataLoader(dataset, **kwargs)
    assert loader.batch_sizes() == sizes
    if loader.num_replicas == 1:
        assert [len(targets.numpy()) for _, targets in loader] == sizes
