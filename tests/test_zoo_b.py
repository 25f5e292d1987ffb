"""Zoo models MobileNet v1/v2, DenseNet-121, GoogLeNet and Inception v3.

The reference numbers were checked against torchvision 0.29.1 (float64 outputs
equal to ~1e-15 relative with a torchvision ``state_dict`` loaded unchanged;
parameter counts from ``net.parameters()``, MACs from conv/linear forward hooks;
see ``tools/check_zoo_torchvision.py``) and, for MobileNet v1, against the paper
(Howard et al. 2017, Table 1/8: 569 M mult-adds, 4.2 M parameters).
"""
import numpy as np
import pytest

import kryptonref as kr
from kryptonref.models import build_graph, zoo_entry

# name: (default size, small valid size, parameters (BN running stats excluded, as
# torchvision counts), MACs at the default size, published GMACs/"GFLOPS" or None)
REFERENCE = {
    "mobilenet_v1": (224, 32, 4_231_976, 568_740_352, None),
    "mobilenet_v2": (224, 32, 3_504_872, 300_774_272, 0.30),
    "densenet121": (224, 32, 7_978_856, 2_834_161_664, 2.83),
    "googlenet": (224, 32, 6_624_904, 1_498_376_192, 1.50),
    # torchvision's published 27.16 M includes the AuxLogits head (aux_logits=False here)
    "inception_v3": (299, 75, 23_834_568, 5_713_216_096, 5.71),
}
NAMES = sorted(REFERENCE)

# Largest size that is too small, and the node where the feature map collapses
# (the same sizes fail in torchvision). The MobileNets pad every conv: 1 px works.
TOO_SMALL = {
    "densenet121": (28, "features.transition3.pool"),
    "inception_v3": (74, "Mixed_7a.branch3x3_2.conv"),
}

# A few torchvision state_dict keys per model (the names must match exactly).
TORCHVISION_KEYS = {
    "mobilenet_v2": ["features.0.0.weight", "features.0.1.running_var",
                     "features.1.conv.0.0.weight", "features.1.conv.1.weight",
                     "features.1.conv.2.bias", "features.2.conv.0.0.weight",
                     "features.2.conv.1.0.weight", "features.2.conv.2.weight",
                     "features.17.conv.3.running_mean", "features.18.0.weight",
                     "features.18.1.bias", "classifier.1.weight", "classifier.1.bias"],
    "densenet121": ["features.conv0.weight", "features.norm0.running_mean",
                    "features.denseblock1.denselayer1.norm1.weight",
                    "features.denseblock1.denselayer6.conv2.weight",
                    "features.transition1.norm.bias", "features.transition3.conv.weight",
                    "features.denseblock4.denselayer16.norm2.running_var",
                    "features.norm5.weight", "classifier.weight", "classifier.bias"],
    "googlenet": ["conv1.conv.weight", "conv1.bn.running_var", "conv3.bn.weight",
                  "inception3a.branch1.conv.weight", "inception3a.branch2.1.conv.weight",
                  "inception4e.branch3.1.bn.bias", "inception5b.branch4.1.conv.weight",
                  "fc.weight", "fc.bias"],
    "inception_v3": ["Conv2d_1a_3x3.conv.weight", "Conv2d_4a_3x3.bn.running_mean",
                     "Mixed_5b.branch1x1.conv.weight", "Mixed_5b.branch_pool.bn.weight",
                     "Mixed_6a.branch3x3.conv.weight", "Mixed_6e.branch7x7dbl_5.conv.weight",
                     "Mixed_7a.branch7x7x3_4.bn.bias", "Mixed_7c.branch3x3dbl_3b.conv.weight",
                     "fc.weight", "fc.bias"],
}

# Number of torchvision state_dict entries without num_batches_tracked.
TORCHVISION_KEY_COUNT = {"mobilenet_v2": 262, "densenet121": 606, "googlenet": 287,
                         "inception_v3": 472}


def param_keys(graph):
    keys = {}
    for name in graph.order:
        node = graph.nodes[name]
        for p, shape in node.layer.param_shapes([graph.shapes[i] for i in node.inputs]).items():
            keys[f"{name}.{p}"] = shape
    return keys


def trainable_count(graph):
    return sum(int(np.prod(s)) for k, s in param_keys(graph).items()
               if not k.endswith(("running_mean", "running_var")))


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_default_size(name):
    assert zoo_entry(name).default_size == REFERENCE[name][0]
    assert name in kr.zoo_names()


