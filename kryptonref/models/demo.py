"""Small trained demo models for the synthetic shapes data (:mod:`kryptonref.datasets`).

Three narrow CNNs at 224 px that keep the layer patterns of the originals, so
that their incremental behaviour resembles them:

* ``demo_vgg``: VGG-11's configuration A with batch norm (torchvision's
  ``vgg11_bn`` layout: 3x3 convolution stacks, each conv + batch norm + ReLU,
  2x2 max pools) at 1/8 of the width, then a global average pool and a small
  dense classifier. Node names are torchvision's (``features.<i>``,
  ``avgpool``, ``classifier.<i>``) plus ``flatten``.
* ``demo_resnet``: ResNet-18's layout (conv 7x7/2 stem + batch norm + ReLU +
  max pool 3x3/2, two basic blocks per stage with residual adds and 1x1
  projection shortcuts, stride-2 downsampling at stages 2-4, global average
  pool + fc) at 1/4 of the width. Node names are torchvision's, as
  :mod:`kryptonref.models.resnet`.
* ``demo_effnet``: EfficientNet-B0's layout (conv 3x3/2 stem + batch norm + SiLU,
  MBConv blocks with SiLU and squeeze-excitation, see
  :func:`kryptonref.models.modern.mbconv`, a 1x1 head conv + batch norm + SiLU,
  global average pool, dropout, linear) shrunk to 9 blocks in 5 stages
  (:data:`DEMO_EFFNET_STAGES`). Its squeeze-excitation gates make every changed
  region whole at the first block (exact incremental inference saves little); it is
  the trained network on which the ``freeze_context`` approximation is measured
  (``docs/approximate.md``). Node names are torchvision's efficientnet's
  (``features.2.1.block.2.fc1``, ...).

All three are registered with 5 classes (``kryptonref.datasets.CLASS_NAMES``) and
ship weights trained on :func:`kryptonref.datasets.shapes` (see
``docs/demo-models.md`` and ``tools/train_demo_models.py``); load them with
``kryptonref.zoo("demo_vgg", weights="pretrained")``. The models output logits.
"""
from __future__ import annotations

from ..graph import Graph
from ..layers import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear,
                      MaxPool2d, ReLU)
from .modern import efficientnet
from .resnet import basic_block
from .vgg import vgg_features
from .zoo import register

__all__ = ["DEMO_VGG_CONFIG", "DEMO_RESNET_WIDTHS", "DEMO_EFFNET_STAGES", "DEMO_CLASSES",
           "demo_vgg", "demo_resnet", "demo_effnet"]

#: Number of classes of the demo data (``len(kryptonref.datasets.CLASS_NAMES)``).
DEMO_CLASSES = 5

#: VGG-11's configuration A at 1/8 of the width: 3x3 conv channels, "M" for a 2x2 max pool.
DEMO_VGG_CONFIG = (8, "M", 16, "M", 32, 32, "M", 64, 64, "M", 64, 64, "M")

#: Width of ResNet-18's four stages at 1/4 (torchvision: 64, 128, 256, 512).
DEMO_RESNET_WIDTHS = (16, 32, 64, 128)

#: Basic blocks per stage (ResNet-18's).
DEMO_RESNET_BLOCKS = (2, 2, 2, 2)

#: ``demo_effnet``'s MBConv stages: ``(expansion, output channels, blocks, stride)``
#: (3x3 depthwise kernels throughout; the stem has 16 channels).
DEMO_EFFNET_STAGES = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 2),
                      (4, 96, 2, 2))

#: ``demo_effnet``'s stem and head widths.
DEMO_EFFNET_STEM = 16
DEMO_EFFNET_HEAD = 256


@register("demo_vgg", description="VGG-11-BN layout at 1/8 width, GAP head; trained on "
                                  "kryptonref.datasets.shapes (5 classes)",
          num_classes=DEMO_CLASSES, pretrained="demo_vgg.npz")
