"""A model: a graph, its weights and a dtype, with full inference.

Weights are stored per node as ``{param_name: array}``; their flat form, used
for ``.npz`` files, keys each array as ``"<node>.<param>"``.
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from . import validate
from .backends import get_backend
from .graph import Graph
from .layers.registry import entry
from .runtime import entry_point

if TYPE_CHECKING:
    from .backends.base import Backend

__all__ = ["Model", "random_weights"]

_VERSIONS = itertools.count(1)


class Model:
    """A graph with weights, ready for full and incremental inference.

    Parameters
    ----------
    graph : Graph
        The architecture.
    weights : dict, str or os.PathLike, optional
        Flat ``{"node.param": array}`` mapping, a nested ``{node: {param: array}}``
        mapping, or the path of an ``.npz`` file; ``None`` draws seeded random
        weights.
    seed : int
        Seed of the random initialisation.
    dtype : float32 or float64
        Computation dtype.

    Examples
    --------
    >>> import numpy as np, kryptonref as kr
    >>> g = kr.Graph((3, 16, 16))
    >>> _ = g.add(kr.Conv2d(3, 4, 3, padding=1))
    >>> model = kr.Model(g, seed=0)
    >>> model.forward(np.zeros((2, 3, 16, 16), np.float32)).shape
    (2, 4, 16, 16)
    """

    def __init__(self, graph: Graph,
                 weights: Mapping[str, Any] | str | os.PathLike[str] | None = None,
                 seed: int = 0, dtype: npt.DTypeLike = np.float32) -> None:
        if not isinstance(graph, Graph):
            raise TypeError(f"graph must be a kryptonref Graph, got {type(graph).__name__}")
        self.graph = graph
        self.dtype = validate.dtype(dtype)
        self.params: dict[str, dict[str, np.ndarray]] = {}
        if weights is None:
            self.params = random_weights(graph, validate.seed(seed), self.dtype)
        else:
            self.load_weights(weights)

    # -- weights ---------------------------------------------------------------------
    def param_shapes(self) -> dict[str, dict[str, tuple[int, ...]]]:
        """``{node: {param: shape}}`` for every node with parameters."""
        shapes: dict[str, dict[str, tuple[int, ...]]] = {}
        for name in self.graph.order:
            node = self.graph.nodes[name]
            want = node.layer.param_shapes([self.graph.shapes[i] for i in node.inputs])
            if want:
                shapes[name] = want
        return shapes

    def load_weights(self, weights: Mapping[str, Any] | str | os.PathLike[str]) -> None:
        """Replace the weights from a mapping or an ``.npz`` path; every shape is checked."""
        weights = _read_weights(weights)
        nested = _nest(weights)
        expected = self.param_shapes()
        params: dict[str, dict[str, npt.NDArray[Any]]] = {}
        for node, shapes in expected.items():
            given = nested.pop(node, None)
            if given is None:
                raise ValueError(f"weights: missing parameters for node {node!r}")
            params[node] = {}
            for pname, shape in shapes.items():
                if pname not in given:
                    raise ValueError(f"weights: node {node!r} is missing {pname!r}")
                arr = np.asarray(given.pop(pname))
                if arr.dtype.kind not in "fiu":   # complex would lose its imaginary part
                    raise TypeError(f"weights: {node}.{pname} must hold real numbers, got "
                                    f"dtype {arr.dtype}")
                if arr.shape != tuple(shape):
                    raise ValueError(f"weights: {node}.{pname} has shape {arr.shape}, "
                                     f"expected {tuple(shape)}")
                if not np.all(np.isfinite(arr)):
                    raise ValueError(f"weights: {node}.{pname} contains NaN or Inf")
                params[node][pname] = _frozen(arr, self.dtype)
            if given:
                raise ValueError(f"weights: node {node!r} has unexpected parameters {sorted(given)}")
        if nested:
            raise ValueError(f"weights: unexpected entries for nodes {sorted(nested)}")
        self.params = params

    def weights(self) -> dict[str, npt.NDArray[Any]]:
        """Flat ``{"node.param": array}`` copy of the weights (in the model's dtype)."""
        return {f"{node}.{p}": v.copy() for node, ps in self.params.items() for p, v in ps.items()}

    def save_weights(self, path: str | os.PathLike[str]) -> None:
        """Write the weights to an ``.npz`` file keyed ``"node.param"``, exactly at ``path``
        (no extension added, so ``load_weights(path)`` reads it back) and whole or not at
        all: an interrupt or a full disk leaves the previous file intact."""
        from .files import atomic_write

        def write(tmp: str) -> None:
            with open(tmp, "wb") as handle:   # (a file object: NumPy adds no ".npz")
                # (the ignore: mypy lets a ** dict fill savez's allow_pickle; the keys are
                # "node.param" names)
                np.savez(handle, **self.weights())  # type: ignore[arg-type,unused-ignore]
        atomic_write(path, write)

    def astype(self, dtype: npt.DTypeLike) -> Model:
        """A model with the same graph and weights (cast) that computes in ``dtype``."""
        dtype = validate.dtype(dtype)
        other = Model.__new__(Model)
        other.graph, other.dtype = self.graph, dtype
        other.params = {node: {p: v.astype(dtype) for p, v in ps.items()}
                        for node, ps in self.params.items()}
        return other

    @property
    def params(self) -> dict[str, dict[str, npt.NDArray[Any]]]:
        """``{node: {param: array}}``: the weights, in the model's dtype."""
        return self._params

    @params.setter
    def params(self, value: dict[str, dict[str, npt.NDArray[Any]]]) -> None:
        self._params = {node: {p: _frozen(v, self.dtype) for p, v in ps.items()}
                        for node, ps in dict(value).items()}
        self._weights_version = next(_VERSIONS)

    @property
    def weights_version(self) -> tuple[int, ...]:
        """A key that changes whenever the weights change (backends key their prepared
        parameters on it): a new number each time :attr:`params` is replaced, and the
        identity of every array, so that ``model.params[node][p] = new`` is seen too.

        The arrays themselves are read-only, so an in-place edit raises instead of
        being ignored by a cached prepared copy.
        """
        return (self._weights_version,) + tuple(id(v) for ps in self._params.values()
                                                for v in ps.values())

    @property
    def prepared(self) -> dict[str, dict[str, Any]]:
        """Kernel-ready CPU parameters per node, in the model's dtype (cached)."""
        return cast("dict[str, dict[str, Any]]", get_backend("cpu").params(self))

    # -- inference -------------------------------------------------------------------
    def forward_all(self, x: npt.ArrayLike, device: str = "cpu") -> dict[str, npt.NDArray[Any]]:
        """Full inference keeping every node's output (``M`` in Algorithm 2).

        Parameters
        ----------
        x : ndarray (N, C, H, W)
        device : {"cpu", "cuda"}
            Where to compute; results come back as host arrays.

        Returns
        -------
        dict
            ``name -> (N, ...)`` array for the input and every node.
        """
        backend: Backend = get_backend(device)
        values = self.run_on(backend, x, keep_all=True)
        return {name: backend.to_host(value) for name, value in values.items()}

    def forward(self, x: npt.ArrayLike, device: str = "cpu") -> npt.NDArray[Any]:
        """Full inference for a batch ``(N, C, H, W)``; returns the output node's values.

        Intermediate values are released as soon as their last consumer has run,
        so memory stays near the largest few activations of the batch. With
        ``device="cuda"`` the batch moves to the GPU once and the output back once.
        """
        backend: Backend = get_backend(device)
        return backend.to_host(self.run_on(backend, x, keep_all=False)[self.graph.output])

    @entry_point
    def run_on(self, backend: Backend, x: Any, keep_all: bool) -> dict[str, Any]:
        """Full inference on a backend (:mod:`kryptonref.backend`), returning its arrays.

        ``x`` is a host batch, or a batch already on the backend's device (in
        the model's dtype); the values of every node (``keep_all``) or only the
        output's stay on the device.
        """
        graph = self.graph
        on_device = not isinstance(x, np.ndarray) and (
            hasattr(x, "__cuda_array_interface__") or hasattr(x, "copy_to_host"))
        if not on_device:
            x = backend.to_device(validate.image_batch(x, graph.input_shape, self.dtype))
        elif tuple(x.shape[1:]) != tuple(graph.input_shape) or np.dtype(x.dtype) != self.dtype:
            raise ValueError(f"device batch must have shape (N,) + {graph.input_shape} and dtype "
                             f"{self.dtype}, got {tuple(x.shape)} {np.dtype(x.dtype)}")
        values = {graph.input_name: x}
        remaining = {name: len(users) for name, users in graph.consumers().items()}
        prepared = backend.params(self)
        for name in graph.order:
            node = graph.nodes[name]
            values[name] = backend.full(node.layer, prepared[name],
                                        [values[i] for i in node.inputs], graph.shapes[name])
            if keep_all:
                continue
            for src in node.inputs:
                remaining[src] -= 1
                if remaining[src] == 0 and src != graph.output:
                    del values[src]
        return values

    def __repr__(self) -> str:
        return f"Model({len(self.graph)} nodes, input {self.graph.input_shape}, {self.dtype})"


def _read_weights(source: Mapping[str, Any] | str | os.PathLike[str]) -> Mapping[str, Any]:
    """The one weights loader: a mapping as it is, or the arrays of an ``.npz`` file, with
    one clear error for anything else (a ``.npy``, a damaged or truncated file, pickles)."""
    import zipfile
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            data = np.load(path, allow_pickle=False)
        except zipfile.BadZipFile:
            raise ValueError(f"weights: {path} is a damaged or truncated .npz file") from None
        except ValueError:   # neither .npy nor .npz, or a pickle
            raise ValueError(f"weights: {path} is not an .npz weights file (save_weights or "
                             "np.savez writes one)") from None
        if isinstance(data, np.ndarray):
            raise ValueError(f"weights: {path} holds one array (.npy); weights are an .npz "
                             "of 'node.param' arrays")
        try:
            with data:
                return {k: data[k] for k in data.files}
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise ValueError(f"weights: {path} is a damaged or truncated .npz file "
                             f"({err})") from None
    if not hasattr(source, "items"):
        raise TypeError(f"weights must be a mapping {{'node.param': array}} or the path of an "
                        f".npz file, got {type(source).__name__}")
    return source


def _frozen(value: npt.ArrayLike, dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    """``value`` as a C-contiguous, read-only array of ``dtype`` that owns its data (a
    copy unless it already is one): a weight that cannot change behind a cache."""
    arr = np.asarray(value)
    if arr.dtype != dtype or not arr.flags.c_contiguous or arr.flags.writeable \
            or not arr.flags.owndata:
        arr = np.array(arr, dtype=dtype, order="C", copy=True)
        arr.setflags(write=False)
    return arr


def _nest(weights: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"node.param": a}`` or ``{node: {param: a}}`` -> nested mutable dict.

    A key without a dot names a node whose one parameter has the node's own name
    (torchvision's top-level parameters, such as ViT's ``class_token``).
    """
    nested: dict[str, dict[str, Any]] = {}
    for key, value in dict(weights).items():
        if isinstance(value, dict):
            nested.setdefault(key, {}).update(value)
        else:
            node, sep, pname = str(key).rpartition(".")
            if not sep:
                node = pname
            nested.setdefault(node, {})[pname] = value
    return nested


def random_weights(graph: Graph, seed: int = 0,
                   dtype: npt.DTypeLike = np.float64) -> dict[str, dict[str, npt.NDArray[Any]]]:
    """Seeded random weights, drawn by each layer type's ``init`` (:mod:`.layers.registry`):
    He-normal conv and dense weights, non-trivial batch-norm statistics.

    The draws are made in float64 and cast, so a float32 and a float64 model with
    the same seed hold the same weights up to rounding.
    """
    rng = np.random.default_rng(seed)
    params: dict[str, dict[str, Any]] = {}
    for name in graph.order:
        node = graph.nodes[name]
        shapes = node.layer.param_shapes([graph.shapes[i] for i in node.inputs])
        if shapes:
            params[name] = entry(node.layer).init(node.layer, shapes, rng)
    return {node: {p: np.asarray(v).astype(dtype) for p, v in ps.items()}
            for node, ps in params.items()}
