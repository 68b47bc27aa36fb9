"""Tests for minseg.models: shapes, parameter counts, gradients, learning, BatchNorm modes, size errors.

Gradient checks and training use TINY widths (a few channels) so that the whole file
runs in seconds; the full-size models are only built and run once for counts and shapes.
"""
import numpy as np
import pytest

import minseg
import minseg.functional as F
import minseg.nn as nn
from minseg import Tensor
from minseg.models import Naive, PaperLinkNet, PaperUNet, create


def tiny(name, num_classes=3, in_channels=3):
    """A few-channel version of each model, with the input size it needs (a multiple of its stride)."""
    if name == "naive":
        return Naive(num_classes, in_channels, widths=(8, 16, 16, 16)), (16, 16)
    if name == "unet":
        return PaperUNet(num_classes, in_channels, base=4, depth=3), (16, 16)
    return PaperLinkNet(num_classes, in_channels, base=4), (32, 32)


def count_parameters(model):
    return sum(p.size for p in model.parameters())


def to_float64(model):
    """Cast parameters and floating-point buffers in place (gradient checks need float64)."""
    for tensor in list(model.parameters()) + [b for _, b in model.named_buffers()]:
        if tensor.data.dtype.kind == "f":
            tensor.data = tensor.data.astype(np.float64)
    return model


def random_input(shape, seed=0, dtype=np.float32):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


# --- shapes -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["naive", "unet", "linknet"])
@pytest.mark.parametrize("batch, scale_h, scale_w", [(1, 2, 1), (2, 1, 1), (3, 1, 3)])
def test_tiny_model_output_is_one_score_per_class_and_pixel(name, batch, scale_h, scale_w):
    minseg.manual_seed(0)
    model, (h, w) = tiny(name, num_classes=5, in_channels=2)
    x = random_input((batch, 2, h * scale_h, w * scale_w))
    y = model(x)
    assert y.shape == (batch, 5, h * scale_h, w * scale_w)
    assert y.dtype == np.float32
    assert np.all(np.isfinite(y.numpy()))


@pytest.mark.parametrize("name, size", [("naive", (32, 48)), ("unet", (16, 48)), ("linknet", (64, 32))])
def test_full_size_model_output_shape(name, size):
    y = create(name, 7)(random_input((2, 3) + size))
    assert y.shape == (2, 7) + size


# --- parameter counts (a PyTorch model of the same definition has the same count) ---
def test_naive_parameter_count():
    # down convs 3x3 with bias: (3·32 + 32·64 + 64·128 + 128·256)·9 + 480 = 388,416
    # up transposed convs 2x2 with bias: (256·128 + 128·64 + 64·32 + 32·32)·4 + 256 = 176,384
    # BatchNorm weight+bias: 2·(32+64+128+256) + 2·(128+64+32+32) = 1,472; head 32·32 + 32 = 1,056
    assert 388_416 + 176_384 + 1_472 + 1_056 == 567_328
    assert count_parameters(Naive(32)) == 567_328


def test_unet_parameter_counts():
    assert count_parameters(PaperUNet(32)) == 7_767_008
    assert count_parameters(PaperUNet(32, base=16)) == 1_944_576


