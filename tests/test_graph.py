"""Graphs (kryptonref.graph): building, sorting, shape inference, and bad structure.

Bad input gives a ValueError or TypeError naming the node or the layer.
"""
import pytest

import kryptonref as kr


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


def test_graph_macs_come_from_the_registry():
    g = kr.Graph((3, 8, 8))
    g.add(kr.Conv2d(3, 4, 3, padding=1, groups=1), name="c")
    g.add(kr.Conv2d(4, 4, 3, padding=1, groups=2), name="g")
    g.add(kr.ReLU(), name="r")
    g.add(kr.Flatten(), name="f")
    g.add(kr.Linear(256, 5), name="fc")
    assert g.macs() == {"c": 4 * 64 * 3 * 9, "g": 4 * 64 * 2 * 9, "r": 0, "f": 0,
                        "fc": 256 * 5}


def test_consumers_and_repr():
    g = kr.Graph((3, 8, 8))
    g.add(kr.ReLU(), name="r")
    g.add(kr.Add(), inputs=["r", "input"], name="a")
    assert g.consumers() == {"input": ["r", "a"], "r": ["a"], "a": []}
    assert "a: Add() <- r, input -> (3, 8, 8)" in repr(g)
    assert len(g) == 2
