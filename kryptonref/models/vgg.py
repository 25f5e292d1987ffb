"""VGG (Simonyan & Zisserman, 2015), layer for layer as torchvision's ``vgg*`` models.

``vgg11``/``vgg13``/``vgg16``/``vgg19`` use configurations A/B/D/E; the ``_bn``
variants put a batch norm after every convolution (the convolutions keep their
bias, as in torchvision). Node names are torchvision's module paths
(``features.<i>``, ``avgpool``, ``classifier.<i>``) plus ``flatten``.

:func:`vgg16_demo_net` keeps VGG-16's convolutional body with a small head for
demos and benchmarks.
"""
from __future__ import annotations

from ..graph import Graph
from ..layers import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten,
                      GlobalAvgPool2d, Linear, MaxPool2d, ReLU, Softmax)
from .zoo import register

__all__ = ["VGG_CONFIGS", "VGG16_CONFIG", "vgg_features", "vgg", "vgg16_demo_net"]

#: torchvision's ``cfgs``: channels of the 3x3 convolutions, ``"M"`` for a 2x2 max pool.
VGG_CONFIGS = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
          512, 512, 512, "M"),
    "E": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"),
}

#: Channels of VGG-16's 13 3x3 convolutions, ``"M"`` for a 2x2 max pool (cfg "D").
VGG16_CONFIG = VGG_CONFIGS["D"]


def vgg_features(graph, config, batch_norm=False, prefix="features"):
    """Append torchvision's ``make_layers(config, batch_norm)``; return the number of channels.

    Nodes are named ``<prefix>.<i>`` with ``i`` the index in torchvision's
    ``nn.Sequential`` (conv, [batch norm,] ReLU per channel entry; max pool per "M").
    """
    channels = graph.shapes[graph.order[-1] if graph.order else graph.input_name][0]
    index = 0
    for item in config:
        if item == "M":
            graph.add(MaxPool2d(2, 2), name=f"{prefix}.{index}")
            index += 1
            continue
        graph.add(Conv2d(channels, item, 3, padding=1), name=f"{prefix}.{index}")
        index += 1
        if batch_norm:
            graph.add(BatchNorm2d(item), name=f"{prefix}.{index}")
            index += 1
        graph.add(ReLU(), name=f"{prefix}.{index}")
        index += 1
        channels = item
    return channels


def vgg(config, image_size=224, num_classes=1000, batch_norm=False):
    """torchvision's ``VGG(make_layers(cfgs[config], batch_norm))`` as a graph.

    ``features`` -> ``AdaptiveAvgPool2d((7, 7))`` -> flatten -> ``classifier``
    (Linear 25088-4096, ReLU, Dropout, Linear 4096-4096, ReLU, Dropout,
    Linear 4096-``num_classes``). Needs ``image_size >= 32`` (five 2x2 max pools).
    """
    graph = Graph((3, image_size, image_size))
    channels = vgg_features(graph, VGG_CONFIGS[config], batch_norm)
    graph.add(AdaptiveAvgPool2d((7, 7)), name="avgpool")
    graph.add(Flatten(), name="flatten")
    graph.add(Linear(channels * 7 * 7, 4096), name="classifier.0")
    graph.add(ReLU(), name="classifier.1")
    graph.add(Dropout(0.5), name="classifier.2")
    graph.add(Linear(4096, 4096), name="classifier.3")
    graph.add(ReLU(), name="classifier.4")
    graph.add(Dropout(0.5), name="classifier.5")
    graph.add(Linear(4096, num_classes), name="classifier.6")
    return graph


def _register(name, config, batch_norm, layers):
    bn = " with batch norm" if batch_norm else ""

    @register(name, description=f"VGG-{layers}{bn} (configuration {config}), "
                                f"torchvision.models.{name}")
    def build(image_size, num_classes):
        return vgg(config, image_size, num_classes, batch_norm)

    build.__name__ = name
    build.__qualname__ = name
    build.__doc__ = f"torchvision's ``{name}`` as a graph (configuration {config}{bn})."
    return build


vgg11 = _register("vgg11", "A", False, 11)
vgg13 = _register("vgg13", "B", False, 13)
vgg16 = _register("vgg16", "D", False, 16)
vgg19 = _register("vgg19", "E", False, 19)
vgg11_bn = _register("vgg11_bn", "A", True, 11)
vgg13_bn = _register("vgg13_bn", "B", True, 13)
vgg16_bn = _register("vgg16_bn", "D", True, 16)
vgg19_bn = _register("vgg19_bn", "E", True, 19)


def vgg16_demo_net(image_size=112, num_classes=10, head=True):
    """VGG-16's conv body, then (if ``head``) global average pooling, a dense layer and softmax.

    The body is layer for layer torchvision's ``vgg16().features`` (node names
    ``features.<i>`` as there); the small head replaces VGG-16's 120 M-parameter
    classifier so the demo stays light.
    """
    graph = Graph((3, image_size, image_size))
    channels = vgg_features(graph, VGG16_CONFIG)
    if head:
        graph.add(GlobalAvgPool2d(), name="pool")
        graph.add(Flatten(), name="flatten")
        graph.add(Linear(channels, num_classes), name="fc")
        graph.add(Softmax(), name="prob")
    return graph
