"""Models (kryptonref.model): weights, dtypes, full inference, and bad input."""
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


def test_a_key_without_a_dot_names_a_node_and_its_parameter():
    """torchvision's top-level parameters (ViT's ``class_token``) have no module path."""
    model = kr.zoo("vit_b_16", image_size=32, num_classes=3, seed=0)
    weights = model.weights()
    token = np.full((1, 1, 768), 0.25, dtype=np.float32)
    weights = {("class_token" if k == "class_token.class_token" else k): v
               for k, v in weights.items()}
    weights["class_token"] = token
    again = kr.Model(model.graph, weights=weights)
    np.testing.assert_array_equal(again.params["class_token"]["class_token"], token)
    weights["ghost"] = np.zeros(1)   # and an unknown one is still refused
    with pytest.raises(ValueError, match="unexpected entries for nodes \\['ghost'\\]"):
        kr.Model(model.graph, weights=weights)


@pytest.mark.parametrize("dtype", [np.complex128, object, "U3", bool])
def test_weights_that_are_not_real_numbers_are_refused(model, dtype):
    """Complex weights were cast to real with a warning: a silently wrong model."""
    weights = model.weights()
    weights["conv.weight"] = np.ones((3, 2, 3, 3)).astype(dtype)
    with pytest.raises(TypeError, match=f"conv.weight must hold real numbers, got dtype"):
        kr.Model(tiny(), weights=weights)


def test_weights_edited_in_place_raise_instead_of_being_ignored():
    """Conv weights edited in place after a first forward were ignored (a cached
    prepared copy) while bias edits applied: the arrays are read-only now."""
    other = kr.Model(tiny(), seed=0)
    other.forward(image()[None])
    with pytest.raises(ValueError, match="read-only"):
        other.params["conv"]["weight"][...] = 0.0
    with pytest.raises(ValueError, match="read-only"):
        other.params["conv"]["bias"] += 1.0


def test_one_weight_replaced_after_a_first_forward_is_used():
    other = kr.Model(tiny(), seed=0)
    x = image()[None]
    first = other.forward(x)
    other.params["conv"]["weight"] = np.zeros((3, 2, 3, 3), dtype=np.float32)
    other.params["conv"]["bias"] = np.ones(3, dtype=np.float32)
    # (the replaced arrays are taken as they are; the result is relu(0 * x + 1) = 1)
    np.testing.assert_array_equal(other.forward(x), np.ones_like(first))


def test_weights_given_are_copied_not_frozen_in_the_callers_hands():
    weights = kr.Model(tiny(), seed=0).weights()
    model = kr.Model(tiny(), weights=weights)
    weights["conv.weight"][...] = 0.0          # the caller's array stays theirs, writable
    assert np.any(model.params["conv"]["weight"] != 0.0)


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


def test_seeded_weights_are_reproducible_and_dtype_independent():
    a, b = kr.Model(tiny(), seed=3), kr.Model(tiny(), seed=3, dtype=np.float64)
    for key, value in a.weights().items():
        np.testing.assert_allclose(value, b.weights()[key], rtol=1e-7)
    assert not np.array_equal(kr.Model(tiny(), seed=4).weights()["conv.weight"],
                              a.weights()["conv.weight"])


def test_replaced_weights_are_used_after_a_first_forward(model):
    """Backends cache prepared parameters per set of weights: replacing them is seen."""
    other = kr.Model(tiny(), seed=0)
    x = image()[None]
    first = other.forward(x)
    other.params = kr.Model(tiny(), seed=1).params
    np.testing.assert_array_equal(other.forward(x), kr.Model(tiny(), seed=1).forward(x))
    assert not np.array_equal(other.forward(x), first)


def test_one_weights_loader_with_one_clear_error_each(tmp_path):
    """A .npy, a garbage or truncated .npz and a number were unclear errors or tracebacks."""
    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "garbage.npz").write_bytes(b"garbage")
    kr.Model(tiny(), seed=0).save_weights(tmp_path / "good.npz")
    good = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(good[:len(good) // 2])
    cases = [(tmp_path / "one.npy", ValueError, r"holds one array \(.npy\)"),
             (tmp_path / "garbage.npz", ValueError, "is not an .npz weights file"),
             (tmp_path / "cut.npz", ValueError, "damaged or truncated .npz"),
             (42, TypeError, "weights must be a mapping .* got int")]
    for weights, error, match in cases:
        with pytest.raises(error, match=match):
            kr.Model(tiny(), weights=weights)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", None])
def test_a_seed_must_be_a_non_negative_integer(seed):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        kr.Model(tiny(), seed=seed)