@pytest.mark.parametrize("name", NAMES)
def test_params_and_macs(name):
    size, _, params, macs, published = REFERENCE[name]
    graph = build_graph(name)
    assert graph.input_shape == (3, size, size)
    assert graph.shapes[graph.output] == (1000,)
    assert trainable_count(graph) == params
    total = sum(graph.macs().values())
    assert total == macs
    if published is not None:
        assert round(total / 1e9, 2) == published


def test_mobilenet_v1_matches_paper():
    graph = build_graph("mobilenet_v1")
    assert round(sum(graph.macs().values()) / 1e6) == 569
    assert round(trainable_count(graph) / 1e6, 2) == 4.23
    # 13 depthwise-separable blocks, global pooling of a 7x7x1024 map
    assert graph.shapes["features.13.pw_relu"] == (1024, 7, 7)
    dw = [n for n in graph.order if n.endswith("dw_conv")]
    assert len(dw) == 13 and all(graph.nodes[n].layer.groups == graph.nodes[n].layer.in_channels
                                 for n in dw)


@pytest.mark.parametrize("name", sorted(TORCHVISION_KEYS))
def test_torchvision_parameter_names(name):
    keys = param_keys(build_graph(name, REFERENCE[name][1], 10))
    assert len(keys) == TORCHVISION_KEY_COUNT[name]
    missing = [k for k in TORCHVISION_KEYS[name] if k not in keys]
    assert not missing


@pytest.mark.parametrize("name", NAMES)
def test_builds_at_default_and_small_size(name):
    default, small, params, _, _ = REFERENCE[name]
    for size in (default, small, small + 3):
        graph = build_graph(name, size, 10)
        assert graph.shapes[graph.output] == (10,)
        assert len(set(graph.order)) == len(graph.order)
    # only the classifier depends on num_classes
    assert trainable_count(build_graph(name, small, 10)) < params


@pytest.mark.parametrize("name", NAMES)
def test_forward_small(name):
    small = REFERENCE[name][1]
    model = kr.zoo(name, image_size=small, num_classes=10, seed=1)
    x = np.random.default_rng(0).standard_normal((1, 3, small, small)).astype(np.float32)
    out = model.forward(x)
    assert out.shape == (1, 10)
    assert np.all(np.isfinite(out))


def test_weights_round_trip(tmp_path):
    model = kr.zoo("mobilenet_v2", image_size=32, num_classes=10, seed=3)
    path = tmp_path / "w.npz"
    model.save_weights(path)
    other = kr.zoo("mobilenet_v2", image_size=32, num_classes=10, weights=path)
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(model.forward(x), other.forward(x))


@pytest.mark.parametrize("name", sorted(TOO_SMALL))
def test_too_small_names_the_layer(name):
    size, node = TOO_SMALL[name]
    with pytest.raises(ValueError, match=rf"{name} at {size} px: node '{node}'.*too small"):
        build_graph(name, size, 10)
    build_graph(name, size + 1, 10)


def test_googlenet_too_small():
    # torchvision's GoogLeNet runs down to 15 px; below that conv1 -> maxpool1 collapses
    with pytest.raises(ValueError, match="googlenet at 2 px: node 'maxpool1'.*too small"):
        build_graph("googlenet", 2, 10)


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_mobilenets_take_any_size(name):
    graph = build_graph(name, 1, 10)
    assert graph.shapes[graph.output] == (10,)


def test_structure_details():
    v2 = build_graph("mobilenet_v2")
    adds = [n for n in v2.order if n.endswith(".add")]
    # residuals in blocks 3, 5, 6, 8, 9, 10, 12, 13, 15, 16
    assert [int(n.split(".")[1]) for n in adds] == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]
    kinds = [type(v2.nodes[n].layer).__name__ for n in v2.order]
    # stem + 17 depthwise + 16 expansion + last 1x1 conv, all ReLU6
    assert kinds.count("ReLU6") == 35 and "ReLU" not in kinds
    d = build_graph("densenet121")
    assert d.shapes["features.denseblock4.concat"] == (1024, 7, 7)
    assert d.shapes["features.denseblock3.denselayer24.concat"] == (1024 - 32, 14, 14)
    g = build_graph("googlenet")
    assert g.shapes["inception5b.concat"] == (1024, 7, 7)
    assert g.nodes["conv1.bn"].layer.eps == 1e-3
    i = build_graph("inception_v3")
    assert i.shapes["Mixed_7c.concat"] == (2048, 8, 8)
    assert i.nodes["Mixed_6b.branch7x7_2.conv"].layer.padding == ((0, 0), (3, 3))
    pool = i.nodes["Mixed_5b.avg_pool"].layer
    assert pool.count_include_pad and pool.padding == ((1, 1), (1, 1))
