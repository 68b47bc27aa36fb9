"""Tests for SegNet and SegNet-Basic: the unpooling puts maxima back, shapes, parameter counts, gradients."""
import numpy as np
import pytest

import minseg
import minseg.functional as F
from minseg import Tensor
from minseg.gradcheck import gradcheck
from minseg.models import create, segnet
from minseg.models.segnet import SegNet, SegNetBasic, pool_with_indices, unpool


def count_parameters(model):
    return sum(p.size for p in model.parameters())


def random_input(shape, seed=0, dtype=np.float32):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def window_maxima_only(x):
    """x where a pixel is the (first) maximum of its 2×2 window, 0 elsewhere: a loop over windows."""
    kept = np.zeros_like(x)
    n_images, channels, height, width = x.shape
    for n in range(n_images):
        for c in range(channels):
            for i in range(0, height, 2):
                for j in range(0, width, 2):
                    window = x[n, c, i:i + 2, j:j + 2]
                    di, dj = np.unravel_index(np.argmax(window), window.shape)
                    kept[n, c, i + di, j + dj] = window[di, dj]
    return kept


# --- the idea: each maximum goes back where the encoder found it -----------------
@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (2, 3, 6, 8), (1, 2, 10, 4)])
def test_unpooling_puts_each_maximum_back_where_the_pool_found_it(shape):
    x = random_input(shape, seed=1).numpy()
    pooled, switches = pool_with_indices(Tensor(x))
    np.testing.assert_array_equal(unpool(pooled, switches).numpy(), window_maxima_only(x))


def test_the_model_decoder_unpools_with_the_encoder_indices(monkeypatch):
    # Record what the model feeds to unpool: the deepest encoder map and the decoder's first unpooled map.
    seen = []
    original_pool, original_unpool = segnet.pool_with_indices, segnet.unpool

    def recording_pool(x):
        seen.append(("pool", x.numpy()))
        return original_pool(x)

    def recording_unpool(x, switches):
        y = original_unpool(x, switches)
        seen.append(("unpool", x.numpy(), y.numpy()))
        return y

    monkeypatch.setattr(segnet, "pool_with_indices", recording_pool)
    monkeypatch.setattr(segnet, "unpool", recording_unpool)
    minseg.manual_seed(0)
    model = SegNetBasic(3, width=4, depth=2, kernel_size=3)
    model(random_input((2, 3, 8, 12)))
    deepest_features = seen[1][1]           # the second encoder stage's output, before its pool
    _, pooled, first_unpooled = seen[2]     # the decoder starts by unpooling the encoder's code
    np.testing.assert_array_equal(first_unpooled, window_maxima_only(deepest_features))
    assert np.count_nonzero(first_unpooled) == np.count_nonzero(pooled)


# --- shapes and counts ---------------------------------------------------------------
@pytest.mark.parametrize("batch, size", [(1, (16, 16)), (2, (32, 48))])
def test_segnet_basic_output_shape(batch, size):
    minseg.manual_seed(0)
    y = SegNetBasic(5, in_channels=2, width=8)(random_input((batch, 2) + size))
    assert y.shape == (batch, 5) + size and y.dtype == np.float32


def test_segnet_output_shape():
    minseg.manual_seed(0)
    y = SegNet(4, base=8)(random_input((2, 3, 32, 64)))
    assert y.shape == (2, 4, 32, 64)


def test_segnet_basic_parameter_count():
    # encoder 7x7 convs without bias: 3·64·49 + 3·64·64·49 = 611,520; decoder 4·64·64·49 = 802,816;
    # 8 BatchNorms of 64 channels: 8·128 = 1,024; classifier 1x1: 64·32 + 32 = 2,080.
    assert 611_520 + 802_816 + 1_024 + 2_080 == 1_417_440
    assert count_parameters(SegNetBasic(32)) == 1_417_440


def test_segnet_parameter_count():
    # VGG-16's 13 convolutions with biases 14,714,688 and their BatchNorms 8,448; the mirrored decoder's
    # 12 convolutions 14,712,448 and BatchNorms 7,424; the 3x3 classifier 64·32·9 + 32 = 18,464.
    assert 14_714_688 + 8_448 + 14_712_448 + 7_424 + 18_464 == 29_461_472
    assert count_parameters(SegNet(32)) == 29_461_472


def test_create_builds_both_with_the_paper_defaults():
    assert count_parameters(create("segnet_basic", 32)) == 1_417_440
    assert count_parameters(create("segnet", 32)) == 29_461_472


def test_sizes_not_divisible_are_refused_with_the_padded_size():
    with pytest.raises(ValueError, match="SegNetBasic with depth 4 needs height and width divisible by 16, "
                                         "got 20x16; pad the input to 32x16"):
        SegNetBasic(3, width=4)(random_input((1, 3, 20, 16)))
    with pytest.raises(ValueError, match="SegNet needs height and width divisible by 32, got 32x40"):
        SegNet(3, base=8)(random_input((1, 3, 32, 40)))


# --- gradients through the whole model ------------------------------------------------
def to_float64(model):
    for tensor in list(model.parameters()) + [b for _, b in model.named_buffers()]:
        if tensor.data.dtype.kind == "f":
            tensor.data = tensor.data.astype(np.float64)
    return model


def test_segnet_basic_gradcheck_in_eval_mode():
    minseg.manual_seed(0)
    model = to_float64(SegNetBasic(2, in_channels=2, width=3, depth=2, kernel_size=3)).eval()
    x = Tensor(np.random.default_rng(2).standard_normal((1, 2, 4, 8)), requires_grad=True)
    weight = model.encoder[0][0].weight
    assert gradcheck(lambda x, w: model(x), [x, weight], n_samples=20)


def test_segnet_basic_learns_a_tiny_batch():
    minseg.manual_seed(0)
    model = SegNetBasic(3, width=8, depth=2, kernel_size=3)
    x = random_input((2, 3, 8, 8), seed=3)
    target = Tensor(np.random.default_rng(4).integers(0, 3, (2, 8, 8)))
    optimizer = minseg.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = F.cross_entropy(model(x), target)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first
