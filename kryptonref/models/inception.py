"""Inception v3 (Szegedy et al., 2016) as torchvision's ``inception_v3``."""
from __future__ import annotations

from ..graph import Graph
from ..layers import AdaptiveAvgPool2d, AvgPool2d, Concat, Dropout, Flatten, Linear, MaxPool2d
from .blocks import conv_bn_act
from .zoo import register

__all__ = ["inception_v3"]

_EPS = 1e-3


def _basic(graph, prefix, c_in, c_out, kernel, stride=1, padding=0, inputs=None):
    """torchvision's ``BasicConv2d``: ``<prefix>.conv`` (no bias), ``.bn`` (eps 1e-3), ``.relu``."""
    return conv_bn_act(graph, prefix, c_in, c_out, kernel, stride=stride, padding=padding,
                       eps=_EPS, inputs=inputs)


def _pool_branch(graph, name, x, c_in, c_out):
    """``F.avg_pool2d(x, 3, stride=1, padding=1)`` (count_include_pad) then ``branch_pool``."""
    graph.add(AvgPool2d(3, stride=1, padding=1, count_include_pad=True), inputs=x,
              name=f"{name}.avg_pool")
    return _basic(graph, f"{name}.branch_pool", c_in, c_out, 1)


def _inception_a(graph, name, c_in, pool_features):
    x = graph.order[-1]
    b1 = _basic(graph, f"{name}.branch1x1", c_in, 64, 1, inputs=x)
    _basic(graph, f"{name}.branch5x5_1", c_in, 48, 1, inputs=x)
    b5 = _basic(graph, f"{name}.branch5x5_2", 48, 64, 5, padding=2)
    _basic(graph, f"{name}.branch3x3dbl_1", c_in, 64, 1, inputs=x)
    _basic(graph, f"{name}.branch3x3dbl_2", 64, 96, 3, padding=1)
    b3 = _basic(graph, f"{name}.branch3x3dbl_3", 96, 96, 3, padding=1)
    bp = _pool_branch(graph, name, x, c_in, pool_features)
    graph.add(Concat(), inputs=[b1, b5, b3, bp], name=f"{name}.concat")
    return 64 + 64 + 96 + pool_features


def _inception_b(graph, name, c_in):
    x = graph.order[-1]
    b3 = _basic(graph, f"{name}.branch3x3", c_in, 384, 3, stride=2, inputs=x)
    _basic(graph, f"{name}.branch3x3dbl_1", c_in, 64, 1, inputs=x)
    _basic(graph, f"{name}.branch3x3dbl_2", 64, 96, 3, padding=1)
    bd = _basic(graph, f"{name}.branch3x3dbl_3", 96, 96, 3, stride=2)
    bp = graph.add(MaxPool2d(3, stride=2), inputs=x, name=f"{name}.max_pool")
    graph.add(Concat(), inputs=[b3, bd, bp], name=f"{name}.concat")
    return 384 + 96 + c_in


def _inception_c(graph, name, c_in, c7):
    x = graph.order[-1]
    b1 = _basic(graph, f"{name}.branch1x1", c_in, 192, 1, inputs=x)
    _basic(graph, f"{name}.branch7x7_1", c_in, c7, 1, inputs=x)
    _basic(graph, f"{name}.branch7x7_2", c7, c7, (1, 7), padding=(0, 3))
    b7 = _basic(graph, f"{name}.branch7x7_3", c7, 192, (7, 1), padding=(3, 0))
    _basic(graph, f"{name}.branch7x7dbl_1", c_in, c7, 1, inputs=x)
    _basic(graph, f"{name}.branch7x7dbl_2", c7, c7, (7, 1), padding=(3, 0))
    _basic(graph, f"{name}.branch7x7dbl_3", c7, c7, (1, 7), padding=(0, 3))
    _basic(graph, f"{name}.branch7x7dbl_4", c7, c7, (7, 1), padding=(3, 0))
    bd = _basic(graph, f"{name}.branch7x7dbl_5", c7, 192, (1, 7), padding=(0, 3))
    bp = _pool_branch(graph, name, x, c_in, 192)
    graph.add(Concat(), inputs=[b1, b7, bd, bp], name=f"{name}.concat")
    return 4 * 192


