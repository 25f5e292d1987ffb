"""ONNX import (optional extra: ``pip install 'kryptonref[onnx]'``).

:func:`from_onnx` reads a CNN classifier from an ONNX file (for instance one
written by ``torch.onnx.export``) into a kryptonref :class:`~kryptonref.model.Model`.
The ``onnx`` package is imported only inside :func:`from_onnx`, so
``import kryptonref`` works without it.

One graph input ``(N, C, H, W)`` with fixed ``C, H, W`` (the batch may be
dynamic; ``input_shape=(C, H, W)`` fixes dynamic sizes) and one graph output.
Each ONNX operator is handled by the layer type that registered it
(``onnx_import`` in :mod:`kryptonref.layers.registry`), through the
:class:`Importer` it is given; this module holds the pass itself, constant
folding and the shape arithmetic on the dynamic batch size:

================================  ============================================
ONNX                              kryptonref
================================  ============================================
Conv (2-D, any ``auto_pad``)      Conv2d (explicit, possibly asymmetric pads)
MaxPool, AveragePool              MaxPool2d, AvgPool2d (``auto_pad`` -> pads)
GlobalAveragePool                 GlobalAvgPool2d
ReduceMean over axes (2, 3)       GlobalAvgPool2d (+ Flatten if keepdims=0)
Relu; Clip(0, 6); Clip(0, inf)    ReLU; ReLU6; ReLU
BatchNormalization (inference)    BatchNorm2d
Gemm (transA 0, transB 0/1)       Linear (alpha, beta folded into the weights)
MatMul (constant weight) [+ Add]  Linear (a constant Add becomes its bias)
Flatten (axis 1), Reshape (N, -1) Flatten (Reshape shapes from initializers,
                                  Constant nodes or Shape/Gather/Unsqueeze/
                                  Concat chains on the batch size)
Add, Sum (activations)            Add
Concat (channel axis)             Concat
Softmax (axis 1 / -1 of a vector) Softmax
Resize (nearest, integer factor)  AdaptiveAvgPool2d (exact: it replicates)
Dropout, Identity                 removed (pass-through)
================================  ============================================

Nodes whose inputs are all constants (``Constant``, initializers, shapes known
statically) are folded with ``onnx.reference``. Anything else (LRN, Sigmoid,
Pad, ...) raises ``ValueError`` naming the operator and the ONNX node. Node
names are the ONNX node names, sanitised (characters other than letters,
digits, ``_``, ``.`` and ``-`` become ``_``) and made unique, or
``<OpType>_<index>`` for unnamed nodes; weights are keyed ``"<node>.<param>"``.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn, cast

import numpy as np
import numpy.typing as npt

from .. import validate
from ..graph import Graph
from ..layers.registry import registered
from ..model import Model
from ..layers.tensor import TENSOR_OPS, TensorOp, freeze_value
from .onnx_export import import_onnx, unique_name

if TYPE_CHECKING:
    from typing import TypeVar

    from onnx import GraphProto, ModelProto, NodeProto, TypeProto

    from ..layers.base import Layer

    #: A layer type's ONNX import: ``handler(importer, node, attrs)``.
    Handler = Callable[["Importer", NodeProto, dict[str, Any]], object]
    _T = TypeVar("_T")

__all__ = ["from_onnx", "Importer", "supported_onnx_ops"]

#: Operators of the pass itself (the layers' operators come from the registry).
_STRUCTURAL_OPS = ("Identity", "Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Slice",
                   "Cast")

#: Operators never constant-folded (not deterministic).
_NONDETERMINISTIC = ("RandomNormal", "RandomNormalLike", "RandomUniform",
                     "RandomUniformLike", "Bernoulli", "Multinomial")

#: Symbolic batch size inside statically known shape vectors.
_BATCH = "N"


def _handlers() -> dict[str, Handler]:
    """``ONNX op_type -> handler(importer, node, attrs)`` from every registered layer type."""
    table: dict[str, Handler] = {}
    for record in registered():
        for op_type, handler in record.onnx_import.items():
            if op_type in table:
                raise ValueError(f"ONNX operator {op_type!r} is claimed by two layer types")
            table[op_type] = handler
    return table


def supported_onnx_ops() -> tuple[str, ...]:
    """The ONNX operators :func:`from_onnx` understands (besides constant folding): those of
    the layer types, the structural ones, and the whole-tensor ones (TensorOp)."""
    tensor_ops = set(TENSOR_OPS) - {"Unbatch", "SplitPart"} | {"Split"}
    return tuple(sorted(set(_handlers()) | set(_STRUCTURAL_OPS) | tensor_ops))


def _sanitise(name: object) -> str:
    return re.sub(r"[^0-9A-Za-z_.\-]+", "_", str(name)).strip("_")


def _load_proto(onnx: ModuleType, source: object) -> ModelProto:
    """A ModelProto from a ModelProto, bytes or a path, with clear errors."""
    proto: ModelProto
    if isinstance(source, onnx.ModelProto):
        proto, what = source, "the ONNX model"
    elif isinstance(source, (bytes, bytearray)):
        what = "the ONNX bytes"
        try:
            proto = onnx.load_from_string(bytes(source))
        except Exception as err:
            raise ValueError(f"from_onnx: the bytes given are not an ONNX model ({err})") from None
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        what = repr(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"from_onnx: no such ONNX file: {path!r}")
        if not os.path.isfile(path):
            raise ValueError(f"from_onnx: {path!r} is not a file")
        try:
            proto = onnx.load(path)
        except Exception as err:
            raise ValueError(f"from_onnx: {path!r} is not a readable ONNX model "
                             f"({type(err).__name__}: {err})") from None
    else:
        raise TypeError("from_onnx: expected a path, bytes or an onnx.ModelProto, got "
                        f"{type(source).__name__}")
    if not proto.HasField("graph") or not proto.graph.node or not proto.graph.input:
        raise ValueError(f"from_onnx: {what} holds no ONNX graph (no nodes or no inputs); "
                         "is it an ONNX model file?")
    return proto


class Importer:
    """One pass over an ONNX graph in topological order, building kryptonref nodes.

    The layer types' ONNX handlers read the graph and add nodes through it:
    :meth:`act` (the kryptonref node computing a tensor), :meth:`const`,
    :meth:`optional`, :meth:`emit`, :meth:`alias`, :meth:`fail`, :meth:`build`,
    :meth:`spatial_input`, :meth:`window_geometry`; ``shapes``, ``opset``,
    ``batch`` (the fixed batch size or None) and ``symbolic`` (shape vectors
    holding :attr:`BATCH`) describe what has been read so far.
    """

    #: The symbolic batch size inside shape vectors.
    BATCH = _BATCH
    #: The place in the pass of the node being read (set by :meth:`run`), for messages.
    index: int

    def __init__(self, onnx: ModuleType, proto: ModelProto,
                 input_shape: Sequence[int] | None) -> None:
        from onnx import helper, numpy_helper
        self.onnx: ModuleType = onnx
        self.helper: ModuleType = helper
        self.numpy_helper: ModuleType = numpy_helper
        self.proto = proto
        self.graph: GraphProto = proto.graph
        opset = None
        for op in proto.opset_import:
            if op.domain in ("", "ai.onnx"):
                opset = int(op.version)
        if opset is None:
            raise ValueError("from_onnx: the model imports no version of the default ONNX "
                             "operator set")
        self.opset: int = opset
        self.consts: dict[str, npt.NDArray[Any]] = {}      # tensor name -> ndarray
        # tensor name -> object ndarray of ints and _BATCH
        self.symbolic: dict[str, npt.NDArray[np.object_]] = {}
        # tensor name -> kryptonref node name (or the input name)
        self.acts: dict[str, str] = {}
        # kryptonref name -> [layer, inputs] (a list: handlers replace the layer in place)
        self.nodes: dict[str, list[Any]] = {}
        # kryptonref name -> {param: ndarray}
        self.params: dict[str, dict[str, npt.NDArray[Any]]] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}  # kryptonref name -> shape without batch
        self.names: set[str] = set()
        self.handlers = _handlers()
        # tensor name -> "nhwc": a channels-last view of an NCHW node
        self.layout: dict[str, str] = {}
        # kryptonref nodes computed by TensorOps (per-sample ONNX shapes)
        self.batched: set[str] = set()
        # tensor name -> a step of the channel-shuffle pattern: (kind, node, groups)
        self.pending: dict[str, tuple[str, str, int]] = {}
        for tensor in self.graph.initializer:
            try:
                self.consts[tensor.name] = numpy_helper.to_array(tensor)
            except Exception as err:
                raise ValueError(f"from_onnx: cannot read initializer {tensor.name!r} "
                                 f"({err}); external data must sit next to the model file")
        self.outputs = [o.name for o in self.graph.output]
        self.consumers: dict[str, list[NodeProto]] = {}
        for node in self.graph.node:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self._read_input(input_shape)

    # -- input --------------------------------------------------------------------------
    def _read_input(self, input_shape: Sequence[int] | None) -> None:
        from onnx import TensorProto
        real = [v for v in self.graph.input if v.name not in self.consts]
        if len(real) != 1:
            raise ValueError("from_onnx: kryptonref models take exactly one image input; the "
                             f"ONNX graph has {len(real)}: {[v.name for v in real]}")
        value = real[0]
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            raise ValueError(f"from_onnx: input {value.name!r} is not a tensor")
        ttype = value.type.tensor_type
        floats = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16,
                  TensorProto.BFLOAT16)
        if ttype.elem_type not in floats:
            raise ValueError(f"from_onnx: input {value.name!r} must hold floating-point "
                             f"values, got ONNX element type "
                             f"{TensorProto.DataType.Name(ttype.elem_type)}")
        dims = None
        if ttype.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                    for d in ttype.shape.dim]
        if dims is not None and len(dims) != 4:
            raise ValueError(f"from_onnx: input {value.name!r} must have rank 4 (N, C, H, W), "
                             f"got rank {len(dims)}")
        if input_shape is not None:
            shape = tuple(int(d) for d in input_shape)
            if len(shape) != 3 or min(shape) < 1:
                raise ValueError(f"from_onnx: input_shape must be (C, H, W) with positive "
                                 f"sizes, got {input_shape!r}")
            if dims is not None:
                for axis, (have, want) in enumerate(zip(dims[1:], shape)):
                    if have is not None and have != want:
                        raise ValueError(
                            f"from_onnx: input_shape {shape} contradicts the model's input "
                            f"{value.name!r} of shape {self._dims_str(ttype)} (axis {axis + 1})")
        else:
            if dims is None or any(d is None for d in dims[1:]):
                got = self._dims_str(ttype) if dims is not None else "unknown"
                raise ValueError(
                    f"from_onnx: input {value.name!r} has shape {got}; kryptonref needs fixed "
                    "C, H and W (only the batch may be dynamic): export the model with a "
                    "fixed image size or pass input_shape=(C, H, W)")
            shape = tuple(cast("list[int]", dims[1:]))   # none is None (checked above)
        self.batch = dims[0] if dims is not None else None
        self.input_tensor = value.name
        self.input_name = _sanitise(value.name) or "input"
        self.names.add(self.input_name)
        self.acts[value.name] = self.input_name
        self.shapes[self.input_name] = shape
        self.input_shape = shape

    @staticmethod
    def _dims_str(ttype: TypeProto.Tensor) -> str:
        dims = []
        for d in ttype.shape.dim:
            dims.append(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?"))
        return "(" + ", ".join(dims) + ")"

    # -- helpers ------------------------------------------------------------------------
    def label(self, node: NodeProto) -> str:
        """The node's name, or ``#<index>`` for an unnamed node."""
        return repr(node.name) if node.name else f"#{self.index} (unnamed)"

    def where(self, node: NodeProto) -> str:
        return f"ONNX node {self.label(node)} ({node.op_type})"

    def fail(self, node: NodeProto, message: str) -> NoReturn:
        raise ValueError(f"from_onnx: {self.where(node)}: {message}")

    def attrs(self, node: NodeProto) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for attr in node.attribute:
            value = self.helper.get_attribute_value(attr)
            if isinstance(value, bytes):
                value = value.decode()
            out[attr.name] = value
        return out

    def act(self, node: NodeProto, tensor: str) -> str:
        """The kryptonref node computing ONNX tensor ``tensor`` (an activation)."""
        if tensor in self.acts:
            return self.acts[tensor]
        if tensor in self.consts or tensor in self.symbolic:
            self.fail(node, f"input {tensor!r} is a constant where kryptonref needs the "
                            "activation of the image")
        self.fail(node, f"input {tensor!r} is produced by no supported node")

    def const(self, node: NodeProto, tensor: str, what: str) -> npt.NDArray[Any]:
        if tensor in self.consts:
            return self.consts[tensor]
        self.fail(node, f"{what} ({tensor!r}) must be a constant (initializer or Constant "
                        "node), not computed from the image")

    def optional(self, node: NodeProto, i: int) -> str | None:
        return node.input[i] if len(node.input) > i and node.input[i] else None

    def rank(self, name: str) -> int:
        return len(self.shapes[name]) + 1

    def new_name(self, node: NodeProto, suffix: str = "") -> str:
        base = _sanitise(node.name) or f"{node.op_type}_{self.index}"
        return unique_name(base + suffix, self.names)

    def emit(self, node: NodeProto, layer: Layer, inputs: Sequence[str],
             params: dict[str, npt.NDArray[Any]] | None = None, out: str | None = None,
             suffix: str = "") -> str:
        """Add a kryptonref node for ``node`` (output ``out``, default its first output)."""
        name = self.new_name(node, suffix)
        try:
            shape = layer.output_shape([self.shapes[i] for i in inputs])
        except ValueError as err:
            self.fail(node, str(err))
        except (IndexError, KeyError, TypeError) as err:  # a malformed node, e.g. no axes
            self.fail(node, f"malformed {node.op_type}: its output shape cannot be computed "
                            f"({type(err).__name__}: {err})")
        arity = layer.n_inputs
        if arity is not None and len(inputs) != arity:
            self.fail(node, f"{type(layer).__name__} takes {arity} input(s)")
        self.nodes[name] = [layer, tuple(inputs)]
        self.shapes[name] = tuple(int(d) for d in shape)
        if params:
            self.params[name] = params
        self.acts[node.output[0] if out is None else out] = name
        return name

    def alias(self, node: NodeProto, source: str) -> None:
        self.acts[node.output[0]] = source

    def unused(self, node: NodeProto, start: int = 1) -> None:
        """Reject a node whose extra outputs (masks, indices, statistics) are read."""
        for out in node.output[start:]:
            if out and (out in self.consumers or out in self.outputs):
                self.fail(node, f"output {out!r} is used; kryptonref computes only the "
                                "main output of this operator in inference mode")

    # -- the pass -----------------------------------------------------------------------
    def run(self, dtype: np.dtype[Any]) -> Model:
        for self.index, node in enumerate(self._sorted_nodes()):
            if node.domain not in ("", "ai.onnx"):
                self.fail(node, f"unsupported ONNX operator {node.domain}.{node.op_type} "
                                f"(node {self.label(node)}): only the default domain is "
                                "supported")
            if node.op_type == "Constant":
                self._constant(node)
                continue
            ins = [i for i in node.input if i]
            if ins and all(i in self.consts for i in ins) \
                    and node.op_type not in _NONDETERMINISTIC:
                self._fold(node)
                continue
            if any(i in self.symbolic for i in ins) and node.op_type not in ("Reshape",
                                                                              "Resize"):
                self._symbolic_op(node)
                continue
            if node.op_type == "Identity":
                self.alias(node, self.act(node, node.input[0]))
                continue
            if node.op_type == "Shape":
                self._shape(node, self.attrs(node))
                continue
            if any(i in self.pending for i in ins) and node.op_type not in ("Transpose",
                                                                             "Reshape"):
                self.fail(node, "reads a 5-D reshaped feature map; only ShuffleNet's channel "
                                "shuffle (Reshape, Transpose, Reshape) is supported")
            if any(self.acts.get(i) in self.batched for i in ins):
                if node.op_type in TENSOR_OPS or not self._unbatch_inputs(node):
                    self.tensor_op(node, self.attrs(node))
                    continue
            if node.op_type == "Transpose":
                self._transpose(node, self.attrs(node))
                continue
            if any(i in self.layout for i in ins):
                self._channels_last(node, self.attrs(node))
                continue
            handler = self.handlers.get(node.op_type)
            if handler is None:
                if node.op_type in TENSOR_OPS:
                    self.tensor_op(node, self.attrs(node))
                    continue
                raise ValueError(
                    f"from_onnx: unsupported ONNX operator {node.op_type!r} (node "
                    f"{self.label(node)}); kryptonref imports "
                    f"{', '.join(supported_onnx_ops())}")
            try:
                handler(self, node, self.attrs(node))
            except ValueError as error:
                if node.op_type not in TENSOR_OPS or not self._tensor_op_fallback(node, error):
                    raise
        return self._finish(dtype)

    def _sorted_nodes(self) -> list[NodeProto]:
        """The graph's nodes in a topological order (ONNX requires one; be lenient)."""
        nodes = list(self.graph.node)
        known = set(self.consts) | {self.input_tensor} | {""}
        order: list[NodeProto] = []
        pending = nodes
        while pending:
            rest = []
            for node in pending:
                if all(i in known for i in node.input):
                    order.append(node)
                    known.update(node.output)
                else:
                    rest.append(node)
            if len(rest) == len(pending):
                missing = sorted({i for n in rest for i in n.input if i not in known})
                raise ValueError(f"from_onnx: the ONNX graph reads undefined tensors or has "
                                 f"a cycle: {missing[:5]}")
            pending = rest
        return order

    def _finish(self, dtype: np.dtype[Any]) -> Model:
        if len(self.outputs) != 1:
            raise ValueError(f"from_onnx: kryptonref models have one output; the ONNX graph "
                             f"has {len(self.outputs)}: {self.outputs}")
        out_tensor = self.outputs[0]
        if out_tensor not in self.acts:
            raise ValueError(f"from_onnx: the graph output {out_tensor!r} is a constant, not "
                             "computed from the input")
        out = self.acts[out_tensor]
        if out == self.input_name:
            raise ValueError("from_onnx: the ONNX graph computes nothing (its output is its "
                             "input); the graph has no layers")
        if out in self.batched and self.shapes[out][0] == 1:   # drop the unit batch axis
            name = unique_name("output", self.names)
            layer = TensorOp("Unbatch", batched=(True,))
            self.nodes[name] = [layer, (out,)]
            self.shapes[name] = layer.output_shape([self.shapes[out]])
            out = name
        keep: set[str] = set()
        stack = [out]
        while stack:
            name = stack.pop()
            if name in keep or name == self.input_name:
                continue
            keep.add(name)
            stack.extend(self.nodes[name][1])
        triples = [(n, layer, ins) for n, (layer, ins) in self.nodes.items() if n in keep]
        graph = Graph.from_nodes(self.input_shape, triples, input_name=self.input_name,
                                 output=out)
        # onnx's arrays are read-only views of the protobuf: the model gets its own copies.
        weights = {n: {k: np.array(v, dtype=dtype) if not v.flags.writeable else v
                       for k, v in p.items()}
                   for n, p in self.params.items() if n in keep}
        return Model(graph, weights=weights, dtype=dtype)

    # -- constants ----------------------------------------------------------------------
    def _constant(self, node: NodeProto) -> None:
        from onnx import numpy_helper
        attrs = {a.name: a for a in node.attribute}
        if "value" in attrs:
            value = numpy_helper.to_array(attrs["value"].t)
        elif "value_float" in attrs:
            value = np.array(attrs["value_float"].f, np.float32)
        elif "value_floats" in attrs:
            value = np.array(list(attrs["value_floats"].floats), np.float32)
        elif "value_int" in attrs:
            value = np.array(attrs["value_int"].i, np.int64)
        elif "value_ints" in attrs:
            value = np.array(list(attrs["value_ints"].ints), np.int64)
        else:
            self.fail(node, f"Constant with attribute(s) {sorted(attrs)} is not supported")
        self.consts[node.output[0]] = value

    def _fold(self, node: NodeProto) -> None:
        """Evaluate a node whose inputs are all constants with onnx's reference runtime."""
        from onnx.reference import ReferenceEvaluator
        feeds = {i: self.consts[i] for i in node.input if i}
        try:
            evaluator = ReferenceEvaluator(node, opsets={"": self.opset})
            values = evaluator.run(None, feeds)
        except Exception as err:
            self.fail(node, f"cannot fold this node of constants ({type(err).__name__}: {err})")
        for name, value in zip(node.output, values):
            if name:
                self.consts[name] = np.asarray(value)

    def _set_shape_value(self, tensor: str, value: npt.ArrayLike) -> None:
        value = np.asarray(value, dtype=object)
        if any(isinstance(v, str) for v in value.flat):
            self.symbolic[tensor] = value
        else:
            self.consts[tensor] = value.astype(np.int64)

    def _shape(self, node: NodeProto, attrs: dict[str, Any]) -> None:
        """Shape of an activation: a vector holding the (possibly symbolic) batch size."""
        src = self.act(node, node.input[0])
        first = self.batch if self.batch is not None else _BATCH
        full = np.array([first] + list(self.shapes[src]), dtype=object)
        if src in self.batched:     # a TensorOp's per-sample shape: batch size 1 inside
            full = np.array(list(self.shapes[src]), dtype=object)
        rank = len(full)
        start, end = attrs.get("start", 0), attrs.get("end", rank)
        start = max(0, min(rank, start + rank if start < 0 else start))
        end = max(0, min(rank, end + rank if end < 0 else end))
        self._set_shape_value(node.output[0], full[start:end])

    def _value(self, node: NodeProto, i: int) -> npt.NDArray[Any]:
        name = node.input[i]
        if name in self.symbolic:
            return self.symbolic[name]
        return np.asarray(self.const(node, name, f"input {i}"))

    def _symbolic_op(self, node: NodeProto) -> None:
        """Shape arithmetic on vectors holding the (symbolic) batch size."""
        op, attrs = node.op_type, self.attrs(node)
        data = self._value(node, 0)
        if op in ("Identity", "Cast"):
            result = data
        elif op == "Gather":
            idx = np.asarray(self.const(node, node.input[1], "indices")).astype(np.int64)
            result = np.take(data, idx, axis=int(attrs.get("axis", 0)))
        elif op in ("Unsqueeze", "Squeeze"):
            axes: Any = attrs.get("axes")
            if axes is None and self.optional(node, 1):
                axes = self.const(node, node.input[1], "axes").tolist()
            if op == "Unsqueeze":
                if axes is None:
                    self.fail(node, "Unsqueeze needs axes (an attribute before opset 13, its "
                                    "second input from opset 13 on)")
                result = data
                rank = data.ndim + len(axes)
                for axis in sorted(a + rank if a < 0 else a for a in axes):
                    result = np.expand_dims(result, axis)
            else:
                result = np.squeeze(data, axis=None if axes is None else tuple(axes))
        elif op == "Concat":
            parts = [self._value(node, i) for i in range(len(node.input))]
            result = np.concatenate([np.asarray(p, dtype=object) for p in parts],
                                    axis=int(attrs.get("axis", 0)))
        elif op == "Slice":
            if self.opset < 10:
                starts, ends = attrs["starts"], attrs["ends"]
                axes, steps = attrs.get("axes"), None
            else:
                starts = self.const(node, node.input[1], "starts").tolist()
                ends = self.const(node, node.input[2], "ends").tolist()
                axes = self.const(node, node.input[3], "axes").tolist() \
                    if self.optional(node, 3) else None
                steps = self.const(node, node.input[4], "steps").tolist() \
                    if self.optional(node, 4) else None
            if data.ndim != 1 or (axes is not None and list(axes) not in ([0], [-1])):
                self._fold_at_batch_one(node)
                return
            big = 2 ** 62
            start, end = (max(-big, min(big, int(v))) for v in (starts[0], ends[0]))
            step = 1 if steps is None else int(steps[0])
            result = data[slice(start, end, step)]
        else:
            self._fold_at_batch_one(node)
            return
        self._set_shape_value(node.output[0], result)

    def _fold_at_batch_one(self, node: NodeProto) -> None:
        """Fold shape arithmetic the symbolic batch size cannot follow (Range, ScatterND,
        Where, ...) at batch size 1: what a TensorOp reads (per-sample semantics,
        :mod:`kryptonref.layers.tensor`)."""
        for name in node.input:
            if name in self.symbolic:
                self.consts[name + "#batch1"] = np.array(
                    [1 if isinstance(v, str) else int(v) for v in self.symbolic[name].flat],
                    np.int64).reshape(self.symbolic[name].shape)
        renamed = [n + "#batch1" if n in self.symbolic else n for n in node.input]
        clone = self.helper.make_node(node.op_type, renamed, list(node.output), name=node.name,
                                      domain=node.domain)
        clone.attribute.extend(node.attribute)
        self._fold(clone)

    # -- channels-last islands and the channel shuffle --------------------------------------
    #: Operators that work on a channels-last view as on its NCHW node (their output is
    #: channels-last too): position-wise ones, and arithmetic whose constants broadcast over
    #: the last axis (read by :meth:`channel_vector`).
    CHANNELS_LAST_OPS = ("Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
                         "Erf", "Gelu", "Elu", "Softplus", "Mish", "Clip", "Pow", "Dropout",
                         "Identity", "Add", "Sub", "Mul", "Div")

    def _transpose(self, node: NodeProto, attrs: dict[str, Any]) -> None:
        """NCHW -> NHWC and back: aliases (a channels-last island, ConvNeXt); the
        transpose of ShuffleNet's channel shuffle; anything else is refused."""
        src_tensor = node.input[0]
        perm = [int(p) for p in attrs.get("perm", [])]
        if src_tensor in self.pending:
            step = self.pending[src_tensor]
            if step[0] == "groups" and perm == [0, 2, 1, 3, 4]:
                self.pending[node.output[0]] = ("shuffled",) + step[1:]
                return
            self.fail(node, f"transposes a 5-D reshaped map with perm {perm}; only the channel "
                            "shuffle's [0, 2, 1, 3, 4] is supported")
        src = self.act(node, src_tensor)
        if src_tensor in self.layout and perm == [0, 3, 1, 2]:
            self.alias(node, src)               # back to NCHW
        elif src_tensor not in self.layout and self.rank(src) == 4 and perm == [0, 2, 3, 1]:
            self.alias(node, src)               # NCHW -> NHWC: a channels-last view
            self.layout[node.output[0]] = "nhwc"
        else:
            if src_tensor in self.layout:
                self._materialise_channels_last(node)
            self.tensor_op(node, attrs)

    def reshape_pattern(self, node: NodeProto, src_tensor: str,
                        target: Sequence[int | str]) -> bool:
        """The Reshape steps of the channel shuffle: (N, C, H, W) -> (N, G, C/G, H, W), and
        back to (N, C, H, W) after the transpose (then :class:`ChannelShuffle`). Returns
        whether ``node`` was one of them."""
        from ..layers.channels import ChannelShuffle
        if src_tensor in self.pending:
            kind, src, groups = self.pending[src_tensor]
            c, h, w = self.shapes[src]
            if kind == "shuffled" and len(target) == 4 and [int(v) for v in target[1:]
                                                             if not isinstance(v, str)] == \
                    [c, h, w]:
                self.emit(node, ChannelShuffle(groups), [src])
                return True
            self.fail(node, f"reshapes a 5-D map to {target}; only the channel shuffle's "
                            f"(N, {c}, {h}, {w}) is supported")
        if src_tensor in self.acts and self.rank(self.acts[src_tensor]) == 4 and len(target) == 5:
            src = self.acts[src_tensor]
            c, h, w = self.shapes[src]
            dims: list[Any] = [v for v in target[1:]]   # ints if no str (checked below)
            if all(not isinstance(v, str) for v in dims) and dims[2:] == [h, w] \
                    and dims[0] * dims[1] == c:
                self.pending[node.output[0]] = ("groups", src, int(dims[0]))
                return True
        return False

    def channel_vector(self, value: npt.ArrayLike, tensor: str,
                       channels: int) -> npt.NDArray[Any] | None:
        """A constant as one value per channel of ``tensor`` (``(channels,)``), or None.

        A scalar gives the same value for every channel. On an NCHW map the constant
        broadcasts along axis 1 (``(C, 1, 1)``, ``(1, C, 1, 1)``), on a channels-last view
        along the last axis (``(C,)``, ``(1, 1, 1, C)``), on a vector ``(N, F)`` along the
        features (``(F,)``, ``(1, F)``).
        """
        value = np.asarray(value)
        if value.size == 1:
            return np.full(channels, float(value.reshape(-1)[0]))
        rank = self.rank(self.acts[tensor]) if tensor in self.acts else 0
        dims = list(value.shape)
        if self.layout.get(tensor) == "nhwc" or rank == 2:
            ok = len(dims) <= rank and dims[-1] == channels and all(d == 1 for d in dims[:-1])
        else:
            ok = (len(dims) <= rank and len(dims) >= rank - 1
                  and dims[len(dims) - 3] == channels
                  and all(d == 1 for i, d in enumerate(dims) if i != len(dims) - 3))
        return value.reshape(channels) if ok else None

    def _channels_last(self, node: NodeProto, attrs: dict[str, Any]) -> None:
        """An operator reading a channels-last view (NHWC) of an NCHW node."""
        from ..layers.channels import ChannelLinear, LayerNorm2d
        op = node.op_type
        nhwc = [i for i in node.input if i in self.layout]
        if op in self.CHANNELS_LAST_OPS:
            acts = [i for i in node.input if i in self.acts]
            if any(i not in self.layout for i in acts):
                self.fail(node, "mixes a channels-last view with an NCHW tensor")
            self.handlers[op](self, node, attrs)
        elif op == "LayerNormalization":
            src = self.act(node, nhwc[0])
            if int(attrs.get("axis", -1)) not in (-1, 3):
                self.fail(node, "LayerNormalization of a channels-last view is supported over "
                                "the last axis (the channels) only")
            self.unused(node)
            channels = self.shapes[src][0]
            params = {"weight": np.asarray(self.const(node, node.input[1], "the scale"))}
            bias = self.optional(node, 2)
            params["bias"] = np.asarray(self.const(node, bias, "the bias")) if bias \
                else np.zeros(channels)
            params = {k: v.reshape(-1) for k, v in params.items()}
            eps = self.float32_attr(attrs.get("epsilon", 1e-5))
            self.emit(node, self.build(node, LayerNorm2d, channels, eps=eps), [src], params)
        elif op == "MatMul":
            src = self.act(node, node.input[0])
            weight = np.asarray(self.const(node, node.input[1], "the right-hand matrix"))
            if node.input[0] not in self.layout or weight.ndim != 2:
                self.fail(node, "MatMul of a channels-last view is supported by a constant "
                                "(C_in, C_out) matrix")
            layer = self.build(node, ChannelLinear, weight.shape[0], weight.shape[1],
                               bias=False)
            self.emit(node, layer, [src], {"weight": weight.T})
        else:       # anything else: the channels-last tensor for real, then a TensorOp
            self._materialise_channels_last(node)
            self.tensor_op(node, attrs)
            return
        for out in node.output:
            if out and out in self.acts:
                self.layout[out] = "nhwc"

    # -- whole-tensor operators (TensorOp) ------------------------------------------------
    def _tensor_op_fallback(self, node: NodeProto, error: ValueError) -> bool:
        """After a layer handler refused ``node``: a TensorOp, if it can be one."""
        try:
            self.tensor_op(node, self.attrs(node))
        except ValueError:
            return False
        return True

    def _unbatch_inputs(self, node: NodeProto) -> bool:
        """Before an ordinary layer (a convolution, batch norm, pooling...): the TensorOp
        outputs it reads, when they are NCHW maps ``(1, C, H, W)``, as ``(C, H, W)`` again.
        Returns False (changing nothing) when one is not."""
        tensors = [i for i in node.input if self.acts.get(i) in self.batched]
        if any(len(self.shapes[self.acts[t]]) != 4 or self.shapes[self.acts[t]][0] != 1
               for t in tensors):
            return False
        for tensor in tensors:
            src = self.acts[tensor]
            real = tensor + "#unbatched"
            if real not in self.acts:
                self.emit(node, TensorOp("Unbatch", batched=(True,)), [src], out=real,
                          suffix="_unbatch")
            self.acts[tensor] = self.acts[real]
        return True

    def _materialise_channels_last(self, node: NodeProto) -> None:
        """Give each channels-last input of ``node`` its own TensorOp transpose (NHWC)."""
        for tensor in [i for i in node.input if i in self.layout]:
            src = self.acts[tensor]
            real = tensor + "#nhwc"
            if real not in self.acts:
                layer = self.build(node, TensorOp, "Transpose", (("perm", (0, 2, 3, 1)),),
                                   ("x0",), (src in self.batched,))
                self.emit(node, layer, [src], out=real, suffix="_nhwc")
                self.batched.add(self.acts[real])
            self.acts[tensor] = self.acts[real]
            del self.layout[tensor]

    def tensor_op(self, node: NodeProto, attrs: dict[str, Any]) -> None:
        """``node`` as a :class:`~kryptonref.layers.tensor.TensorOp` (per-sample semantics):
        activations are its inputs, float constants its parameters, integer constants and
        shapes (the batch size read as 1) part of its spec."""
        op = node.op_type
        self._materialise_channels_last(node)
        if op in ("Identity", "Dropout"):
            self.alias(node, self.act(node, node.input[0]))
            return
        if op == "Cast":
            src = self.act(node, node.input[0])
            if self.onnx.helper.tensor_dtype_to_np_dtype(int(attrs["to"])).kind != "f":
                self.fail(node, "casting an activation to a non-float type is not supported")
            self.alias(node, src)
            return
        if op == "Split":
            self.split_tensor(node, attrs)
            return
        if op not in TENSOR_OPS:
            self.fail(node, f"operator {op!r} after a whole-tensor operator is not supported; "
                            f"supported are {', '.join(sorted(TENSOR_OPS))}")
        slots: list[str] = []
        sources: list[str] = []
        batched: list[bool] = []
        parameters: list[tuple[str, tuple[int, ...]]] = []
        constants: list[Any] = []
        params: dict[str, npt.NDArray[Any]] = {}
        for k, tensor in enumerate(node.input):
            if not tensor:
                slots.append("")
            elif tensor in self.acts:
                src = self.acts[tensor]
                if src not in sources:
                    sources.append(src)
                    batched.append(src in self.batched)
                slots.append(f"x{sources.index(src)}")
            else:
                if tensor in self.symbolic:
                    value = np.array([1 if isinstance(v, str) else int(v)
                                      for v in self.symbolic[tensor].flat], np.int64)
                else:
                    value = np.asarray(self.const(node, tensor, f"input {k}"))
                if value.dtype.kind == "f":
                    # (an initializer named "<node name>.<param>", as to_onnx writes
                    # them, keeps its parameter name: round trips keep weight keys)
                    prefix, _, pname = tensor.rpartition(".")
                    if prefix != node.name or not pname.isidentifier() or pname in params:
                        pname = f"p{k}"
                    parameters.append((pname, tuple(int(d) for d in value.shape)))
                    params[pname] = value
                    slots.append(f"p:{pname}")
                else:
                    slots.append(f"i:{len(constants)}")
                    constants.append(freeze_value(value))
        if not sources:
            self.fail(node, "reads no activation")
        frozen = tuple(sorted((name, freeze_value(value)) for name, value in attrs.items()))
        layer = self.build(node, TensorOp, op, frozen, tuple(slots), tuple(batched),
                           tuple(parameters), tuple(constants))
        name = self.emit(node, layer, sources, params or None)
        self.batched.add(name)

    def split_tensor(self, node: NodeProto, attrs: dict[str, Any]) -> None:
        """A Split as whole-tensor operators, one per output (a Split after a whole-tensor
        operator, or along a feature map's spatial axis: ``channels._split_from_onnx``)."""
        src = self.act(node, node.input[0])
        shape = self.shapes[src] if src in self.batched else (1,) + tuple(self.shapes[src])
        axis = int(attrs.get("axis", 0))
        axis = axis + len(shape) if axis < 0 else axis
        sizes = attrs.get("split")
        if sizes is None and self.optional(node, 1):
            sizes = self.const(node, node.input[1], "the split sizes").tolist()
        if sizes is None:
            parts = len(node.output)
            sizes = [-(-shape[axis] // parts)] * parts
            sizes[-1] = shape[axis] - sum(sizes[:-1])
        edges = np.cumsum([0] + [int(v) for v in sizes])
        for out, start, stop in zip(node.output, edges[:-1], edges[1:]):
            if out:
                layer = self.build(node, TensorOp, "SplitPart",
                                   (("axis", axis), ("start", int(start)), ("stop", int(stop))),
                                   ("x0",), (src in self.batched,))
                self.batched.add(self.emit(node, layer, [src], out=out, suffix=f"_{start}"))

    # -- what layer handlers use -----------------------------------------------------------
    def spatial_input(self, node: NodeProto) -> str:
        src = self.act(node, node.input[0])
        if self.rank(src) != 4:
            self.fail(node, f"expects a 4-D (N, C, H, W) input, got shape "
                            f"(N, {', '.join(map(str, self.shapes[src]))})")
        return src

    def window_geometry(self, node: NodeProto, attrs: dict[str, Any], src: str,
                        kernel: Sequence[int]
                        ) -> tuple[list[int], list[int], tuple[tuple[int, int], ...]]:
        """(strides, dilations, ((top, bottom), (left, right))) with auto_pad resolved."""
        if len(kernel) != 2:
            self.fail(node, f"only 2-D kernels are supported, got kernel {list(kernel)}")
        strides = list(attrs.get("strides", [1, 1]))
        dilations = list(attrs.get("dilations", [1, 1]))
        auto = attrs.get("auto_pad", "NOTSET") or "NOTSET"
        in_hw = self.shapes[src][1:]
        if auto == "NOTSET":
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            if len(pads) != 4:
                self.fail(node, f"pads must have 4 values, got {pads}")
            padding: tuple[tuple[int, int], ...] = ((pads[0], pads[2]), (pads[1], pads[3]))
        elif auto == "VALID":
            padding = ((0, 0), (0, 0))
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            sides = []
            for size, k, s, d in zip(in_hw, kernel, strides, dilations):
                out = -(-size // s)
                total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
                small, big = total // 2, total - total // 2
                sides.append((small, big) if auto == "SAME_UPPER" else (big, small))
            padding = tuple(sides)
        else:
            self.fail(node, f"unknown auto_pad {auto!r}")
        return strides, dilations, padding

    def build(self, node: NodeProto, cls: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``cls(*args, **kwargs)``, a layer spec; its ValueError or TypeError names the node."""
        try:
            return cls(*args, **kwargs)
        except (ValueError, TypeError) as err:
            self.fail(node, str(err))

    @staticmethod
    def float32_attr(value: float) -> float:
        """A float32 attribute as the float64 it most likely was before export.

        ``1e-5`` is stored as ``9.99999974e-06``: the shortest decimal that rounds to
        the same float32 (``1e-05``) is returned. Values with a short binary mantissa
        (such as ``2 ** -17``) were exact and are returned unchanged.
        """
        exact = float(np.float32(value))
        mantissa, _ = math.frexp(exact)
        if (mantissa * 2 ** 12).is_integer():
            return exact
        return float(str(np.float32(value)))


def from_onnx(model: str | os.PathLike[str] | bytes | bytearray | ModelProto,
              dtype: npt.DTypeLike = np.float32,
              input_shape: Sequence[int] | None = None) -> Model:
    """Read an ONNX CNN into a kryptonref :class:`~kryptonref.model.Model`.

    Parameters
    ----------
    model : str, os.PathLike, bytes or onnx.ModelProto
        The ``.onnx`` file (external weight data next to it is read too), its bytes
        or a loaded model.
    dtype : float32 or float64
        Computation dtype of the returned model (weights are cast).
    input_shape : tuple (C, H, W), optional
        Fixes the image size where the ONNX input leaves ``C``, ``H`` or ``W``
        dynamic; it must agree with the sizes the model does fix.

    Returns
    -------
    Model
        Node names are the ONNX node names (sanitised, unique); the graph's input is
        named after the ONNX input, its output is the ONNX graph output.

    Raises
    ------
    ImportError
        Without the ``onnx`` package (``pip install 'kryptonref[onnx]'``).
    FileNotFoundError
        If the path does not exist.
    ValueError
        For a file that is not an ONNX model, an unsupported operator (naming the
        operator and the node), several inputs or outputs, or a dynamic image size.
    """
    onnx = import_onnx()
    model_dtype: np.dtype[Any] = validate.dtype(dtype)
    proto = _load_proto(onnx, model)
    return Importer(onnx, proto, input_shape).run(model_dtype)
