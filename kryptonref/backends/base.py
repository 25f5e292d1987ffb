"""The backend interface: where the engine's arrays live and which kernels compute on them.

The incremental engine plans every batch on the host (regions and offsets are
small integer arrays, :mod:`kryptonref.schedule`) and hands the arithmetic to
a backend. :class:`Backend` writes the interface down; :class:`KernelBackend`
implements the layer-level part of it once, through the layer registry
(:mod:`kryptonref.layers.registry`), for every backend that provides
:meth:`Backend.kernels` and the array primitives.
"""
from __future__ import annotations

import weakref
from typing import Any, ContextManager, Dict, List, Protocol, Sequence, runtime_checkable

import numpy as np

from ..layers.registry import Kernels, Rule, entry

__all__ = ["Backend", "KernelBackend"]


@runtime_checkable
class Backend(Protocol):
    """What the engine, full inference and the occlusion driver need of a device.

    Arrays are the backend's own (NumPy arrays on the CPU, numba-cuda device
    arrays on the GPU); batches are ``(B, C, H, W)`` (or ``(B, F)`` vectors),
    C-contiguous. Offsets are int64 vectors ``(B,)``.
    """

    #: The ``device=`` name that selects this backend.
    name: str

    def kernels(self, layer) -> Kernels:
        """The layer type's :class:`~kryptonref.layers.registry.Kernels` on this backend."""

    def to_device(self, array) -> Any:
        """A host array as this backend's array (a copy on a GPU); device arrays pass."""

    def to_host(self, array) -> np.ndarray:
        """This backend's array as a NumPy array."""

    def pack_ints(self, rows: Sequence[np.ndarray]) -> List[Any]:
        """A batch's integer offset vectors on the device, moved in one transfer."""

    def params(self, model) -> Dict[str, Dict[str, Any]]:
        """``{node: {param: array}}``: the model's parameters as this backend's kernels read
        them (prepared once per set of weights and cached)."""

    def batch_scope(self) -> ContextManager:
        """A context around one batch's arithmetic (the GPU defers freeing memory)."""

    def empty(self, shape, dtype) -> Any:
        """An uninitialised array."""

    def repeat(self, array, n_items: int) -> Any:
        """``(n_items,) + array.shape``: ``array`` repeated along a new batch axis."""

    def zeros_int(self, n_items: int) -> Any:
        """An int64 vector of ``n_items`` zeros (never written)."""

    def gather_windows(self, base, patch, patch_y0, patch_x0, win_y0, win_x0, win_h, win_w,
                       pad_value=0.0, out=None, c_offset=0, accumulate=False) -> Any:
        """One read window per position, from its patch, the base ``M`` and the padding
        (:func:`kryptonref.layers.window.gather_windows`)."""

    def stitch(self, base, patch, patch_y0, patch_x0) -> Any:
        """Full tensors ``(B, C, H, W)``: the base with each position's patch written in."""

    def pad_full(self, x, layer_axes, out_hw, pad_value) -> Any:
        """A batch padded to the read window of a window layer's whole output."""

    def full(self, layer, params, inputs, out_shape) -> Any:
        """A layer on a batch of whole tensors (one ``(N, ...)`` array per input)."""

    def region(self, layer, params, win, in_hw, out_hw, out_y0, out_x0, region_hw) -> Any:
        """A window layer's ``region_hw`` outputs of each read window."""

    def apply(self, layer, params, x, out=None) -> Any:
        """A position-wise layer on any slice ``(B, C, ...)``; ``out=x`` works in place."""


class KernelBackend:
    """The layer-level methods of :class:`Backend`, written once over the registry.

    Subclasses provide :meth:`kernels` and the array primitives. Window layers
    run full tensors through their region kernel on the padded input, so full
    and incremental inference share one kernel.
    """

    name = "abstract"

    def __init__(self):
        self._params = weakref.WeakKeyDictionary()

    def kernels(self, layer) -> Kernels:
        raise NotImplementedError

    def full(self, layer, params, inputs, out_shape):
        rule = entry(layer).rule
        if rule is Rule.WINDOW:
            x = inputs[0]
            out_hw = tuple(out_shape[1:])
            padded = self.pad_full(x, [layer.axis(0), layer.axis(1)], out_hw, layer.pad_value)
            zeros = self.zeros_int(x.shape[0])
            return self.region(layer, params, padded, tuple(x.shape[2:]), out_hw, zeros, zeros,
                               out_hw)
        if rule is Rule.POSITIONWISE:
            return self.apply(layer, params, inputs[0])
        return self.kernels(layer).full(layer, params, inputs, out_shape)

    def region(self, layer, params, win, in_hw, out_hw, out_y0, out_x0, region_hw):
        return self.kernels(layer).region(layer, params, win, in_hw, out_hw, out_y0, out_x0,
                                          region_hw)

    def apply(self, layer, params, x, out=None):
        return self.kernels(layer).apply(layer, params, x, out=out)

    def params(self, model):
        """The model's parameters prepared for this backend, cached per weights version."""
        version = model.weights_version
        cached = self._params.get(model)
        if cached is not None and cached[0] == version:
            return cached[1]
        prepared = self._prepare(model)
        # (the entry holds the arrays it was prepared from, so that their ids, part of
        # the version, cannot be reused by new arrays while it lives)
        arrays = [v for ps in model.params.values() for v in ps.values()]
        self._params[model] = (version, prepared, arrays)
        return prepared

    def _prepare(self, model):
        out = {}
        for name in model.graph.order:
            layer = model.graph.nodes[name].layer
            params = entry(layer).prepare(layer, model.params.get(name, {}), model.dtype)
            extra = self.kernels(layer).prepare
            out[name] = extra(layer, params) if extra is not None else self._store(params)
        return out

    def _store(self, params):
        """Prepared parameters as this backend keeps them (as they are on the CPU)."""
        return params
