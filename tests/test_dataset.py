"""SegmentationDataset and channel_stats on small folders the tests write (plus CamVid tiny when present)."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minseg.data import DataLoader, DatasetError, SegmentationDataset, channel_stats

CAMVID_TINY = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid_tiny"
CODES = ["sky", "road", "car", "tree", "void"]
HEIGHT, WIDTH = 13, 17  # odd, and not square, so a transposed array would show


def palette_png(ids, palette_rgb):
    """A "P" image storing ``ids`` as palette indices that map to ``palette_rgb`` colours."""
    image = Image.frombytes("P", (ids.shape[1], ids.shape[0]), ids.astype(np.uint8).tobytes())
    image.putpalette(np.asarray(palette_rgb, dtype=np.uint8).ravel().tolist())
    return image


def write_folder(root, n=6, size=(HEIGHT, WIDTH), codes=CODES, seed=0):
    """Write ``n`` random RGB images and labels (alternately palette and greyscale) in fastai's layout.

    Stems are written in reverse order so that sorting is visible. Returns (stems, images, labels)
    in sorted order.
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "codes.txt").write_text("\n".join(codes) + "\n")
    stems = [f"frame_{k:03d}" for k in range(n)]
    images = rng.integers(0, 256, size=(n, *size, 3), dtype=np.uint8)
    labels = rng.integers(0, len(codes), size=(n, *size)).astype(np.int64)
    # Colours that differ from the indices, so reading colours instead of indices would fail.
    palette = [(200 - 30 * k, 10 * k + 5, 77) for k in range(len(codes))]
    for k in reversed(range(n)):
        Image.fromarray(images[k]).save(root / "images" / f"{stems[k]}.png")
        label = palette_png(labels[k], palette) if k % 2 == 0 else Image.fromarray(labels[k].astype(np.uint8))
        label.save(root / "labels" / f"{stems[k]}_P.png")
    return stems, images, labels


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "data"
    return root, *write_folder(root)


def test_loads_images_labels_and_codes_in_sorted_order(folder):
    root, stems, images, labels = folder
    ds = SegmentationDataset(root)
    assert ds.stems == stems
    assert ds.codes == CODES and ds.num_classes == 5 and len(ds) == 6
    assert ds.images.dtype == np.uint8 and ds.images.shape == (6, HEIGHT, WIDTH, 3)
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (6, HEIGHT, WIDTH)
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)  # even rows were palette PNGs: indices, not colours
    image, label = ds[3]
    np.testing.assert_array_equal(image, images[3])
    np.testing.assert_array_equal(label, labels[3])


def test_palette_label_reads_indices_not_colours(tmp_path):
    root = tmp_path / "data"
    write_folder(root, n=1)
    ids = np.array([[0, 1, 2], [4, 3, 0]])
    palette_png(ids, [(9, 9, 9), (250, 0, 0), (0, 250, 0), (0, 0, 250), (1, 2, 3)]).save(
        root / "labels" / "frame_000_P.png")
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(root / "images" / "frame_000.png")
    np.testing.assert_array_equal(SegmentationDataset(root).labels[0], ids)


def test_rgba_greyscale_and_palette_images_become_rgb(tmp_path):
    root = tmp_path / "data"
    write_folder(root, n=3, size=(2, 2))
    rgba = np.array([[[10, 20, 30, 0], [40, 50, 60, 255]], [[1, 2, 3, 128], [4, 5, 6, 7]]], np.uint8)
    grey = np.array([[0, 100], [200, 255]], np.uint8)
    Image.fromarray(rgba).save(root / "images" / "frame_000.png")
    Image.fromarray(grey).save(root / "images" / "frame_001.png")
    palette_png(np.array([[0, 1], [1, 0]]), [(7, 8, 9), (90, 80, 70)]).save(root / "images" / "frame_002.png")
    ds = SegmentationDataset(root)
    np.testing.assert_array_equal(ds.images[0], rgba[..., :3])  # alpha dropped, colours kept
    np.testing.assert_array_equal(ds.images[1], np.repeat(grey[..., None], 3, axis=2))
    np.testing.assert_array_equal(ds.images[2], [[[7, 8, 9], [90, 80, 70]], [[90, 80, 70], [7, 8, 9]]])


