"""AlexNet (Krizhevsky et al., 2012), layer for layer as torchvision's ``alexnet``.

torchvision's single-tower variant ("One weird trick", Krizhevsky 2014): 64-192-
384-256-256 channels, no local response normalisation. Node names are
torchvision's module paths (``features.<i>``, ``avgpool``, ``classifier.<i>``)
plus ``flatten``.
"""
from __future__ import annotations

from ..graph import Graph
from ..layers import AdaptiveAvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU
from .zoo import register

__all__ = ["alexnet"]


@register("alexnet", description="AlexNet (single-tower variant), torchvision.models.alexnet")
def alexnet(image_size=224, num_classes=1000):
    """torchvision's ``AlexNet`` as a graph; needs ``image_size >= 63``."""
    g = Graph((3, image_size, image_size))
    g.add(Conv2d(3, 64, 11, stride=4, padding=2), name="features.0")
    g.add(ReLU(), name="features.1")
    g.add(MaxPool2d(3, 2), name="features.2")
    g.add(Conv2d(64, 192, 5, padding=2), name="features.3")
    g.add(ReLU(), name="features.4")
    g.add(MaxPool2d(3, 2), name="features.5")
    g.add(Conv2d(192, 384, 3, padding=1), name="features.6")
    g.add(ReLU(), name="features.7")
    g.add(Conv2d(384, 256, 3, padding=1), name="features.8")
    g.add(ReLU(), name="features.9")
    g.add(Conv2d(256, 256, 3, padding=1), name="features.10")
    g.add(ReLU(), name="features.11")
    g.add(MaxPool2d(3, 2), name="features.12")
    g.add(AdaptiveAvgPool2d((6, 6)), name="avgpool")
    g.add(Flatten(), name="flatten")
    g.add(Dropout(0.5), name="classifier.0")
    g.add(Linear(256 * 6 * 6, 4096), name="classifier.1")
    g.add(ReLU(), name="classifier.2")
    g.add(Dropout(0.5), name="classifier.3")
    g.add(Linear(4096, 4096), name="classifier.4")
    g.add(ReLU(), name="classifier.5")
    g.add(Linear(4096, num_classes), name="classifier.6")
    return g
