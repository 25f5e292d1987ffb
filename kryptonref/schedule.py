"""The planner: which region of each node a batch of positions changes, and what it costs.

:func:`plan` turns a batch of occlusion positions into a :class:`Plan`: per node,
whether it is unchanged, changed in a region (its exact changed region per
position, the one region size the batch computes, each position's offset, the
read window of a conv or pool layer) or changed whole, and the MACs computing
it costs. It is the only planner: the engine (:mod:`kryptonref.engine`)
executes plans, and the cost simulator (:mod:`kryptonref.analysis.cost`) sums
the same plans, so the simulator's ``executed`` mode counts exactly what the
engine computes. Each node's rule comes from the layer registry
(:class:`kryptonref.layers.registry.Rule`): this module holds one planning
function per rule.

Regions are per position: ``exact = (y0, y1, x0, x1)``, four int64 arrays of
shape (P,), half-open, in the node's own coordinates. A rectangle empty on one
axis is stored empty on both.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple, cast

import numpy as np
import numpy.typing as npt

from .geometry import changed_output, fit_region, read_window, union
from .layers.base import broadcasts
from .layers.registry import Rule, entry

if TYPE_CHECKING:
    from typing import TypeAlias

    from .graph import Graph
    from .layers.base import Layer, Spatial

    #: A rectangle per position: ``(y0, y1, x0, x1)``, four int64 arrays (P,).
    _Region: TypeAlias = Tuple[npt.NDArray[np.int64], ...]

__all__ = ["spatial_region", "merge_region", "whole_region", "batch_region", "is_empty",
           "clamp_region", "plan", "Plan", "NodePlan", "UNCHANGED", "REGION", "WHOLE",
           "paper_macs", "executed_macs", "batch_order", "unpermute", "run_in_order"]


def is_empty(exact: _Region) -> npt.NDArray[np.bool_]:
    """Per position: does the rectangle hold no element?"""
    y0, y1, x0, x1 = exact
    return (y1 <= y0) | (x1 <= x0)


def _normalise(y0: npt.ArrayLike, y1: npt.ArrayLike, x0: npt.ArrayLike,
               x1: npt.ArrayLike) -> _Region:
    y0, y1, x0, x1 = (np.asarray(v, np.int64) for v in (y0, y1, x0, x1))
    empty = (y1 <= y0) | (x1 <= x0)
    return y0, np.where(empty, y0, y1), x0, np.where(empty, x0, x1)


def clamp_region(start: npt.NDArray[np.int64], stop: npt.NDArray[np.int64], out_size: int,
                 tau: float) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Projective-field threshold (SIGMOD 2019 eq. 21-27, ``docs/design.md``, Approximate inference).

    A region wider than ``round(tau * W_out)`` (at least 1) is cut to that
    width, centred: it loses ``(width - limit) // 2`` elements at the start and
    the rest at the end. ``tau = 1`` never cuts.
    """
    if tau >= 1.0:
        return start, stop
    limit = max(1, int(round(tau * out_size)))
    width = stop - start
    cut = np.maximum(width - limit, 0)
    new_start = start + cut // 2
    return new_start, np.where(width > limit, new_start + limit, stop)


def spatial_region(layer: Spatial, exact_in: _Region, out_shape: tuple[int, ...],
                   tau: float = 1.0) -> _Region:
    """Changed output region of a conv or pool layer for each position (eq. 1-4 generalised)."""
    bounds = []
    for dim, (lo, hi) in enumerate(((exact_in[0], exact_in[1]), (exact_in[2], exact_in[3]))):
        kernel, stride, pad, _, dilation, _ = layer.axis(dim)
        start, stop = changed_output(lo, hi, kernel, stride, pad, dilation, out_shape[1 + dim])
        bounds += list(clamp_region(np.asarray(start), np.asarray(stop), out_shape[1 + dim], tau))
    return _normalise(*bounds)