def test_unet_without_skips_keeps_every_parameter_and_loses_the_skips_information():
    minseg.manual_seed(0)
    with_skips, without = PaperUNet(3, base=2, depth=2), PaperUNet(3, base=2, depth=2, skips=False)
    without.load_state_dict(with_skips.state_dict())
    assert count_parameters(without) == count_parameters(with_skips)
    with_skips.eval(), without.eval()
    x = Tensor(np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32))
    assert not np.allclose(with_skips(x).numpy(), without(x).numpy())
    # Zeroing the decoder weights that read the skip channels makes the full model compute the ablation.
    for level in with_skips.decoder:
        conv = level[0]
        conv.weight.data[:, : conv.weight.shape[1] // 2] = 0  # cat([skip, upsampled]): the skip comes first
    assert np.allclose(with_skips(x).numpy(), without(x).numpy(), atol=1e-6)
    assert "skips=False" in repr(without)


def test_linknet_parameter_count():
    assert count_parameters(PaperLinkNet(32)) == 11_537_312


def test_running_statistics_are_buffers_not_parameters():
    model = PaperUNet(3, base=2, depth=1)
    parameter_ids = {id(p) for p in model.parameters()}
    buffers = [b for _, b in model.named_buffers()]
    assert buffers and not any(id(b) in parameter_ids for b in buffers)


# --- gradients -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["naive", "unet", "linknet"])
def test_loss_gradient_matches_finite_differences(name):
    minseg.manual_seed(1)
    model, (h, w) = tiny(name, num_classes=3)
    to_float64(model)
    rng = np.random.default_rng(2)
    # Batch 2 and a non-square input: BatchNorm at the deepest level then sees several values per channel.
    x = Tensor(rng.standard_normal((2, 3, h, 2 * w)), requires_grad=True)
    target = Tensor(rng.integers(0, 3, size=(2, h, 2 * w)))
    named = dict(model.named_parameters())
    # First and last layers, a BatchNorm scale, and the first transposed convolution's weight.
    chosen = [list(named)[0], list(named)[-1]]
    chosen += [next(n for n in named if n.endswith("weight") and named[n].ndim == 1)]
    chosen += [next(n for n, m in model.named_modules() if isinstance(m, nn.ConvTranspose2d)) + ".weight"]
    parameters = [named[n] for n in chosen]

    def loss(x, *parameters):  # the parameters are the model's own tensors, perturbed in place
        return F.cross_entropy(model(x), target)

    # ReLU and max-pool have kinks, and among ~10⁴ units some pre-activation lies within
    # 1e-5 of one (seen: a central difference with eps=1e-6 straddled a kink, 7% off).
    # eps=1e-7 stays on one side; float64 rounding of the loss then costs ~1e-9, far below atol.
    assert minseg.gradcheck(loss, [x] + parameters, eps=1e-7, n_samples=6)


# --- learning --------------------------------------------------------------------
def blocky_batch(batch, height, width, num_classes, seed=0):
    """Images whose 4x4 blocks have a class-coloured mean plus noise; labels are the block classes."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, num_classes, size=(batch, height // 4, width // 4))
    labels = blocks.repeat(4, axis=1).repeat(4, axis=2)
    colours = 2 * np.eye(num_classes, 3) - 1                      # class c lights up channel c
    images = colours[labels].transpose(0, 3, 1, 2) + 0.5 * rng.standard_normal((batch, 3, height, width))
    return Tensor(images.astype(np.float32)), Tensor(labels)


def adam_step(parameters, moments, step, lr, betas=(0.9, 0.999), eps=1e-8):
    """Adam (Kingma & Ba), written out so these tests depend only on the models and autograd."""
    for p, (m, v) in zip(parameters, moments):
        m *= betas[0]
        m += (1 - betas[0]) * p.grad
        v *= betas[1]
        v += (1 - betas[1]) * p.grad ** 2
        m_hat = m / (1 - betas[0] ** step)
        v_hat = v / (1 - betas[1] ** step)
        p.data -= lr * m_hat / (np.sqrt(v_hat) + eps)


@pytest.mark.parametrize("name", ["naive", "unet", "linknet"])
def test_tiny_model_overfits_one_batch(name):
    minseg.manual_seed(0)
    model, (h, w) = tiny(name, num_classes=3)
    images, labels = blocky_batch(2, h, w, 3)
    parameters = list(model.parameters())
    moments = [(np.zeros_like(p.data), np.zeros_like(p.data)) for p in parameters]
    accuracy = 0.0
    for step in range(1, 301):
        model.zero_grad()
        logits = model(images)
        accuracy = float(np.mean(logits.numpy().argmax(axis=1) == labels.numpy()))
        if accuracy >= 0.99:
            break
        F.cross_entropy(logits, labels).backward()
        adam_step(parameters, moments, step, lr=0.01)
    assert accuracy >= 0.99, f"{name} reached only {accuracy:.3f} pixel accuracy after {step} steps"


# --- BatchNorm: training vs evaluation mode -------------------------------------------
@pytest.mark.parametrize("name", ["naive", "unet", "linknet"])
def test_eval_mode_uses_running_statistics(name):
    minseg.manual_seed(0)
    model, (h, w) = tiny(name)
    x = random_input((3, 3, 2 * h, w), seed=4)  # 2h: one sample alone still has 2 values per channel
    buffers_before = {n: b.numpy().copy() for n, b in model.named_buffers()}

    model.eval()
    with minseg.no_grad():
        y_eval = model(x).numpy()
        again = model(x).numpy()
        first_alone = model(x[0:1]).numpy()
    np.testing.assert_array_equal(y_eval, again)                      # deterministic
    np.testing.assert_allclose(first_alone[0], y_eval[0], rtol=1e-5, atol=1e-5)  # no batch dependence
    for n, b in model.named_buffers():
        np.testing.assert_array_equal(b.numpy(), buffers_before[n])   # eval does not update statistics

    model.train()
    y_train = model(x).numpy()
    first_alone_train = model(x[0:1]).numpy()
    assert not np.allclose(y_train, y_eval, atol=1e-3)
    assert not np.allclose(first_alone_train[0], y_train[0], atol=1e-3)  # batch statistics couple the samples
    changed = [n for n, b in model.named_buffers() if not np.array_equal(b.numpy(), buffers_before[n])]
    assert any("running_mean" in n for n in changed)


# --- input sizes the model cannot restore ------------------------------------------
@pytest.mark.parametrize("model, size, message", [
    (PaperUNet(3, base=2), (90, 128), "PaperUNet with depth 4 needs height and width divisible by 16, got 90x128"),
    (PaperUNet(3, base=2, depth=2), (16, 18),
     "PaperUNet with depth 2 needs height and width divisible by 4, got 16x18"),
    (Naive(3, widths=(2, 2, 2, 2)), (24, 16), "divisible by 16, got 24x16"),
    (PaperLinkNet(3, base=4), (48, 64), "PaperLinkNet needs height and width divisible by 32, got 48x64"),
])
def test_indivisible_input_size_names_the_needed_multiple(model, size, message):
    with pytest.raises(ValueError, match=message):
        model(random_input((1, 3) + size))


# --- choosing a model by name -----------------------------------------------------------
def test_create_builds_the_named_model_with_its_options():
    model = create("unet", 5, in_channels=1, base=4, depth=2)
    assert isinstance(model, PaperUNet) and model.depth == 2
    assert model(random_input((1, 1, 8, 12))).shape == (1, 5, 8, 12)
    assert isinstance(create("naive", 2), Naive)
    assert isinstance(create("linknet", 2, base=4), PaperLinkNet)


def test_create_rejects_an_unknown_name_and_lists_the_choices():
    with pytest.raises(ValueError, match="create: unknown model name 'maskrcnn'; choose one of 'naive', 'unet', "
                                         "'linknet', 'fpn'"):
        create("maskrcnn", 3)
