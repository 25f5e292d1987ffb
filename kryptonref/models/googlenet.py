"""GoogLeNet / Inception v1 (Szegedy et al., 2015) as torchvision's ``googlenet``."""
from __future__ import annotations

from ..graph import Graph
from ..layers import AdaptiveAvgPool2d, Concat, Dropout, Flatten, Linear, MaxPool2d
from .blocks import conv_bn_act
from .zoo import register

__all__ = ["googlenet", "GOOGLENET_INCEPTION"]

#: ``name: (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)`` of the Inception blocks,
#: in order; ``None`` entries are torchvision's max pools between stages.
GOOGLENET_INCEPTION = (
    ("inception3a", (64, 96, 128, 16, 32, 32)),
    ("inception3b", (128, 128, 192, 32, 96, 64)),
    ("maxpool3", None),
    ("inception4a", (192, 96, 208, 16, 48, 64)),
    ("inception4b", (160, 112, 224, 24, 64, 64)),
    ("inception4c", (128, 128, 256, 24, 64, 64)),
    ("inception4d", (112, 144, 288, 32, 64, 64)),
    ("inception4e", (256, 160, 320, 32, 128, 128)),
    ("maxpool4", None),
    ("inception5a", (256, 160, 320, 32, 128, 128)),
    ("inception5b", (384, 192, 384, 48, 128, 128)),
)

_EPS = 1e-3


def _basic(graph, prefix, c_in, c_out, kernel, stride=1, padding=0, inputs=None):
    """torchvision's ``BasicConv2d``: ``<prefix>.conv`` (no bias), ``.bn`` (eps 1e-3), ``.relu``."""
    return conv_bn_act(graph, prefix, c_in, c_out, kernel, stride=stride, padding=padding,
                       eps=_EPS, inputs=inputs)


def _inception(graph, name, c_in, ch1, ch3r, ch3, ch5r, ch5, pool_proj):
    """torchvision's ``Inception`` block; returns (output node, output channels).

    ``branch3`` uses a 3x3 convolution where the paper has a 5x5, as torchvision does.
    """
    x = graph.order[-1]
    b1 = _basic(graph, f"{name}.branch1", c_in, ch1, 1, inputs=x)
    _basic(graph, f"{name}.branch2.0", c_in, ch3r, 1, inputs=x)
    b2 = _basic(graph, f"{name}.branch2.1", ch3r, ch3, 3, padding=1)
    _basic(graph, f"{name}.branch3.0", c_in, ch5r, 1, inputs=x)
    b3 = _basic(graph, f"{name}.branch3.1", ch5r, ch5, 3, padding=1)
    graph.add(MaxPool2d(3, stride=1, padding=1, ceil_mode=True), inputs=x,
              name=f"{name}.branch4.0")
    b4 = _basic(graph, f"{name}.branch4.1", c_in, pool_proj, 1)
    out = graph.add(Concat(), inputs=[b1, b2, b3, b4], name=f"{name}.concat")
    return out, ch1 + ch3 + ch5 + pool_proj


@register("googlenet", default_size=224,
          description="torchvision googlenet (Szegedy et al. 2015), aux_logits=False, "
                      "transform_input=False")
def googlenet(image_size=224, num_classes=1000):
    """torchvision's ``GoogLeNet(aux_logits=False, transform_input=False)`` layer for layer.

    Parameterised nodes carry torchvision's names (``conv1.conv``, ``conv1.bn``,
    ``inception3a.branch2.1.conv``, ``fc``...); each ``BasicConv2d``'s ReLU is
    ``<prefix>.relu`` and each block's channel concatenation ``<block>.concat``.
    The head is ``avgpool`` (adaptive, 1x1), ``flatten``, ``dropout`` (0.2), ``fc``.
    """
    graph = Graph((3, image_size, image_size))
    _basic(graph, "conv1", 3, 64, 7, stride=2, padding=3)
    graph.add(MaxPool2d(3, stride=2, ceil_mode=True), name="maxpool1")
    _basic(graph, "conv2", 64, 64, 1)
    _basic(graph, "conv3", 64, 192, 3, padding=1)
    graph.add(MaxPool2d(3, stride=2, ceil_mode=True), name="maxpool2")
    channels = 192
    for name, cfg in GOOGLENET_INCEPTION:
        if cfg is None:
            kernel = 3 if name == "maxpool3" else 2
            graph.add(MaxPool2d(kernel, stride=2, ceil_mode=True), name=name)
            continue
        _, channels = _inception(graph, name, channels, *cfg)
    graph.add(AdaptiveAvgPool2d((1, 1)), name="avgpool")
    graph.add(Flatten(), name="flatten")
    graph.add(Dropout(0.2), name="dropout")
    graph.add(Linear(channels, num_classes), name="fc")
    return graph
