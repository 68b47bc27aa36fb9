"""read_image and read_mask on every kind of file Pillow reads: real values on one scale, or a one-line refusal."""
import numpy as np
import pytest
from PIL import Image

from minseg.data import DataLoader, DatasetError, SegmentationDataset, channel_stats, normalize, read_image
from minseg.data import stats as stats_module
from minseg.data.images import read_mask, resize_image
from minseg.data.transforms import RandomScale

MEAN, STD = np.array([0.4, 0.5, 0.6], np.float32), np.array([0.2, 0.25, 0.3], np.float32)


def grey_picture(seed=0, size=(7, 9)):
    return np.random.default_rng(seed).integers(0, 256, size=size, dtype=np.uint8)


def save_three_ways(folder, grey):
    """One greyscale picture as 8-bit PNG, 16-bit PNG (v·257 = the same fraction of full scale) and float TIFF."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grey).save(folder / "eight.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(folder / "sixteen.png")
    Image.fromarray(grey.astype(np.float32) / np.float32(255)).save(folder / "float.tif")
    return [folder / name for name in ("eight.png", "sixteen.png", "float.tif")]


# --- one scale for every bit depth ------------------------------------------------------------
def test_the_same_picture_at_every_bit_depth_normalizes_to_the_same_tensor(tmp_path):
    grey = grey_picture()
    paths = save_three_ways(tmp_path, grey)
    assert [Image.open(path).mode for path in paths] == ["L", "I;16", "F"]
    images = [read_image(path) for path in paths]
    assert [image.dtype for image in images] == [np.uint8, np.float32, np.float32]
    tensors = [normalize(image[None], MEAN, STD) for image in images]
    # 8-bit v / 255 and 16-bit 257·v / 65535 are the same real number, rounded once to float32: equal bits.
    np.testing.assert_array_equal(tensors[1], tensors[0])
    np.testing.assert_array_equal(tensors[2], tensors[0])
    np.testing.assert_allclose(images[1][..., 0], grey / 255, rtol=1e-6)  # never saturated to 1


def test_uint8_normalization_is_unchanged():
    images = np.random.default_rng(1).integers(0, 256, size=(2, 5, 4, 3), dtype=np.uint8)
    expected = (images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255) - MEAN.reshape(1, 3, 1, 1)) \
        / STD.reshape(1, 3, 1, 1)
    np.testing.assert_array_equal(normalize(images, MEAN, STD), expected)
    with pytest.raises(TypeError, match="normalize: images must be uint8 .* or float32 .*, got uint16"):
        normalize(images.astype(np.uint16), MEAN, STD)


def test_a_full_range_16_bit_greyscale_keeps_its_values(tmp_path):
    values = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    image = read_image(tmp_path / "deep.png")
    assert image.shape == (1, 4, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image[0, :, 1], values[0] / 65535, rtol=1e-6)


@pytest.mark.parametrize("value, shown", [(np.nan, "nan"), (1.5, "1.5"), (-0.25, "-0.25")])
def test_float_images_outside_0_1_are_refused_naming_the_file(tmp_path, value, shown):
    pixels = np.full((3, 4), 0.5, np.float32)
    pixels[1, 2] = value
    Image.fromarray(pixels).save(tmp_path / "bad.tif")
    with pytest.raises(ValueError, match=f"image .*bad.tif is a float image with values outside \\[0, 1\\] "
                                         f"\\(e.g. {shown}, 1 pixels\\); save it as"):
        read_image(tmp_path / "bad.tif")


def test_32_bit_integer_images_beyond_16_bits_are_refused(tmp_path):
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32)).save(tmp_path / "wide.tif")
    assert Image.open(tmp_path / "wide.tif").mode == "I"
    with pytest.raises(ValueError, match=r"wide.tif is a 32-bit integer image with values in 0..70000, not the "
                                         r"16-bit range"):
        read_image(tmp_path / "wide.tif")


def test_other_modes_are_refused_in_one_line(tmp_path, monkeypatch):
    """A mode read_image does not know (here Pillow's "I;16S", stood in by an opened image) is refused."""
    Image.fromarray(grey_picture()).save(tmp_path / "odd.png")
    opened = Image.open(tmp_path / "odd.png")
    opened.load()
    monkeypatch.setattr(opened, "_mode", "I;16S", raising=False)
    monkeypatch.setattr("minseg.data.images._open", lambda path, what: opened)
    if opened.mode != "I;16S":
        pytest.skip("this Pillow keeps the mode elsewhere")
    with pytest.raises(ValueError, match=r"odd.png has mode 'I;16S', which read_image does not read; save it as"):
        read_image(tmp_path / "odd.png")


def test_a_model_predicts_the_same_classes_for_the_picture_at_every_bit_depth(tmp_path):
    from minseg import manual_seed
    from minseg.models import create
    from minseg.predict import Predictor
    manual_seed(0)
    predictor = Predictor(create("unet", 3, base=2, depth=2), MEAN, STD, ["a", "b", "c"])
    images = [read_image(path) for path in save_three_ways(tmp_path, grey_picture(size=(12, 9)))]
    logits = [predictor.logits(predictor.normalize(image)).numpy() for image in images]
    np.testing.assert_array_equal(logits[1], logits[0])
    np.testing.assert_array_equal(logits[2], logits[0])
    np.testing.assert_array_equal(predictor.overlay(images[1], predictor(images[1])),
                                  predictor.overlay(images[0], predictor(images[0])))
    with pytest.raises(ValueError, match=r"Predictor: a float image must hold values in \[0, 1\].*got values in "
                                         r"0.0..\d+.0; scale it first"):
        predictor(images[0].astype(np.float32))


# --- 8-bit kinds: converted by Pillow -----------------------------------------------------------
def test_palette_rgba_la_and_cmyk_images_become_their_rgb_colours(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((4, 5, 1), 7, np.uint8)], axis=-1)  # nearly transparent: alpha dropped
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    np.testing.assert_array_equal(read_image(tmp_path / "alpha.png"), rgb)
    grey = rgb[..., 0]
    Image.fromarray(np.stack([grey, grey], -1), "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), np.repeat(grey[..., None], 3, -1))
    palette = Image.fromarray(rgb).quantize(colors=256)
    palette.save(tmp_path / "palette.png")
    colours = np.asarray(palette.convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "palette.png"), colours)  # the colours, not the indices
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "cmyk.tif"),
                                  np.asarray(Image.fromarray(rgb).convert("CMYK").convert("RGB")))


