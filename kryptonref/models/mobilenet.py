"""MobileNet v1 (Howard et al., 2017) and MobileNet v2 (torchvision's ``mobilenet_v2``)."""
from __future__ import annotations

from ..graph import Graph
from ..layers import (AdaptiveAvgPool2d, Add, BatchNorm2d, Conv2d, Dropout, Flatten,
                      GlobalAvgPool2d, Linear, ReLU6)
from .blocks import conv_bn_act
from .zoo import register

__all__ = ["mobilenet_v1", "mobilenet_v2", "MOBILENET_V1_BLOCKS", "MOBILENET_V2_SETTING"]

#: ``(out_channels, stride)`` of MobileNet v1's 13 depthwise-separable blocks (Table 1).
MOBILENET_V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                       (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))

#: ``(expansion t, channels c, repeats n, first stride s)`` of MobileNet v2 (torchvision).
MOBILENET_V2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


@register("mobilenet_v1", default_size=224,
          description="MobileNet 1.0/224 (Howard et al. 2017): 13 depthwise-separable blocks, "
                      "569 M MACs, 4.23 M parameters")
def mobilenet_v1(image_size=224, num_classes=1000):
    """The original MobileNet (width multiplier 1.0), which torchvision does not ship.

    Node names: ``features.0.{conv,bn,relu}`` for the stem (3x3/2 conv, 32
    channels); ``features.<i>.{dw_conv,dw_bn,dw_relu,pw_conv,pw_bn,pw_relu}`` for
    block ``i = 1..13`` (depthwise 3x3 then pointwise 1x1, each with batch norm and
    ReLU); then ``avgpool`` (global average), ``flatten`` and ``fc``. Convolutions
    have no bias (batch norm follows), as in the paper's reference implementation.
    """
    graph = Graph((3, image_size, image_size))
    conv_bn_act(graph, "features.0", 3, 32, 3, stride=2, padding=1)
    channels = 32
    for index, (out, stride) in enumerate(MOBILENET_V1_BLOCKS, start=1):
        prefix = f"features.{index}"
        conv_bn_act(graph, prefix, channels, channels, 3, stride=stride, padding=1,
                    groups=channels, conv_name="dw_conv", bn_name="dw_bn", act_name="dw_relu")
        conv_bn_act(graph, prefix, channels, out, 1, conv_name="pw_conv", bn_name="pw_bn",
                    act_name="pw_relu")
        channels = out
    graph.add(GlobalAvgPool2d(), name="avgpool")
    graph.add(Flatten(), name="flatten")
    graph.add(Linear(channels, num_classes), name="fc")
    return graph


def _conv_norm_act(graph, prefix, c_in, c_out, kernel, stride=1, groups=1, inputs=None):
    """torchvision's ``Conv2dNormActivation`` with ReLU6: ``<prefix>.0`` conv, ``.1`` BN, ``.2``."""
    return conv_bn_act(graph, prefix, c_in, c_out, kernel, stride=stride,
                       padding=(kernel - 1) // 2, groups=groups, act=ReLU6, inputs=inputs,
                       conv_name="0", bn_name="1", act_name="2")


@register("mobilenet_v2", default_size=224,
          description="torchvision mobilenet_v2 (Sandler et al. 2018), width 1.0")
def mobilenet_v2(image_size=224, num_classes=1000):
    """torchvision's ``mobilenet_v2()`` layer for layer.

    ``features.0`` is the 3x3/2 stem, ``features.1..17`` the inverted residual
    blocks (``features.<i>.conv.<j>...`` as in torchvision; the residual sum is the
    parameter-free node ``features.<i>.add``), ``features.18`` the 1x1 conv to 1280
    channels; then ``avgpool``, ``flatten`` and ``classifier.0`` (dropout 0.2),
    ``classifier.1`` (linear).
    """
    graph = Graph((3, image_size, image_size))
    last = _conv_norm_act(graph, "features.0", 3, 32, 3, stride=2)
    channels = 32
    index = 1
    for expand, out, repeats, first_stride in MOBILENET_V2_SETTING:
        for rep in range(repeats):
            stride = first_stride if rep == 0 else 1
            block_in = last
            prefix = f"features.{index}.conv"
            hidden = int(round(channels * expand))
            j = 0
            if expand != 1:
                _conv_norm_act(graph, f"{prefix}.{j}", channels, hidden, 1)
                j += 1
            _conv_norm_act(graph, f"{prefix}.{j}", hidden, hidden, 3, stride=stride,
                           groups=hidden)
            graph.add(Conv2d(hidden, out, 1, bias=False), name=f"{prefix}.{j + 1}")
            last = graph.add(BatchNorm2d(out), name=f"{prefix}.{j + 2}")
            if stride == 1 and channels == out:
                last = graph.add(Add(), inputs=[block_in, last], name=f"features.{index}.add")
            channels = out
            index += 1
    _conv_norm_act(graph, f"features.{index}", channels, 1280, 1)
    graph.add(AdaptiveAvgPool2d((1, 1)), name="avgpool")
    graph.add(Flatten(), name="flatten")
    graph.add(Dropout(0.2), name="classifier.0")
    graph.add(Linear(1280, num_classes), name="classifier.1")
    return graph
