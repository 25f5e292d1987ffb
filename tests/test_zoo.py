"""Zoo architectures against torchvision's published facts, and what each can take.

The reference numbers come from torchvision 0.29 (``weights.meta["num_params"]`` and
``["_ops"]``, GMACs to 3 decimals) and from its ``state_dict()`` (count and a hash of
the sorted ``key:shape`` lines, without ``num_batches_tracked``): no torch is needed
here. The branched models (MobileNet v1/v2, DenseNet-121, GoogLeNet, Inception v3)
were checked against torchvision 0.29.1 (float64 outputs equal to ~1e-15 relative
with a torchvision ``state_dict`` loaded unchanged; parameter counts from
``net.parameters()``, MACs from conv/linear forward hooks) and, for MobileNet v1,
against the paper (Howard et al. 2017, Table 1/8: 569 M mult-adds, 4.2 M
parameters). The output-for-output comparison with torchvision is the dev-only
script ``tools/check_zoo_torchvision.py``.
"""
import hashlib
import importlib

import numpy as np
import pytest

import kryptonref as kr
from kryptonref.model import Model
from kryptonref.models import build_graph, zoo_entry

# -- AlexNet, VGG, ResNet, SqueezeNet, and the networks designed after 2018 ------------
# Import the architecture modules directly (independent of the rest of the zoo).
_MODULES = {m: importlib.import_module(f"kryptonref.models.{m}")
            for m in ("alexnet", "vgg", "resnet", "squeezenet", "modern", "vit")}
_ZOO = importlib.import_module("kryptonref.models.zoo")

#: name -> (torchvision num_params, torchvision GMACs at the weights' size (meta "_ops"),
#: module)
PUBLISHED = {
    "alexnet": (61100840, 0.714, "alexnet"),
    "vgg11": (132863336, 7.609, "vgg"),
    "vgg13": (133047848, 11.308, "vgg"),
    "vgg16": (138357544, 15.47, "vgg"),
    "vgg19": (143667240, 19.632, "vgg"),
    "vgg11_bn": (132868840, 7.609, "vgg"),
    "vgg13_bn": (133053736, 11.308, "vgg"),
    "vgg16_bn": (138365992, 15.47, "vgg"),
    "vgg19_bn": (143678248, 19.632, "vgg"),
    "resnet18": (11689512, 1.814, "resnet"),
    "resnet34": (21797672, 3.664, "resnet"),
    "resnet50": (25557032, 4.089, "resnet"),
    "resnet101": (44549160, 7.801, "resnet"),
    "resnet152": (60192808, 11.514, "resnet"),
    "squeezenet1_0": (1248424, 0.819, "squeezenet"),
    "squeezenet1_1": (1235496, 0.349, "squeezenet"),
    "mobilenet_v3_large": (5483032, 0.217, "modern"),
    "mobilenet_v3_small": (2542856, 0.057, "modern"),
    "efficientnet_b0": (5288548, 0.386, "modern"),
    "efficientnet_b1": (7794184, 0.687, "modern"),
    "efficientnet_b2": (9109994, 1.088, "modern"),
    "efficientnet_b3": (12233232, 1.827, "modern"),
    "efficientnet_b4": (19341616, 4.394, "modern"),
    "efficientnet_b5": (30389784, 10.266, "modern"),
    "efficientnet_b6": (43040704, 19.068, "modern"),
    "efficientnet_b7": (66347960, 37.746, "modern"),
    "efficientnet_v2_s": (21458488, 8.366, "modern"),
    "efficientnet_v2_m": (54139356, 24.582, "modern"),
    "efficientnet_v2_l": (118515272, 56.08, "modern"),
    "regnet_y_400mf": (4344144, 0.402, "modern"),
    "shufflenet_v2_x1_0": (2278604, 0.145, "modern"),
    "convnext_tiny": (28589128, 4.456, "modern"),
    "vit_b_16": (86567656, 17.564, "vit"),
}

#: The input size of torchvision's weights (its "_ops" are counted there), where not 224.
DEFAULT_SIZE = {"efficientnet_b1": 240, "efficientnet_b2": 288, "efficientnet_b3": 300,
                "efficientnet_b4": 380, "efficientnet_b5": 456, "efficientnet_b6": 528,
                "efficientnet_b7": 600, "efficientnet_v2_s": 384, "efficientnet_v2_m": 480,
                "efficientnet_v2_l": 480}

