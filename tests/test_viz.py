"""Every plot writes a real PNG; colours and image conversions are right."""
import subprocess
import sys

import numpy as np
import pytest

from minseg import Tensor, viz

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CODES = ["Road", "Sky", "Car", "Void", "Tree"]


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, f"{path} is not a non-empty PNG"


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 12, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, len(CODES), size=(5, 12, 16))
    return images, labels


def test_camvid_palette_and_colorize():
    assert viz.CAMVID_PALETTE.shape == (32, 3) and viz.CAMVID_PALETTE.dtype == np.uint8
    assert len({tuple(c) for c in viz.CAMVID_PALETTE}) == 32  # every class its own colour
    assert tuple(viz.CAMVID_PALETTE[30]) == (0, 0, 0)          # CamVid's Void is black
    assert tuple(viz.CAMVID_PALETTE[17]) == (128, 64, 128)     # and its Road purple
    colours = viz.palette(40)
    assert colours.shape == (40, 3) and len({tuple(c) for c in colours}) == 40
    label = np.array([[0, 17], [30, 4]])
    np.testing.assert_array_equal(viz.colorize(label), viz.palette(32)[label])
    np.testing.assert_array_equal(viz.colorize(label, 32, viz.CAMVID_PALETTE), viz.CAMVID_PALETTE[label])
    np.testing.assert_array_equal(viz.colorize(np.array([[-100, 1]]), 3), [[(0, 0, 0), viz.palette(3)[1]]])


def test_default_palette_colours_are_far_apart():
    colours = viz.palette(18).astype(np.int64)
    distances = np.abs(colours[:, None] - colours[None]).sum(-1) + 1000 * np.eye(18, dtype=np.int64)
    assert distances.min() >= 50  # no two of the first 18 within 50 RGB steps of each other


def test_show_batch_spreads_its_samples_and_uses_the_dataset_colours(tmp_path):
    images = np.zeros((40, 4, 6, 3), np.uint8)
    labels = np.repeat(np.arange(40) % 3, 24).reshape(40, 4, 6)
    assert viz.spread_indices(40, 8).tolist() == [0, 6, 11, 17, 22, 28, 33, 39]
    colors = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255)], np.uint8)
    figure = viz.show_batch(images, labels, codes=["a", "b", "c"], colors=colors, alpha=1.0)
    shown = [ax.get_images()[0].get_array() for ax in figure.axes if ax.get_images()]
    assert len(shown) == 8
    for picture, index in zip(shown, viz.spread_indices(40, 8)):
        np.testing.assert_allclose(picture[0, 0], colors[index % 3] / 255)


def test_normalized_batches_are_denormalized_for_display():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(2, 3, 4, 5)).astype(np.float32) / 255
    mean, std = np.array([0.4, 0.5, 0.6], np.float32), np.array([0.2, 0.25, 0.3], np.float32)
    normalized = Tensor((pixels - mean.reshape(1, 3, 1, 1)) / std.reshape(1, 3, 1, 1))
    shown = viz._display_images(normalized, mean, std)
    np.testing.assert_allclose(shown, pixels.transpose(0, 2, 3, 1), atol=1e-6)
    uint8 = (pixels.transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)
    np.testing.assert_allclose(viz._display_images(uint8), uint8 / 255, atol=1e-7)
    with pytest.raises(ValueError, match="images"):
        viz._display_images(np.zeros((2, 4, 5, 7), np.float32))


def test_show_batch(tmp_path, batch):
    images, labels = batch
    figure = viz.show_batch(images, labels, tmp_path / "sub" / "batch.png", codes=CODES, ncols=3)
    assert_png(tmp_path / "sub" / "batch.png")
    legend_names = [text.get_text() for ax in figure.axes if ax.get_legend() for text in ax.get_legend().get_texts()]
    assert legend_names == [CODES[k] for k in np.unique(labels)]


def test_show_batch_from_a_normalized_tensor_batch(tmp_path, batch):
    images, labels = batch
    tensor = Tensor((images.transpose(0, 3, 1, 2).astype(np.float32) / 255 - 0.5) / 0.25)
    viz.show_batch(tensor, Tensor(labels), tmp_path / "batch.png", mean=[0.5] * 3, std=[0.25] * 3)
    assert_png(tmp_path / "batch.png")


