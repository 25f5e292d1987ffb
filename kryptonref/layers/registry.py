"""The layer registry: every layer type described in one place.

A layer type is a spec class (:class:`~kryptonref.layers.base.Layer`: shape
inference and parameter shapes) plus one :class:`LayerType` record, registered
beside it in its family module (:mod:`.conv`, :mod:`.pool`, :mod:`.elementwise`,
:mod:`.dense`, :mod:`.merge`). The record says

* how the layer propagates a changed region (its :class:`Rule`), which the
  planner (:mod:`kryptonref.schedule`) and the executor
  (:mod:`kryptonref.engine`) dispatch on;
* its MAC count (conv and dense layers, the paper's unit), its random
  initialisation and its backend-independent parameter preparation;
* its CPU kernels (a :class:`Kernels` record) and where its CUDA kernels live
  (a ``"module:attribute"`` string, imported only when ``device="cuda"`` runs);
* its ONNX import (handlers keyed by ONNX operator) and export.

Nothing else in kryptonref switches on a layer's type: the engine, the cost
simulator, :class:`~kryptonref.Model`, ONNX I/O and both backends look the
layer up here (:func:`entry`). ``tests/test_registry.py`` walks every
registered type and fails when one lacks a part (a kernel, an ONNX export, a
MAC rule, an oracle in ``tests/naive.py``, a hypothesis strategy).

Adding an operator means: a spec class and its :func:`register` call in the
family module, its CUDA kernels in the module's ``_cuda`` twin, its oracle in
``tests/naive.py`` and its strategy in ``tests/strategies.py``
(``docs/design.md``).
"""
from __future__ import annotations

import enum
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

import numpy as np

__all__ = ["Rule", "Kernels", "LayerType", "register", "entry", "registered", "cuda_kernels",
           "default_init"]


class Rule(enum.Enum):
    """How a layer propagates a changed region (``docs/design.md``, The layer registry).

    ``WINDOW``
        A conv or pool layer: the changed output region follows eq. (1)-(8)
        generalised (:mod:`kryptonref.geometry`); only that region is computed,
        from a read window of the input. The spec has ``axis(dim)`` and ``pad_value``.
    ``POSITIONWISE``
        Each output element reads the input element at its position (activations,
        per-channel affine maps): the region is kept, the layer applies to it.
    ``MERGE``
        Several inputs of one shape, combined position by position (residual
        ``Add``, channel ``Concat``): the region is the bounding box of the
        inputs' regions (SIGMOD 2019 eq. 20).
    ``WHOLE``
        Every output may change (global pooling, flatten, dense, softmax): from
        here on each position's tensor is computed whole.
    """

    WINDOW = "window"
    POSITIONWISE = "positionwise"
    MERGE = "merge"
    WHOLE = "whole"


@dataclass(frozen=True)
class Kernels:
    """One backend's computation of a layer type; which fields it needs depends on the rule.

    Attributes
    ----------
    region : callable, WINDOW
        ``region(layer, params, win, in_hw, out_hw, out_y0, out_x0, region_hw)``:
        the ``region_hw`` outputs of each read window ``win`` ``(B, C, Hw, Ww)``
        (padding included); ``out_y0, out_x0`` are each region's output offsets.
        Full inference pads the whole input and calls it too.
    apply : callable, POSITIONWISE
        ``apply(layer, params, x, out=None)`` on any ``(B, C, ...)`` slice;
        ``out=x`` computes in place.
    full : callable, MERGE and WHOLE
        ``full(layer, params, inputs, out_shape)`` on whole tensors ``(N, ...)``.
        A merge's region is computed by gathering its inputs' windows and
        calling ``full`` on them, unless ``gather`` says how to do it in one pass.
    gather : {"sum", "channels"} or None, MERGE
        Gather the inputs' windows straight into one array, adding them in input
        order (``"sum"``) or side by side along the channels (``"channels"``).
    prepare : callable, optional
        ``prepare(layer, params) -> params``: the backend's own form of the
        (already prepared, :attr:`LayerType.prepare`) parameters: GEMM operands
        on the CPU, device arrays on the GPU.
    """

    region: Optional[Callable] = None
    apply: Optional[Callable] = None
    full: Optional[Callable] = None
    gather: Optional[str] = None
    prepare: Optional[Callable] = None

    #: The field each rule needs.
    NEEDS = {Rule.WINDOW: "region", Rule.POSITIONWISE: "apply", Rule.MERGE: "full",
             Rule.WHOLE: "full"}

    def missing(self, rule):
        """The name of the function ``rule`` needs and this record lacks, else None."""
        name = self.NEEDS[rule]
        return None if callable(getattr(self, name)) else name


def _no_macs(layer, input_shapes, output_shape):
    return 0


def _cast(layer, params, dtype):
    return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in params.items()}


def default_init(layer, shapes, rng):
    """He-normal ``weight`` (fan-in: all axes but the first), ``bias`` ~ N(0, 0.05)."""
    params = {}
    if "weight" in shapes:
        weight_shape = shapes["weight"]
        fan_in = int(np.prod(weight_shape[1:]))
        params["weight"] = rng.normal(0, np.sqrt(2.0 / fan_in), weight_shape)
    if "bias" in shapes:
        params["bias"] = rng.normal(0, 0.05, shapes["bias"])
    return params


