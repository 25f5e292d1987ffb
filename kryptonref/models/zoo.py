"""The model zoo: a registry of architectures described in the kryptonref IR.

Each architecture module registers a builder ``f(image_size, num_classes) -> Graph``
with :func:`register`. Parameterised nodes are named after torchvision's module
paths (``features.0``, ``layer1.0.conv1``, ...), so a torchvision ``state_dict``
saved to ``.npz`` (without ``num_batches_tracked``) loads as it is.

A model registered with ``pretrained="<file>.npz"`` ships trained weights in
``kryptonref/data/``: ``zoo(name, weights="pretrained")`` loads them without
network access (the demo models of :mod:`kryptonref.models.demo`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from ..model import Model

if TYPE_CHECKING:
    from typing import TypeVar

    import numpy.typing as npt

    from ..graph import Graph

    _Builder = TypeVar("_Builder", bound=Callable[[int, int], Graph])

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
    num_classes : int
        The default number of classes (1000, ImageNet's, unless registered otherwise).
    pretrained : str or None
        File name, in ``kryptonref/data/``, of the shipped trained weights (for
        ``default_size`` and ``num_classes``), or ``None`` when none ship.
    """

    name: str
    builder: Callable[[int, int], Graph]
    default_size: int = 224
    description: str = ""
    num_classes: int = 1000
    pretrained: str | None = None

    def pretrained_path(self) -> str:
        """Path of the shipped weights file; ``ValueError`` if the model ships none."""
        if self.pretrained is None:
            with_weights = sorted(n for n, e in _REGISTRY.items() if e.pretrained is not None)
            raise ValueError(f"zoo model {self.name!r} ships no pretrained weights; models "
                             f"with shipped weights: {', '.join(with_weights) or 'none'}")
        path = os.path.join(DATA_DIR, self.pretrained)
        if not os.path.isfile(path):
            raise ValueError(f"the pretrained weights of {self.name!r} are missing: no file "
                             f"{path} (is the package data installed?)")
        return path


_REGISTRY: dict[str, ZooEntry] = {}

#: Folder of the package data: the shipped weights of the pretrained zoo models.
DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


def register(name: str, default_size: int = 224, description: str = "", num_classes: int = 1000,
             pretrained: str | None = None) -> Callable[[_Builder], _Builder]:
    """Decorator registering ``builder(image_size, num_classes) -> Graph`` under ``name``.

    ``num_classes`` is the model's default number of classes; ``pretrained`` the
    file name, in ``kryptonref/data/``, of shipped weights (for ``default_size``
    and ``num_classes``).
    """
    def decorate(builder: _Builder) -> _Builder:
        if name in _REGISTRY:
            raise ValueError(f"zoo model {name!r} is registered twice")
        _REGISTRY[name] = ZooEntry(name, builder, default_size, description, num_classes,
                                   pretrained)
        return builder
    return decorate


def _load_all() -> None:
    """Import every architecture module so that it registers itself."""
    from . import (alexnet, demo, densenet, googlenet, inception, mobilenet, modern,  # noqa: F401
                   resnet, squeezenet, vgg, vit)


def zoo_names() -> list[str]:
    """Names of every zoo model, sorted."""
    _load_all()
    return sorted(_REGISTRY)


def zoo_entry(name: str) -> ZooEntry:
    """The :class:`ZooEntry` of ``name``; an unknown name raises ``ValueError`` listing the zoo."""
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown zoo model {name!r}; the zoo has: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_graph(name: str, image_size: int | None = None,
                num_classes: int | None = None) -> Graph:
    """The graph of zoo model ``name`` at ``image_size`` (default: its design size).

    ``num_classes`` defaults to the model's registered number (1000 for the
    ImageNet architectures).
    """
    entry = zoo_entry(name)
    size = entry.default_size if image_size is None else image_size
    if num_classes is None:
        num_classes = entry.num_classes
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    try:
        return entry.builder(int(size), int(num_classes))
    except ValueError as err:
        raise ValueError(f"{name} at {size} px: {err}") from None


def zoo(name: str, image_size: int | None = None, num_classes: int | None = None,
        weights: str | os.PathLike[str] | Mapping[str, npt.ArrayLike] | None = None,
        seed: int = 0, dtype: npt.DTypeLike = np.float32) -> Model:
    """A zoo model with seeded random weights, weights from an ``.npz`` file or shipped weights.

    Parameters
    ----------
    name : str
        One of :func:`zoo_names`.
    image_size : int, optional
        Square input size; the architecture's design size by default. Any size the
        architecture allows; a size too small raises ``ValueError`` naming the layer
        where the feature map collapses.
    num_classes : int, optional
        Outputs of the classifier; the model's registered number by default (1000
        for the ImageNet architectures, 5 for the demo models).
    weights : str, os.PathLike or mapping, optional
        ``{"node.param": array}`` weights or an ``.npz`` file of them; ``None`` draws
        seeded random weights; ``"pretrained"`` loads the weights shipped with the
        package (no network access) for the models that have them (``demo_vgg``,
        ``demo_resnet``, ``demo_effnet``), at their design size and number of classes.
    seed : int
        Seed of the random weights.
    dtype : float32 or float64

    Returns
    -------
    Model

    Raises
    ------
    ValueError
        For an unknown name, a size too small, or ``weights="pretrained"`` for a
        model that ships no weights or with another size or number of classes.

    Examples
    --------
    >>> import kryptonref as kr
    >>> model = kr.zoo("demo_vgg", weights="pretrained")
    >>> model.graph.input_shape, model.graph.shapes[model.graph.output]
    ((3, 224, 224), (5,))
    """
    if isinstance(weights, str) and weights == "pretrained":
        entry = zoo_entry(name)
        path = entry.pretrained_path()
        if image_size is not None and image_size != entry.default_size:
            raise ValueError(f"the pretrained weights of {name!r} are for image_size "
                             f"{entry.default_size}, got image_size={image_size!r}")
        if num_classes is not None and num_classes != entry.num_classes:
            raise ValueError(f"the pretrained weights of {name!r} are for num_classes "
                             f"{entry.num_classes}, got num_classes={num_classes!r}")
        weights = path
    graph = build_graph(name, image_size, num_classes)
    return Model(graph, weights=weights, seed=seed, dtype=dtype)
