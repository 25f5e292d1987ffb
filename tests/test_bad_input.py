"""Bad input gives a ValueError or TypeError naming the argument or layer, never a wrong number."""
import numpy as np
import pytest

import kryptonref as kr


def tiny():
    g = kr.Graph((2, 10, 12))
    g.add(kr.Conv2d(2, 3, 3, padding=1), name="conv")
    g.add(kr.ReLU(), name="relu")
    return g


@pytest.fixture(scope="module")
def model():
    return kr.Model(tiny(), seed=0)


def image(shape=(2, 10, 12), dtype=np.float32):
    return np.random.default_rng(0).normal(size=shape).astype(dtype)


# -- graphs -------------------------------------------------------------------------
def test_wrong_channel_count_names_the_node():
    g = kr.Graph((3, 8, 8))
    with pytest.raises(ValueError, match="'c1'.*expects 4 input channels, got 3"):
        g.add(kr.Conv2d(4, 2, 3), name="c1")


def test_dangling_input():
    g = kr.Graph((3, 8, 8))
    with pytest.raises(ValueError, match="unknown input 'nope'"):
        g.add(kr.ReLU(), inputs="nope")
    with pytest.raises(ValueError, match="dangling"):
        kr.Graph.from_nodes((3, 8, 8), [("a", kr.ReLU(), "b")])


def test_cycle_is_detected():
    nodes = [("a", kr.ReLU(), "b"), ("b", kr.ReLU(), "a"), ("c", kr.ReLU(), "input")]
    with pytest.raises(ValueError, match=r"cycle through nodes \['a', 'b'\]"):
        kr.Graph.from_nodes((3, 8, 8), nodes)


def test_from_nodes_sorts_topologically():
    nodes = [("add", kr.Add(), ["r", "c"]), ("r", kr.ReLU(), "c"),
             ("c", kr.Conv2d(3, 3, 3, padding=1), "input")]
    g = kr.Graph.from_nodes((3, 8, 8), nodes)
    assert g.order == ["c", "r", "add"]
    assert g.output == "add"


def test_duplicate_name_and_arity():
    g = kr.Graph((3, 8, 8))
    g.add(kr.ReLU(), name="r")
    with pytest.raises(ValueError, match="duplicate node name 'r'"):
        g.add(kr.ReLU(), name="r")
    with pytest.raises(ValueError, match="at least 2 inputs"):
        g.add(kr.Add(), inputs=["r"])
    with pytest.raises(ValueError, match="takes 1 input"):
        g.add(kr.ReLU(), inputs=["r", "input"])


def test_mismatched_merge_shapes():
    g = kr.Graph((3, 8, 8))
    g.add(kr.MaxPool2d(2), name="p")
    with pytest.raises(ValueError, match="Add expects equal input shapes"):
        g.add(kr.Add(), inputs=["p", "input"])
    with pytest.raises(ValueError, match="Concat expects equal spatial sizes"):
        g.add(kr.Concat(), inputs=["p", "input"])


def test_image_too_small_names_the_layer():
    g = kr.Graph((1, 4, 4))
    with pytest.raises(ValueError, match="'big'.*Conv2d: input height 4 is too small for kernel 5"):
        g.add(kr.Conv2d(1, 1, 5), name="big")


@pytest.mark.parametrize("kwargs,match", [
    (dict(kernel_size=0), "kernel_size must be >= 1"),
    (dict(kernel_size=3, stride=0), "stride must be >= 1"),
    (dict(kernel_size=3, padding=-1), "padding must be >= 0"),
    (dict(kernel_size=3, groups=2), "divisible by groups"),
    (dict(kernel_size=2.5), "kernel_size must be an integer"),
])
def test_bad_conv_hyperparameters(kwargs, match):
    args = dict(in_channels=3, out_channels=4)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        kr.Conv2d(**args)


def test_linear_needs_a_vector():
    g = kr.Graph((3, 8, 8))
    with pytest.raises(ValueError, match="add a Flatten"):
        g.add(kr.Linear(192, 2))


def test_graph_input_shape():
    with pytest.raises(ValueError, match="input_shape must be"):
        kr.Graph((8, 8))


# -- models and weights ----------------------------------------------------------------
def test_weights_of_the_wrong_shape(model):
    weights = model.weights()
    weights["conv.weight"] = np.zeros((3, 2, 5, 5))
    with pytest.raises(ValueError, match=r"conv.weight has shape \(3, 2, 5, 5\), expected \(3, 2, 3, 3\)"):
        kr.Model(tiny(), weights=weights)


def test_missing_and_unexpected_weights(model):
    weights = model.weights()
    del weights["conv.bias"]
    with pytest.raises(ValueError, match="'conv' is missing 'bias'"):
        kr.Model(tiny(), weights=weights)
    with pytest.raises(ValueError, match="missing parameters for node 'conv'"):
        kr.Model(tiny(), weights={})
    weights = model.weights()
    weights["ghost.weight"] = np.zeros(1)
    with pytest.raises(ValueError, match="unexpected entries for nodes \\['ghost'\\]"):
        kr.Model(tiny(), weights=weights)


def test_weights_round_trip_through_npz(model, tmp_path):
    path = tmp_path / "w.npz"
    model.save_weights(path)
    again = kr.Model(tiny(), weights=path)
    x = image()[None]
    np.testing.assert_array_equal(again.forward(x), model.forward(x))


def test_unsupported_dtype():
    with pytest.raises(TypeError, match="float32 or float64"):
        kr.Model(tiny(), dtype=np.float16)
    with pytest.raises(TypeError, match="float32 or float64"):
        kr.Model(tiny(), dtype=np.int32)


# -- inference inputs ----------------------------------------------------------------
def test_forward_rejects_bad_batches(model):
    with pytest.raises(ValueError, match=r"shape \(N, 2, 10, 12\)"):
        model.forward(image((3, 10, 12))[None])
    with pytest.raises(ValueError, match=r"shape \(N, 2, 10, 12\)"):
        model.forward(image())
    with pytest.raises(TypeError, match="floating-point"):
        model.forward(np.zeros((1, 2, 10, 12), np.int64))
    with pytest.raises(TypeError, match="NumPy array"):
        model.forward([[0.0]])
    bad = image()[None].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.forward(bad)


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
