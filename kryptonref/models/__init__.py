"""Architectures described in the kryptonref IR.

For now this holds the VGG-16 convolutional body used by ``kryptonref demo``
and the benchmarks; the full zoo (torchvision-identical definitions) builds on
the same graph IR.
"""
from .vgg import VGG16_CONFIG, vgg16_demo_net

__all__ = ["VGG16_CONFIG", "vgg16_demo_net"]