def demo_vgg(image_size=224, num_classes=DEMO_CLASSES):
    """The ``demo_vgg`` graph: :data:`DEMO_VGG_CONFIG` with batch norm, GAP, dense head.

    ``features`` (torchvision's ``make_layers(cfg, batch_norm=True)``) ->
    ``avgpool`` (adaptive average pool to 1x1) -> ``flatten`` -> ``classifier``
    (Linear 64-64, ReLU, Dropout, Linear 64-``num_classes``). Needs
    ``image_size >= 32`` (five 2x2 max pools).
    """
    graph = Graph((3, image_size, image_size))
    channels = vgg_features(graph, DEMO_VGG_CONFIG, batch_norm=True)
    graph.add(AdaptiveAvgPool2d((1, 1)), name="avgpool")
    graph.add(Flatten(), name="flatten")
    graph.add(Linear(channels, 64), name="classifier.0")
    graph.add(ReLU(), name="classifier.1")
    graph.add(Dropout(0.3), name="classifier.2")
    graph.add(Linear(64, num_classes), name="classifier.3")
    return graph


@register("demo_resnet", description="ResNet-18 layout at 1/4 width; trained on "
                                     "kryptonref.datasets.shapes (5 classes)",
          num_classes=DEMO_CLASSES, pretrained="demo_resnet.npz")
def demo_resnet(image_size=224, num_classes=DEMO_CLASSES):
    """The ``demo_resnet`` graph: ResNet-18's layout with stage widths :data:`DEMO_RESNET_WIDTHS`.

    ``conv1`` (7x7/2) -> ``bn1`` -> ``relu`` -> ``maxpool`` (3x3/2, pad 1) -> four
    stages of :data:`DEMO_RESNET_BLOCKS` basic blocks (stride 2 from stage 2) ->
    ``avgpool`` -> ``flatten`` -> ``fc``. Any ``image_size >= 1`` is valid.
    """
    graph = Graph((3, image_size, image_size))
    stem = DEMO_RESNET_WIDTHS[0]
    graph.add(Conv2d(3, stem, 7, stride=2, padding=3, bias=False), name="conv1")
    graph.add(BatchNorm2d(stem), name="bn1")
    graph.add(ReLU(), name="relu")
    last = graph.add(MaxPool2d(3, 2, padding=1), name="maxpool")
    channels = stem
    for stage, (planes, blocks) in enumerate(zip(DEMO_RESNET_WIDTHS, DEMO_RESNET_BLOCKS), 1):
        for index in range(blocks):
            stride = 2 if stage > 1 and index == 0 else 1
            last = basic_block(graph, f"layer{stage}.{index}", last, channels, planes, stride)
            channels = planes
    graph.add(AdaptiveAvgPool2d((1, 1)), name="avgpool")
    graph.add(Flatten(), name="flatten")
    graph.add(Linear(channels, num_classes), name="fc")
    return graph


@register("demo_effnet", description="EfficientNet-B0 layout (MBConv, SiLU, squeeze-excitation) "
                                     "with 9 blocks; trained on kryptonref.datasets.shapes "
                                     "(5 classes)",
          num_classes=DEMO_CLASSES, pretrained="demo_effnet.npz")
def demo_effnet(image_size=224, num_classes=DEMO_CLASSES):
    """The ``demo_effnet`` graph: EfficientNet's layout with :data:`DEMO_EFFNET_STAGES`.

    ``features.0`` (conv 3x3/2 to 16 channels + BN + SiLU) -> ``features.1`` ..
    ``features.5``, the MBConv stages (``features.<s>.<b>.block.<j>``: 1x1 expansion
    conv + BN + SiLU unless the expansion is 1, 3x3 depthwise conv + BN + SiLU,
    squeeze-excitation to ``max(1, c_in // 4)`` channels with SiLU and a Sigmoid gate,
    1x1 projection conv + BN; ``features.<s>.<b>.add`` when stride 1 and the widths
    agree) -> ``features.6`` (1x1 conv to 256 + BN + SiLU) -> ``avgpool`` ->
    ``flatten`` -> ``classifier.0`` (Dropout 0.2) -> ``classifier.1`` (Linear 256 to
    ``num_classes``). Any ``image_size >= 1`` is valid.
    """
    stages, c_in = [], DEMO_EFFNET_STEM
    for expand, c_out, blocks, stride in DEMO_EFFNET_STAGES:
        stages.append((False, expand, 3, stride, c_in, c_out, blocks))
        c_in = c_out
    return efficientnet(tuple(stages), image_size, num_classes, dropout=0.2, eps=1e-5,
                        last_channel=DEMO_EFFNET_HEAD)
