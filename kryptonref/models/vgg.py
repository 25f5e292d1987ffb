"""VGG-16's convolutional body (Simonyan & Zisserman, configuration D)."""
from __future__ import annotations

from ..graph import Graph
from ..layers import Conv2d, Flatten, GlobalAvgPool2d, Linear, MaxPool2d, ReLU, Softmax

#: Channels of the 13 3x3 convolutions, ``"M"`` for a 2x2 max pool (torchvision's cfg "D").
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                512, 512, 512, "M")


def vgg16_demo_net(image_size=112, num_classes=10, head=True):
    """VGG-16's conv body, then (if ``head``) global average pooling, a dense layer and softmax.

    The body is layer for layer torchvision's ``vgg16().features`` (node names
    ``features.<i>`` as there); the small head replaces VGG-16's 120 M-parameter
    classifier so the demo stays light.
    """
    graph = Graph((3, image_size, image_size))
    channels = 3
    for index, item in enumerate(VGG16_CONFIG):
        if item == "M":
            graph.add(MaxPool2d(2, 2), name=f"features.{len(graph.order)}")
            continue
        graph.add(Conv2d(channels, item, 3, padding=1), name=f"features.{len(graph.order)}")
        graph.add(ReLU(), name=f"features.{len(graph.order)}")
        channels = item
    if head:
        graph.add(GlobalAvgPool2d(), name="pool")
        graph.add(Flatten(), name="flatten")
        graph.add(Linear(channels, num_classes), name="fc")
        graph.add(Softmax(), name="prob")
    return graph