def merge_region(exacts: Sequence[_Region | None]) -> _Region:
    """Bounding box of the inputs' regions (SIGMOD 2019 eq. 20); ``None`` inputs are unchanged."""
    live = [e for e in exacts if e is not None]
    lo_y, hi_y = union([e[0] for e in live], [e[1] for e in live])
    lo_x, hi_x = union([e[2] for e in live], [e[3] for e in live])
    return _normalise(lo_y, hi_y, lo_x, hi_x)


def whole_region(shape: tuple[int, ...], n_positions: int) -> _Region:
    """The whole ``(C, H, W)`` feature map as every position's region."""
    zeros = np.zeros(n_positions, np.int64)
    return (zeros, np.full(n_positions, shape[1], np.int64),
            zeros, np.full(n_positions, shape[2], np.int64))


def batch_region(exact: _Region, out_hw: tuple[int, ...]
                 ) -> tuple[tuple[npt.NDArray[np.integer[Any]], npt.NDArray[np.integer[Any]]],
                        tuple[int, int]]:
    """One region size for a batch and each position's start (``docs/design.md``, Executing a plan).

    The size is the largest exact region of the batch on each axis; each
    position's region grows to it from its start and shifts inward at the
    border (:func:`geometry.fit_region`).

    Returns
    -------
    (starts_y, starts_x), (h, w)
    """
    y0, y1, x0, x1 = exact
    h, w = int(np.max(y1 - y0)), int(np.max(x1 - x0))
    return (fit_region(y0, y1, h, out_hw[0]), fit_region(x0, x1, w, out_hw[1])), (h, w)


#: A node no position of the batch changes: consumers read ``M``.
UNCHANGED = "unchanged"
#: A node computed in a region: one size ``(h, w)`` for the batch, an offset per position.
REGION = "region"
#: A node computed whole for every position of the batch (every output may change).
WHOLE = "whole"


@dataclass
class NodePlan:
    """What a batch computes of one node.

    Attributes
    ----------
    state : {"unchanged", "region", "whole"}
    changed : ndarray of bool (P,)
        Per position: does the position change the node at all?
    exact : tuple of four ndarray (P,), or None
        Feature maps only: each position's exact changed region (empty where the
        position changes nothing; the whole map for a position that changes a
        whole node, or the bounding box of a merge's inputs).
    y0, x0 : ndarray of int64 (P,), or None
        Where each position's computed region starts (0 for a whole node).
    h, w : int
        The computed region's size, the same for the batch (SIGMOD 2019
        appendix C: the largest exact region, shifted inward at the borders);
        the whole map for a whole node, ``(1, 1)`` for a vector.
    window : tuple or None
        A window layer's read window ``(ry0, rx0, rh, rw)``: per-position starts,
        one size.
    reads_input_as_is : bool
        The read window is exactly the input's computed region (a 1x1 stride-1
        convolution): the engine reads the input's data without gathering it.
    macs : int
        Multiply-accumulates of computing the node for the whole batch.
    frozen : tuple of int
        A merge's inputs read from ``M`` whatever they are (the gates the
        global-context approximation keeps at their unoccluded value).
    why_whole : str
        For a whole node: why every output may change here.
    """

    state: str
    changed: np.ndarray
    exact: Optional[Tuple[np.ndarray, ...]] = None
    y0: Optional[np.ndarray] = None
    x0: Optional[np.ndarray] = None
    h: int = 0
    w: int = 0
    window: Optional[Tuple[Any, ...]] = None
    reads_input_as_is: bool = False
    macs: int = 0
    frozen: Tuple[int, ...] = ()
    why_whole: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """``(h, w)`` of the computed region, ``(0, 0)`` when unchanged."""
        return (0, 0) if self.state == UNCHANGED else (self.h, self.w)


@dataclass
class Plan:
    """The plan of one batch: a :class:`NodePlan` per node (the input included).

    Attributes
    ----------
    positions : ndarray of int64 (P, 2)
    patch_hw : (int, int)
    tau : float
    nodes : dict
        ``name -> NodePlan`` in topological order.
    """

    positions: np.ndarray
    patch_hw: Tuple[int, int]
    tau: float
    nodes: Dict[str, NodePlan]
    freeze_context: bool = False

    @property
    def n_items(self) -> int:
        return len(self.positions)

    @property
    def macs(self) -> dict[str, int]:
        """``name -> MACs`` the batch performs per node."""
        return {name: p.macs for name, p in self.nodes.items()}


