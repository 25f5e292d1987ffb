"""ONNX export (optional extra: ``pip install 'kryptonref[onnx]'``).

:func:`to_onnx` writes any kryptonref model as an ONNX model with a dynamic
batch dimension. Each layer type writes its own ONNX node(s) through its
registry record's ``onnx_export`` (:mod:`kryptonref.layers.registry`), given an
:class:`ExportContext`; the ``onnx`` package is imported only inside
:func:`to_onnx`, so ``import kryptonref`` works without it.

Every layer spec maps to ONNX operators of opset 11 or newer (17 by default):
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

import contextlib
import os
import re
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from ..layers.registry import entry
from ..model import Model

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto

    from ..graph import Graph
    from ..layers import TensorOp

__all__ = ["to_onnx", "ExportContext", "MIN_EXPORT_OPSET", "import_onnx", "unique_name"]

_INSTALL_HINT = "pip install 'kryptonref[onnx]'"

#: Weights above this many bytes go to a file beside the ``.onnx`` (protobuf caps a message
#: at 2 GB).
EXTERNAL_DATA_BYTES = 1_800_000_000
#: Lowest opset :func:`to_onnx` writes (ceil_mode, dilations and Clip inputs exist).
MIN_EXPORT_OPSET = 11

#: Symbolic batch size of the exported input and output.
BATCH = "N"


def import_onnx() -> Any:
    """The ``onnx`` module, or an ImportError naming the extra to install."""
    try:
        import onnx
        import onnx.helper  # noqa: F401
        import onnx.numpy_helper  # noqa: F401
    except ImportError as err:  # pragma: no cover - exercised without onnx only
        raise ImportError("kryptonref's ONNX import/export needs the 'onnx' package; "
                          f"install the extra with: {_INSTALL_HINT}") from err
    return onnx


def unique_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base_2``, ``base_3``, ... : the first not in ``taken`` (then added to it)."""
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def _ancestors(graph: Graph) -> set[str]:
    """Names of the nodes the graph output depends on (the output included)."""
    keep, stack = set(), [graph.output]
    while stack:
        name = stack.pop()
        if name in keep or name == graph.input_name:
            continue
        keep.add(name)
        stack.extend(graph.nodes[name].inputs)
    return keep


class ExportContext:
    """What a layer type's ``onnx_export(ctx, name, layer, params, inputs)`` writes through.

    Attributes
    ----------
    opset : int
        The opset of the default domain being written.
    """

    def __init__(self, helper: Any, graph: Graph, dtype: np.dtype[Any], opset: int) -> None:
        self._helper, self._graph, self._dtype, self.opset = helper, graph, dtype, opset
        self._used = set(graph.shapes)
        self.nodes: list[NodeProto] = []
        self.initializers: list[tuple[str, npt.NDArray[Any]]] = []
        #: Set by a layer whose nodes hold the batch size 1 (a TensorOp's reshapes): the
        #: model is written with a batch of one instead of a dynamic one.
        self.fixed_batch = False

    def fresh(self, name: str) -> str:
        """A tensor name not used yet, ``name`` or ``name_2``, ``name_3``, ..."""
        return unique_name(name, self._used)

    def init(self, name: str, value: npt.ArrayLike, as_type: npt.DTypeLike | None = None) -> str:
        """Add an initializer (in the model's dtype unless ``as_type``); returns its name."""
        name = self.fresh(name)
        # (np.asarray, not np.ascontiguousarray: that makes a 0-d index such as ViT's
        # Gather 0 one-dimensional, and the gathered tensor one rank too high)
        value = np.asarray(value, dtype=self._dtype if as_type is None else as_type, order="C")
        self.initializers.append((name, value))
        return name

    def node(self, op_type: str, inputs: Iterable[str], output: str, name: str | None = None,
             **attributes: Any) -> None:
        """Add a node of the default domain computing tensor ``output``."""
        self.nodes.append(self._helper.make_node(op_type, list(inputs), [output],
                                                 name=output if name is None else name,
                                                 **attributes))

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of a kryptonref node's value (batch axis excluded)."""
        return self._graph.shapes[name]

    @staticmethod
    def pads(padding: tuple[tuple[int, int], tuple[int, int]]) -> list[int]:
        """kryptonref ``((top, bottom), (left, right))`` -> ONNX ``[top, left, bottom, right]``."""
        (top, bottom), (left, right) = padding
        return [int(top), int(left), int(bottom), int(right)]