def _inception_d(graph, name, c_in):
    x = graph.order[-1]
    _basic(graph, f"{name}.branch3x3_1", c_in, 192, 1, inputs=x)
    b3 = _basic(graph, f"{name}.branch3x3_2", 192, 320, 3, stride=2)
    _basic(graph, f"{name}.branch7x7x3_1", c_in, 192, 1, inputs=x)
    _basic(graph, f"{name}.branch7x7x3_2", 192, 192, (1, 7), padding=(0, 3))
    _basic(graph, f"{name}.branch7x7x3_3", 192, 192, (7, 1), padding=(3, 0))
    b7 = _basic(graph, f"{name}.branch7x7x3_4", 192, 192, 3, stride=2)
    bp = graph.add(MaxPool2d(3, stride=2), inputs=x, name=f"{name}.max_pool")
    graph.add(Concat(), inputs=[b3, b7, bp], name=f"{name}.concat")
    return 320 + 192 + c_in


def _inception_e(graph, name, c_in):
    """``InceptionE``; its two inner concatenations are folded into the block's one
    ``<name>.concat`` (same channel order as torchvision's nested ``torch.cat``)."""
    x = graph.order[-1]
    b1 = _basic(graph, f"{name}.branch1x1", c_in, 320, 1, inputs=x)
    s = _basic(graph, f"{name}.branch3x3_1", c_in, 384, 1, inputs=x)
    b3a = _basic(graph, f"{name}.branch3x3_2a", 384, 384, (1, 3), padding=(0, 1), inputs=s)
    b3b = _basic(graph, f"{name}.branch3x3_2b", 384, 384, (3, 1), padding=(1, 0), inputs=s)
    _basic(graph, f"{name}.branch3x3dbl_1", c_in, 448, 1, inputs=x)
    d = _basic(graph, f"{name}.branch3x3dbl_2", 448, 384, 3, padding=1)
    bda = _basic(graph, f"{name}.branch3x3dbl_3a", 384, 384, (1, 3), padding=(0, 1), inputs=d)
    bdb = _basic(graph, f"{name}.branch3x3dbl_3b", 384, 384, (3, 1), padding=(1, 0), inputs=d)
    bp = _pool_branch(graph, name, x, c_in, 192)
    graph.add(Concat(), inputs=[b1, b3a, b3b, bda, bdb, bp], name=f"{name}.concat")
    return 320 + 4 * 384 + 192


@register("inception_v3", default_size=299,
          description="torchvision inception_v3 (Szegedy et al. 2016), aux_logits=False, "
                      "transform_input=False")
def inception_v3(image_size=299, num_classes=1000):
    """torchvision's ``Inception3(aux_logits=False, transform_input=False)`` layer for layer.

    Parameterised nodes carry torchvision's names (``Conv2d_1a_3x3.conv``,
    ``Mixed_5b.branch1x1.bn``, ``Mixed_7c.branch3x3dbl_3b.conv``, ``fc``...). The
    functional pools of torchvision's forward become ``maxpool1``/``maxpool2``,
    ``<block>.avg_pool`` (3x3/1, padding 1, padding counted) and
    ``<block>.max_pool`` (3x3/2); each block ends in ``<block>.concat``. The head
    is ``avgpool`` (adaptive, 1x1), ``dropout`` (0.5), ``flatten``, ``fc``. The
    smallest input is 75 px.
    """
    graph = Graph((3, image_size, image_size))
    _basic(graph, "Conv2d_1a_3x3", 3, 32, 3, stride=2)
    _basic(graph, "Conv2d_2a_3x3", 32, 32, 3)
    _basic(graph, "Conv2d_2b_3x3", 32, 64, 3, padding=1)
    graph.add(MaxPool2d(3, stride=2), name="maxpool1")
    _basic(graph, "Conv2d_3b_1x1", 64, 80, 1)
    _basic(graph, "Conv2d_4a_3x3", 80, 192, 3)
    graph.add(MaxPool2d(3, stride=2), name="maxpool2")
    c = _inception_a(graph, "Mixed_5b", 192, 32)
    c = _inception_a(graph, "Mixed_5c", c, 64)
    c = _inception_a(graph, "Mixed_5d", c, 64)
    c = _inception_b(graph, "Mixed_6a", c)
    c = _inception_c(graph, "Mixed_6b", c, 128)
    c = _inception_c(graph, "Mixed_6c", c, 160)
    c = _inception_c(graph, "Mixed_6d", c, 160)
    c = _inception_c(graph, "Mixed_6e", c, 192)
    c = _inception_d(graph, "Mixed_7a", c)
    c = _inception_e(graph, "Mixed_7b", c)
    c = _inception_e(graph, "Mixed_7c", c)
    graph.add(AdaptiveAvgPool2d((1, 1)), name="avgpool")
    graph.add(Dropout(0.5), name="dropout")
    graph.add(Flatten(), name="flatten")
    graph.add(Linear(c, num_classes), name="fc")
    return graph