def test_show_results(tmp_path, batch):
    images, labels = batch
    predictions = np.where(labels == 2, 4, labels)
    figure = viz.show_results(images, labels, predictions, tmp_path / "results.png", codes=CODES, max_rows=3)
    assert_png(tmp_path / "results.png")
    assert len(figure.axes) == 9
    assert "pixel accuracy" in figure.axes[2].get_title()


def test_plot_history(tmp_path):
    history = [{"epoch": e, "train_loss": 2.0 / e, "valid_loss": 2.2 / e, "pixel_accuracy": 0.5 + 0.1 * e,
                "foreground_accuracy": 0.4 + 0.1 * e, "mean_iou": 0.1 * e, "lr": 1e-3, "seconds": 1.0}
               for e in range(1, 5)]
    figure = viz.plot_history(history, tmp_path / "history.png")
    assert_png(tmp_path / "history.png")
    assert len(figure.axes[0].lines) == 2 and len(figure.axes[1].lines) == 3
    with pytest.raises(ValueError, match="history"):
        viz.plot_history([], tmp_path / "empty.png")


def test_plot_per_class_iou_marks_absent_classes(tmp_path):
    figure = viz.plot_per_class_iou([0.9, float("nan"), 0.3, 0.0, 0.5], tmp_path / "iou.png", codes=CODES)
    assert_png(tmp_path / "iou.png")
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == CODES
    assert "absent" in [t.get_text() for t in ax.texts]
    assert "0.425" in ax.get_legend().get_texts()[0].get_text()  # nanmean of the four present
    numbers = [t.get_text() for t in ax.texts if t.get_text() != "absent"]
    assert numbers == ["0.90", "0.30", "0.00", "0.50"]  # every bar carries its number, the zero too
    assert len(ax.lines) == 2  # the mean line and the tick that makes the zero bar visible


def test_plot_history_has_whole_number_epoch_ticks():
    history = [{"epoch": k, "train_loss": 1 / k, "valid_loss": 1.1 / k, "pixel_accuracy": 0.5} for k in (1, 2, 3)]
    figure = viz.plot_history(history)
    figure.canvas.draw() if hasattr(figure.canvas, "draw") else None
    for ax in figure.axes:
        ticks = [tick for tick in ax.get_xticks() if 1 <= tick <= 3]
        assert ticks and all(float(tick).is_integer() for tick in ticks)


def test_plot_confusion_matrix_is_row_normalized(tmp_path):
    cm = np.array([[8, 2, 0], [0, 0, 0], [1, 1, 2]], dtype=np.int64)
    figure = viz.plot_confusion_matrix(cm, tmp_path / "cm.png", codes=CODES[:3])
    assert_png(tmp_path / "cm.png")
    shown = figure.axes[0].images[0].get_array()
    np.testing.assert_allclose(shown[0], [0.8, 0.2, 0.0])
    np.testing.assert_allclose(shown[2], [0.25, 0.25, 0.5])
    assert np.ma.getmaskarray(shown[1]).all() or np.isnan(np.asarray(shown[1], dtype=float)).all()


def test_plot_lr_find(tmp_path):
    lrs = list(np.geomspace(1e-6, 1, 30))
    losses = list(2 - np.sin(np.linspace(0, 3, 30)))
    figure = viz.plot_lr_find(lrs, losses, tmp_path / "lr.png", suggested_lr=1e-3)
    assert_png(tmp_path / "lr.png")
    assert figure.axes[0].get_xscale() == "log"


def test_plots_never_import_pyplot(tmp_path):
    # Figures are built directly, so a user's pyplot state (and backend) is never touched.
    code = ("import sys; from minseg import viz; "
            f"viz.plot_lr_find([1e-3, 1e-2], [1.0, 0.5], {str(tmp_path / 'lr.png')!r}); "
            "print('matplotlib.pyplot' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
    assert_png(tmp_path / "lr.png")


def test_show_batch_titles_the_figure_and_each_image():
    rng = np.random.default_rng(0)
    images, labels = rng.random((3, 3, 8, 10)).astype(np.float32), rng.integers(0, 2, (3, 8, 10))
    figure = viz.show_batch(images, labels, codes=["a", "b"], title="three images",
                            image_titles=["first", "second", "third"])
    assert figure._suptitle.get_text() == "three images (opacity 0.5)"
    assert [ax.get_title() for ax in figure.axes if ax.get_title()] == ["first", "second", "third"]
    default = viz.show_batch(images, labels, codes=["a", "b"])
    assert [ax.get_title() for ax in default.axes if ax.get_title()] == ["image 0", "image 1", "image 2"]
