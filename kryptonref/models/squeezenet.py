"""SqueezeNet (Iandola et al., 2016), layer for layer as torchvision's ``squeezenet1_0``/``1_1``.

A Fire module squeezes with a 1x1 convolution + ReLU, then expands with a 1x1
and a 3x3 (padding 1) convolution, each + ReLU, concatenated along channels. Max
pools are 3x3, stride 2, ``ceil_mode=True``. The classifier is dropout, a 1x1
``final_conv`` to ``num_classes``, ReLU and global average pooling.

Node names are torchvision's module paths (``features.<i>``,
``features.<i>.squeeze``, ``.squeeze_activation``, ``.expand1x1``,
``.expand1x1_activation``, ``.expand3x3``, ``.expand3x3_activation``,
``classifier.<i>``) plus ``features.<i>.cat`` and ``flatten``.
"""
from __future__ import annotations

from ..graph import Graph
from ..layers import AdaptiveAvgPool2d, Concat, Conv2d, Dropout, Flatten, MaxPool2d, ReLU
from .zoo import register

__all__ = ["fire", "squeezenet", "squeezenet1_0", "squeezenet1_1", "SQUEEZENET_CONFIGS"]

#: ``version -> (stem conv (channels, kernel), features after the stem)``;
#: a feature is ``"M"`` (max pool) or ``(squeeze, expand1x1, expand3x3)`` for a Fire module.
SQUEEZENET_CONFIGS = {
    "1_0": ((96, 7), ("M", (16, 64, 64), (16, 64, 64), (32, 128, 128), "M",
                      (32, 128, 128), (48, 192, 192), (48, 192, 192), (64, 256, 256), "M",
                      (64, 256, 256))),
    "1_1": ((64, 3), ("M", (16, 64, 64), (16, 64, 64), "M", (32, 128, 128), (32, 128, 128),
                      "M", (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256))),
}


def fire(graph, prefix, c_in, squeeze, expand1x1, expand3x3):
    """Append torchvision's ``Fire`` module; returns the output's channel count."""
    source = graph.add(Conv2d(c_in, squeeze, 1), name=f"{prefix}.squeeze")
    source = graph.add(ReLU(), name=f"{prefix}.squeeze_activation")
    graph.add(Conv2d(squeeze, expand1x1, 1), inputs=source, name=f"{prefix}.expand1x1")
    left = graph.add(ReLU(), name=f"{prefix}.expand1x1_activation")
    graph.add(Conv2d(squeeze, expand3x3, 3, padding=1), inputs=source,
              name=f"{prefix}.expand3x3")
    right = graph.add(ReLU(), name=f"{prefix}.expand3x3_activation")
    graph.add(Concat(), inputs=[left, right], name=f"{prefix}.cat")
    return expand1x1 + expand3x3


def squeezenet(version, image_size=224, num_classes=1000):
    """torchvision's ``SqueezeNet(version)`` (``"1_0"`` or ``"1_1"``) as a graph."""
    (stem_channels, stem_kernel), features = SQUEEZENET_CONFIGS[version]
    graph = Graph((3, image_size, image_size))
    graph.add(Conv2d(3, stem_channels, stem_kernel, stride=2), name="features.0")
    graph.add(ReLU(), name="features.1")
    channels = stem_channels
    for index, item in enumerate(features, start=2):
        if item == "M":
            graph.add(MaxPool2d(3, 2, ceil_mode=True), name=f"features.{index}")
        else:
            channels = fire(graph, f"features.{index}", channels, *item)
    graph.add(Dropout(0.5), name="classifier.0")
    graph.add(Conv2d(channels, num_classes, 1), name="classifier.1")
    graph.add(ReLU(), name="classifier.2")
    graph.add(AdaptiveAvgPool2d((1, 1)), name="classifier.3")
    graph.add(Flatten(), name="flatten")
    return graph


@register("squeezenet1_0", description="SqueezeNet 1.0, torchvision.models.squeezenet1_0")
def squeezenet1_0(image_size=224, num_classes=1000):
    """torchvision's ``squeezenet1_0`` as a graph."""
    return squeezenet("1_0", image_size, num_classes)


@register("squeezenet1_1", description="SqueezeNet 1.1, torchvision.models.squeezenet1_1")
def squeezenet1_1(image_size=224, num_classes=1000):
    """torchvision's ``squeezenet1_1`` as a graph."""
    return squeezenet("1_1", image_size, num_classes)
