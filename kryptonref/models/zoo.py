"""The model zoo: a registry of architectures described in the kryptonref IR.

Each architecture module registers a builder ``f(image_size, num_classes) -> Graph``
with :func:`register`. Parameterised nodes are named after torchvision's module
paths (``features.0``, ``layer1.0.conv1``, ...), so a torchvision ``state_dict``
saved to ``.npz`` (without ``num_batches_tracked``) loads as it is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..model import Model

__all__ = ["register", "zoo", "zoo_names", "zoo_entry", "build_graph", "ZooEntry"]


@dataclass(frozen=True)
class ZooEntry:
    """A registered architecture.

    Attributes
    ----------
    name : str
    builder : callable
        ``builder(image_size, num_classes) -> Graph``.
    default_size : int
        The input size the architecture was designed for (224, or 299 for Inception v3).
    description : str
        One line: the paper or torchvision constructor it reproduces.
    """

    name: str
    builder: Callable
    default_size: int = 224
    description: str = ""


_REGISTRY: dict[str, ZooEntry] = {}


def register(name, default_size=224, description=""):
    """Decorator registering ``builder(image_size, num_classes) -> Graph`` under ``name``."""
    def decorate(builder):
        if name in _REGISTRY:
            raise ValueError(f"zoo model {name!r} is registered twice")
        _REGISTRY[name] = ZooEntry(name, builder, default_size, description)
        return builder
    return decorate


def _load_all():
    """Import every architecture module so that it registers itself."""
    from . import alexnet, densenet, googlenet, inception, mobilenet, resnet, squeezenet, vgg  # noqa: F401


def zoo_names():
    """Names of every zoo model, sorted."""
    _load_all()
    return sorted(_REGISTRY)


def zoo_entry(name):
    """The :class:`ZooEntry` of ``name``; an unknown name raises ``ValueError`` listing the zoo."""
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown zoo model {name!r}; the zoo has: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_graph(name, image_size=None, num_classes=1000):
    """The graph of zoo model ``name`` at ``image_size`` (default: its design size)."""
    entry = zoo_entry(name)
    size = entry.default_size if image_size is None else image_size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    try:
        return entry.builder(int(size), int(num_classes))
    except ValueError as err:
        raise ValueError(f"{name} at {size} px: {err}") from None


def zoo(name, image_size=None, num_classes=1000, weights=None, seed=0, dtype=np.float32):
    """A zoo model with seeded random weights or weights from an ``.npz`` file.

    Parameters
    ----------
    name : str
        One of :func:`zoo_names`.
    image_size : int, optional
        Square input size; the architecture's design size by default. Any size the
        architecture allows; a size too small raises ``ValueError`` naming the layer
        where the feature map collapses.
    num_classes : int
        Outputs of the classifier.
    weights : str, os.PathLike or mapping, optional
        ``{"node.param": array}`` weights or an ``.npz`` file of them; ``None`` draws
        seeded random weights.
    seed : int
        Seed of the random weights.
    dtype : float32 or float64

    Returns
    -------
    Model
    """
    graph = build_graph(name, image_size, num_classes)
    return Model(graph, weights=weights, seed=seed, dtype=dtype)
