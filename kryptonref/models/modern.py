"""Networks designed after 2018, as torchvision builds them: MobileNet v3, EfficientNet
(v1 B0-B7 and v2 S/M/L), RegNetY-400MF, ShuffleNet v2 and ConvNeXt-T.

Node names are torchvision's module paths, so a torchvision ``state_dict`` saved to
``.npz`` (without ``num_batches_tracked``) loads as it is; parameter-free
operations that torchvision writes inline get names of their own (``.add``,
``.scale`` for a squeeze-excitation product, ``.shuffle``...). Their squeeze-
excitation gates make the changed region whole at the first block: the
``freeze_context`` approximation keeps it local (``docs/approximate.md``).
The dev-only ``tools/check_zoo_torchvision.py`` compares each with torchvision,
output for output.
"""
from __future__ import annotations

import math

from ..graph import Graph
from ..layers import (Add, AdaptiveAvgPool2d, BatchNorm2d, ChannelLinear, ChannelShuffle,
                      ChannelSlice, Concat, Conv2d, Dropout, Flatten, GELU, Arithmetic,
                      HardSigmoid, HardSwish, LayerNorm2d, Linear, MaxPool2d, Mul, ReLU, SiLU,
                      Sigmoid)
from .blocks import conv_bn_act
from .zoo import register

__all__ = ["mobilenet_v3", "mbconv", "efficientnet", "regnet_y", "shufflenet_v2", "convnext"]


def make_divisible(value, divisor=8, min_value=None):
    """torchvision's ``_make_divisible``: the nearest multiple of ``divisor``, not 10% lower."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _cna(graph, prefix, c_in, c_out, kernel, stride=1, groups=1, act=ReLU, eps=1e-5,
         inputs=None, dilation=1):
    """torchvision's ``Conv2dNormActivation``: ``<prefix>.0`` conv, ``.1`` BN, ``.2`` act."""
    padding = (kernel - 1) // 2 * dilation
    name = graph.add(Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, groups=groups,
                            dilation=dilation, bias=False), inputs=inputs, name=f"{prefix}.0")
    name = graph.add(BatchNorm2d(c_out, eps=eps), name=f"{prefix}.1")
    if act is not None:
        name = graph.add(act(), name=f"{prefix}.2")
    return name


def squeeze_excitation(graph, prefix, source, channels, squeeze, act=ReLU, gate=Sigmoid,
                       fc1="fc1", fc2="fc2", product=None):
    """torchvision's ``SqueezeExcitation``: ``x * gate(fc2(act(fc1(avgpool(x)))))``."""
    pooled = graph.add(AdaptiveAvgPool2d(1), inputs=source, name=f"{prefix}.avgpool")
    hidden = graph.add(Conv2d(channels, squeeze, 1), name=f"{prefix}.{fc1}")
    hidden = graph.add(act(), name=f"{prefix}.activation")
    scale = graph.add(Conv2d(squeeze, channels, 1), inputs=hidden, name=f"{prefix}.{fc2}")
    scale = graph.add(gate(), name=f"{prefix}.scale_activation")
    return graph.add(Mul(), inputs=[scale, source], name=product or f"{prefix}.scale")


