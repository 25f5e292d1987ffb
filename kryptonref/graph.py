"""The model IR: a DAG of named nodes, each a typed layer spec.

Architectures are described once, as a :class:`Graph`; the engine, the cost
simulator, the zoo and the ONNX import all read the same graph.

Examples
--------
>>> import kryptonref as kr
>>> g = kr.Graph((3, 32, 32))
>>> _ = g.add(kr.Conv2d(3, 8, 3, padding=1), name="conv1")
>>> _ = g.add(kr.ReLU(), name="relu1")
>>> _ = g.add(kr.Add(), inputs=["relu1", "conv1"], name="res")
>>> g.shapes["res"]
(8, 32, 32)
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterable, Sequence

from .layers.base import Layer
from .layers.registry import entry

__all__ = ["Graph", "Node"]


@dataclass(frozen=True)
class Node:
    """One node of the graph: a name, a layer spec and the names of its inputs."""

    name: str
    layer: Layer
    inputs: tuple[str, ...]


class Graph:
    """A DAG of named layer nodes fed by one image input.

    Parameters
    ----------
    input_shape : tuple of int
        ``(C, H, W)`` of one input image (no batch axis).
    input_name : str
        Name of the input node, ``"input"`` by default.

    Attributes
    ----------
    nodes : dict
        ``name -> Node`` for every layer node (the input is not a node).
    order : list of str
        Layer node names in topological order.
    shapes : dict
        ``name -> shape`` for the input and every node (batch axis excluded).
    output : str
        Name of the output node (the last one added unless set).
    """

    def __init__(self, input_shape: Sequence[int], input_name: str = "input") -> None:
        shape = tuple(int(d) for d in input_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape!r}")
        self.input_name = str(input_name)
        self.input_shape = shape
        self.nodes: dict[str, Node] = {}
        self.order: list[str] = []
        self.shapes: dict[str, tuple[int, ...]] = {self.input_name: shape}
        self._output: str | None = None

    # -- building -------------------------------------------------------------------
    def add(self, layer: Layer, inputs: Sequence[str] | str | None = None,
            name: str | None = None) -> str:
        """Append a node and return its name.

        Parameters
        ----------
        layer : Layer
            The layer spec.
        inputs : str or sequence of str, optional
            Names of the input nodes; by default the last node added (or the input).
        name : str, optional
            Node name; by default ``"<layertype>_<n>"``.

        Raises
        ------
        ValueError
            On a duplicate name, an unknown input, a wrong number of inputs or
            input shapes the layer cannot take.
        """
        if not isinstance(layer, Layer):
            raise TypeError(f"layer must be a kryptonref layer spec, got {type(layer).__name__}")
        entry(layer)  # a registered layer type (TypeError otherwise)
        if inputs is None:
            inputs = [self.order[-1] if self.order else self.input_name]
        elif isinstance(inputs, str):
            inputs = [inputs]
        inputs = tuple(str(i) for i in inputs)
        if name is None:
            name = f"{type(layer).__name__.lower()}_{len(self.order)}"
        name = str(name)
        if name in self.shapes:
            raise ValueError(f"duplicate node name {name!r}")
        for src in inputs:
            if src not in self.shapes:
                raise ValueError(f"node {name!r}: unknown input {src!r} (dangling edge)")
        self._check_arity(name, layer, inputs)
        try:
            shape = layer.output_shape([self.shapes[i] for i in inputs])
        except ValueError as err:
            raise ValueError(f"node {name!r}: {err}") from None
        self.nodes[name] = Node(name, layer, inputs)
        self.order.append(name)
        self.shapes[name] = tuple(int(d) for d in shape)
        return name

    @staticmethod
    def _check_arity(name: str, layer: Layer, inputs: tuple[str, ...]) -> None:
        want = layer.n_inputs
        if want is None and len(inputs) < 2:
            raise ValueError(f"node {name!r}: {type(layer).__name__} needs at least 2 inputs")
        if want is not None and len(inputs) != want:
            raise ValueError(f"node {name!r}: {type(layer).__name__} takes {want} input(s), "
                             f"got {len(inputs)}")

    @classmethod
    def from_nodes(cls, input_shape: Sequence[int],
                   nodes: Iterable[tuple[str, Layer, str | Sequence[str]]],
                   input_name: str = "input", output: str | None = None) -> Graph:
        """Build a graph from ``(name, layer, inputs)`` triples in any order.

        The nodes are sorted topologically; a cycle or an input naming no node
        raises ``ValueError`` naming the nodes involved.
        """
        table: dict[str, tuple[Layer, tuple[str, ...]]] = {}
        for name, layer, inputs in nodes:
            inputs = (inputs,) if isinstance(inputs, str) else tuple(inputs)
            if name in table or name == input_name:
                raise ValueError(f"duplicate node name {name!r}")
            table[name] = (layer, inputs)
        for name, (_, inputs) in table.items():
            for src in inputs:
                if src != input_name and src not in table:
                    raise ValueError(f"node {name!r}: unknown input {src!r} (dangling edge)")
        graph = cls(input_shape, input_name)
        for name in _topological_order(table, input_name):
            layer, inputs = table[name]
            graph.add(layer, inputs, name)
        if output is not None:
            graph.output = output
        return graph

    # -- queries ----------------------------------------------------------------------
    @property
    def output(self) -> str:
        if self._output is not None:
            return self._output
        if not self.order:
            raise ValueError("the graph has no layers")
        return self.order[-1]

    @output.setter
    def output(self, name: str) -> None:
        if name not in self.nodes:
            raise ValueError(f"output {name!r} is not a node of the graph")
        self._output = name

    def consumers(self) -> dict[str, list[str]]:
        """Mapping ``name -> list of nodes reading it``."""
        users: dict[str, list[str]] = {name: [] for name in self.shapes}
        for node in self.nodes.values():
            for src in node.inputs:
                users[src].append(node.name)
        return users

    def macs(self) -> dict[str, int]:
        """Full-inference MACs per node for one image (conv and dense layers)."""
        return {name: int(entry(node.layer).macs(node.layer, [self.shapes[i] for i in node.inputs],
                                                 self.shapes[name]))
                for name, node in self.nodes.items()}

    def __len__(self) -> int:
        return len(self.order)

    def __repr__(self) -> str:
        lines = [f"Graph(input {self.input_name!r} {self.input_shape})"]
        for name in self.order:
            node = self.nodes[name]
            lines.append(f"  {name}: {node.layer} <- {', '.join(node.inputs)} -> {self.shapes[name]}")
        return "\n".join(lines)


def _topological_order(table: dict[str, tuple[Layer, tuple[str, ...]]],
                       input_name: str) -> list[str]:
    """Kahn's algorithm over ``name -> (layer, inputs)``; raises on a cycle."""
    pending = {name: {src for src in inputs if src != input_name}
               for name, (_, inputs) in table.items()}
    order: list[str] = []
    ready = [name for name in table if not pending[name]]
    while ready:
        name = ready.pop(0)
        order.append(name)
        for other, deps in pending.items():
            if name in deps:
                deps.discard(name)
                if not deps and other not in order and other not in ready:
                    ready.append(other)
    if len(order) != len(table):
        stuck = sorted(set(table) - set(order))
        raise ValueError(f"the graph has a cycle through nodes {stuck}")
    return order
