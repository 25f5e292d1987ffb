"""Building blocks shared by the zoo's architecture modules."""
from __future__ import annotations

from ..layers import BatchNorm2d, Conv2d, ReLU


def conv_bn_act(graph, prefix, c_in, c_out, kernel, stride=1, padding=0, groups=1, eps=1e-5,
                act=ReLU, inputs=None, conv_name="conv", bn_name="bn", act_name="relu"):
    """Append ``conv (no bias) -> batch norm -> activation`` and return the last node's name.

    Nodes are named ``<prefix>.<conv_name>``, ``<prefix>.<bn_name>`` and
    ``<prefix>.<act_name>`` (torchvision's module paths for the first two);
    ``act=None`` leaves the activation out.
    """
    name = graph.add(Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, groups=groups,
                            bias=False), inputs=inputs, name=f"{prefix}.{conv_name}")
    name = graph.add(BatchNorm2d(c_out, eps=eps), name=f"{prefix}.{bn_name}")
    if act is not None:
        name = graph.add(act(), name=f"{prefix}.{act_name}")
    return name
