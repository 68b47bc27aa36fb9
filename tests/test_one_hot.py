import numpy as np
import pytest

import minseg
import minseg.functional as F
from minseg.functional.one_hot import check_class_ids


def test_one_hot_of_a_small_label_map():
    target = np.array([[[0, 2, 1],
                        [2, 2, 0]]])  # (1, 2, 3), 3 classes
    encoded = F.one_hot(target, 3)
    assert isinstance(encoded, minseg.Tensor)
    assert encoded.shape == (1, 3, 2, 3) and encoded.dtype == np.float32
    expected = np.array([[[1, 0, 0], [0, 0, 1]],   # channel 0
                         [[0, 0, 1], [0, 0, 0]],   # channel 1
                         [[0, 1, 0], [1, 1, 0]]],  # channel 2
                        dtype=np.float32)
    np.testing.assert_array_equal(encoded.numpy()[0], expected)


def test_one_hot_of_class_vector_puts_classes_on_dim_1():
    encoded = F.one_hot(np.array([3, 0, 1]), 4).numpy()
    np.testing.assert_array_equal(encoded, np.eye(4, dtype=np.float32)[[3, 0, 1]])


def test_ignored_pixels_are_all_zero_outside_and_inside_the_class_range():
    target = np.array([[255, 1], [0, 255]])[None]
    encoded = F.one_hot(target, 2, ignore_index=255).numpy()
    np.testing.assert_array_equal(encoded.sum(axis=1)[0], [[0, 1], [1, 0]])
    # An ignore_index that is also a valid id must not light up its channel.
    encoded = F.one_hot(np.array([[[0, 1, 2]]]), 3, ignore_index=1).numpy()
    np.testing.assert_array_equal(encoded[0, :, 0, :], [[1, 0, 0], [0, 0, 0], [0, 0, 1]])


def test_roundtrip_through_to_class_ids_and_dtype_option():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, size=(2, 7, 3))
    encoded = F.one_hot(minseg.Tensor(target), 5, dtype=np.float64)
    assert encoded.dtype == np.float64
    ids = F.to_class_ids(encoded)
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids.numpy(), target)


def test_to_class_ids_is_argmax_and_ignores_softmax():
    rng = np.random.default_rng(1)
    logits = minseg.Tensor(rng.standard_normal((3, 4, 5, 2)).astype(np.float32))
    np.testing.assert_array_equal(F.to_class_ids(logits).numpy(), logits.numpy().argmax(axis=1))
    np.testing.assert_array_equal(F.to_class_ids(F.softmax(logits, 1)).numpy(), F.to_class_ids(logits).numpy())
    np.testing.assert_array_equal(F.to_class_ids(logits.numpy(), dim=-1).numpy(), logits.numpy().argmax(-1))


def test_out_of_range_ids_are_listed():
    target = np.array([[[0, 5, -2], [7, 5, 1]]])
    with pytest.raises(ValueError, match=r"one_hot: target holds ids outside \[0, 3\): \[-2, 5, 7\]"):
        F.one_hot(target, 3)
    with pytest.raises(ValueError, match=r"\[-2, 7\] \(ignore_index=5\)"):
        F.one_hot(target, 3, ignore_index=5)


def test_long_lists_of_bad_ids_are_cut_short():
    with pytest.raises(ValueError, match=r"\[10, 11, 12, 13, 14, 15, 16, 17, 18, 19, \.\.\.\]"):
        check_class_ids(np.arange(40), 10)


def test_float_and_bool_targets_are_rejected():
    with pytest.raises(TypeError, match="target must hold integer class ids, got dtype float32"):
        F.one_hot(np.zeros((1, 2, 2), np.float32), 3)
    with pytest.raises(TypeError, match="target"):
        F.one_hot(np.zeros((1, 2, 2), bool), 3)


def test_bad_num_classes_and_shapes():
    with pytest.raises(ValueError, match="num_classes"):
        F.one_hot(np.zeros((1, 2), np.int64), 0)
    with pytest.raises(ValueError, match="batch dimension"):
        F.one_hot(np.int64(1), 3)
    with pytest.raises(ValueError, match="scores"):
        F.to_class_ids(np.zeros(3))
