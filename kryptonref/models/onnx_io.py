"""ONNX import and export (optional extra: ``pip install 'kryptonref[onnx]'``).

:func:`from_onnx` reads a CNN classifier from an ONNX file (for instance one written by
``torch.onnx.export``) into a kryptonref :class:`~kryptonref.model.Model`;
:func:`to_onnx` writes any kryptonref model as an ONNX model with a dynamic batch
dimension. The ``onnx`` package is imported only inside these functions, so
``import kryptonref`` works without it.

Import
    One graph input ``(N, C, H, W)`` with fixed ``C, H, W`` (the batch may be
    dynamic; ``input_shape=(C, H, W)`` fixes dynamic sizes) and one graph output.
    Operators and how they map:

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

Export
    Every layer spec maps to one ONNX operator (opset 11 or newer, 17 by default):
    Conv, MaxPool, AveragePool, GlobalAveragePool, Relu, Clip (ReLU6),
    BatchNormalization, Dropout, Flatten, Gemm (Linear), Softmax, Add / Sum, Concat.
    ONNX has no adaptive pooling: ``AdaptiveAvgPool2d`` is written, exactly, as
    GlobalAveragePool (output 1x1), AveragePool with kernel = stride = in // out
    (the output size divides the input size), Resize nearest with an integer
    factor (the input size divides the output size: each window is one input
    element, e.g. VGG's ``(7, 7)`` pooling of a 1x1 map), or AveragePool then
    Resize when the two cases mix across the axes; uneven windows raise
    ``ValueError``. Weights are initializers in the model's dtype (onnxruntime's
    CPU provider has no float64 Conv, so float64 exports mainly serve other tools).
"""
from __future__ import annotations

import math
import os
import re

import numpy as np

from .. import layers as L
from ..graph import Graph
from ..model import Model, check_dtype

__all__ = ["from_onnx", "to_onnx", "SUPPORTED_ONNX_OPS"]

_INSTALL_HINT = "pip install 'kryptonref[onnx]'"

#: ONNX operators :func:`from_onnx` understands (besides constant folding).
SUPPORTED_ONNX_OPS = (
    "Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "Relu", "Clip",
    "BatchNormalization", "Gemm", "MatMul", "Add", "Sum", "Flatten", "Reshape", "Concat",
    "Softmax", "Resize", "Dropout", "Identity", "Constant", "Shape", "Gather", "Unsqueeze",
    "Squeeze", "Slice", "Cast",
)

#: Lowest opset :func:`to_onnx` writes (ceil_mode, dilations and Clip inputs exist).
MIN_EXPORT_OPSET = 11

#: Operators never constant-folded (not deterministic).
_NONDETERMINISTIC = ("RandomNormal", "RandomNormalLike", "RandomUniform",
                     "RandomUniformLike", "Bernoulli", "Multinomial")

#: Symbolic batch size inside statically known shape vectors.
_BATCH = "N"


def _import_onnx():
    """The ``onnx`` module, or an ImportError naming the extra to install."""
    try:
        import onnx
        import onnx.helper  # noqa: F401
        import onnx.numpy_helper  # noqa: F401
    except ImportError as err:  # pragma: no cover - exercised without onnx only
        raise ImportError("kryptonref's ONNX import/export needs the 'onnx' package; "
                          f"install the extra with: {_INSTALL_HINT}") from err
    return onnx


# ======================================================================================
# Export
# ======================================================================================

def _onnx_pads(padding):
    """kryptonref ``((top, bottom), (left, right))`` -> ONNX ``[top, left, bottom, right]``."""
    (top, bottom), (left, right) = padding
    return [int(top), int(left), int(bottom), int(right)]


def _ancestors(graph):
    """Names of the nodes the graph output depends on (the output included)."""
    keep, stack = set(), [graph.output]
    while stack:
        name = stack.pop()
        if name in keep or name == graph.input_name:
            continue
        keep.add(name)
        stack.extend(graph.nodes[name].inputs)
    return keep


