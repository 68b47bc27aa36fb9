"""Tests for FCN-32s/16s/8s: the bilinear kernel equals interpolate, skips, shapes, parameter counts, gradients."""
import numpy as np
import pytest

import minseg
import minseg.functional as F
from minseg import Tensor
from minseg.gradcheck import gradcheck
from minseg.models import create
from minseg.models.fcn import FCN, FCN8s, FCN16s, FCN32s, bilinear_kernel, bilinear_upsampling


def count_parameters(model):
    return sum(p.size for p in model.parameters())


def random_input(shape, seed=0, dtype=np.float32):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def test_bilinear_kernel_on_paper():
    # factor 2: centre 1.5, profile 1 − |a − 1.5|/2 = (1/4, 3/4, 3/4, 1/4); the kernel is its outer product.
    kernel = bilinear_kernel(2, 2)
    np.testing.assert_allclose(kernel[0, 0], np.outer([0.25, 0.75, 0.75, 0.25], [0.25, 0.75, 0.75, 0.25]))
    np.testing.assert_array_equal(kernel[0, 1], 0)  # no channel feeds another
    np.testing.assert_allclose(kernel[1, 1], kernel[0, 0])


def test_the_taps_that_reach_one_output_pixel_sum_to_one():
    # Output pixel o is reached by kernel taps o + p − i·f for the inputs i around it: taps f apart. Inside the
    # map these weights sum to 1 (interpolation reproduces a constant), for every phase (r, s) of the stride.
    factor = 4
    kernel = bilinear_kernel(1, factor)[0, 0]
    phases = kernel.reshape(2, factor, 2, factor).sum(axis=(0, 2))
    np.testing.assert_allclose(phases, np.ones((factor, factor)))


@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize("shape", [(1, 1, 5, 5), (2, 3, 7, 9), (1, 2, 1, 4)])
def test_bilinear_upsampling_equals_interpolate_align_corners_false_inside_the_border(factor, shape):
    x = random_input(shape, seed=factor)
    up = bilinear_upsampling(shape[1], factor)(x).numpy()
    interpolated = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False).numpy()
    assert up.shape == interpolated.shape
    border = factor // 2
    np.testing.assert_allclose(up[..., border:-border, border:-border],
                               interpolated[..., border:-border, border:-border], atol=1e-5)
    # At the border the transposed convolution sees zeros beyond the map, interpolate repeats the edge: the
    # transposed convolution IS interpolate of the map padded with one ring of zeros, cropped back.
    padded = Tensor(np.pad(x.numpy(), ((0, 0), (0, 0), (1, 1), (1, 1))))
    of_padded = F.interpolate(padded, scale_factor=factor, mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(up, of_padded[..., factor:-factor, factor:-factor], atol=1e-5)


def test_bilinear_upsampling_is_learnable_and_rejects_odd_factors():
    layer = bilinear_upsampling(3, 2)
    assert [p.shape for p in layer.parameters()] == [(3, 3, 4, 4)] and layer.weight.requires_grad
    with pytest.raises(ValueError, match="bilinear_upsampling: factor must be an even integer >= 2, got 3"):
        bilinear_upsampling(3, 3)


# --- the models ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [FCN32s, FCN16s, FCN8s])
def test_output_is_one_score_per_class_at_the_input_size(cls):
    minseg.manual_seed(0)
    model = cls(5, in_channels=2)
    for module in model.score:  # the paper's zero start would give all-zero scores: perturb them
        module.weight.data = np.random.default_rng(1).standard_normal(module.weight.shape).astype(np.float32)
    y = model(random_input((2, 2, 64, 96)))
    assert y.shape == (2, 5, 64, 96) and y.dtype == np.float32
    assert np.std(y.numpy()) > 0


def test_score_layers_start_at_zero_so_the_first_prediction_is_uniform():
    minseg.manual_seed(0)
    np.testing.assert_array_equal(FCN8s(4)(random_input((2, 3, 32, 32))).numpy(), 0)


def test_skips_add_the_finer_scores_to_the_upsampled_coarse_ones():
    minseg.manual_seed(0)
    model = FCN16s(3).eval()
    rng = np.random.default_rng(2)
    for module in model.score:
        module.weight.data = rng.standard_normal(module.weight.shape).astype(np.float32)
    x = random_input((1, 3, 64, 64))
    features = model.encoder(x)
    expected = model.upsample[0](model.score[0](features[5])) + model.score[1](features[4])
    expected = F.interpolate(expected, size=(64, 64), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(model(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_parameter_counts():
    # ResNet-18 without its classifier: 11,176,512. Score convs 1x1 to 32 classes: 512·32 + 32 = 16,416,
    # 256·32 + 32 = 8,224, 128·32 + 32 = 4,128; each learnable x2 upsampling: 32·32·4·4 = 16,384.
    encoder = 11_176_512
    assert count_parameters(FCN32s(32)) == encoder + 16_416 == 11_192_928
    assert count_parameters(FCN16s(32)) == encoder + 16_416 + 8_224 + 16_384 == 11_217_536
    assert count_parameters(FCN8s(32)) == encoder + 16_416 + 8_224 + 4_128 + 2 * 16_384 == 11_238_048


def test_create_knows_the_three_fcns_with_resnet18_by_default():
    assert [count_parameters(create(name, 32)) for name in ("fcn32s", "fcn16s", "fcn8s")] == [
        11_192_928, 11_217_536, 11_238_048]
    assert isinstance(create("fcn8s", 4, encoder="resnet34"), FCN8s)


def test_bad_arguments_and_sizes():
    with pytest.raises(ValueError, match="FCN: skips must be 0"):
        FCN(3, skips=3)
    with pytest.raises(ValueError, match="FCN-8s needs height and width divisible by 32, got 40x64; pad the input "
                                         "to 64x64"):
        FCN8s(3)(random_input((1, 3, 40, 64)))


def test_gradcheck_of_the_decoder_weights():
    minseg.manual_seed(0)
    model = FCN8s(2).eval()
    for tensor in list(model.parameters()) + [b for _, b in model.named_buffers()]:
        if tensor.data.dtype.kind == "f":
            tensor.data = tensor.data.astype(np.float64)
    rng = np.random.default_rng(3)
    for module in model.score:
        module.weight.data = rng.standard_normal(module.weight.shape)
    x = Tensor(rng.standard_normal((1, 3, 32, 32)))
    checked = [model.score[2].weight, model.upsample[0].weight, model.upsample[1].weight]
    assert gradcheck(lambda *weights: model(x), checked, n_samples=8)


def test_fcn8s_learns_a_tiny_batch():
    # Image 0 is all class 1, image 1 all class 2: learnable from the zero start within a few steps.
    minseg.manual_seed(0)
    model = FCN8s(3)
    x = random_input((2, 3, 32, 32), seed=4)
    target = Tensor(np.stack([np.full((32, 32), 1), np.full((32, 32), 2)]))
    optimizer = minseg.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(model(x), target)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[0] == pytest.approx(np.log(3), rel=1e-5)  # zero scores: uniform over the 3 classes
    assert losses[-1] < 0.5 * losses[0]
