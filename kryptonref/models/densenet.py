"""DenseNet-121 (Huang et al., 2017) as torchvision's ``densenet121``."""
from __future__ import annotations

from ..graph import Graph
from ..layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Concat, Conv2d, Flatten,
                      Linear, MaxPool2d, ReLU)
from .zoo import register

__all__ = ["densenet121", "densenet_graph"]


def densenet_graph(image_size, num_classes, block_config=(6, 12, 24, 16), growth_rate=32,
                   num_init_features=64, bn_size=4):
    """torchvision's ``DenseNet`` (memory-efficient mode and dropout are inference no-ops).

    Node names follow torchvision: ``features.conv0/norm0/relu0/pool0``,
    ``features.denseblock<b>.denselayer<l>.{norm1,relu1,conv1,norm2,relu2,conv2}``,
    ``features.transition<b>.{norm,relu,conv,pool}``, ``features.norm5``,
    ``classifier``. The channel concatenation of a block's input and the new
    features of every earlier layer is built as a chain of two-input ``Concat``
    nodes: ``features.denseblock<b>.denselayer<l>.concat`` (``l >= 2``) is the
    input of dense layer ``l`` (the previous layer's input concatenated with that
    layer's output, which is ``torch.cat(features, 1)`` in torchvision's order),
    and ``features.denseblock<b>.concat`` is the block's output. Each concat node
    thus has two inputs and the graph stays linear in the number of layers.
    The head is ``relu``, ``avgpool`` (adaptive, 1x1), ``flatten``, ``classifier``.
    """
    graph = Graph((3, image_size, image_size))
    graph.add(Conv2d(3, num_init_features, 7, stride=2, padding=3, bias=False),
              name="features.conv0")
    graph.add(BatchNorm2d(num_init_features), name="features.norm0")
    graph.add(ReLU(), name="features.relu0")
    last = graph.add(MaxPool2d(3, stride=2, padding=1), name="features.pool0")
    channels = num_init_features
    inter = bn_size * growth_rate
    for b, num_layers in enumerate(block_config, start=1):
        block = f"features.denseblock{b}"
        features = last  # concat of the block input and every new feature map so far
        for l in range(1, num_layers + 1):
            p = f"{block}.denselayer{l}"
            c_in = channels + (l - 1) * growth_rate
            graph.add(BatchNorm2d(c_in), inputs=features, name=f"{p}.norm1")
            graph.add(ReLU(), name=f"{p}.relu1")
            graph.add(Conv2d(c_in, inter, 1, bias=False), name=f"{p}.conv1")
            graph.add(BatchNorm2d(inter), name=f"{p}.norm2")
            graph.add(ReLU(), name=f"{p}.relu2")
            new = graph.add(Conv2d(inter, growth_rate, 3, padding=1, bias=False),
                            name=f"{p}.conv2")
            cat_name = (f"{block}.denselayer{l + 1}.concat" if l < num_layers
                        else f"{block}.concat")
            features = graph.add(Concat(), inputs=[features, new], name=cat_name)
        last = features
        channels += num_layers * growth_rate
        if b != len(block_config):
            t = f"features.transition{b}"
            graph.add(BatchNorm2d(channels), name=f"{t}.norm")
            graph.add(ReLU(), name=f"{t}.relu")
            graph.add(Conv2d(channels, channels // 2, 1, bias=False), name=f"{t}.conv")
            last = graph.add(AvgPool2d(2, stride=2), name=f"{t}.pool")
            channels //= 2
    graph.add(BatchNorm2d(channels), name="features.norm5")
    graph.add(ReLU(), name="relu")
    graph.add(AdaptiveAvgPool2d((1, 1)), name="avgpool")
    graph.add(Flatten(), name="flatten")
    graph.add(Linear(channels, num_classes), name="classifier")
    return graph


@register("densenet121", default_size=224,
          description="torchvision densenet121 (Huang et al. 2017), growth 32, blocks 6-12-24-16")
def densenet121(image_size=224, num_classes=1000):
    """torchvision's ``densenet121()``; see :func:`densenet_graph`."""
    return densenet_graph(image_size, num_classes)