# --- through the dataset, the loader and the transforms ------------------------------------------
def test_a_dataset_mixing_8_and_16_bit_files_gives_the_batches_of_the_8_bit_one(tmp_path):
    rng = np.random.default_rng(3)
    pictures = rng.integers(0, 256, size=(3, 6, 8), dtype=np.uint8)
    labels = rng.integers(0, 2, size=(3, 6, 8), dtype=np.uint8)
    for root, deep in ((tmp_path / "eight", ()), (tmp_path / "mixed", (1,))):
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
        for k in range(3):
            picture = pictures[k].astype(np.uint16) * 257 if k in deep else pictures[k]
            Image.fromarray(picture).save(root / "images" / f"{k}.png")
            Image.fromarray(labels[k]).save(root / "masks" / f"{k}.png")
    batches = {}
    for name in ("eight", "mixed"):
        for lazy in (False, True):
            ds = SegmentationDataset(tmp_path / name / "images", tmp_path / name / "masks", classes=["a", "b"],
                                     lazy=lazy)
            if not lazy:
                assert ds.images.dtype == (np.uint8 if name == "eight" else np.float32)
            loader = DataLoader(ds, batch_size=3, mean=MEAN, std=STD, pad_to_multiple=4)
            batches[name, lazy] = next(iter(loader))[0].data
    for key, batch in batches.items():
        np.testing.assert_allclose(batch, batches["eight", False], rtol=1e-6, atol=1e-6, err_msg=str(key))
    assert channel_stats(SegmentationDataset(tmp_path / "mixed" / "images", tmp_path / "mixed" / "masks",
                                             classes=["a", "b"], lazy=True))[0].dtype == np.float32


def test_float_images_resize_and_zoom_within_0_1():
    image = np.random.default_rng(4).random((10, 12, 3)).astype(np.float32)
    small = resize_image(image, (5, 6))
    assert small.shape == (5, 6, 3) and small.dtype == np.float32 and 0 <= small.min() and small.max() <= 1
    eight_bit = resize_image(np.round(image * 255).astype(np.uint8), (5, 6))
    np.testing.assert_allclose(small * 255, eight_bit, atol=1.5)  # the same filter at another precision
    zoomed, label = RandomScale((1.5, 1.5))(image, np.zeros((10, 12), np.int64), np.random.default_rng(0))
    assert zoomed.shape == image.shape and zoomed.dtype == np.float32


