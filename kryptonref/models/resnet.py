"""ResNet (He et al., 2016), layer for layer as torchvision's ``resnet*`` models.

torchvision's "ResNet v1.5": a bottleneck block strides on its 3x3 convolution
(not on the first 1x1); a block whose stride or width changes has a projection
shortcut ``downsample`` = 1x1 conv (stride) + batch norm. Convolutions have no
bias; batch norms use eps 1e-5.

Parameterised nodes carry torchvision's module paths (``conv1``, ``bn1``,
``layer<i>.<j>.conv1``, ``layer<i>.<j>.downsample.0``/``.1``, ``fc``);
parameter-free ones are ``relu``, ``maxpool``, ``layer<i>.<j>.relu1``/``relu2``
(/``relu3``), ``layer<i>.<j>.add``, ``avgpool`` and ``flatten``.

Every stage pads enough to keep a 1-pixel map alive, so any ``image_size >= 1``
is valid (as in torchvision).
"""
from __future__ import annotations

from ..graph import Graph
from ..layers import Add, AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU
from .blocks import conv_bn_act
from .zoo import register

__all__ = ["RESNET_CONFIGS", "basic_block", "bottleneck", "resnet",
           "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]

#: ``name -> (block kind, blocks per stage)`` as torchvision's constructors.
RESNET_CONFIGS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}

_EXPANSION = {"basic": 1, "bottleneck": 4}


def _shortcut(graph, prefix, source, c_in, c_out, stride):
    """Identity, or torchvision's ``downsample`` (1x1 conv + batch norm) when the shape changes."""
    if stride == 1 and c_in == c_out:
        return source
    graph.add(Conv2d(c_in, c_out, 1, stride=stride, bias=False), inputs=source,
              name=f"{prefix}.downsample.0")
    return graph.add(BatchNorm2d(c_out), name=f"{prefix}.downsample.1")


def basic_block(graph, prefix, source, c_in, planes, stride=1):
    """torchvision's ``BasicBlock``: 3x3 (stride) - BN - ReLU - 3x3 - BN, + shortcut, ReLU."""
    conv_bn_act(graph, prefix, c_in, planes, 3, stride=stride, padding=1, inputs=source,
                conv_name="conv1", bn_name="bn1", act_name="relu1")
    body = conv_bn_act(graph, prefix, planes, planes, 3, padding=1, act=None,
                       conv_name="conv2", bn_name="bn2")
    identity = _shortcut(graph, prefix, source, c_in, planes, stride)
    graph.add(Add(), inputs=[body, identity], name=f"{prefix}.add")
    return graph.add(ReLU(), name=f"{prefix}.relu2")


def bottleneck(graph, prefix, source, c_in, planes, stride=1):
    """torchvision's ``Bottleneck`` (v1.5): 1x1 - 3x3 (stride) - 1x1 (x4), + shortcut, ReLU."""
    c_out = planes * _EXPANSION["bottleneck"]
    conv_bn_act(graph, prefix, c_in, planes, 1, inputs=source,
                conv_name="conv1", bn_name="bn1", act_name="relu1")
    conv_bn_act(graph, prefix, planes, planes, 3, stride=stride, padding=1,
                conv_name="conv2", bn_name="bn2", act_name="relu2")
    body = conv_bn_act(graph, prefix, planes, c_out, 1, act=None,
                       conv_name="conv3", bn_name="bn3")
    identity = _shortcut(graph, prefix, source, c_in, c_out, stride)
    graph.add(Add(), inputs=[body, identity], name=f"{prefix}.add")
    return graph.add(ReLU(), name=f"{prefix}.relu3")


def resnet(block, layers, image_size=224, num_classes=1000):
    """torchvision's ``ResNet(block, layers)`` (groups 1, width 64) as a graph.

    ``block`` is ``"basic"`` or ``"bottleneck"``; ``layers`` the blocks per stage.
    """
    make = basic_block if block == "basic" else bottleneck
    expansion = _EXPANSION[block]
    graph = Graph((3, image_size, image_size))
    graph.add(Conv2d(3, 64, 7, stride=2, padding=3, bias=False), name="conv1")
    graph.add(BatchNorm2d(64), name="bn1")
    graph.add(ReLU(), name="relu")
    last = graph.add(MaxPool2d(3, 2, padding=1), name="maxpool")
    channels = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
        for index in range(blocks):
            stride = 2 if stage > 1 and index == 0 else 1
            last = make(graph, f"layer{stage}.{index}", last, channels, planes, stride)
            channels = planes * expansion
    graph.add(AdaptiveAvgPool2d((1, 1)), name="avgpool")
    graph.add(Flatten(), name="flatten")
    graph.add(Linear(channels, num_classes), name="fc")
    return graph


def _register(name):
    block, layers = RESNET_CONFIGS[name]
    depth = name[len("resnet"):]

    @register(name, description=f"ResNet-{depth} (v1.5, {block} blocks {list(layers)}), "
                                f"torchvision.models.{name}")
    def build(image_size, num_classes):
        return resnet(block, layers, image_size, num_classes)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"torchvision's ``{name}`` as a graph ({block} blocks {list(layers)})."
    return build


resnet18 = _register("resnet18")
resnet34 = _register("resnet34")
resnet50 = _register("resnet50")
resnet101 = _register("resnet101")
resnet152 = _register("resnet152")