@dataclass(frozen=True)
class LayerType:
    """Everything kryptonref knows about one layer type.

    Attributes
    ----------
    spec : type
        The :class:`~kryptonref.layers.base.Layer` subclass.
    rule : Rule
        How a changed region propagates.
    cpu : Kernels
        The CPU kernels.
    cuda : str or None
        ``"module:attribute"`` of the CUDA :class:`Kernels` (imported lazily); None for a
        type the CUDA backend does not run, with the reason in ``cuda_unsupported``.
    onnx_export : callable
        ``onnx_export(ctx, name, layer, params, inputs)`` writes the ONNX node(s)
        computing the layer through an export context
        (:class:`kryptonref.models.onnx_export.ExportContext`).
    onnx_import : dict
        ``ONNX op_type -> handler(ctx, node, attrs)`` for the operators that
        import as this layer (:class:`kryptonref.models.onnx_import.Importer`).
    macs : callable
        ``macs(layer, input_shapes, output_shape)``: multiply-accumulates of
        computing ``output_shape`` (conv and dense layers; 0 for the others, as
        the paper counts). A window layer's region of ``h x w`` outputs costs
        ``macs(layer, input_shapes, (C, h, w))``.
    init : callable
        ``init(layer, param_shapes, rng) -> {param: float64 array}``, seeded
        random weights (:func:`default_init` unless the layer needs its own).
    prepare : callable
        ``prepare(layer, params, dtype) -> params`` in the form every backend's
        kernels read (batch norm folded into scale and shift); by default the
        parameters cast to ``dtype``.
    aliases_input : bool
        A position-wise layer whose ``apply`` returns its input itself (Dropout):
        its data is never written in place.
    cuda_unsupported : str
        Why ``device="cuda"`` refuses this type (empty when it runs it).
    """

    spec: type
    rule: Rule
    cpu: Kernels
    cuda: Optional[str]
    onnx_export: Callable
    onnx_import: Dict[str, Callable] = field(default_factory=dict)
    macs: Callable = _no_macs
    init: Callable = default_init
    prepare: Callable = _cast
    aliases_input: bool = False
    cuda_unsupported: str = ""

    @property
    def name(self):
        return self.spec.__name__


_REGISTRY: Dict[type, LayerType] = {}
_CUDA: Dict[type, Any] = {}


def register(spec, rule, cpu, cuda, onnx_export, onnx_import=None, macs=None, init=None,
             prepare=None, aliases_input=False, cuda_unsupported=""):
    """Register a layer type (see :class:`LayerType` for the arguments); returns the record."""
    if spec in _REGISTRY:
        raise ValueError(f"layer type {spec.__name__} is registered twice")
    if (cuda is None) == (not cuda_unsupported):
        raise ValueError(f"layer type {spec.__name__}: give its CUDA kernels or the reason "
                         "the CUDA backend does not run it, not both")
    record = LayerType(spec=spec, rule=Rule(rule), cpu=cpu, cuda=cuda, onnx_export=onnx_export,
                       onnx_import=dict(onnx_import or {}), macs=macs or _no_macs,
                       init=init or default_init, prepare=prepare or _cast,
                       aliases_input=bool(aliases_input), cuda_unsupported=cuda_unsupported)
    _REGISTRY[spec] = record
    return record


def entry(layer):
    """The :class:`LayerType` of a layer spec (an instance or its class).

    Raises
    ------
    TypeError
        For a type no module registered.
    """
    cls = layer if isinstance(layer, type) else type(layer)
    try:
        return _REGISTRY[cls]
    except KeyError:
        raise TypeError(f"{cls.__name__} is not a registered kryptonref layer type") from None


def registered():
    """Every registered :class:`LayerType`, in registration order."""
    _load_families()
    return list(_REGISTRY.values())


def cuda_kernels(layer):
    """The CUDA :class:`Kernels` of a layer type, importing its module on first use.

    Raises
    ------
    NotImplementedError
        For a type the CUDA backend does not run, naming it (and its operator).
    """
    record = entry(layer)
    if record.cuda is None:
        what = record.name + (f" ({layer.op_type})" if hasattr(layer, "op_type")
                              and not isinstance(layer, type) else "")
        raise NotImplementedError(f"device='cuda' does not run {what}: "
                                  f"{record.cuda_unsupported}; use device='cpu'")
    if record.spec not in _CUDA:
        module_name, _, attribute = record.cuda.partition(":")
        module = importlib.import_module(module_name)
        _CUDA[record.spec] = getattr(module, attribute)
    return _CUDA[record.spec]


#: The family modules that register layer types (imported by ``kryptonref.layers``).
FAMILIES = ("conv", "pool", "activations", "elementwise", "channels", "dense", "merge",
            "tensor")


def _load_families():
    for family in FAMILIES:
        importlib.import_module(f"{__package__}.{family}")
