"""Every mask encoding and preset on small trees the tests write; lazy == in memory; bad-data reports."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minseg.data import DataLoader, DatasetError, MaskDecoder, SegmentationDataset, layouts, read_color_table

MEMBRANE = Path(__file__).resolve().parents[2] / "shared" / "data" / "membrane"
SIZE = (11, 14)


def save(array, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def random_images(n, seed=0, size=SIZE):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *size, 3), dtype=np.uint8)


def random_ids(n, num_classes, seed=1, size=SIZE):
    return np.random.default_rng(seed).integers(0, num_classes, size=(n, *size))


# --- mask encodings -------------------------------------------------------------------------
def test_value_map_turns_raw_values_into_classes_in_map_order():
    decoder = MaskDecoder(values={0: "membrane", 255: "cell"})
    ids, unknown = decoder(np.array([[0, 255], [255, 0]], np.uint8))
    assert decoder.classes == ["membrane", "cell"] and unknown.size == 0
    np.testing.assert_array_equal(ids, [[0, 1], [1, 0]])
    ids, unknown = decoder(np.array([[0, 7, 9]], np.uint8))
    assert unknown.tolist() == [7, 9] and "values the value map does not list: [7, 9]" in decoder.describe(unknown)


def test_ignore_values_become_ignore_index_in_index_masks():
    decoder = MaskDecoder(["a", "b", "c"], ignore=[255])
    ids, unknown = decoder(np.array([[0, 2, 255]], np.uint8))
    np.testing.assert_array_equal(ids, [[0, 2, -100]])
    assert unknown.size == 0 and decoder.num_classes == 3


def test_colour_table_with_an_ignored_colour(tmp_path):
    table = tmp_path / "label_colors.txt"
    table.write_text("64 128 64\tAnimal\n192 0 128\tArchway\n\n0 0 0\tVoid\n")
    colors = read_color_table(table)
    assert colors == {(64, 128, 64): "Animal", (192, 0, 128): "Archway", (0, 0, 0): "Void"}
    decoder = MaskDecoder(colors=colors, ignore=[(0, 0, 0)])
    assert decoder.classes == ["Animal", "Archway"] and decoder.colors.tolist() == [[64, 128, 64], [192, 0, 128]]
    mask = np.array([[[64, 128, 64], [0, 0, 0], [192, 0, 128], [1, 2, 3]]], np.uint8)
    ids, unknown = decoder(mask)
    np.testing.assert_array_equal(ids[0, :3], [0, -100, 1])
    assert "(1, 2, 3)" in decoder.describe(unknown)
    table.write_text("64 128 Animal\n")
    with pytest.raises(ValueError, match="line 1 of .*'R G B Name'"):
        read_color_table(table)


def test_rgb_colour_masks_load_through_the_dataset(tmp_path):
    colors = {(10, 20, 30): "road", (200, 0, 0): "car", (0, 0, 0): "void"}
    ids = random_ids(3, 3)
    table = np.array(list(colors), np.uint8)
    for k in range(3):
        save(random_images(3)[k], tmp_path / "images" / f"{k}.jpg")
        save(table[ids[k]], tmp_path / "masks" / f"{k}.png")
    ds = layouts.folders(tmp_path, colors=colors, ignore=[(0, 0, 0)], mask_name="{stem}.png")
    expected = np.where(ids == 2, -100, ids)
    np.testing.assert_array_equal(ds.labels, expected)
    assert ds.classes == ["road", "car"] and ds.class_colors.tolist() == [[10, 20, 30], [200, 0, 0]]


# --- presets ----------------------------------------------------------------------------------
def test_membrane_layout_reads_0_and_255_as_two_classes(tmp_path):
    masks = (random_ids(4, 2) * 255).astype(np.uint8)
    for k in range(4):
        save(random_images(4)[k][..., 0], tmp_path / "image" / f"{k}.png")  # greyscale, like ISBI
        save(masks[k], tmp_path / "label" / f"{k}.png")
    assert layouts.detect(tmp_path) == "membrane"
    ds = layouts.membrane(tmp_path)
    assert ds.classes == ["membrane", "cell"] and ds.images.shape == (4, *SIZE, 3)
    np.testing.assert_array_equal(ds.labels, masks // 255)


def test_segnet_camvid_tree_with_void_11_ignored(tmp_path):
    ids = random_ids(2, 12)
    for split in ("train", "val"):
        for k in range(2):
            save(random_images(2)[k], tmp_path / split / f"{split}{k}.png")
            save(ids[k].astype(np.uint8), tmp_path / f"{split}annot" / f"{split}{k}.png")
    assert layouts.detect(tmp_path) == "segnet"
    train, valid = layouts.camvid_segnet(tmp_path, "train"), layouts.camvid_segnet(tmp_path, "val")
    assert train.num_classes == 11 and train.classes[0] == "Sky" and valid.stems == ["val0", "val1"]
    np.testing.assert_array_equal(train.labels, np.where(ids == 11, -100, ids))
    assert train.class_colors.shape == (11, 3)


def test_pascal_voc_tree_uses_its_split_lists_and_ignores_255(tmp_path):
    ids = random_ids(3, 21)
    ids[:, 0, :] = 255
    (tmp_path / "SegmentationClass").mkdir()
    for k, name in enumerate(["2007_000032", "2007_000039", "2007_000063"]):
        save(random_images(3)[k], tmp_path / "JPEGImages" / f"{name}.jpg")
        image = Image.frombytes("P", SIZE[::-1], ids[k].astype(np.uint8).tobytes())
        image.putpalette(layouts.voc_colors(256).ravel().tolist())
        image.save(tmp_path / "SegmentationClass" / f"{name}.png")
    split_lists = tmp_path / "ImageSets" / "Segmentation"
    split_lists.mkdir(parents=True)
    (split_lists / "train.txt").write_text("2007_000063\n2007_000032\n")
    (split_lists / "val.txt").write_text("2007_000039\n")
    assert layouts.detect(tmp_path) == "voc"
    train = layouts.pascal_voc(tmp_path, "train")
    assert train.stems == ["2007_000063", "2007_000032"] and train.num_classes == 21
    np.testing.assert_array_equal(train.labels[0], np.where(ids[2] == 255, -100, ids[2]))
    assert len(layouts.pascal_voc(tmp_path, "val")) == 1
    (split_lists / "val.txt").write_text("2007_000039\n2007_999999\n")
    with pytest.raises(DatasetError, match="2007_999999.*listed in the split but no such image"):
        layouts.pascal_voc(tmp_path, "val")


def test_fastai_preset_equals_the_one_argument_form_and_knows_camvid_colours(tmp_path):
    ids = random_ids(2, 32)
    (tmp_path / "codes.txt").write_text("\n".join(layouts.CAMVID_CLASSES))
    for k in range(2):
        save(random_images(2)[k], tmp_path / "images" / f"f{k}.png")
        save(ids[k].astype(np.uint8), tmp_path / "labels" / f"f{k}_P.png")
    first, second = layouts.fastai(tmp_path), SegmentationDataset(tmp_path)
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.class_colors, layouts.CAMVID_COLORS)


# --- lazy, splits, resize, bad data -----------------------------------------------------------------
@pytest.fixture
def folder(tmp_path):
    images, ids = random_images(7), random_ids(7, 3)
    for k in range(7):
        save(images[k], tmp_path / "images" / f"{k:02d}.png")
        save(ids[k].astype(np.uint8), tmp_path / "masks" / f"{k:02d}.png")
    return tmp_path, images, ids


def test_lazy_dataset_equals_the_in_memory_one(folder):
    root = folder[0]
    eager = layouts.folders(root, classes=["a", "b", "c"])
    for cache in (False, True):
        lazy = layouts.folders(root, classes=["a", "b", "c"], lazy=True, cache=cache).check()
        assert len(lazy) == len(eager) and lazy.stems == eager.stems
        for i in range(len(eager)):
            np.testing.assert_array_equal(lazy[i][0], eager[i][0])
            np.testing.assert_array_equal(lazy[i][1], eager[i][1])
        lazy_batches = list(DataLoader(lazy.split()[0], batch_size=3, shuffle=True, seed=4))
        eager_batches = list(DataLoader(eager.split()[0], batch_size=3, shuffle=True, seed=4))
        for (a, b), (c, d) in zip(lazy_batches, eager_batches):
            np.testing.assert_array_equal(a.data, c.data)
            np.testing.assert_array_equal(b.data, d.data)


def test_three_broken_files_are_reported_together(folder):
    root = folder[0]
    (root / "images" / "01.png").write_bytes(b"not a png")
    save(np.zeros((3, 3), np.uint8), root / "masks" / "03.png")
    save(np.full(SIZE, 9, np.uint8), root / "masks" / "05.png")
    for lazy in (False, True):
        with pytest.raises(DatasetError) as error:
            layouts.folders(root, classes=["a", "b", "c"], lazy=lazy).check()
        assert len(error.value.problems) == 3
        message = str(error.value)
        assert "3 problems" in message and "cannot read image" in message and "01.png" in message
        assert "03.png is 3x3 but its image" in message and "05.png holds class ids outside 0..2: [9]" in message


def test_the_report_is_capped(folder):
    root = folder[0]
    for k in range(7):
        save(np.full(SIZE, 9, np.uint8), root / "masks" / f"{k:02d}.png")
    with pytest.raises(DatasetError, match=r"7 problems(.|\n)*\.\.\. and 4 more") as error:
        layouts.folders(root, classes=["a", "b", "c"], max_problems=3)
    assert len(error.value.problems) == 3


def test_splits_are_deterministic(folder):
    ds = layouts.folders(folder[0], classes=["a", "b", "c"])
    train, valid = ds.split(valid_fraction=0.3, seed=2)
    again = ds.split(valid_fraction=0.3, seed=2)[1]
    assert valid.stems == again.stems and len(valid) == 2 and set(train.stems).isdisjoint(valid.stems)
    chosen = sorted(np.random.default_rng(2).permutation(7)[:2].tolist())
    assert valid.stems == [f"{k:02d}" for k in chosen]
    assert ds.split(valid_every=3)[1].stems == ["02", "05"]
    with pytest.raises(ValueError, match="valid_fraction must be in"):
        ds.split(valid_fraction=1.5)


def test_resize_shorter_side_or_exact_with_nearest_labels(folder):
    root, _, ids = folder
    ds = layouts.folders(root, classes=["a", "b", "c"], resize=22)
    assert ds.images.shape == (7, 22, 28, 3) and ds.labels.shape == (7, 22, 28)
    np.testing.assert_array_equal(ds.labels[:, ::2, ::2], ids)  # nearest neighbour at exactly 2x
    exact = layouts.folders(root, classes=["a", "b", "c"], resize=(8, 8))
    assert exact.images.shape == (7, 8, 8, 3) and set(np.unique(exact.labels)) <= {0, 1, 2}


@pytest.mark.skipif(not MEMBRANE.is_dir(), reason="../shared/data/membrane is not present")
def test_real_membrane_data_loads_without_renaming():
    ds = layouts.membrane(MEMBRANE)
    assert len(ds) == 30 and ds.images.shape == (30, 512, 512, 3) and ds.classes == ["membrane", "cell"]
    assert set(np.unique(ds.labels)) == {0, 1} and ds.stems == sorted(ds.stems)
    assert 0.1 < (ds.labels == 0).mean() < 0.4  # membranes are the thin minority


def test_a_missing_mask_and_a_broken_image_are_reported_together(folder):
    root = folder[0]
    (root / "masks" / "02.png").unlink()
    (root / "images" / "04.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError) as error:
        layouts.folders(root, classes=["a", "b", "c"])
    assert len(error.value.problems) == 2
    assert "02.png: has no mask" in error.value.problems[0] and "cannot read image" in error.value.problems[1]


# --- folders: pairing by stem ------------------------------------------------------------------
def test_folders_pairs_jpeg_photos_with_png_masks_by_stem(tmp_path):
    images, ids = random_images(3), random_ids(3, 3)
    for k, suffix in enumerate((".jpg", ".png", ".tif")):
        save(images[k], tmp_path / "photos" / f"p{k}{suffix}")
        save(ids[k].astype(np.uint8), tmp_path / "labels" / f"p{k}_mask{'.png' if k else '.tif'}")
    save(ids[0].astype(np.uint8), tmp_path / "labels" / "unpaired_mask.png")  # a mask with no image is left out
    ds = layouts.folders(tmp_path, images="photos", masks="labels", mask_suffix="_mask", classes=["a", "b", "c"])
    assert [path.name for path in ds.mask_paths] == ["p0_mask.tif", "p1_mask.png", "p2_mask.png"]
    np.testing.assert_array_equal(ds.labels, ids)
    np.testing.assert_array_equal(ds.images[1:], images[1:])  # the JPEG one is lossy, the others exact


def test_folders_default_pairs_by_stem_and_names_a_missing_mask_with_any_extension(folder):
    root = folder[0]
    (root / "images" / "03.png").rename(root / "images" / "03.jpg")
    assert layouts.folders(root, classes=["a", "b", "c"]).mask_paths[3].name == "03.png"
    (root / "masks" / "05.png").unlink()
    with pytest.raises(DatasetError, match=r"05.png: has no mask \(expected .*masks/05\.\*\)"):
        layouts.folders(root, classes=["a", "b", "c"])


@pytest.mark.parametrize("where", ["images", "masks"])
def test_folders_refuses_two_files_with_one_stem_in_one_line(folder, where):
    root = folder[0]
    save(random_images(1)[0] if where == "images" else random_ids(1, 3)[0].astype(np.uint8),
         root / where / "02.jpg")
    with pytest.raises(ValueError, match=rf"^folders: files in .*{where} share a stem \(02.jpg and 02.png\), so "
                                         r"pairing images and masks by stem is ambiguous; keep one file per stem$"):
        layouts.folders(root, classes=["a", "b", "c"])


def test_folders_mask_suffix_must_not_be_a_path(folder):
    with pytest.raises(ValueError, match="folders: mask_suffix must be text without a path separator"):
        layouts.folders(folder[0], classes=["a", "b", "c"], mask_suffix="/x")


def test_the_command_line_names_the_folders_and_the_suffix(tmp_path, capsys):
    from minseg.app.cli import TRAIN_DEFAULTS, main
    from minseg.app.options import UsageError, open_splits
    images, ids = random_images(5), random_ids(5, 2)
    for k in range(5):
        save(images[k], tmp_path / "img" / f"{k}.jpg")
        save(ids[k].astype(np.uint8), tmp_path / "ann" / f"{k}-gt.png")
    options = dict(TRAIN_DEFAULTS, data=str(tmp_path), classes="a,b", images_dir="img", masks_dir="ann",
                   mask_suffix="-gt")
    layout, train, valid = open_splits(options)  # --layout auto: these flags mean folders
    assert layout == "folders" and len(train) == 4 and len(valid) == 1
    with pytest.raises(UsageError, match="--images-dir applies to --layout folders only, got --layout membrane"):
        open_splits(dict(options, layout="membrane", classes=None))
    for flag, value in (("--images-dir", ""), ("--masks-dir", "../elsewhere"), ("--mask-suffix", "a/b")):
        with pytest.raises(SystemExit) as exit_status:
            main(["train", "--data", str(tmp_path), flag, value])
        assert exit_status.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: argument {flag}: must be") and err.count("\n") == 1


# --- every problem in one report, lazy or not ----------------------------------------------------
def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("lazy", [False, True])
def test_one_report_lists_the_problems_of_both_splits(folder, lazy):
    """A missing mask, a broken training image and a truncated validation image (04: every 5th is validation)."""
    from minseg.app.cli import TRAIN_DEFAULTS
    from minseg.app.options import open_splits
    root = folder[0]
    (root / "masks" / "00.png").unlink()
    (root / "images" / "01.png").write_bytes(b"not a png")
    truncate(root / "images" / "04.png")
    options = dict(TRAIN_DEFAULTS, data=str(root), classes="a,b,c", lazy=lazy)
    with pytest.raises(DatasetError) as error:
        open_splits(options)
    problems = error.value.problems
    assert len(problems) == 3 and "3 problems" in str(error.value)
    assert "00.png: has no mask" in problems[0]
    assert "cannot read image" in problems[1] and "01.png" in problems[1]
    assert "04.png: OSError: image file is truncated" in problems[2]


@pytest.mark.parametrize("lazy", [False, True])
def test_segnet_train_and_val_problems_are_reported_together(tmp_path, lazy):
    from minseg.app.cli import TRAIN_DEFAULTS
    from minseg.app.options import open_splits
    ids = random_ids(2, 11)
    for split in ("train", "val"):
        for k in range(2):
            save(random_images(2)[k], tmp_path / split / f"{split}{k}.png")
            save(ids[k].astype(np.uint8), tmp_path / f"{split}annot" / f"{split}{k}.png")
    (tmp_path / "trainannot" / "train1.png").unlink()
    truncate(tmp_path / "val" / "val0.png")
    with pytest.raises(DatasetError) as error:
        open_splits(dict(TRAIN_DEFAULTS, data=str(tmp_path), lazy=lazy))
    assert len(error.value.problems) == 2 and str(error.value).startswith("SegmentationDataset")
    assert "train1.png: has no mask" in error.value.problems[0] and "val0.png" in error.value.problems[1]