def _adaptive_plan(name, in_hw, out_hw):
    """Per-axis (pool factor, replication factor) of an exact AdaptiveAvgPool2d export."""
    pool, rep = [], []
    for size, out in zip(in_hw, out_hw):
        if size % out == 0:
            pool.append(size // out)
            rep.append(1)
        elif out % size == 0:
            pool.append(1)
            rep.append(out // size)
        else:
            raise ValueError(
                f"to_onnx: node {name!r}: AdaptiveAvgPool2d from {tuple(in_hw)} to "
                f"{tuple(out_hw)} has uneven, overlapping windows and no exact ONNX "
                "equivalent (ONNX has no adaptive pooling; exportable are output sizes "
                "that divide the input size, or that the input size divides)")
    return pool, rep


def to_onnx(model, path=None, opset=17):
    """Write a kryptonref model as an ONNX model.

    Parameters
    ----------
    model : Model
        Any kryptonref model (float32 or float64).
    path : str or os.PathLike, optional
        Where to write the ``.onnx`` file; ``None`` only returns the model.
        Models above 1.8 GB are written with their weights in ``<path>.data``.
    opset : int
        ONNX opset of the default domain, ``>= 11``.

    Returns
    -------
    onnx.ModelProto
        The input is named after the graph's input (shape ``("N", C, H, W)``, a
        dynamic batch), every value after the node that computes it, the weights
        ``"<node>.<param>"``; the single output is the graph output.

    Raises
    ------
    ImportError
        Without the ``onnx`` package (``pip install 'kryptonref[onnx]'``).
    ValueError
        For an ``AdaptiveAvgPool2d`` with uneven windows, or an unsupported opset.
    """
    onnx = _import_onnx()
    from onnx import TensorProto, helper

    if not isinstance(model, Model):
        raise TypeError(f"to_onnx: model must be a kryptonref Model, got {type(model).__name__}")
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TypeError(f"to_onnx: opset must be an integer, got {opset!r}")
    newest = onnx.defs.onnx_opset_version()
    if not MIN_EXPORT_OPSET <= opset <= newest:
        raise ValueError(f"to_onnx: opset must be between {MIN_EXPORT_OPSET} and {newest} "
                         f"(the installed onnx), got {opset}")
    opset = int(opset)
    graph, dtype = model.graph, model.dtype
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    keep = _ancestors(graph)
    used = set(graph.shapes)
    nodes, inits = [], []

    def fresh(name):
        candidate, k = name, 1
        while candidate in used:
            k += 1
            candidate = f"{name}_{k}"
        used.add(candidate)
        return candidate

    def init(name, value, as_type=None):
        name = fresh(name)
        value = np.ascontiguousarray(value, dtype=dtype if as_type is None else as_type)
        inits.append((name, value))
        return name

    for name in graph.order:
        if name not in keep:
            continue
        node = graph.nodes[name]
        layer, ins = node.layer, list(node.inputs)
        params = model.params.get(name, {})
        make = helper.make_node
        if isinstance(layer, L.Conv2d):
            ins.append(init(f"{name}.weight", params["weight"]))
            if layer.bias:
                ins.append(init(f"{name}.bias", params["bias"]))
            nodes.append(make("Conv", ins, [name], name=name,
                              kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                              pads=_onnx_pads(layer.padding), dilations=list(layer.dilation),
                              group=layer.groups))
        elif isinstance(layer, L.MaxPool2d):
            nodes.append(make("MaxPool", ins, [name], name=name,
                              kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                              pads=_onnx_pads(layer.padding), dilations=list(layer.dilation),
                              ceil_mode=int(layer.ceil_mode)))
        elif isinstance(layer, L.AvgPool2d):
            nodes.append(make("AveragePool", ins, [name], name=name,
                              kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                              pads=_onnx_pads(layer.padding), ceil_mode=int(layer.ceil_mode),
                              count_include_pad=int(layer.count_include_pad)))
        elif isinstance(layer, L.GlobalAvgPool2d):
            nodes.append(make("GlobalAveragePool", ins, [name], name=name))
        elif isinstance(layer, L.AdaptiveAvgPool2d):
            in_hw = graph.shapes[ins[0]][1:]
            out_hw = layer.output_size
            if tuple(out_hw) == (1, 1):
                nodes.append(make("GlobalAveragePool", ins, [name], name=name))
                continue
            pool, rep = _adaptive_plan(name, in_hw, out_hw)
            if rep == [1, 1]:   # AveragePool with kernel = stride (kernel 1: the identity)
                nodes.append(make("AveragePool", ins, [name], name=name, kernel_shape=pool,
                                  strides=pool))
                continue
            src = ins[0]
            if pool != [1, 1]:
                src = fresh(f"{name}.pool")
                nodes.append(make("AveragePool", ins, [src], name=src, kernel_shape=pool,
                                  strides=pool))
            # Nearest-neighbour replication: output i reads input floor(i / factor).
            scales = init(f"{name}.scales", [1.0, 1.0] + rep, np.float32)
            roi = "" if opset >= 13 else init(f"{name}.roi", np.zeros(0), np.float32)
            nodes.append(make("Resize", [src, roi, scales], [name], name=name, mode="nearest",
                              coordinate_transformation_mode="asymmetric",
                              nearest_mode="floor"))
        elif isinstance(layer, L.ReLU):
            nodes.append(make("Relu", ins, [name], name=name))
        elif isinstance(layer, L.ReLU6):
            ins += [init(f"{name}.min", np.array(0.0)), init(f"{name}.max", np.array(6.0))]
            nodes.append(make("Clip", ins, [name], name=name))
        elif isinstance(layer, L.BatchNorm2d):
            ins += [init(f"{name}.{k}", params[k])
                    for k in ("weight", "bias", "running_mean", "running_var")]
            nodes.append(make("BatchNormalization", ins, [name], name=name,
                              epsilon=float(layer.eps)))
        elif isinstance(layer, L.Dropout):
            # Inference-mode Dropout is the identity (opset >= 12 without training_mode).
            attrs = {"ratio": float(layer.p)} if opset < 12 else {}
            nodes.append(make("Dropout", ins, [name], name=name, **attrs))
        elif isinstance(layer, L.Flatten):
            nodes.append(make("Flatten", ins, [name], name=name, axis=1))
        elif isinstance(layer, L.Linear):
            ins.append(init(f"{name}.weight", params["weight"]))
            if layer.bias:
                ins.append(init(f"{name}.bias", params["bias"]))
            nodes.append(make("Gemm", ins, [name], name=name, transB=1))
        elif isinstance(layer, L.Softmax):
            nodes.append(make("Softmax", ins, [name], name=name, axis=1))
        elif isinstance(layer, L.Add):
            nodes.append(make("Add" if len(ins) == 2 else "Sum", ins, [name], name=name))
        elif isinstance(layer, L.Concat):
            nodes.append(make("Concat", ins, [name], name=name, axis=1))
        else:  # pragma: no cover - every spec is mapped above
            raise ValueError(f"to_onnx: node {name!r}: no ONNX mapping for "
                             f"{type(layer).__name__}")

    out = graph.output
    inputs = [helper.make_tensor_value_info(graph.input_name, elem,
                                            [_BATCH] + list(graph.input_shape))]
    outputs = [helper.make_tensor_value_info(out, elem, [_BATCH] + list(graph.shapes[out]))]
    onnx_graph = helper.make_graph(nodes, "kryptonref", inputs, outputs)
    opset_id = helper.make_opsetid("", opset)
    from .. import __version__
    proto = helper.make_model(onnx_graph, opset_imports=[opset_id], producer_name="kryptonref",
                              producer_version=__version__)
    # Weights go straight into the model (make_graph would copy every tensor once more).
    for name, value in inits:
        tensor = proto.graph.initializer.add()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(value.dtype)
        tensor.dims.extend(value.shape)
        tensor.raw_data = value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes()
    # The lowest IR version that carries this opset: readable by the most runtimes.
    proto.ir_version = helper.find_min_ir_version_for([opset_id])
    if path is not None:
        path = os.fspath(path)
        if sum(value.nbytes for _, value in inits) > 1_800_000_000:  # protobuf's 2 GB limit
            from onnx.external_data_helper import load_external_data_for_model
            onnx.save_model(proto, path, save_as_external_data=True,
                            location=os.path.basename(path) + ".data")
            # save_model moved the weights out of ``proto``: read them back in.
            load_external_data_for_model(proto, os.path.dirname(os.path.abspath(path)))
        else:
            onnx.save_model(proto, path)
    return proto


# ======================================================================================
# Import
# ======================================================================================

def _sanitise(name):
    return re.sub(r"[^0-9A-Za-z_.\-]+", "_", str(name)).strip("_")


def _load_proto(onnx, source):
    """A ModelProto from a ModelProto, bytes or a path, with clear errors."""
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


class _Importer:
    """One pass over an ONNX graph in topological order, building kryptonref nodes."""

    def __init__(self, onnx, proto, input_shape):
        from onnx import helper, numpy_helper
        self.onnx, self.helper, self.numpy_helper = onnx, helper, numpy_helper
        self.proto = proto
        self.graph = proto.graph
        self.opset = None
        for op in proto.opset_import:
            if op.domain in ("", "ai.onnx"):
                self.opset = int(op.version)
        if self.opset is None:
            raise ValueError("from_onnx: the model imports no version of the default ONNX "
                             "operator set")
        self.consts = {}      # tensor name -> ndarray
        self.symbolic = {}    # tensor name -> object ndarray of ints and _BATCH
        self.acts = {}        # tensor name -> kryptonref node name (or the input name)
        self.nodes = {}       # kryptonref name -> [layer, inputs]
        self.params = {}      # kryptonref name -> {param: ndarray}
        self.shapes = {}      # kryptonref name -> shape without batch
        self.names = set()
        for tensor in self.graph.initializer:
            try:
                self.consts[tensor.name] = numpy_helper.to_array(tensor)
            except Exception as err:
                raise ValueError(f"from_onnx: cannot read initializer {tensor.name!r} "
                                 f"({err}); external data must sit next to the model file")
        self.outputs = [o.name for o in self.graph.output]
        self.consumers = {}
        for node in self.graph.node:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self._read_input(input_shape)

    # -- input --------------------------------------------------------------------------
    def _read_input(self, input_shape):
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
            shape = tuple(dims[1:])
        self.batch = dims[0] if dims is not None else None
        self.input_tensor = value.name
        self.input_name = _sanitise(value.name) or "input"
        self.names.add(self.input_name)
        self.acts[value.name] = self.input_name
        self.shapes[self.input_name] = shape
        self.input_shape = shape

    @staticmethod
    def _dims_str(ttype):
        dims = []
        for d in ttype.shape.dim:
            dims.append(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?"))
        return "(" + ", ".join(dims) + ")"

    # -- helpers ------------------------------------------------------------------------
    def label(self, node):
        """The node's name, or ``#<index>`` for an unnamed node."""
        return repr(node.name) if node.name else f"#{self.index} (unnamed)"

    def where(self, node):
        return f"ONNX node {self.label(node)} ({node.op_type})"

    def fail(self, node, message):
        raise ValueError(f"from_onnx: {self.where(node)}: {message}")

    def attrs(self, node):
        out = {}
        for attr in node.attribute:
            value = self.helper.get_attribute_value(attr)
            if isinstance(value, bytes):
                value = value.decode()
            out[attr.name] = value
        return out

    def act(self, node, tensor):
        """The kryptonref node computing ONNX tensor ``tensor`` (an activation)."""
        if tensor in self.acts:
            return self.acts[tensor]
        if tensor in self.consts or tensor in self.symbolic:
            self.fail(node, f"input {tensor!r} is a constant where kryptonref needs the "
                            "activation of the image")
        self.fail(node, f"input {tensor!r} is produced by no supported node")

    def const(self, node, tensor, what):
        if tensor in self.consts:
            return self.consts[tensor]
        self.fail(node, f"{what} ({tensor!r}) must be a constant (initializer or Constant "
                        "node), not computed from the image")

    def optional(self, node, i):
        return node.input[i] if len(node.input) > i and node.input[i] else None

    def rank(self, name):
        return len(self.shapes[name]) + 1

    def new_name(self, node, suffix=""):
        base = _sanitise(node.name) or f"{node.op_type}_{self.index}"
        base += suffix
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def emit(self, node, layer, inputs, params=None, out=None, suffix=""):
        """Add a kryptonref node for ``node`` (output ``out``, default its first output)."""
        name = self.new_name(node, suffix)
        try:
            shape = layer.output_shape([self.shapes[i] for i in inputs])
        except ValueError as err:
            self.fail(node, str(err))
        arity = layer.n_inputs
        if arity is not None and len(inputs) != arity:
            self.fail(node, f"{type(layer).__name__} takes {arity} input(s)")
        self.nodes[name] = [layer, tuple(inputs)]
        self.shapes[name] = tuple(int(d) for d in shape)
        if params:
            self.params[name] = params
        self.acts[node.output[0] if out is None else out] = name
        return name

    def alias(self, node, source):
        self.acts[node.output[0]] = source

    def unused(self, node, start=1):
        """Reject a node whose extra outputs (masks, indices, statistics) are read."""
        for out in node.output[start:]:
            if out and (out in self.consumers or out in self.outputs):
                self.fail(node, f"output {out!r} is used; kryptonref computes only the "
                                "main output of this operator in inference mode")

    # -- the pass -----------------------------------------------------------------------
    def run(self, dtype):
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
            handler = getattr(self, f"_op_{node.op_type}", None)
            if handler is None:
                raise ValueError(
                    f"from_onnx: unsupported ONNX operator {node.op_type!r} (node "
                    f"{self.label(node)}); kryptonref imports "
                    f"{', '.join(SUPPORTED_ONNX_OPS)}")
            handler(node, self.attrs(node))
        return self._finish(dtype)

    def _sorted_nodes(self):
        """The graph's nodes in a topological order (ONNX requires one; be lenient)."""
        nodes = list(self.graph.node)
        known = set(self.consts) | {self.input_tensor} | {""}
        order, pending = [], nodes
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

    def _finish(self, dtype):
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
        keep, stack = set(), [out]
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
    def _constant(self, node):
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

    def _fold(self, node):
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

    def _set_shape_value(self, tensor, value):
        value = np.asarray(value, dtype=object)
        if any(isinstance(v, str) for v in value.flat):
            self.symbolic[tensor] = value
        else:
            self.consts[tensor] = value.astype(np.int64)

    def _op_Shape(self, node, attrs):
        src = self.act(node, node.input[0])
        first = self.batch if self.batch is not None else _BATCH
        full = np.array([first] + list(self.shapes[src]), dtype=object)
        rank = len(full)
        start, end = attrs.get("start", 0), attrs.get("end", rank)
        start = max(0, min(rank, start + rank if start < 0 else start))
        end = max(0, min(rank, end + rank if end < 0 else end))
        self._set_shape_value(node.output[0], full[start:end])

    def _value(self, node, i):
        name = node.input[i]
        if name in self.symbolic:
            return self.symbolic[name]
        return np.asarray(self.const(node, name, f"input {i}"))

    def _symbolic_op(self, node):
        """Shape arithmetic on vectors holding the (symbolic) batch size."""
        op, attrs = node.op_type, self.attrs(node)
        data = self._value(node, 0)
        if op in ("Identity", "Cast"):
            result = data
        elif op == "Gather":
            idx = np.asarray(self.const(node, node.input[1], "indices")).astype(np.int64)
            result = np.take(data, idx, axis=int(attrs.get("axis", 0)))
        elif op in ("Unsqueeze", "Squeeze"):
            axes = attrs.get("axes")
            if axes is None and self.optional(node, 1):
                axes = self.const(node, node.input[1], "axes").tolist()
            if op == "Unsqueeze":
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
                self.fail(node, "only 1-D slices of shape vectors are supported")
            big = 2 ** 62
            start, end = (max(-big, min(big, int(v))) for v in (starts[0], ends[0]))
            step = 1 if steps is None else int(steps[0])
            result = data[slice(start, end, step)]
        else:
            self.fail(node, f"unsupported ONNX operator {op!r} on a shape that depends on "
                            "the dynamic batch size (supported: Shape, Gather, Unsqueeze, "
                            "Squeeze, Concat, Slice, Cast, Identity feeding a Reshape)")
        self._set_shape_value(node.output[0], result)

    # -- layers -------------------------------------------------------------------------
    def _spatial_input(self, node):
        src = self.act(node, node.input[0])
        if self.rank(src) != 4:
            self.fail(node, f"expects a 4-D (N, C, H, W) input, got shape "
                            f"(N, {', '.join(map(str, self.shapes[src]))})")
        return src

    def _geometry(self, node, attrs, src, kernel):
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
            padding = ((pads[0], pads[2]), (pads[1], pads[3]))
        elif auto == "VALID":
            padding = ((0, 0), (0, 0))
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            padding = []
            for size, k, s, d in zip(in_hw, kernel, strides, dilations):
                out = -(-size // s)
                total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
                small, big = total // 2, total - total // 2
                padding.append((small, big) if auto == "SAME_UPPER" else (big, small))
            padding = tuple(padding)
        else:
            self.fail(node, f"unknown auto_pad {auto!r}")
        return strides, dilations, padding

    def _op_Conv(self, node, attrs):
        src = self._spatial_input(node)
        weight = self.const(node, node.input[1], "the weight")
        if weight.ndim != 4:
            self.fail(node, f"only 2-D convolutions are supported (weight of shape "
                            f"{weight.shape})")
        kernel = list(weight.shape[2:])
        if "kernel_shape" in attrs and list(attrs["kernel_shape"]) != kernel:
            self.fail(node, f"kernel_shape {attrs['kernel_shape']} contradicts the weight "
                            f"shape {weight.shape}")
        strides, dilations, padding = self._geometry(node, attrs, src, kernel)
        groups = int(attrs.get("group", 1))
        bias_name = self.optional(node, 2)
        params = {"weight": weight}
        if bias_name:
            params["bias"] = self.const(node, bias_name, "the bias").reshape(-1)
        try:
            layer = L.Conv2d(weight.shape[1] * groups, weight.shape[0], tuple(kernel),
                             stride=tuple(strides), padding=padding, dilation=tuple(dilations),
                             groups=groups, bias=bias_name is not None)
        except (ValueError, TypeError) as err:
            self.fail(node, str(err))
        self.emit(node, layer, [src], params)

    def _pool(self, node, attrs, cls):
        src = self._spatial_input(node)
        kernel = list(attrs.get("kernel_shape", []))
        strides, dilations, padding = self._geometry(node, attrs, src, kernel)
        ceil = bool(attrs.get("ceil_mode", 0))
        try:
            if cls is L.MaxPool2d:
                if int(attrs.get("storage_order", 0)) not in (0, 1):
                    self.fail(node, "unknown storage_order")
                layer = L.MaxPool2d(tuple(kernel), tuple(strides), padding,
                                    dilation=tuple(dilations), ceil_mode=ceil)
            else:
                if any(d != 1 for d in dilations):
                    self.fail(node, f"AveragePool with dilations {dilations} is not supported")
                layer = L.AvgPool2d(tuple(kernel), tuple(strides), padding, ceil_mode=ceil,
                                    count_include_pad=bool(attrs.get("count_include_pad", 0)))
        except (ValueError, TypeError) as err:
            self.fail(node, str(err))
        self.unused(node)
        self.emit(node, layer, [src])

    def _op_MaxPool(self, node, attrs):
        self._pool(node, attrs, L.MaxPool2d)

    def _op_AveragePool(self, node, attrs):
        self._pool(node, attrs, L.AvgPool2d)

    def _op_GlobalAveragePool(self, node, attrs):
        self.emit(node, L.GlobalAvgPool2d(), [self._spatial_input(node)])

    def _op_ReduceMean(self, node, attrs):
        src = self._spatial_input(node)
        axes = attrs.get("axes")
        if axes is None and self.optional(node, 1):
            axes = self.const(node, node.input[1], "axes").tolist()
        if axes is None or sorted(a % 4 for a in axes) != [2, 3]:
            self.fail(node, f"only a mean over the spatial axes (2, 3) is supported, got axes "
                            f"{axes}")
        if int(attrs.get("keepdims", 1)):
            self.emit(node, L.GlobalAvgPool2d(), [src])
        else:
            pooled = self.emit(node, L.GlobalAvgPool2d(), [src], out=node.output[0] + "#pool")
            self.emit(node, L.Flatten(), [pooled], suffix="_flatten")

    def _op_Relu(self, node, attrs):
        src = self.act(node, node.input[0])
        self.emit(node, L.ReLU(), [src])

    def _op_Clip(self, node, attrs):
        src = self.act(node, node.input[0])
        if self.opset < 11:
            lo, hi = attrs.get("min", -math.inf), attrs.get("max", math.inf)
        else:
            lo = self.optional(node, 1)
            hi = self.optional(node, 2)
            lo = -math.inf if lo is None else self.const(node, lo, "the min bound")
            hi = math.inf if hi is None else self.const(node, hi, "the max bound")
        lo, hi = (float(np.asarray(v).reshape(-1)[0]) if np.size(v) == 1 else None
                  for v in (lo, hi))
        if lo == 0.0 and hi == 6.0:
            self.emit(node, L.ReLU6(), [src])
        elif lo == 0.0 and hi == math.inf:
            self.emit(node, L.ReLU(), [src])
        else:
            self.fail(node, f"Clip to [{lo}, {hi}] is not supported; kryptonref has ReLU6 "
                            "(Clip to [0, 6]) and ReLU (Clip to [0, inf))")

    def _op_BatchNormalization(self, node, attrs):
        src = self._spatial_input(node)
        if int(attrs.get("training_mode", 0)):
            self.fail(node, "training_mode=1 is not supported (inference only)")
        if int(attrs.get("spatial", 1)) != 1:
            self.fail(node, "spatial=0 is not supported")
        self.unused(node)
        names = ("weight", "bias", "running_mean", "running_var")
        params = {p: self.const(node, node.input[1 + i], p).reshape(-1)
                  for i, p in enumerate(names)}
        eps = _float32_attr(attrs.get("epsilon", 1e-5))
        try:
            layer = L.BatchNorm2d(int(params["weight"].shape[0]), eps=eps)
        except ValueError as err:
            self.fail(node, str(err))
        self.emit(node, layer, [src], params)

    def _op_Flatten(self, node, attrs):
        src = self.act(node, node.input[0])
        rank = self.rank(src)
        axis = int(attrs.get("axis", 1))
        axis = axis + rank if axis < 0 else axis
        if axis != 1:
            self.fail(node, f"only Flatten with axis 1 is supported, got axis {axis}")
        if rank == 2:
            self.alias(node, src)
        else:
            self.emit(node, L.Flatten(), [src])

    def _op_Reshape(self, node, attrs):
        src = self.act(node, node.input[0])
        shape_name = node.input[1]
        if shape_name in self.symbolic:
            target = list(self.symbolic[shape_name])
        else:
            target = [int(v) for v in np.asarray(
                self.const(node, shape_name, "the target shape")).reshape(-1)]
        features = int(np.prod(self.shapes[src]))
        dims = [self.batch if self.batch is not None else _BATCH] + list(self.shapes[src])
        if not int(attrs.get("allowzero", 0)):
            target = [dims[i] if (not isinstance(v, str) and v == 0 and i < len(dims)) else v
                      for i, v in enumerate(target)]
        ok = False
        if len(target) == 2:
            first, second = target
            batch_ok = first == _BATCH or (self.batch is not None and first == self.batch)
            if batch_ok and second in (-1, features):
                ok = True
            elif first == -1 and second == features:
                ok = True
        if not ok:
            shown = ["N" if v == _BATCH else int(v) for v in target]
            self.fail(node, f"Reshape of (N, {', '.join(map(str, self.shapes[src]))}) to "
                            f"{shown} is not supported; only flattening to (N, -1) is")
        if self.rank(src) == 2:
            self.alias(node, src)
        else:
            self.emit(node, L.Flatten(), [src])

    def _linear(self, node, src, weight, bias):
        if self.rank(src) != 2:
            self.fail(node, f"expects a 2-D (N, features) input, got shape "
                            f"(N, {', '.join(map(str, self.shapes[src]))}); flatten first")
        out_f, in_f = weight.shape
        params = {"weight": weight}
        if bias is not None:
            bias = np.asarray(bias)
            if bias.size == 1:
                bias = np.full(out_f, bias.reshape(-1)[0], dtype=bias.dtype)
            elif bias.shape not in ((out_f,), (1, out_f)):
                self.fail(node, f"bias of shape {bias.shape} does not broadcast as a per-"
                                f"output bias of {out_f} features")
            params["bias"] = bias.reshape(-1)
        self.emit(node, L.Linear(int(in_f), int(out_f), bias=bias is not None), [src], params)

    def _op_Gemm(self, node, attrs):
        src = self.act(node, node.input[0])
        if int(attrs.get("transA", 0)):
            self.fail(node, "transA=1 is not supported")
        b = np.asarray(self.const(node, node.input[1], "B (the weight)"))
        if b.ndim != 2:
            self.fail(node, f"B must be 2-D, got shape {b.shape}")
        weight = b if int(attrs.get("transB", 0)) else b.T
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        if alpha != 1.0:
            weight = weight.astype(np.float64) * alpha
        c_name = self.optional(node, 2)
        bias = None
        if c_name:
            bias = np.asarray(self.const(node, c_name, "C (the bias)"))
            if beta != 1.0:
                bias = bias.astype(np.float64) * beta
        self._linear(node, src, weight, bias)

    def _op_MatMul(self, node, attrs):
        src = self.act(node, node.input[0])
        b = np.asarray(self.const(node, node.input[1], "the right-hand matrix"))
        if b.ndim != 2:
            self.fail(node, f"only a 2-D constant right-hand matrix is supported, got shape "
                            f"{b.shape}")
        self._linear(node, src, b.T, None)

    def _op_Add(self, node, attrs):
        a, b = node.input[0], node.input[1]
        if a in self.acts and b in self.acts:
            self.emit(node, L.Add(), [self.acts[a], self.acts[b]])
            return
        tensor, const_name = (a, b) if a in self.acts else (b, a)
        src = self.act(node, tensor)
        value = np.asarray(self.const(node, const_name, "the constant addend"))
        if not np.any(value):
            self.alias(node, src)       # adding zeros
            return
        self._fold_bias(node, src, value)

    def _fold_bias(self, node, src, value):
        """Fold ``activation + constant`` into the bias of the Linear computing ``src``."""
        entry = self.nodes.get(src)
        why = None
        if entry is None or not isinstance(entry[0], L.Linear):
            why = "it does not follow a MatMul or Gemm"
        elif entry[0].bias:
            why = "the preceding Gemm already has a bias"
        else:
            aliases = {t for t, n in self.acts.items() if n == src}
            for t in aliases:
                if t in self.outputs:
                    why = f"the value before the addition ({t!r}) is a graph output"
                for user in self.consumers.get(t, []):
                    if user is not node and not (user.output and user.output[0] in aliases):
                        why = f"the value before the addition ({t!r}) is also read by " \
                              f"{user.name or user.op_type!r}"
        out_f = self.shapes.get(src, (0,))[0]
        if why is None and not (value.size == 1 or value.shape in ((out_f,), (1, out_f))):
            why = f"the constant of shape {value.shape} is not a per-feature bias"
        if why is not None:
            self.fail(node, "adding a constant to an activation is supported only as the "
                            f"bias of a preceding MatMul/Gemm; here {why}")
        layer = entry[0]
        bias = np.full(out_f, value.reshape(-1)[0]) if value.size == 1 else value.reshape(-1)
        entry[0] = L.Linear(layer.in_features, layer.out_features, bias=True)
        self.params[src]["bias"] = bias
        self.alias(node, src)

    def _op_Sum(self, node, attrs):
        srcs = [self.act(node, i) for i in node.input]
        if len(srcs) == 1:
            self.alias(node, srcs[0])
        else:
            self.emit(node, L.Add(), srcs)

    def _op_Concat(self, node, attrs):
        srcs = [self.act(node, i) for i in node.input]
        rank = self.rank(srcs[0])
        axis = int(attrs.get("axis", 1))
        if rank != 4 or axis % 4 != 1:
            self.fail(node, f"only channel concatenation of 4-D tensors is supported "
                            f"(axis 1), got axis {axis} of rank-{rank} tensors")
        if len(srcs) == 1:
            self.alias(node, srcs[0])
        else:
            self.emit(node, L.Concat(), srcs)

    def _op_Softmax(self, node, attrs):
        src = self.act(node, node.input[0])
        axis = int(attrs.get("axis", 1 if self.opset < 13 else -1))
        if self.rank(src) != 2 or axis not in (1, -1):
            self.fail(node, f"only Softmax over the features of a 2-D (N, features) tensor "
                            f"is supported, got axis {axis} of a rank-{self.rank(src)} tensor")
        self.emit(node, L.Softmax(), [src])

    def _op_Dropout(self, node, attrs):
        src = self.act(node, node.input[0])
        mode = self.optional(node, 2)
        if mode is not None and bool(np.asarray(self.const(node, mode, "training_mode"))):
            self.fail(node, "training_mode=True is not supported (inference only)")
        if self.opset < 7 and not int(attrs.get("is_test", 0)):
            self.fail(node, "Dropout in training mode (is_test=0) is not supported")
        self.unused(node)
        self.alias(node, src)

    def _op_Identity(self, node, attrs):
        self.alias(node, self.act(node, node.input[0]))

    def _op_Resize(self, node, attrs):
        """Nearest-neighbour upsampling by integer factors: exactly AdaptiveAvgPool2d."""
        src = self._spatial_input(node)
        c, h, w = self.shapes[src]
        if self.opset < 11:
            scales, sizes = self.const(node, node.input[1], "scales"), None
        else:
            s_name, z_name = self.optional(node, 2), self.optional(node, 3)
            scales = self.const(node, s_name, "scales") if s_name else None
            sizes = None
            if z_name in self.symbolic:     # sizes built from Shape(x): (N, C, oh, ow)
                sizes = self.symbolic[z_name]
            elif z_name:
                sizes = self.const(node, z_name, "sizes")
            if scales is not None and scales.size == 0:
                scales = None
        if attrs.get("mode", "nearest") != "nearest":
            self.fail(node, f"only mode='nearest' is supported, got {attrs['mode']!r}")
        if int(attrs.get("antialias", 0)):
            self.fail(node, "antialias is not supported")
        axes = attrs.get("axes")
        if (scales is None) == (sizes is None):
            self.fail(node, "needs exactly one of scales and sizes")
        if scales is not None:
            vec = list(np.asarray(scales, np.float64).reshape(-1))
        else:
            vec = [v if isinstance(v, str) else int(v) for v in np.asarray(sizes).reshape(-1)]
        if axes is not None:
            full = [1.0, 1.0, 1.0, 1.0] if scales is not None else [_BATCH, c, h, w]
            for a, v in zip(axes, vec):
                full[a % 4] = v
            vec = full
        if len(vec) != 4:
            self.fail(node, f"scales/sizes must have 4 values, got {list(vec)}")
        if scales is not None:
            if vec[0] != 1.0 or vec[1] != 1.0:
                self.fail(node, "only spatial resizing is supported")
            out_hw = [int(math.floor(size * f)) for size, f in zip((h, w), vec[2:])]
            factors = list(vec[2:])
        else:
            if vec[1] != c or not (vec[0] == _BATCH or vec[0] == self.batch):
                self.fail(node, f"only spatial resizing is supported (sizes {vec} must keep "
                                "the batch size and the channels; a constant batch size "
                                "needs an input with that fixed batch size)")
            if attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
                self.fail(node, "keep_aspect_ratio_policy other than 'stretch' is not "
                                "supported")
            out_hw = [int(v) for v in vec[2:]]
            factors = [o / i for o, i in zip(out_hw, (h, w))]
        ctm = attrs.get("coordinate_transformation_mode", "half_pixel")
        rounding = attrs.get("nearest_mode", "round_prefer_floor")
        for size, out, f in zip((h, w), out_hw, factors):
            if out % size or not _nearest_replicates(size, out, f, ctm, rounding):
                self.fail(node, f"only nearest-neighbour upsampling by an integer factor is "
                                f"supported, got {(h, w)} -> {tuple(out_hw)} with "
                                f"coordinate_transformation_mode={ctm!r}, "
                                f"nearest_mode={rounding!r}")
        self.emit(node, L.AdaptiveAvgPool2d(tuple(out_hw)), [src])


def _float32_attr(value):
    """A float32 attribute as the float64 it most likely was before export.

    ``1e-5`` is stored as ``9.99999974e-06``: the shortest decimal that rounds to the
    same float32 (``1e-05``) is returned. Values with a short binary mantissa (such as
    ``2 ** -17``) were exact and are returned unchanged.
    """
    exact = float(np.float32(value))
    mantissa, _ = math.frexp(exact)
    if (mantissa * 2 ** 12).is_integer():
        return exact
    return float(str(np.float32(value)))


def _nearest_replicates(size, out, scale, ctm, rounding):
    """Does ONNX nearest Resize map output index ``i`` to input ``i // (out // size)``?"""
    factor = out // size
    for i in range(out):
        if ctm == "asymmetric":
            x = i / scale
        elif ctm == "half_pixel":
            x = (i + 0.5) / scale - 0.5
        elif ctm == "pytorch_half_pixel":
            x = (i + 0.5) / scale - 0.5 if out > 1 else 0.0
        elif ctm == "align_corners":
            x = 0.0 if out == 1 else i * (size - 1) / (out - 1)
        elif ctm == "tf_half_pixel_for_nn":
            x = (i + 0.5) / scale
        else:
            return False
        if rounding == "floor":
            j = math.floor(x)
        elif rounding == "ceil":
            j = math.ceil(x)
        elif rounding == "round_prefer_floor":
            j = math.ceil(x - 0.5)
        elif rounding == "round_prefer_ceil":
            j = math.floor(x + 0.5)
        else:
            return False
        if min(max(j, 0), size - 1) != i // factor:
            return False
    return True


def from_onnx(model, dtype=np.float32, input_shape=None):
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
    onnx = _import_onnx()
    dtype = check_dtype(dtype)
    proto = _load_proto(onnx, model)
    return _Importer(onnx, proto, input_shape).run(dtype)