def _unchanged(n_items: int) -> NodePlan:
    return NodePlan(UNCHANGED, np.zeros(n_items, bool))


@dataclass(frozen=True)
class _Options:
    tau: float = 1.0
    freeze_context: bool = False


def _whole(shape: tuple[int, ...], changed: npt.NDArray[np.bool_], exact: _Region | None = None,
           why: str = "") -> NodePlan:
    """A node computed whole; a feature map's exact region is the whole map where changed,
    unless a merge gives the bounding box of its inputs' regions (``exact``)."""
    n_items = len(changed)
    zeros = np.zeros(n_items, np.int64)
    if len(shape) != 3:
        return NodePlan(WHOLE, changed, None, zeros, zeros, 1, 1, why_whole=why)
    if exact is None:
        exact = _whole_where(shape, changed)
    return NodePlan(WHOLE, changed, exact, zeros, zeros, shape[1], shape[2], why_whole=why)


def _whole_where(shape: tuple[int, ...], changed: npt.NDArray[np.bool_]) -> _Region:
    """The whole ``(C, H, W)`` map as the region of the positions that changed it."""
    return tuple(np.where(changed, v, 0) for v in whole_region(shape, len(changed)))


def _plan_window(graph: Graph, name: str, layer: Spatial, ins: list[NodePlan], n_items: int,
                 opts: _Options) -> NodePlan:
    """Conv and pool layers: eq. (1)-(8) generalised, the tau clamp, one size per batch."""
    src = ins[0]
    if src.state == UNCHANGED:
        return _unchanged(n_items)
    out_shape = graph.shapes[name]
    # (src changed: its exact region and offsets are set)
    exact = spatial_region(layer, cast("_Region", src.exact), out_shape, opts.tau)
    empty = is_empty(exact)
    if np.all(empty):
        return _unchanged(n_items)
    (y0, x0), size = batch_region(exact, out_shape[1:])
    windows = []
    for dim, start in enumerate((y0, x0)):
        kernel, stride, pad, _, dilation, _ = layer.axis(dim)
        r0, r1 = read_window(start, start + size[dim], kernel, stride, pad, dilation)
        windows.append((r0, int(r1[0] - r0[0])))
    (ry0, rh), (rx0, rw) = windows
    as_is = ((rh, rw) == (src.h, src.w)
             and np.array_equal(ry0, cast("npt.NDArray[np.int64]", src.y0))
             and np.array_equal(rx0, cast("npt.NDArray[np.int64]", src.x0)))
    return NodePlan(REGION, ~empty, exact, y0, x0, size[0], size[1], (ry0, rx0, rh, rw), as_is)


def _plan_positionwise(graph: Graph, name: str, layer: Layer, ins: list[NodePlan], n_items: int,
                       opts: _Options) -> NodePlan:
    """The input's plan: the region passes through."""
    src = ins[0]
    if src.state == WHOLE:
        return _whole(graph.shapes[name], src.changed, src.exact if len(graph.shapes[name]) == 3
                      else None, src.why_whole)
    return NodePlan(src.state, src.changed, src.exact, src.y0, src.x0, src.h, src.w)


