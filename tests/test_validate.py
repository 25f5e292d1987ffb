"""Argument validation (kryptonref.validate) and the public functions that use it.

Bad input gives a ValueError or TypeError naming the argument, never a wrong number.
"""
import numpy as np
import pytest

import kryptonref as kr
from kryptonref import validate

from .test_model import image, tiny


@pytest.fixture(scope="module")
def model():
    return kr.Model(tiny(), seed=0)


@pytest.mark.parametrize("patch,positions,match,err", [
    ((11, 3), [(0, 0)], "larger than the image", ValueError),
    (0, [(0, 0)], "patch must be positive", ValueError),
    (-2, [(0, 0)], "patch must be positive", ValueError),
    (3, [(8, 0)], r"at position \(8, 0\) lies outside the image", ValueError),
    (3, [(0, -1)], "lies outside the image", ValueError),
    (3, np.zeros((0, 2)), "non-empty", ValueError),
    (3, [(0.5, 1)], "positions must be integers", TypeError),
    (2.0, [(0, 0)], "patch must be a positive integer", TypeError),
])
def test_incremental_rejects_bad_patches(model, patch, positions, match, err):
    with pytest.raises(err, match=match):
        kr.incremental_inference(model, image(), positions, patch)


def test_incremental_rejects_bad_images_fill_and_batch(model):
    with pytest.raises(ValueError, match="image must have shape"):
        kr.incremental_inference(model, image()[None], [(0, 0)], 2)
    inf = image()
    inf[1, 2, 3] = np.inf
    with pytest.raises(ValueError, match="image contains NaN or Inf"):
        kr.incremental_inference(model, inf, [(0, 0)], 2)
    with pytest.raises(ValueError, match="fill must be a scalar, 2 per-channel values"):
        kr.incremental_inference(model, image(), [(0, 0)], 2, fill=np.zeros(3))
    with pytest.raises(ValueError, match="fill contains NaN"):
        kr.incremental_inference(model, image(), [(0, 0)], 2, fill=np.nan)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        kr.incremental_inference(model, image(), [(0, 0)], 2, batch_size=0)
    with pytest.raises(ValueError, match="'nope' is not a node"):
        kr.incremental_inference(model, image(), [(0, 0)], 2, nodes=["nope"])


def test_patch_positions_bad_stride():
    with pytest.raises(ValueError, match="stride must be positive"):
        kr.patch_positions((10, 10), 3, 0)
    with pytest.raises(ValueError, match="larger than the image"):
        kr.patch_positions((10, 10), 11, 1)


@pytest.mark.parametrize("check, value, err, match", [
    (lambda v: validate.positive_int(v, "count"), 0, ValueError, "count must be a positive"),
    (lambda v: validate.positive_int(v, "count"), True, ValueError, "count must be a positive"),
    (lambda v: validate.positive_int(v, "count"), 2.0, ValueError, "count must be a positive"),
    (lambda v: validate.non_negative_int(v, "seed"), -1, ValueError, "seed must be a non-neg"),
    (lambda v: validate.non_negative_int(v, "seed"), "1", TypeError, "seed must be an integer"),
    (lambda v: validate.int_pair(v, "stride"), (1, 2, 3), ValueError, "stride must be an int or"),
    (lambda v: validate.int_pair(v, "stride"), (1, 0), ValueError, "stride must be positive"),
    (validate.tau, 0, ValueError, r"tau must lie in \(0, 1\]"),
    (validate.tau, "0.5", TypeError, "tau must be a number"),
    (validate.tau, 0.5j, TypeError, "tau must be a number"),
    (lambda v: validate.open_fraction(v, "r_drill"), 1.0, ValueError, r"r_drill must lie in"),
    (lambda v: validate.unit_interval(v, "target_ssim"), 1.5, ValueError, "target_ssim"),
    (lambda v: validate.one_of(v, ("a", "b"), "mode"), "c", ValueError, "mode must be one of"),
    (validate.dtype, "complex128", TypeError, "float32 or float64"),
    (validate.dtype, "no such type", TypeError, "float32 or float64"),
])
def test_each_checker_names_the_argument(check, value, err, match):
    with pytest.raises(err, match=match):
        check(value)


def test_checkers_return_what_the_code_uses():
    assert validate.positive_int(np.int64(3), "n") == 3
    assert validate.int_pair(np.array([2, 3]), "patch") == (2, 3)
    assert validate.int_pair(4, "patch") == (4, 4)
    assert validate.tau(np.float32(0.5)) == 0.5
    assert validate.dtype("float32") == np.float32


def test_fill_patch_forms_and_bad_fills():
    img = np.arange(2 * 4 * 4, dtype=np.float64).reshape(2, 4, 4)
    np.testing.assert_array_equal(validate.fill_patch(1.5, 2, (2, 3), np.float32),
                                  np.full((2, 2, 3), 1.5, np.float32))
    per_channel = validate.fill_patch([1, 2], 2, (2, 2), np.float64)
    assert per_channel[1, 1, 1] == 2 and per_channel.flags.c_contiguous
    mean = validate.fill_patch("mean", 2, (1, 1), np.float64, img)
    np.testing.assert_array_equal(mean[:, 0, 0], img.reshape(2, -1).mean(axis=1))
    with pytest.raises(TypeError, match="fill must hold real numbers"):
        validate.fill_patch(1 + 2j, 2, (2, 2), np.float64)
    with pytest.raises(ValueError, match="fill must be a number, an array or 'mean'"):
        validate.fill_patch("median", 2, (2, 2), np.float64, img)


def test_node_names_refuse_a_single_string(model):
    with pytest.raises(TypeError, match="sequence of node names, got the string 'conv'"):
        kr.incremental_inference(model, image(), [(0, 0)], 2, nodes="conv")
    assert validate.node_names(["conv"], model.graph) == ("conv",)


def test_class_targets_forms():
    assert validate.class_targets(None, 2, 5) == [None, None]
    assert validate.class_targets(3, 2, 5) == [3, 3]
    assert validate.class_targets(np.int64(1), 2, 5) == [1, 1]
    assert validate.class_targets(np.array(4), 1, 5) == [4]
    assert validate.class_targets([0, 4], 2, 5) == [0, 4]
    assert validate.class_targets(np.array([2, 1]), 2, 5) == [2, 1]
    with pytest.raises(ValueError, match=r"target\[1\] must be a class index"):
        validate.class_targets([0, True], 2, 5)
    with pytest.raises(ValueError, match="target must be a class index in 0..4, got -1"):
        validate.class_targets(-1, 2, 5)


def test_a_missing_optional_module_names_what_needs_it_and_the_extra():
    from kryptonref._optional import optional_module
    assert optional_module("json", "anything", "none").dumps([1]) == "[1]"
    with pytest.raises(ImportError, match=r"^explain_many needs dask.distributed: "
                                          r"pip install 'kryptonref\[dask\]'$"):
        optional_module("kryptonref_no_such_module", "explain_many", "dask", "dask.distributed")