# -- MobileNet v3 --------------------------------------------------------------------------
#: ``(input, kernel, expanded, output, squeeze-excitation, activation, stride)`` per block.
MOBILENET_V3_LARGE = (
    (16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2),
    (24, 3, 72, 24, False, "RE", 1), (24, 5, 72, 40, True, "RE", 2),
    (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
    (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
    (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1),
    (160, 5, 960, 160, True, "HS", 1))
MOBILENET_V3_SMALL = (
    (16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2),
    (24, 3, 88, 24, False, "RE", 1), (24, 5, 96, 40, True, "HS", 2),
    (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1),
    (48, 5, 288, 96, True, "HS", 2), (96, 5, 576, 96, True, "HS", 1),
    (96, 5, 576, 96, True, "HS", 1))


def mobilenet_v3(setting, last_channel, image_size, num_classes):
    """torchvision's ``MobileNetV3``: blocks ``features.<i>.block.<j>``, SE with HardSigmoid."""
    eps = 0.001
    graph = Graph((3, image_size, image_size))
    last = _cna(graph, "features.0", 3, 16, 3, stride=2, act=HardSwish, eps=eps)
    for index, (c_in, kernel, expanded, c_out, se, act_name, stride) in enumerate(setting, 1):
        act = ReLU if act_name == "RE" else HardSwish
        prefix, source, j = f"features.{index}.block", last, 0
        if expanded != c_in:
            last = _cna(graph, f"{prefix}.{j}", c_in, expanded, 1, act=act, eps=eps)
            j += 1
        last = _cna(graph, f"{prefix}.{j}", expanded, expanded, kernel, stride=stride,
                    groups=expanded, act=act, eps=eps)
        j += 1
        if se:
            last = squeeze_excitation(graph, f"{prefix}.{j}", last, expanded,
                                      make_divisible(expanded // 4), gate=HardSigmoid)
            j += 1
        last = _cna(graph, f"{prefix}.{j}", expanded, c_out, 1, act=None, eps=eps)
        if stride == 1 and c_in == c_out:
            last = graph.add(Add(), inputs=[last, source], name=f"features.{index}.add")
    c_in = setting[-1][3]
    _cna(graph, f"features.{len(setting) + 1}", c_in, 6 * c_in, 1, act=HardSwish, eps=eps)
    graph.add(AdaptiveAvgPool2d(1), name="avgpool")
    graph.add(Flatten(), name="flatten")
    graph.add(Linear(6 * c_in, last_channel), name="classifier.0")
    graph.add(HardSwish(), name="classifier.1")
    graph.add(Dropout(0.2), name="classifier.2")
    graph.add(Linear(last_channel, num_classes), name="classifier.3")
    return graph


@register("mobilenet_v3_large", description="torchvision mobilenet_v3_large (Howard et al. "
                                            "2019): HardSwish, squeeze-excitation")
def mobilenet_v3_large(image_size=224, num_classes=1000):
    return mobilenet_v3(MOBILENET_V3_LARGE, 1280, image_size, num_classes)


@register("mobilenet_v3_small", description="torchvision mobilenet_v3_small (Howard et al. "
                                            "2019)")
def mobilenet_v3_small(image_size=224, num_classes=1000):
    return mobilenet_v3(MOBILENET_V3_SMALL, 1024, image_size, num_classes)


# -- EfficientNet --------------------------------------------------------------------------
#: ``(expand, kernel, stride, input, output, layers)`` per stage of EfficientNet-B0.
EFFICIENTNET_B0 = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
                   (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
                   (6, 3, 1, 192, 320, 1))
#: EfficientNet v2 stages: ``(fused, expand, kernel, stride, input, output, layers)``.
EFFICIENTNET_V2 = {
    "s": ((True, 1, 3, 1, 24, 24, 2), (True, 4, 3, 2, 24, 48, 4), (True, 4, 3, 2, 48, 64, 4),
          (False, 4, 3, 2, 64, 128, 6), (False, 6, 3, 1, 128, 160, 9),
          (False, 6, 3, 2, 160, 256, 15)),
    "m": ((True, 1, 3, 1, 24, 24, 3), (True, 4, 3, 2, 24, 48, 5), (True, 4, 3, 2, 48, 80, 5),
          (False, 4, 3, 2, 80, 160, 7), (False, 6, 3, 1, 160, 176, 14),
          (False, 6, 3, 2, 176, 304, 18), (False, 6, 3, 1, 304, 512, 5)),
    "l": ((True, 1, 3, 1, 32, 32, 4), (True, 4, 3, 2, 32, 64, 7), (True, 4, 3, 2, 64, 96, 7),
          (False, 4, 3, 2, 96, 192, 10), (False, 6, 3, 1, 192, 224, 19),
          (False, 6, 3, 2, 224, 384, 25), (False, 6, 3, 1, 384, 640, 7)),
}


def mbconv(graph, prefix, source, c_in, c_out, expand, kernel=3, stride=1, eps=1e-5):
    """torchvision's ``MBConv`` (``<prefix>.block.<j>``), residual when shapes allow.

    ``<prefix>.block.0``: 1x1 expansion conv + BN + SiLU to ``make_divisible(c_in *
    expand)`` channels (skipped when that equals ``c_in``); then the ``kernel`` x
    ``kernel`` depthwise conv + BN + SiLU with ``stride``; squeeze-excitation (global
    average pool, 1x1 conv to ``max(1, c_in // 4)``, SiLU, 1x1 conv, Sigmoid, ``Mul``:
    ``.scale``); the 1x1 projection conv + BN; and ``<prefix>.add`` (the residual) when
    ``stride == 1`` and ``c_in == c_out``. Returns the name of the block's last node.
    """
    expanded = make_divisible(c_in * expand)
    last, j = source, 0
    if expanded != c_in:
        last = _cna(graph, f"{prefix}.block.{j}", c_in, expanded, 1, act=SiLU, eps=eps,
                    inputs=source)
        j += 1
    last = _cna(graph, f"{prefix}.block.{j}", expanded, expanded, kernel, stride=stride,
                groups=expanded, act=SiLU, eps=eps, inputs=last)
    last = squeeze_excitation(graph, f"{prefix}.block.{j + 1}", last, expanded,
                              max(1, c_in // 4), act=SiLU)
    last = _cna(graph, f"{prefix}.block.{j + 2}", expanded, c_out, 1, act=None, eps=eps,
                inputs=last)
    if stride == 1 and c_in == c_out:
        last = graph.add(Add(), inputs=[last, source], name=f"{prefix}.add")
    return last


_mbconv = mbconv


def _fused_mbconv(graph, prefix, source, c_in, c_out, expand, kernel, stride, eps):
    """torchvision's ``FusedMBConv``: a full conv expanding, then a 1x1 projection."""
    expanded = make_divisible(c_in * expand)
    if expanded != c_in:
        last = _cna(graph, f"{prefix}.block.0", c_in, expanded, kernel, stride=stride, act=SiLU,
                    eps=eps, inputs=source)
        last = _cna(graph, f"{prefix}.block.1", expanded, c_out, 1, act=None, eps=eps)
    else:
        last = _cna(graph, f"{prefix}.block.0", c_in, c_out, kernel, stride=stride, act=SiLU,
                    eps=eps, inputs=source)
    if stride == 1 and c_in == c_out:
        last = graph.add(Add(), inputs=[last, source], name=f"{prefix}.add")
    return last


def efficientnet(stages, image_size, num_classes, dropout, eps, last_channel=None):
    """torchvision's ``EfficientNet``: stem ``features.0``, stage ``features.<s>.<b>``,
    head conv, ``avgpool``, ``classifier.0`` (dropout) and ``classifier.1``."""
    graph = Graph((3, image_size, image_size))
    first = stages[0][4]
    last = _cna(graph, "features.0", 3, first, 3, stride=2, act=SiLU, eps=eps)
    for s, (fused, expand, kernel, stride, c_in, c_out, layers) in enumerate(stages, 1):
        for b in range(layers):
            block = _fused_mbconv if fused else _mbconv
            last = block(graph, f"features.{s}.{b}", last, c_in if b == 0 else c_out, c_out,
                         expand, kernel, stride if b == 0 else 1, eps)
    c_in = stages[-1][5]
    c_last = last_channel or 4 * c_in
    _cna(graph, f"features.{len(stages) + 1}", c_in, c_last, 1, act=SiLU, eps=eps)
    graph.add(AdaptiveAvgPool2d(1), name="avgpool")
    graph.add(Flatten(), name="flatten")
    graph.add(Dropout(dropout), name="classifier.0")
    graph.add(Linear(c_last, num_classes), name="classifier.1")
    return graph


def _efficientnet_v1_stages(width, depth):
    return tuple((False, e, k, s, make_divisible(i * width), make_divisible(o * width),
                  int(math.ceil(n * depth))) for e, k, s, i, o, n in EFFICIENTNET_B0)


#: name -> (width multiplier, depth multiplier, default size, dropout, batch-norm eps);
#: the default sizes are those torchvision's weights are evaluated at (B2: 288, where the
#: paper says 260).
EFFICIENTNET_V1 = {"b0": (1.0, 1.0, 224, 0.2, 1e-5), "b1": (1.0, 1.1, 240, 0.2, 1e-5),
                   "b2": (1.1, 1.2, 288, 0.3, 1e-5), "b3": (1.2, 1.4, 300, 0.3, 1e-5),
                   "b4": (1.4, 1.8, 380, 0.4, 1e-5), "b5": (1.6, 2.2, 456, 0.4, 1e-3),
                   "b6": (1.8, 2.6, 528, 0.5, 1e-3), "b7": (2.0, 3.1, 600, 0.5, 1e-3)}
#: name -> (default size, dropout).
EFFICIENTNET_V2_SIZES = {"s": (384, 0.2), "m": (480, 0.3), "l": (480, 0.4)}


def _register_efficientnet_v1(variant):
    width, depth, size, dropout, eps = EFFICIENTNET_V1[variant]

    @register(f"efficientnet_{variant}", default_size=size,
              description=f"torchvision efficientnet_{variant} (Tan & Le 2019): MBConv, SiLU, "
                          "squeeze-excitation")
    def build(image_size=size, num_classes=1000):
        return efficientnet(_efficientnet_v1_stages(width, depth), image_size, num_classes,
                            dropout, eps)
    return build


def _register_efficientnet_v2(variant):
    size, dropout = EFFICIENTNET_V2_SIZES[variant]

    @register(f"efficientnet_v2_{variant}", default_size=size,
              description=f"torchvision efficientnet_v2_{variant} (Tan & Le 2021): Fused-MBConv "
                          "and MBConv")
    def build(image_size=size, num_classes=1000):
        return efficientnet(EFFICIENTNET_V2[variant], image_size, num_classes, dropout, 1e-3,
                            last_channel=1280)
    return build


for _variant in EFFICIENTNET_V1:
    _register_efficientnet_v1(_variant)
for _variant in EFFICIENTNET_V2:
    _register_efficientnet_v2(_variant)


# -- RegNetY -------------------------------------------------------------------------------
#: RegNetY-400MF's stages: ``(width, depth)``, group width 8, bottleneck 1, SE ratio 0.25.
REGNET_Y_400MF = ((48, 1), (104, 3), (208, 6), (440, 6))


def regnet_y(stages, group_width, image_size, num_classes, se_ratio=0.25):
    """torchvision's ``RegNet`` with Y blocks: ``stem``, ``trunk_output.block<s>.block<s>-<b>``
    (``proj`` shortcut, ``f.a``/``f.b`` convs, ``f.se``, ``f.c``), ``avgpool``, ``fc``."""
    graph = Graph((3, image_size, image_size))
    last = _cna(graph, "stem", 3, 32, 3, stride=2)
    c_in = 32
    for s, (width, depth) in enumerate(stages, 1):
        for b in range(depth):
            prefix = f"trunk_output.block{s}.block{s}-{b}"
            stride = 2 if b == 0 else 1
            source = last
            shortcut = source
            if c_in != width or stride != 1:
                shortcut = _cna(graph, f"{prefix}.proj", c_in, width, 1, stride=stride,
                                act=None, inputs=source)
            groups = width // min(group_width, width)
            f = _cna(graph, f"{prefix}.f.a", c_in, width, 1, inputs=source)
            f = _cna(graph, f"{prefix}.f.b", width, width, 3, stride=stride, groups=groups,
                     inputs=f)
            f = squeeze_excitation(graph, f"{prefix}.f.se", f, width,
                                   int(round(se_ratio * c_in)))
            f = _cna(graph, f"{prefix}.f.c", width, width, 1, act=None, inputs=f)
            last = graph.add(Add(), inputs=[shortcut, f], name=f"{prefix}.add")
            last = graph.add(ReLU(), name=f"{prefix}.activation")
            c_in = width
    graph.add(AdaptiveAvgPool2d(1), name="avgpool")
    graph.add(Flatten(), name="flatten")
    graph.add(Linear(c_in, num_classes), name="fc")
    return graph


@register("regnet_y_400mf", description="torchvision regnet_y_400mf (Radosavovic et al. "
                                        "2020): grouped convolutions, squeeze-excitation")
def regnet_y_400mf(image_size=224, num_classes=1000):
    return regnet_y(REGNET_Y_400MF, 8, image_size, num_classes)


# -- ShuffleNet v2 -------------------------------------------------------------------------
#: ShuffleNet v2 1.0x: blocks per stage and the widths of stem, stages and last conv.
SHUFFLENET_V2_X1_0 = ((4, 8, 4), (24, 116, 232, 464, 1024))


def _shuffle_unit(graph, prefix, source, c_in, c_out, stride):
    """torchvision's ``InvertedResidual``: split (or two branches when striding), concat,
    channel shuffle with 2 groups."""
    half = c_out // 2
    if stride == 1:
        keep = graph.add(ChannelSlice(0, c_in // 2), inputs=source, name=f"{prefix}.split0")
        b2_in = graph.add(ChannelSlice(c_in // 2, c_in), inputs=source, name=f"{prefix}.split1")
        left, right_in = keep, b2_in
        channels = c_in // 2
    else:
        left = graph.add(Conv2d(c_in, c_in, 3, stride=2, padding=1, groups=c_in, bias=False),
                         inputs=source, name=f"{prefix}.branch1.0")
        left = graph.add(BatchNorm2d(c_in), name=f"{prefix}.branch1.1")
        left = graph.add(Conv2d(c_in, half, 1, bias=False), name=f"{prefix}.branch1.2")
        left = graph.add(BatchNorm2d(half), name=f"{prefix}.branch1.3")
        left = graph.add(ReLU(), name=f"{prefix}.branch1.4")
        right_in, channels = source, c_in
    right = graph.add(Conv2d(channels, half, 1, bias=False), inputs=right_in,
                      name=f"{prefix}.branch2.0")
    right = graph.add(BatchNorm2d(half), name=f"{prefix}.branch2.1")
    right = graph.add(ReLU(), name=f"{prefix}.branch2.2")
    right = graph.add(Conv2d(half, half, 3, stride=stride, padding=1, groups=half, bias=False),
                      name=f"{prefix}.branch2.3")
    right = graph.add(BatchNorm2d(half), name=f"{prefix}.branch2.4")
    right = graph.add(Conv2d(half, half, 1, bias=False), name=f"{prefix}.branch2.5")
    right = graph.add(BatchNorm2d(half), name=f"{prefix}.branch2.6")
    right = graph.add(ReLU(), name=f"{prefix}.branch2.7")
    joined = graph.add(Concat(), inputs=[left, right], name=f"{prefix}.cat")
    return graph.add(ChannelShuffle(2), name=f"{prefix}.shuffle")


def shufflenet_v2(repeats, widths, image_size, num_classes):
    """torchvision's ``ShuffleNetV2``: ``conv1``, ``maxpool``, ``stage<2..4>.<b>``, ``conv5``,
    the mean over H and W, ``fc``."""
    graph = Graph((3, image_size, image_size))
    last = _cna(graph, "conv1", 3, widths[0], 3, stride=2)
    last = graph.add(MaxPool2d(3, 2, 1), name="maxpool")
    c_in = widths[0]
    for s, (count, width) in enumerate(zip(repeats, widths[1:4]), 2):
        for b in range(count):
            last = _shuffle_unit(graph, f"stage{s}.{b}", last, c_in, width, 2 if b == 0 else 1)
            c_in = width
    _cna(graph, "conv5", c_in, widths[4], 1)
    graph.add(AdaptiveAvgPool2d(1), name="mean")
    graph.add(Flatten(), name="flatten")
    graph.add(Linear(widths[4], num_classes), name="fc")
    return graph


@register("shufflenet_v2_x1_0", description="torchvision shufflenet_v2_x1_0 (Ma et al. 2018): "
                                            "channel split and shuffle")
def shufflenet_v2_x1_0(image_size=224, num_classes=1000):
    return shufflenet_v2(*SHUFFLENET_V2_X1_0, image_size, num_classes)


# -- ConvNeXt ------------------------------------------------------------------------------
#: ConvNeXt-T: ``(channels, blocks)`` per stage.
CONVNEXT_TINY = ((96, 3), (192, 3), (384, 9), (768, 3))


def convnext(stages, image_size, num_classes):
    """torchvision's ``ConvNeXt``: patchify stem, ``CNBlock`` stages (depthwise 7x7,
    channels-last LayerNorm and Linear with GELU, layer scale), downsampling between.

    The channels-last Linear layers are :class:`ChannelLinear` (1x1 convolutions with
    Linear-shaped weights), LayerNorm is :class:`LayerNorm2d`, the layer scale the
    :class:`Arithmetic` node ``<block>`` holding ``layer_scale`` (C, 1, 1).
    """
    graph = Graph((3, image_size, image_size))
    c = stages[0][0]
    graph.add(Conv2d(3, c, 4, stride=4), name="features.0.0")
    last = graph.add(LayerNorm2d(c, 1e-6), name="features.0.1")
    index = 1
    for s, (channels, blocks) in enumerate(stages):
        for b in range(blocks):
            prefix = f"features.{index}.{b}"
            source = last
            x = graph.add(Conv2d(channels, channels, 7, padding=3, groups=channels),
                          inputs=source, name=f"{prefix}.block.0")
            x = graph.add(LayerNorm2d(channels, 1e-6), name=f"{prefix}.block.2")
            x = graph.add(ChannelLinear(channels, 4 * channels), name=f"{prefix}.block.3")
            x = graph.add(GELU(), name=f"{prefix}.block.4")
            x = graph.add(ChannelLinear(4 * channels, channels), name=f"{prefix}.block.5")
            x = graph.add(Arithmetic("mul", "layer_scale", 3), name=prefix)
            last = graph.add(Add(), inputs=[x, source], name=f"{prefix}.add")
        index += 1
        if s + 1 < len(stages):
            nxt = stages[s + 1][0]
            graph.add(LayerNorm2d(channels, 1e-6), name=f"features.{index}.0")
            last = graph.add(Conv2d(channels, nxt, 2, stride=2), name=f"features.{index}.1")
            index += 1
    c = stages[-1][0]
    graph.add(AdaptiveAvgPool2d(1), name="avgpool")
    graph.add(LayerNorm2d(c, 1e-6), name="classifier.0")
    graph.add(Flatten(), name="classifier.1")
    graph.add(Linear(c, num_classes), name="classifier.2")
    return graph


@register("convnext_tiny", description="torchvision convnext_tiny (Liu et al. 2022): "
                                       "depthwise 7x7, channels-last LayerNorm, GELU")
def convnext_tiny(image_size=224, num_classes=1000):
    return convnext(CONVNEXT_TINY, image_size, num_classes)