def _plan_merge(graph: Graph, name: str, layer: Layer, ins: list[NodePlan], n_items: int,
                opts: _Options) -> NodePlan:
    """Bounding box of the inputs' regions (SIGMOD 2019 eq. 20); whole if an input is, or
    if a changed input is a gate broadcast over the map (squeeze-excitation: the product
    changes everywhere). With ``freeze_context`` a gate is read unchanged from ``M``."""
    shape = graph.shapes[name]
    gates = [broadcasts(graph.shapes[i], shape) for i in graph.nodes[name].inputs]
    frozen = tuple(k for k, gate in enumerate(gates) if gate and opts.freeze_context)
    live = [(p, gate) for k, (p, gate) in enumerate(zip(ins, gates))
            if p.state != UNCHANGED and k not in frozen]
    if not live:
        return NodePlan(UNCHANGED, np.zeros(n_items, bool), frozen=frozen)
    changed = np.any([p.changed for p, _ in live], axis=0)
    exact = None
    if len(shape) == 3 and all(p.exact is not None for p, _ in live):
        exact = merge_region([_whole_where(shape, p.changed) if gate else p.exact
                              for p, gate in live])
    whole = None
    if any(gate for _, gate in live):
        whole = _whole(shape, changed, exact, f"{type(layer).__name__} multiplies by a gate "
                       "computed from the whole map (squeeze-excitation): any change reaches "
                       "the gate, and the gate every output")
    elif any(p.state == WHOLE for p, _ in live):
        whole = _whole(shape, changed, exact,
                       next(p.why_whole for p, _ in live if p.state == WHOLE))
    if whole is not None:
        whole.frozen = frozen
        return whole
    (y0, x0), (h, w) = batch_region(cast("_Region", exact), shape[1:])   # a map in a region
    return NodePlan(REGION, changed, exact, y0, x0, h, w, frozen=frozen)


def _plan_whole(graph: Graph, name: str, layer: Layer, ins: list[NodePlan], n_items: int,
                opts: _Options) -> NodePlan:
    """Every output may change: whole for every position as soon as one changed an input."""
    live = [p for p in ins if p.state != UNCHANGED]
    if not live:
        return _unchanged(n_items)
    return _whole(graph.shapes[name], np.any([p.changed for p in live], axis=0),
                  why=f"{type(layer).__name__}: every output reads the whole input")


#: The planner of each rule (a WINDOW rule's layer is a Spatial one).
_PLANNERS: dict[Rule, Callable[..., NodePlan]] = {
    Rule.WINDOW: _plan_window, Rule.POSITIONWISE: _plan_positionwise,
    Rule.MERGE: _plan_merge, Rule.WHOLE: _plan_whole}


def _macs(graph: Graph, name: str, layer: Layer, node_plan: NodePlan) -> int:
    """MACs of computing the node's region (or whole tensor) for every position of the batch."""
    if node_plan.state == UNCHANGED:
        return 0
    record = entry(layer)
    shape = graph.shapes[name]
    in_shapes = [graph.shapes[i] for i in graph.nodes[name].inputs]
    if node_plan.state == REGION and len(shape) == 3:
        shape = (shape[0], node_plan.h, node_plan.w)
    return int(len(node_plan.changed)) * int(record.macs(layer, in_shapes, shape))


def plan(graph: Graph, positions: npt.ArrayLike, patch_hw: tuple[int, int], tau: float = 1.0,
         freeze_context: bool = False, keep: Sequence[str] = ()) -> Plan:
    """The :class:`Plan` of one batch of positions (SIGMOD 2019 eq. 1-8, 20, 21-27).

    Node by node in topological order, each node's rule (from the layer
    registry) maps its inputs' plans to its own, vectorised over the positions.

    Parameters
    ----------
    graph : Graph
    positions : ndarray of int64, shape (P, 2)
        Top-left ``(y, x)`` of each patch (validated by the caller).
    patch_hw : (int, int)
    tau : float in (0, 1]
        Projective-field threshold (:func:`clamp_region`); 1 is exact.
    freeze_context : bool
        The global-context approximation (not in the paper): a gate broadcast over a
        map by a merge (squeeze-excitation) keeps its value on the unoccluded image,
        so regions stay local through the block; the changed nodes no computed node
        reads (those that only fed such gates, or whose change dies out before the
        output) are not computed.
    keep : sequence of str
        With ``freeze_context``, nodes to compute even if no other node reads them (the
        nodes whose values the caller returns).

    Returns
    -------
    Plan
    """
    opts = _Options(float(tau), bool(freeze_context))
    positions = np.asarray(positions, np.int64)
    n_items = len(positions)
    ys, xs = positions[:, 0].copy(), positions[:, 1].copy()
    exact = (ys, ys + patch_hw[0], xs, xs + patch_hw[1])
    nodes = {graph.input_name: NodePlan(REGION, np.ones(n_items, bool), exact, ys, xs,
                                        patch_hw[0], patch_hw[1])}
    for name in graph.order:
        node = graph.nodes[name]
        planner = _PLANNERS[entry(node.layer).rule]
        nodes[name] = planner(graph, name, node.layer, [nodes[i] for i in node.inputs], n_items,
                              opts)
    if opts.freeze_context:
        _skip_unread(graph, nodes, n_items, keep)
    for name in graph.order:
        nodes[name].macs = _macs(graph, name, graph.nodes[name].layer, nodes[name])
    return Plan(positions, cast("tuple[int, int]", tuple(patch_hw)), opts.tau, nodes,
                opts.freeze_context)