# --- masks -----------------------------------------------------------------------------------
def test_a_jpeg_index_mask_is_refused_saying_why(tmp_path):
    ids = np.repeat(np.arange(4, dtype=np.uint8), 8).reshape(4, 8)
    Image.fromarray(ids).save(tmp_path / "mask.jpg", quality=75)
    assert read_mask(tmp_path / "mask.jpg").shape == (4, 8)  # raw values may be read
    with pytest.raises(ValueError, match=r"mask .*mask.jpg is a lossy JPEG file: its compression changes pixel "
                                         r"values, which would be read as other class ids; save masks as PNG"):
        read_mask(tmp_path / "mask.jpg", class_ids=True)


def test_jpeg_masks_in_a_dataset(tmp_path):
    """Index masks: refused for the format. Value maps: the artifacts are unknown values, and the report says why."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    image = np.random.default_rng(5).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "images" / "a.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[:, 5:] = 255
    Image.fromarray(mask).save(tmp_path / "masks" / "a.jpg", quality=50)
    with pytest.raises(DatasetError, match="a.jpg is a lossy JPEG file"):
        SegmentationDataset(tmp_path / "images", tmp_path / "masks", classes=["x", "y"], mask_name="{stem}.jpg")
    with pytest.raises(DatasetError, match=r"a.jpg holds values the value map does not list: .* \(a lossy JPEG "
                                           r"changes values: save masks as PNG\)"):
        SegmentationDataset(tmp_path / "images", tmp_path / "masks", values={0: "x", 255: "y"},
                            mask_name="{stem}.jpg")


# --- statistics ------------------------------------------------------------------------------
class Images:
    """The smallest dataset channel_stats reads: ``images`` and ``ds[i]``."""

    def __init__(self, images, stacked=True):
        self.images = images if stacked else list(images)
        self.labels = np.zeros((len(images), *images[0].shape[:2]), np.int64)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index], None


def reference_stats(images):
    """The definition: every pixel of every image at once, in float64."""
    pixels = np.concatenate([np.asarray(image).reshape(-1, 3) for image in images]).astype(np.float64)
    pixels = pixels / 255 if np.asarray(images[0]).dtype == np.uint8 else pixels
    return pixels.mean(axis=0).astype(np.float32), pixels.std(axis=0).astype(np.float32)


@pytest.mark.parametrize("stacked", [True, False])
def test_channel_stats_streams_in_chunks_and_equals_the_definition(monkeypatch, stacked):
    monkeypatch.setattr(stats_module, "CHUNK_PIXELS", 7)  # many chunks, the last ones short
    rng = np.random.default_rng(6)
    for images in (rng.integers(0, 256, size=(3, 5, 6, 3), dtype=np.uint8),
                   rng.random((2, 4, 9, 3)).astype(np.float32)):
        mean, std = channel_stats(Images(images, stacked))
        expected_mean, expected_std = reference_stats(images)
        np.testing.assert_allclose(mean, expected_mean, rtol=2e-7)
        np.testing.assert_allclose(std, expected_std, rtol=2e-7)
        if images.dtype == np.uint8:  # the one-pass formula over a float64 copy of everything: the same float32s
            pixels = images.reshape(-1, 3).astype(np.float64) / 255.0
            old_mean = pixels.sum(axis=0) / len(pixels)
            old_std = np.sqrt(np.maximum(np.square(pixels).sum(axis=0) / len(pixels) - old_mean ** 2, 0.0))
            np.testing.assert_array_equal(mean, old_mean.astype(np.float32))
            np.testing.assert_array_equal(std, old_std.astype(np.float32))


@pytest.mark.parametrize("value", [0, 128, 255])
def test_constant_images_get_std_1_and_a_note(capsys, value):
    images = np.full((2, 3, 4, 3), value, np.uint8)
    images[..., 2] = np.arange(4, dtype=np.uint8)  # blue varies
    mean, std = channel_stats(Images(images))
    np.testing.assert_allclose(mean, [value / 255, value / 255, 1.5 / 255], rtol=1e-6)
    assert std[0] == std[1] == 1 and 0 < std[2] < 1
    assert capsys.readouterr().err == ("channel_stats: the red and green channels hold one value in every image "
                                       "(std 0); normalizing divides by 1 there instead\n")
    batch = next(iter(DataLoader(Images(images), batch_size=2, mean=mean, std=std)))[0].data
    assert np.isfinite(batch).all() and np.all(batch[:, :2] == 0)
