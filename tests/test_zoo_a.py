"""Zoo architectures AlexNet, VGG, ResNet and SqueezeNet against torchvision's published facts.

The reference numbers come from torchvision 0.29 (``weights.meta["num_params"]`` and
``["_ops"]``, GMACs to 3 decimals) and from its ``state_dict()`` (count and a hash of
the sorted ``key:shape`` lines, without ``num_batches_tracked``): no torch is needed
here. The output-for-output comparison with torchvision is the dev-only script
``tools/check_zoo_torchvision.py``.
"""
import hashlib
import importlib

import numpy as np
import pytest

from kryptonref.model import Model

# Import the architecture modules directly (independent of the rest of the zoo).
_MODULES = {m: importlib.import_module(f"kryptonref.models.{m}")
            for m in ("alexnet", "vgg", "resnet", "squeezenet")}
_ZOO = importlib.import_module("kryptonref.models.zoo")

#: name -> (torchvision num_params, torchvision GMACs at 224 px (meta "_ops"), module)
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
}

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


def build(name, image_size=None, num_classes=1000):
    entry = _ZOO._REGISTRY[name]
    return entry.builder(entry.default_size if image_size is None else image_size, num_classes)


def param_shapes(graph):
    """``{"node.param": shape}`` as the model would load them."""
    shapes = {}
    for name in graph.order:
        node = graph.nodes[name]
        for p, shape in node.layer.param_shapes([graph.shapes[i] for i in node.inputs]).items():
            shapes[f"{name}.{p}"] = tuple(shape)
    return shapes


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_default_size(name):
    entry = _ZOO._REGISTRY[name]
    assert entry.default_size == 224
    assert entry.description
    graph = build(name)
    assert graph.input_shape == (3, 224, 224)
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
    size = SMALL.get(name, (37,))[0]
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