def _skip_unread(graph: Graph, nodes: dict[str, NodePlan], n_items: int,
                 keep: Sequence[str] = ()) -> None:
    """Mark unchanged the changed nodes whose data no computed node reads (the branches
    computing frozen gates, changes that die out before the output) and that are not in
    ``keep``: nothing needs them."""
    read = {graph.output, *keep}
    for name in reversed(graph.order):
        node_plan = nodes[name]
        if name not in read:
            nodes[name] = _unchanged(n_items)
            continue
        if node_plan.state != UNCHANGED:
            read.update(src for k, src in enumerate(graph.nodes[name].inputs)
                        if k not in node_plan.frozen)


def executed_macs(graph: Graph, batch_plan: Plan) -> dict[str, npt.NDArray[np.int64]]:
    """Per node, each position's share of the batch's MACs (``name -> (P,) int64``)."""
    n_items = batch_plan.n_items
    return {name: np.full(n_items, batch_plan.nodes[name].macs // max(n_items, 1), np.int64)
            for name in graph.order}


def paper_macs(graph: Graph, batch_plan: Plan) -> dict[str, npt.NDArray[np.int64]]:
    """Per node, each position's MACs with its own exact regions (``name -> (P,) int64``).

    What Algorithm 1 counts: a window layer computes each position's exact
    changed region; a whole-tensor layer with MACs (fully-connected) is counted
    in full for every position, changed or not.
    """
    n_items = batch_plan.n_items
    out: dict[str, npt.NDArray[np.int64]] = {}
    for name in graph.order:
        node = graph.nodes[name]
        record = entry(node.layer)
        node_plan = batch_plan.nodes[name]
        shape = graph.shapes[name]
        in_shapes = [graph.shapes[i] for i in node.inputs]
        if record.rule is Rule.WHOLE:
            out[name] = np.full(n_items, int(record.macs(node.layer, in_shapes, shape)), np.int64)
        elif node_plan.state == UNCHANGED or node_plan.exact is None:
            out[name] = np.full(n_items, int(record.macs(node.layer, in_shapes, shape))
                                if node_plan.state == WHOLE else 0, np.int64)
        else:
            per_output = int(record.macs(node.layer, in_shapes, (shape[0], 1, 1)))
            y0, y1, x0, x1 = node_plan.exact
            out[name] = per_output * (y1 - y0) * (x1 - x0)
    return out


def batch_order(graph: Graph, positions: npt.ArrayLike, patch_hw: tuple[int, int],
                tau: float = 1.0, freeze_context: bool = False) -> npt.NDArray[np.int64]:
    """The order in which to batch the positions: equal regions next to each other.

    A batch computes, per node, one region size: the largest of its positions'
    exact regions on each axis (:func:`batch_region`); every position whose
    region is smaller costs the difference. Row-major order mixes positions of
    different alignment to the pooling grids and to the borders. Geometry,
    clamping and merges all work per axis, so on a stride grid a position's
    region heights depend (almost: an empty region is stored empty on both axes)
    only on its ``y`` and its widths only on its ``x``. Each position gets a *y-class* (its region heights over all
    nodes) and an *x-class* (its widths), each class ranked by its total size
    so that neighbouring ranks have similar regions. The order follows a
    Hilbert curve through the (y-class, x-class) grid, then the original
    index: positions of equal classes are consecutive (they batch without
    waste), and a batch that straddles classes takes a compact block of
    similar ones. (On the zoo models this beats sorting by y-class then
    x-class, and a serpentine or Z-order through the grid.)

    Parameters
    ----------
    graph : Graph
    positions : ndarray of int64, shape (P, 2)
        Top-left ``(y, x)`` of each patch: any positions, not only a grid.
    patch_hw : (int, int)
    tau : float in (0, 1]
        Projective-field threshold; 1 is exact.

    Returns
    -------
    ndarray of int64, shape (P,)
        A permutation: batch ``positions[order]`` in consecutive batches.
    """
    positions = np.asarray(positions, np.int64)
    n_pos = len(positions)
    heights, widths = [np.full(n_pos, patch_hw[0])], [np.full(n_pos, patch_hw[1])]
    whole_batch = plan(graph, positions, patch_hw, tau, freeze_context)
    for name in graph.order:
        node_plan = whole_batch.nodes[name]
        if node_plan.state != UNCHANGED and node_plan.exact is not None:
            exact = node_plan.exact
            heights.append(exact[1] - exact[0])
            widths.append(exact[3] - exact[2])
    y_class, x_class = (_size_class(np.stack(sizes, axis=1)) for sizes in (heights, widths))
    return np.lexsort((np.arange(n_pos), _hilbert_index(y_class, x_class))).astype(np.int64)


def _size_class(sizes: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Per row of ``sizes`` (P, L): the rank of its distinct row, ordered by its sum."""
    sizes = np.ascontiguousarray(sizes, np.int64)
    # One opaque key per row: much faster than np.unique(sizes, axis=0) (docs/design.md).
    keys = sizes.view(np.dtype((np.void, sizes.itemsize * sizes.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(sizes[first].sum(axis=1), kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def _hilbert_index(y: npt.NDArray[np.int64], x: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Each cell's index along a Hilbert curve through the grid of cells ``(y, x) >= 0``.

    The curve steps from each cell to a neighbouring one, so any stretch of it
    covers a compact block of the grid. The classic bit-by-bit ``xy2d``
    algorithm, on a power-of-two square holding every cell.
    """
    side = 1
    while side <= max(int(y.max()), int(x.max())):
        side *= 2
    index = np.zeros(len(y), np.int64)
    half = side // 2
    while half:
        ry, rx = (y & half) > 0, (x & half) > 0
        index += half * half * ((3 * rx) ^ ry)
        flip = rx & ~ry            # turn the quadrant so the next bits read as the base curve
        x, y = np.where(flip, side - 1 - x, x), np.where(flip, side - 1 - y, y)
        x, y = np.where(ry, x, y), np.where(ry, y, x)
        half //= 2
    return index


def unpermute(values: npt.NDArray[Any], order: npt.NDArray[np.int64]) -> npt.NDArray[Any]:
    """Rows computed for ``positions[order]``, back in the order of ``positions``."""
    out = np.empty_like(values)
    out[order] = values
    return out


def run_in_order(order: npt.NDArray[np.int64], batch_size: int,
                 compute: Callable[[npt.NDArray[np.int64]], dict[str, npt.NDArray[Any]]]
                 ) -> dict[str, npt.NDArray[Any]]:
    """Compute consecutive batches of ``order`` and put each row back in its place.

    Parameters
    ----------
    order : ndarray of int64 (P,)
        Indices of the positions in the order to batch them (:func:`batch_order`).
    batch_size : int
    compute : callable
        ``indices -> {name: ndarray (len(indices), ...)}`` for one batch.

    Returns
    -------
    dict
        ``name -> ndarray (P, ...)``, row ``i`` computed for position ``i``; written
        batch by batch, with no second copy of the results.
    """
    results: dict[str, npt.NDArray[Any]] = {}
    for first in range(0, len(order), batch_size):
        indices = order[first:first + batch_size]
        for name, values in compute(indices).items():
            if name not in results:
                results[name] = np.empty((len(order),) + values.shape[1:], values.dtype)
            results[name][indices] = values
    return results
