"""Class ids one row of windows at a time (minseg/tiled_stream.py, the Predictor's tiled path).

The rows ``tiled_rows`` emits, put back together, are bit for bit ``tiled_logits`` of the normalized images, and
``tiled_class_ids`` is its argmax: on awkward sizes, overlaps, every blend, flips, an image smaller than a window,
several images, float images; every row comes once, top to bottom. The memory of predicting an image twice as
tall grows by its pixels and its class ids alone, where the whole-logits path grows by its logits too.
"""
import tracemalloc

import numpy as np
import pytest

import minseg
from minseg import backend
from minseg.data.loader import normalize
from minseg.functional.one_hot import to_class_ids
from minseg.models import PaperUNet
from minseg.predict import Predictor
from minseg.tiled_stream import tiled_class_ids, tiled_rows
from minseg.tiling import BLENDS, tiled_logits

MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


def _unet(classes=3):
    minseg.manual_seed(0)
    model = PaperUNet(classes, base=4, depth=2)  # size_multiple 4
    model.eval()
    return model


def _images(count, height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def _assembled(rows, shape):
    """The rows of ``tiled_rows`` written into one array, checking that each row comes once, in order."""
    logits, filled = None, []
    for image, top, part in rows:
        if logits is None:
            logits = np.full(shape[:1] + (len(part),) + shape[1:], np.nan, np.float32)
        assert filled == [] or (image, top) > filled[-1]
        assert np.isnan(logits[image, :, top:top + part.shape[1]]).all()  # no row twice
        logits[image, :, top:top + part.shape[1]] = part
        filled.append((image, top))
    return logits


# ---------------------------------------------------------------------------------------------
# The same numbers as tiled_logits
# ---------------------------------------------------------------------------------------------
CASES = [  # count, height, width, tile, overlap, flips, batch_size
    (1, 45, 70, 16, 6, None, 3),  # tile and overlap rounded up to 16 and 8; the last window overlaps more
    (1, 150, 37, 32, 12, "h", None),  # one column of windows, many rows
    (2, 61, 53, 24, 0, "hv", 4),  # two images, no overlap, batches spanning rows of windows and images
    (3, 20, 90, 64, 16, None, 2),  # an image shorter than a window: one row of windows
    (1, 13, 11, 96, 8, "v", 1),  # an image smaller than a window
    (1, 77, 66, (24, 40), (8, 20), None, 5),  # different rows and columns
]


@pytest.mark.parametrize("blend", BLENDS)
@pytest.mark.parametrize("count, height, width, tile, overlap, flips, batch_size", CASES)
def test_the_rows_are_tiled_logits_bit_for_bit(blend, count, height, width, tile, overlap, flips, batch_size):
    model, images = _unet(), _images(count, height, width)
    expected = tiled_logits(model, normalize(images, MEAN, STD), tile, overlap, blend, batch_size, flips)
    rows = tiled_rows(model, images, MEAN, STD, tile, overlap, blend, batch_size, flips)
    np.testing.assert_array_equal(_assembled(rows, (count, height, width)), expected)
    ids = tiled_class_ids(model, images, MEAN, STD, tile, overlap, blend, batch_size, flips)
    assert ids.dtype == np.int64 and ids.shape == (count, height, width)
    np.testing.assert_array_equal(ids, to_class_ids(expected).numpy())


def test_a_float_image_is_normalized_as_the_whole_one_is():
    model, image = _unet(), _images(1, 40, 50)[0] / 255.0  # float64 in [0, 1]
    predictor = Predictor(model, MEAN, STD, ["a", "b", "c"], tile=16, overlap=4, tta_average="probabilities",
                          tta="h")
    expected = to_class_ids(predictor.logits(predictor.normalize(image))).numpy()[0]
    np.testing.assert_array_equal(predictor(image), expected)


def test_the_predictor_streams_only_without_crf(monkeypatch):
    """Tiled class ids come from tiled_class_ids; the CRF needs whole probabilities and keeps tiled_logits."""
    calls = []
    monkeypatch.setattr(minseg.predict, "tiled_class_ids", lambda *args, **kwargs: calls.append("stream") or
                        tiled_class_ids(*args, **kwargs))
    image = _images(1, 30, 40)[0]
    plain = Predictor(_unet(2), MEAN, STD, ["a", "b"], tile=16, overlap=4)
    assert plain(image).shape == (30, 40) and calls == ["stream"]
    refined = Predictor(_unet(2), MEAN, STD, ["a", "b"], tile=16, overlap=4, crf={"iterations": 1})
    assert refined(image).shape == (30, 40) and calls == ["stream"]


@pytest.mark.parametrize("images, found", [
    (np.zeros((2, 5, 3), np.uint8), r"uint8 \(2, 5, 3\)"),
    (np.zeros((1, 2, 5, 4), np.uint8), r"uint8 \(1, 2, 5, 4\)"),
    (np.zeros((1, 2, 5, 3), np.int32), r"int32 \(1, 2, 5, 3\)"),
    ([[[[0, 0, 0]]]], "list"),
])
def test_bad_images_are_refused_before_any_window_runs(images, found):
    with pytest.raises(ValueError, match=r"tiled_class_ids: images must be a NumPy array \(N, H, W, 3\), uint8 or "
                                         rf"float in \[0, 1\], got {found}; stack the images"):
        tiled_class_ids(_unet(), images, MEAN, STD, tile=16)
    with pytest.raises(ValueError, match="tiled_rows: overlap must be smaller than tile"):
        tiled_rows(_unet(), _images(1, 8, 8), MEAN, STD, tile=8, overlap=8)


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cupy_available(), reason="needs CuPy and an NVIDIA GPU")
def test_on_a_gpu_the_rows_are_tiled_logits_there():
    model, images = _unet().to("cuda"), _images(2, 61, 53)
    expected = tiled_logits(model, normalize(images, MEAN, STD), 24, 8, "gaussian", 3, "h", device="cuda")
    rows = ((image, top, part.get()) for image, top, part in
            tiled_rows(model, images, MEAN, STD, 24, 8, "gaussian", 3, "h", device="cuda"))
    np.testing.assert_array_equal(_assembled(rows, (2, 61, 53)), expected.get())
    ids = tiled_class_ids(model, images, MEAN, STD, 24, 8, "gaussian", 3, "h", device="cuda")
    np.testing.assert_array_equal(ids, expected.argmax(axis=1).get())