#: name -> (entries of torchvision's state_dict without num_batches_tracked,
#:          sha256[:16] of its sorted "key:shape" lines), num_classes=1000
STATE_DICT = {
    "alexnet": (16, "dd9c4dec53aa7bdf"),
    "vgg11": (22, "2dc8d3b001c62172"),
    "vgg13": (26, "5765e5290b94592d"),
    "vgg16": (32, "8d869fc271c12104"),
    "vgg19": (38, "4b3852b2713ff33f"),
    "vgg11_bn": (54, "b9ee89fc7d39e004"),
    "vgg13_bn": (66, "3a6c6b8ac3f05a1b"),
    "vgg16_bn": (84, "196966eff0e692f8"),
    "vgg19_bn": (102, "cb162c1c148bd221"),
    "resnet18": (102, "87b691f11c307400"),
    "resnet34": (182, "2ba386bc51d1273d"),
    "resnet50": (267, "06ac0ddac939946f"),
    "resnet101": (522, "88c2dca03f341347"),
    "resnet152": (777, "6d70075cc665eec5"),
    "squeezenet1_0": (52, "5404f64a358d9a02"),
    "squeezenet1_1": (52, "2ba7747eadf15fff"),
    "mobilenet_v3_large": (266, "2bc5b9b26e60dc24"),
    "mobilenet_v3_small": (210, "2dddd84da5d7f8f4"),
    "efficientnet_b0": (311, "143808c45f22b694"),
    "efficientnet_b1": (439, "d096085e6b8603ab"),
    "efficientnet_b2": (439, "35c89bcfaa666e24"),
    "efficientnet_b3": (496, "11758aeb2c44d60b"),
    "efficientnet_b4": (610, "c11557bae004812d"),
    "efficientnet_b5": (738, "1c878847b6646003"),
    "efficientnet_b6": (852, "d96f2140408a9f80"),
    "efficientnet_b7": (1037, "c341ea695ddbf4ed"),
    "efficientnet_v2_s": (672, "1b63c7a9035ba7b9"),
    "efficientnet_v2_m": (963, "52cc96ec51a016ac"),
    "efficientnet_v2_l": (1331, "137ce7994bc9ceae"),
    "regnet_y_400mf": (331, "75273a504b375baf"),
    "shufflenet_v2_x1_0": (282, "deff7c0a173ea4f4"),
    "convnext_tiny": (182, "ac823e08e31e87ce"),
    "vit_b_16": (152, "a225aad3d62d44e8"),
}

#: name -> (a small valid size, a size too small, the node where it collapses).
#: (torchvision also rejects each "too small" size.)
SMALL = {
    "alexnet": (63, 62, "features.12"),
    "vgg11": (32, 31, "features.20"),
    "vgg13": (33, 31, "features.24"),
    "vgg16": (40, 31, "features.30"),
    "vgg19": (47, 16, "features.36"),
    "vgg11_bn": (32, 31, "features.28"),
    "vgg13_bn": (48, 31, "features.34"),
    "vgg16_bn": (32, 31, "features.43"),
    "vgg19_bn": (50, 31, "features.52"),
    "squeezenet1_0": (21, 20, "features.11"),   # 21..28 px need PyTorch's ceil-mode rule
    "squeezenet1_1": (17, 16, "features.8"),    # for a kernel longer than its input
}

NAMES = sorted(PUBLISHED)
#: A small valid size where 37 px is not one (ViT: a multiple of its 16-pixel patches).
VALID_SMALL = {"vit_b_16": 32}


def build(name, image_size=None, num_classes=1000):
    entry = _ZOO._REGISTRY[name]
    return entry.builder(entry.default_size if image_size is None else image_size, num_classes)


def param_shapes(graph):
    """``{"node.param": shape}`` as the model would load them."""
    shapes = {}
    for name in graph.order:
        node = graph.nodes[name]
        for p, shape in node.layer.param_shapes([graph.shapes[i] for i in node.inputs]).items():
            # (a top-level torch parameter, ViT's class_token, is a node of its own name)
            shapes[name if p == name else f"{name}.{p}"] = tuple(shape)
    return shapes


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_default_size(name):
    entry = _ZOO._REGISTRY[name]
    size = DEFAULT_SIZE.get(name, 224)
    assert entry.default_size == size
    assert entry.description
    graph = build(name)
    assert graph.input_shape == (3, size, size)
    assert graph.shapes[graph.output] == (1000,)


@pytest.mark.parametrize("name", NAMES)
def test_params_and_macs_match_torchvision(name):
    num_params, gmacs, _ = PUBLISHED[name]
    graph = build(name)
    shapes = param_shapes(graph)
    count = sum(int(np.prod(s)) for k, s in shapes.items()
                if not k.endswith(("running_mean", "running_var")))
    assert count == num_params
    assert round(sum(graph.macs().values()) / 1e9, 3) == gmacs


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_keys_and_shapes_match_torchvision(name):
    entries, digest = STATE_DICT[name]
    lines = sorted(f"{k}:{s}" for k, s in param_shapes(build(name)).items())
    assert len(lines) == entries
    assert hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16] == digest


@pytest.mark.parametrize("name", NAMES)
def test_smaller_size_and_num_classes(name):
    size = SMALL.get(name, (VALID_SMALL.get(name, 37),))[0]
    graph = build(name, size, num_classes=10)
    assert graph.input_shape == (3, size, size)
    assert graph.shapes[graph.output] == (10,)
    assert not any(k.startswith("softmax") for k in graph.order)   # logits, as torchvision