def test_hidden_files_and_other_suffixes_are_ignored(folder):
    root, stems, _, _ = folder
    (root / "images" / "._frame_000.png").write_bytes(b"macOS resource fork, not an image")
    (root / "images" / "notes.txt").write_text("not an image")
    assert SegmentationDataset(root).stems == stems


# --- bad input: every error names the file --------------------------------------------------
def test_missing_root_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        SegmentationDataset(tmp_path / "nowhere")


def test_missing_or_empty_image_folder(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "codes.txt").write_text("a\nb\n")
    with pytest.raises(FileNotFoundError, match="images"):
        SegmentationDataset(root)
    (root / "images").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        SegmentationDataset(root)


def test_missing_label_folder(folder):
    root = folder[0]
    for path in (root / "labels").iterdir():
        path.unlink()
    (root / "labels").rmdir()
    with pytest.raises(FileNotFoundError, match="labels"):
        SegmentationDataset(root)


def test_missing_or_empty_codes(folder):
    root = folder[0]
    (root / "codes.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="codes.txt is empty"):
        SegmentationDataset(root)
    (root / "codes.txt").unlink()
    with pytest.raises(FileNotFoundError, match="codes.txt"):
        SegmentationDataset(root)


def test_image_without_label_names_both_files(folder):
    root = folder[0]
    (root / "labels" / "frame_002_P.png").unlink()
    with pytest.raises(DatasetError, match=r"frame_002\.png: has no mask \(expected .*frame_002_P\.png\)"):
        SegmentationDataset(root)


def test_label_of_another_size_is_rejected(folder):
    root = folder[0]
    Image.fromarray(np.zeros((HEIGHT, WIDTH + 1), np.uint8)).save(root / "labels" / "frame_004_P.png")
    with pytest.raises(ValueError, match=r"frame_004_P\.png is 13x18 but its image .*frame_004\.png is 13x17"):
        SegmentationDataset(root)


def test_images_of_different_sizes_load_as_lists_and_pad_in_batches(folder):
    root = folder[0]
    Image.fromarray(np.full((5, 9, 3), 7, np.uint8)).save(root / "images" / "frame_001.png")
    Image.fromarray(np.ones((5, 9), np.uint8)).save(root / "labels" / "frame_001_P.png")
    ds = SegmentationDataset(root)
    assert isinstance(ds.images, list) and ds[1][0].shape == (5, 9, 3) and ds[0][1].shape == (HEIGHT, WIDTH)
    with pytest.raises(ValueError, match="different sizes"):
        next(iter(DataLoader(ds, batch_size=2)))
    images, targets = next(iter(DataLoader(ds, batch_size=2, pad_to_multiple=8)))
    assert images.shape == (2, 3, 16, 24) and targets.shape == (2, 16, 24)
    assert (targets.data[1, 5:] == -100).all() and (targets.data[1, :5, :9] == 1).all()
    assert (targets.data[1, :, 9:] == -100).all() and (images.data[1, :, 5:] == 0).all()
    np.testing.assert_allclose(images.data[1, :, :5, :9], 7 / 255, rtol=1e-6)
    assert ds.split()[0].images[1].shape == (5, 9, 3)


def test_class_ids_beyond_codes_are_listed(folder):
    root = folder[0]
    label = np.zeros((HEIGHT, WIDTH), np.uint8)
    label[0, :3] = [5, 7, 5]
    Image.fromarray(label).save(root / "labels" / "frame_003_P.png")
    with pytest.raises(ValueError, match=r"frame_003_P\.png holds class ids outside 0\.\.4: \[5, 7\]"):
        SegmentationDataset(root)


def test_truncated_and_garbage_pngs_name_the_file(folder):
    root = folder[0]
    image_path = root / "images" / "frame_001.png"
    data = image_path.read_bytes()
    image_path.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read image .*frame_001\.png"):
        SegmentationDataset(root)
    image_path.write_bytes(data)
    (root / "labels" / "frame_005_P.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nonsense")
    with pytest.raises(ValueError, match=r"cannot read mask .*frame_005_P\.png"):
        SegmentationDataset(root)


def test_rgb_label_is_rejected(folder):
    root = folder[0]
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(root / "labels" / "frame_000_P.png")
    with pytest.raises(ValueError, match=r"frame_000_P\.png has mode 'RGB'"):
        SegmentationDataset(root)


# --- split and subset -----------------------------------------------------------------------
def test_split_puts_every_fifth_image_in_validation(tmp_path):
    root = tmp_path / "data"
    stems = write_folder(root, n=12, size=(3, 4))[0]
    train, valid = SegmentationDataset(root).split()
    assert valid.stems == [stems[4], stems[9]]
    assert train.stems == [s for k, s in enumerate(stems) if k not in (4, 9)]
    assert len(train) == 10 and train.images.shape == (10, 3, 4, 3) and train.codes == CODES
    _, valid3 = SegmentationDataset(root).split(valid_every=3)
    assert valid3.stems == [stems[2], stems[5], stems[8], stems[11]]
    # The split depends on file names only: loading again gives the same pixels.
    np.testing.assert_array_equal(SegmentationDataset(root).split()[1].labels, valid.labels)


@pytest.mark.parametrize("valid_every", [1, 0, 2.5, True])
def test_split_rejects_bad_valid_every(folder, valid_every):
    with pytest.raises(ValueError, match="valid_every"):
        SegmentationDataset(folder[0]).split(valid_every=valid_every)


def test_subset_keeps_order_and_checks_indices(folder):
    root, stems, images, labels = folder
    ds = SegmentationDataset(root)
    part = ds.subset([5, 0, 2])
    assert part.stems == [stems[5], stems[0], stems[2]]
    np.testing.assert_array_equal(part.images, images[[5, 0, 2]])
    np.testing.assert_array_equal(part[1][1], labels[0])
    assert len(ds.subset([])) == 0
    with pytest.raises(IndexError, match=r"\[6, 9\]"):
        ds.subset([1, 6, 9])
    with pytest.raises(TypeError, match="indices"):
        ds.subset([0.5, 1.0])


# --- channel statistics ------------------------------------------------------------------------
def test_channel_stats_by_hand(tmp_path):
    root = tmp_path / "data"
    write_folder(root, n=2, size=(1, 2))
    Image.fromarray(np.full((1, 2, 3), (0, 255, 51), np.uint8)).save(root / "images" / "frame_000.png")
    Image.fromarray(np.full((1, 2, 3), (255, 255, 102), np.uint8)).save(root / "images" / "frame_001.png")
    mean, std = channel_stats(SegmentationDataset(root))
    assert mean.dtype == np.float32 and std.dtype == np.float32 and mean.shape == (3,)
    # Channel values over four pixels: {0, 0, 1, 1}, {1, 1, 1, 1}, {0.2, 0.2, 0.4, 0.4}.
    np.testing.assert_allclose(mean, [0.5, 1.0, 0.3], atol=1e-6)
    # The green channel is constant: std 0 would divide by zero, so it is 1 (the channel only centred).
    np.testing.assert_allclose(std, [0.5, 1.0, 0.1], atol=1e-6)


def test_channel_stats_of_empty_dataset_raises(folder):
    with pytest.raises(ValueError, match="no images"):
        channel_stats(SegmentationDataset(folder[0]).subset([]))


# --- the real CamVid tiny -----------------------------------------------------------------------
@pytest.mark.skipif(not CAMVID_TINY.is_dir(), reason="../shared/data/camvid_tiny not present")
def test_real_camvid_tiny():
    ds = SegmentationDataset(CAMVID_TINY)
    assert len(ds) == 100 and ds.images.shape == (100, 96, 128, 3) and ds.labels.shape == (100, 96, 128)
    assert ds.num_classes == 32 and ds.codes[0] == "Animal" and ds.codes[30] == "Void"
    assert ds.labels.min() >= 0 and ds.labels.max() < 32
    assert ds.stems == sorted(ds.stems)
    train, valid = ds.split()
    assert (len(train), len(valid)) == (80, 20)
    assert valid.stems == ds.stems[4::5]
    mean, std = channel_stats(train)
    assert np.all((mean > 0.2) & (mean < 0.6)) and np.all((std > 0.1) & (std < 0.4))