# ---------------------------------------------------------------------------------------------
# Memory: a taller image adds its pixels and its ids, not its logits
# ---------------------------------------------------------------------------------------------
def _peak_growth(predict, image):
    """Bytes ``predict(image)`` allocates at its peak, beyond what exists before (``image`` included)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        predict(image)
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_memory_of_twice_the_rows_grows_by_the_pixels_and_ids_alone():
    """Past one row of windows, the peak of an image of 2H rows exceeds that of H rows by little more than the
    extra uint8 pixels (the input's copy inside the predictor, if any) and int64 ids; one band of logits
    (C x tile x W float32) is the allowance for the allocator. The whole-logits path needs the extra float32
    input and logits besides, more than that bound, so the test can tell the two apart."""
    classes, tile, width, height = 2, 32, 96, 256
    predictor = Predictor(_unet(classes), MEAN, STD, ["a", "b"], tile=tile, overlap=8, window_batch=2)
    images = [_images(1, rows, width, seed=rows)[0] for rows in (height, 2 * height)]
    _peak_growth(predictor, images[0])  # the workspaces kept between calls are made before measuring
    streamed = [_peak_growth(predictor, image) for image in images]
    extra_pixels = height * width
    bound = (3 + 8) * extra_pixels + classes * tile * width * 4
    assert streamed[1] - streamed[0] <= bound, (streamed, bound)

    def whole_logits_path(image):
        return to_class_ids(predictor.logits(predictor.normalize(image))).numpy()[0]

    _peak_growth(whole_logits_path, images[0])
    whole = [_peak_growth(whole_logits_path, image) for image in images]
    assert whole[1] - whole[0] >= (3 + classes) * 4 * extra_pixels > bound, (whole, bound)