@pytest.mark.parametrize("name", sorted(SMALL))
def test_too_small_raises_naming_the_layer(name):
    _, too_small, node = SMALL[name]
    with pytest.raises(ValueError, match=rf"'{node}'.*too small"):
        build(name, too_small)
    with pytest.raises(ValueError, match=rf"{name} at {too_small} px: node '{node}'"):
        _ZOO.build_graph(name, too_small)


@pytest.mark.parametrize("size", [1, 2, 7, 33])
def test_resnet_takes_any_size(size):
    # As in torchvision: every stride-2 stage pads enough to keep a 1-pixel map.
    graph = build("resnet18", size, num_classes=10)
    assert graph.shapes["layer4.1.relu2"][1:] == ((size - 1) // 32 + 1,) * 2


@pytest.mark.parametrize("name,size", [
    ("alexnet", 64), ("vgg11_bn", 32), ("resnet18", 32), ("resnet50", 40),
    ("squeezenet1_0", 48), ("squeezenet1_1", 32), ("resnet18", 1),
    ("squeezenet1_0", 21), ("squeezenet1_1", 17),
])
def test_forward_pass(name, size):
    model = Model(build(name, size, num_classes=10), seed=0)
    x = np.random.default_rng(1).standard_normal((1, 3, size, size)).astype(np.float32)
    y = model.forward(x)
    assert y.shape == (1, 10)
    assert np.all(np.isfinite(y))


def test_torchvision_node_names():
    g = build("resnet50")
    for node in ("conv1", "bn1", "relu", "maxpool", "layer1.0.conv1", "layer1.0.bn1",
                 "layer1.0.relu1", "layer1.0.conv2", "layer1.0.conv3", "layer1.0.bn3",
                 "layer1.0.downsample.0", "layer1.0.downsample.1", "layer1.0.add",
                 "layer1.0.relu3", "layer4.2.relu3", "avgpool", "flatten", "fc"):
        assert node in g.nodes, node
    assert "layer1.1.downsample.0" not in g.nodes
    # v1.5: the stride sits on the 3x3 conv
    assert g.nodes["layer2.0.conv2"].layer.stride == (2, 2)
    assert g.nodes["layer2.0.conv1"].layer.stride == (1, 1)
    assert g.nodes["layer2.0.add"].inputs == ("layer2.0.bn3", "layer2.0.downsample.1")
    assert g.nodes["layer2.1.add"].inputs == ("layer2.1.bn3", "layer2.0.relu3")
    s = build("squeezenet1_1")
    assert s.nodes["features.3.cat"].inputs == ("features.3.expand1x1_activation",
                                                "features.3.expand3x3_activation")
    assert s.nodes["features.2"].layer.ceil_mode
    assert s.nodes["classifier.1"].layer.kernel_size == (1, 1)
    v = build("vgg16_bn")
    assert [type(v.nodes[f"features.{i}"].layer).__name__ for i in range(4)] == \
        ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d"]
    assert v.nodes["features.1"].layer.eps == 1e-5
    assert v.nodes["features.0"].layer.bias     # torchvision's VGG convs keep their bias


def test_vgg16_demo_net_unchanged():
    from kryptonref.models import VGG16_CONFIG, vgg16_demo_net
    g = vgg16_demo_net(64, num_classes=5)
    assert g.order == [f"features.{i}" for i in range(31)] + ["pool", "flatten", "fc", "prob"]
    assert g.shapes["prob"] == (5,)
    assert len(VGG16_CONFIG) == 18
    body = vgg16_demo_net(64, head=False)
    assert body.order[-1] == "features.30"
    vgg16 = build("vgg16", 64)
    for name in body.order:
        assert body.nodes[name].layer == vgg16.nodes[name].layer


# -- MobileNet v1/v2, DenseNet-121, GoogLeNet, Inception v3 ---------------------------
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
BRANCHED = sorted(REFERENCE)

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


@pytest.mark.parametrize("name", BRANCHED)
def test_branched_registered_with_default_size(name):
    assert zoo_entry(name).default_size == REFERENCE[name][0]
    assert name in kr.zoo_names()


@pytest.mark.parametrize("name", BRANCHED)
def test_branched_params_and_macs(name):
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


@pytest.mark.parametrize("name", BRANCHED)
def test_builds_at_default_and_small_size(name):
    default, small, params, _, _ = REFERENCE[name]
    for size in (default, small, small + 3):
        graph = build_graph(name, size, 10)
        assert graph.shapes[graph.output] == (10,)
        assert len(set(graph.order)) == len(graph.order)
    # only the classifier depends on num_classes
    assert trainable_count(build_graph(name, small, 10)) < params


@pytest.mark.parametrize("name", BRANCHED)
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
