"""Tiled prediction and test-time flips (minseg/tiling.py, Predictor's tile/tta arguments).

Windows placed on paper; blend weights that add up to one where neighbours meet at the regular step; a window as
large as the image giving exactly the whole-image logits; with an overlap of at least the model's receptive field
(measured by backpropagation, as the course does) the windows giving the whole-image logits to float32 noise;
flips undone (a model symmetric by construction gives the plain logits back); memory that does not grow with the
image past one row of windows.
"""
import math
import tracemalloc

import numpy as np
import pytest

import minseg
import minseg.functional as F
from minseg import nn, tiling
from minseg.models import PaperUNet
from minseg.predict import Predictor
from minseg.tiling import BLENDS, blend_weights, flip_logits, tiled_logits, whole_logits, window_starts


def _unet(depth=2, base=4, classes=3, seed=0):
    minseg.manual_seed(seed)
    model = PaperUNet(classes, base=base, depth=depth)
    model.eval()
    return model


def _pixels(height, width, seed=0, images=1):
    return np.random.default_rng(seed).standard_normal((images, 3, height, width)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Windows and weights
# ---------------------------------------------------------------------------------------------
def test_window_starts_on_paper():
    assert window_starts(10, 4, 1) == [0, 3, 6]
    assert window_starts(10, 4, 0) == [0, 4, 6]  # the last window ends at the border, overlapping more
    assert window_starts(4, 4, 2) == [0] and window_starts(3, 4, 1) == [0]
    for size, tile, overlap in [(100, 16, 4), (97, 32, 8), (64, 64, 0), (65, 64, 16)]:
        starts = window_starts(size, tile, overlap)
        covered = np.zeros(size, int)
        for start in starts:
            covered[start:start + tile] += 1
        assert covered.min() >= 1 and starts[-1] + tile == max(size, tile)
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("blend", ["linear", "center", "uniform"])
def test_weights_of_neighbours_add_up_to_one_at_the_regular_step(blend):
    tile, overlap, windows = 16, 6, 5
    size = tile + (windows - 1) * (tile - overlap)  # every window at the regular step
    starts = window_starts(size, tile, overlap)
    assert len(starts) == windows
    summed = np.zeros((size, size), np.float32)
    for top in starts:
        for left in starts:
            borders = (top == 0, top + tile == size, left == 0, left + tile == size)
            summed[top:top + tile, left:left + tile] += blend_weights(tile, tile, (overlap, overlap), blend, borders)
    if blend == "uniform":  # counts the windows: 1, 2 where two overlap, 4 where four do
        assert set(np.unique(summed)) == {1, 2, 4}
    else:
        np.testing.assert_allclose(summed, 1, atol=1e-6)


def test_gaussian_weights_favour_the_centre():
    weights = blend_weights(32, 32, (8, 8), "gaussian")
    assert weights.min() > 0 and weights.argmax() in {np.ravel_multi_index((r, c), (32, 32)) for r in (15, 16)
                                                       for c in (15, 16)}
    np.testing.assert_array_equal(weights, weights[::-1, ::-1])
    assert weights[0, 16] < 1e-3 * weights[16, 16]  # the edge's logits hardly count


@pytest.mark.parametrize("blend", BLENDS)
def test_normalized_weights_leave_a_constant_prediction_unchanged(blend):
    """A model whose logits are the same everywhere must come back unchanged: the weights of every pixel,
    divided by their sum, add up to one, at the border, the corners and where the last window overlaps more."""
    class Constant(nn.Module):
        size_multiple = 4

        def forward(self, x):
            shape = (x.shape[0], 2) + tuple(x.shape[2:])
            return minseg.Tensor(np.broadcast_to(np.array([1.5, -2.0], np.float32)[:, None, None], shape).copy())

    logits = tiled_logits(Constant(), _pixels(45, 70), tile=16, overlap=6, blend=blend)
    np.testing.assert_allclose(logits[0, 0], 1.5, rtol=1e-6)
    np.testing.assert_allclose(logits[0, 1], -2.0, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Tiled = whole
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("blend", BLENDS)
@pytest.mark.parametrize("height, width", [(37, 50), (32, 32), (20, 90)])
def test_a_window_covering_the_image_gives_the_whole_image_logits_exactly(blend, height, width):
    model, pixels = _unet(), _pixels(height, width, images=2)
    whole = whole_logits(model, pixels)
    assert whole.shape == (2, 3, height, width)
    np.testing.assert_array_equal(tiled_logits(model, pixels, tile=96, overlap=8, blend=blend), whole)
    np.testing.assert_array_equal(tiled_logits(model, pixels, tile=96, blend=blend, flips="hv"),
                                  whole_logits(model, pixels, flips="hv"))


def test_overlap_of_the_receptive_field_gives_the_whole_image_logits():
    model = _unet(depth=2)
    field = max(tiling.receptive_field(model, size=96))
    assert 30 < field < 64  # two poolings and ten 3x3 convolutions: tens of pixels
    pixels = _pixels(150, 170)
    whole = whole_logits(model, pixels)
    tile = 96
    assert tiling.windows_count(150, 170, tile, field, model.size_multiple) == 9
    tiled = tiled_logits(model, pixels, tile=tile, overlap=field, blend="center")
    np.testing.assert_allclose(tiled, whole, atol=2e-5, rtol=0)
    # Without the overlap the windows' borders differ: the receptive field there reaches into their padding.
    noise = np.abs(tiled - whole).max()
    assert np.abs(tiled_logits(model, pixels, tile=tile, overlap=0) - whole).max() > 100 * noise + 1e-5


def test_windows_start_on_the_models_grid():
    """A window must start at a multiple of size_multiple, or its poolings group other pixels than the whole
    image's do; tile and overlap are rounded up so every start is one."""
    model, pixels = _unet(depth=2), _pixels(70, 70)
    assert tiling.windows_count(70, 70, tile=30, overlap=5, multiple=4) == 9  # tile 32, overlap 8, padded size 72
    whole = whole_logits(model, pixels)
    tiled = tiled_logits(model, pixels, tile=61, overlap=47, blend="center")  # becomes 64 and 48 > the field
    np.testing.assert_allclose(tiled, whole, atol=2e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# Flips
# ---------------------------------------------------------------------------------------------
class _Symmetric(nn.Module):
    """A 3x3 convolution whose kernel is symmetric left-right and top-bottom, then ReLU and a 1x1: it commutes
    with both flips by construction."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 2, 1)
        weight = self.conv.weight.data
        weight[...] = weight + weight[..., ::-1] + weight[..., ::-1, :] + weight[..., ::-1, ::-1]

    def forward(self, x):
        return self.head(F.relu(self.conv(x)))


@pytest.mark.parametrize("flips", ["h", "v", "hv"])
def test_a_flip_equivariant_model_gives_the_same_logits_with_flips(flips):
    minseg.manual_seed(0)
    model, pixels = _Symmetric(), _pixels(20, 30)
    plain = whole_logits(model, pixels)
    np.testing.assert_allclose(whole_logits(model, pixels, flips=flips), plain, atol=1e-6, rtol=0)
    np.testing.assert_allclose(tiled_logits(model, pixels, tile=16, overlap=4, flips=flips),
                               tiled_logits(model, pixels, tile=16, overlap=4), atol=1e-6, rtol=0)


def test_flips_are_undone_before_averaging():
    model, x = _unet(), _pixels(32, 48)
    with minseg.no_grad():
        plain = model(minseg.Tensor(x)).data
        mirrored = model(minseg.Tensor(np.ascontiguousarray(x[..., ::-1]))).data[..., ::-1]
        upside_down = model(minseg.Tensor(np.ascontiguousarray(x[..., ::-1, :]))).data[..., ::-1, :]
        both = model(minseg.Tensor(np.ascontiguousarray(x[..., ::-1, ::-1]))).data[..., ::-1, ::-1]
    assert np.abs(mirrored - plain).max() > 1e-3  # this model is not symmetric: the test can tell
    np.testing.assert_allclose(flip_logits(model, x, "h"), (plain + mirrored) / 2, atol=1e-6)
    np.testing.assert_allclose(flip_logits(model, x, "hv"), (plain + mirrored + upside_down + both) / 4, atol=1e-6)
    softmax = [np.exp(z) / np.exp(z).sum(1, keepdims=True) for z in (plain, mirrored)]
    np.testing.assert_allclose(np.exp(flip_logits(model, x, "h", average="probabilities")),
                               (softmax[0] + softmax[1]) / 2, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Memory and the Predictor
# ---------------------------------------------------------------------------------------------
def _peak_bytes(function):
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_past_one_row_of_windows_is_the_images_own_arrays():
    """Four times the rows of windows: the peak grows by the larger input and logits arrays alone."""
    model = _unet(depth=2, classes=2)
    extra = []
    for height in (128, 512):
        pixels = _pixels(height, 128)
        peak = _peak_bytes(lambda: tiled_logits(model, pixels, tile=64, overlap=16, batch_size=2))
        extra.append(peak - 2 * 4 * height * 128)  # less the float32 logits of 2 classes (the input exists before)
    assert extra[1] < 1.1 * extra[0], extra


def _predictor(**options):
    return Predictor(_unet(classes=2), mean=[0.5] * 3, std=[0.25] * 3, classes=["a", "b"], **options)


def test_predictor_tiles_and_flips_on_request():
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    pixels = _predictor().normalize(image)
    tiled = _predictor(tile=32, overlap=8, blend="linear", tta="h", window_batch=3).logits(pixels).numpy()
    expected = tiled_logits(_unet(classes=2), pixels, 32, 8, "linear", batch_size=3, flips="h")
    np.testing.assert_array_equal(tiled, expected)
    assert _predictor(tile=32)(image).shape == (40, 60)


def test_predictor_tiles_by_itself_past_its_memory_budget_and_says_so():
    said = []
    predictor = _predictor(memory_budget=10 * 2 ** 20, report=said.append)
    assert predictor.plan(400, 300) is None and said == []  # within one window of AUTO_TILE: never estimated
    assert predictor.plan(600, 2000) == (512, 64)
    assert len(said) == 1 and "600x2000" in said[0] and "512x512 windows" in said[0]
    assert 1e6 < predictor.estimate_bytes(600, 2000) / 10 < 1e9
    assert _predictor(memory_budget=math.inf).plan(600, 2000) is None


@pytest.mark.parametrize("options, message", [
    (dict(tile=0), "tile must be a positive int or None, got 0"),
    (dict(tile=16.0), "tile must be a positive int or None, got 16.0"),
    (dict(tile=16, overlap=-1), "overlap must be a non-negative int or None, got -1"),
    (dict(tile=16, overlap=16), "overlap must be smaller than tile, got overlap 16 and tile 16"),
    (dict(blend="box"), "blend must be one of uniform, linear, gaussian, center, got 'box'"),
    (dict(tta="x"), "tta must be one of None, h, v, hv, got 'x'"),
    (dict(tta_average="mean"), "tta_average must be one of logits, probabilities, got 'mean'"),
])
def test_predictor_refuses_bad_tiling_options(options, message):
    with pytest.raises(ValueError, match="Predictor: " + message.replace("(", r"\(").replace(")", r"\)")):
        _predictor(**options)


def test_tiled_logits_refuses_an_overlap_as_large_as_the_tile():
    with pytest.raises(ValueError, match=r"tiled_logits: overlap must be smaller than tile, got overlap \(8, 8\)"):
        tiled_logits(_unet(), _pixels(16, 16), tile=8, overlap=8)