def to_onnx(model: Model, path: str | os.PathLike[str] | None = None,
            opset: int = 17) -> ModelProto:
    """Write a kryptonref model as an ONNX model.

    Parameters
    ----------
    model : Model
        Any kryptonref model (float32 or float64).
    path : str or os.PathLike, optional
        Where to write the ``.onnx`` file; ``None`` only returns the model.
        The file is replaced atomically: an interrupt or a full disk leaves the
        previous file as it was. Models above 1.8 GB (:data:`EXTERNAL_DATA_BYTES`) are
        written with their weights in a new file beside it, ``<path>.<random>.data``,
        before the ``.onnx`` that names it replaces the previous one; the previous
        model's weights file is then removed.
    opset : int
        ONNX opset of the default domain, ``>= 11``.

    Returns
    -------
    onnx.ModelProto
        The input is named after the graph's input (shape ``("N", C, H, W)``, a
        dynamic batch; a batch of 1 for a model holding a :class:`~kryptonref.TensorOp`,
        whose operators were read at batch size 1), every value after the node that
        computes it, the weights ``"<node>.<param>"``; the single output is the graph
        output.

    Raises
    ------
    ImportError
        Without the ``onnx`` package (``pip install 'kryptonref[onnx]'``).
    ValueError
        For an ``AdaptiveAvgPool2d`` with uneven windows, or an unsupported opset.
    """
    onnx = import_onnx()
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
    ctx = ExportContext(helper, graph, dtype, opset)
    for name in graph.order:
        if name in keep:
            node = graph.nodes[name]
            entry(node.layer).onnx_export(ctx, name, node.layer, model.params.get(name, {}),
                                          list(node.inputs))

    out = graph.output
    batch: int | str = 1 if ctx.fixed_batch else BATCH
    inputs = [helper.make_tensor_value_info(graph.input_name, elem,
                                            [batch] + list(graph.input_shape))]
    out_dims: list[int | str] = list(graph.shapes[out])
    if getattr(graph.nodes[out].layer, "batched", None) is not None \
            and cast("TensorOp", graph.nodes[out].layer).op_type != "Unbatch":
        out_dims = out_dims[1:]      # a TensorOp's shape holds the batch axis already
    outputs = [helper.make_tensor_value_info(out, elem, [batch] + out_dims)]
    onnx_graph = helper.make_graph(ctx.nodes, "kryptonref", inputs, outputs)
    opset_id = helper.make_opsetid("", opset)
    from .. import __version__
    proto = helper.make_model(onnx_graph, opset_imports=[opset_id], producer_name="kryptonref",
                              producer_version=__version__)
    # Weights go straight into the model (make_graph would copy every tensor once more).
    for name, value in ctx.initializers:
        tensor = proto.graph.initializer.add()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(value.dtype)
        tensor.dims.extend(value.shape)
        tensor.raw_data = value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes()
    # The lowest IR version that carries this opset: readable by the most runtimes.
    proto.ir_version = helper.find_min_ir_version_for([opset_id])
    if path is not None:
        path = os.fspath(path)
        if sum(value.nbytes for _, value in ctx.initializers) > EXTERNAL_DATA_BYTES:
            _save_with_external_data(onnx, proto, path)
        else:   # whole or not at all: an interrupt keeps the previous file
            from ..files import atomic_write
            atomic_write(path, lambda tmp: onnx.save_model(proto, tmp))
    return proto


def _save_with_external_data(onnx: Any, proto: ModelProto, path: str) -> None:
    """Write ``path`` with its weights in a new file beside it, whole or not at all.

    The weights go to ``<name>.<random>.data``, a name no earlier file has, and only then
    does the ``.onnx`` file, which names it, replace the previous one (atomically,
    :func:`kryptonref.files.atomic_write`): an interrupt or a full disk leaves the previous
    pair as it was. The previous model's weights file is then removed if kryptonref
    wrote it (named ``<name>.data`` or ``<name>.<random>.data``); ``proto`` gets its
    weights back (``save_model`` moves them out).
    """
    from onnx.external_data_helper import load_external_data_for_model

    from ..files import atomic_write, destination
    target = destination(path)
    folder, name = os.path.split(target)
    previous = _external_locations(onnx, target)
    data_name = f"{name}.{secrets.token_hex(6)}.data"
    data_path = os.path.join(folder, data_name)

    def write(tmp: str) -> None:
        onnx.save_model(proto, tmp, save_as_external_data=True, location=data_name)
        with open(data_path, "rb") as written:
            os.fsync(written.fileno())
    try:
        atomic_write(target, write)
    except BaseException:
        if os.path.exists(data_path):
            os.remove(data_path)
        raise
    load_external_data_for_model(proto, folder)
    for location in previous - {data_name}:
        ours = re.fullmatch(re.escape(name) + r"(\.[0-9a-f]{12})?\.data", location)
        if ours:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, location))


def _external_locations(onnx: Any, path: str) -> set[str]:
    """The external data files an existing ONNX file at ``path`` names (none if it is
    missing or not an ONNX file)."""
    if not os.path.isfile(path):
        return set()
    try:
        previous = onnx.load_model(path, load_external_data=False)
    except Exception:   # not an ONNX file: nothing of ours to remove
        return set()
    return {entry.value for tensor in previous.graph.initializer
            for entry in tensor.external_data if entry.key == "location"}
