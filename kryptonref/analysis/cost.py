"""The cost simulator: theoretical speedup of incremental inference (Algorithm 1, generalised).

For a model, a patch size and a stride, :func:`speedup` counts for every patch
position the multiply-accumulates (MACs; conv and fully-connected layers, as the
paper counts) of full inference and of incremental inference, per layer, and
reports the aggregate speedup (sum of full over sum of incremental), the
per-position speedup map and its centre, minimum and maximum.

Algorithm 1 of the paper handles chains of square layers without padding and
strides twice through the positions; this version handles any DAG, rectangles,
padding, dilation and ceil mode, and all ``floor((W - w) / S) + 1`` positions
per axis (see ``docs/paper-notes.md``). It is vectorised over positions.

Two modes:

``paper``
    Each position's exact changed region per layer (eq. 1-8 generalised),
    fully-connected layers counted in full, as Algorithm 1 counts.
``executed``
    The regions the batched engine really computes: the positions in the
    engine's order (:func:`kryptonref.schedule.batch_order`: equal regions next
    to each other), per batch of ``batch_size`` of them one region size per
    layer (the largest in the batch), border shifts included. Its MACs equal the
    engine's count (``IncrementalResult.macs``), which a property test checks.

Both take ``tau``, the projective-field threshold of approximate inference
(DESIGN.md section 6); ``tau = 1`` is exact.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np

from ..engine import _pair, patch_positions
from ..graph import Graph
from ..layers import Conv2d, Linear
from ..model import Model
from ..schedule import batch_order, check_tau, is_empty, unpermute, walk_regions

__all__ = ["speedup", "SpeedupReport", "LayerCost"]

MODES = ("paper", "executed")


@dataclass
class LayerCost:
    """MACs of one node, summed over all positions."""

    name: str
    type: str
    full_macs: int
    incremental_macs: int

    @property
    def speedup(self):
        return self.full_macs / self.incremental_macs if self.incremental_macs else float("inf")


@dataclass
class SpeedupReport:
    """What :func:`speedup` returns.

    Attributes
    ----------
    full_macs, incremental_macs : int
        Totals over all positions and layers.
    speedup : float
        ``full_macs / incremental_macs`` (the paper's aggregate speedup).
    speedup_map : ndarray (n_y, n_x)
        Per-position speedup (full MACs of one inference over the position's
        incremental MACs); ``None`` when explicit positions were given.
    centre_speedup, min_speedup, max_speedup : float
        At the position nearest the image centre, and the extremes.
    layers : list of LayerCost
        Conv and fully-connected nodes in topological order.
    """

    model: str
    image_size: tuple
    patch: tuple
    stride: tuple
    tau: float
    mode: str
    positions: int
    full_macs: int
    incremental_macs: int
    speedup: float
    centre_speedup: float
    min_speedup: float
    max_speedup: float
    centre_position: tuple
    layers: list = field(default_factory=list)
    speedup_map: np.ndarray | None = None

    def to_dict(self):
        """A JSON-ready dict (without the speedup map)."""
        return {
            "model": self.model, "image_size": list(self.image_size), "patch": list(self.patch),
            "stride": None if self.stride is None else list(self.stride), "tau": self.tau,
            "mode": self.mode, "positions": self.positions, "full_macs": self.full_macs,
            "incremental_macs": self.incremental_macs, "speedup": self.speedup,
            "centre_speedup": self.centre_speedup, "min_speedup": self.min_speedup,
            "max_speedup": self.max_speedup, "centre_position": list(self.centre_position),
            "layers": [{"name": c.name, "type": c.type, "full_macs": c.full_macs,
                        "incremental_macs": c.incremental_macs} for c in self.layers],
        }

    def table(self):
        """A readable per-layer table with totals."""
        width = max([len(c.name) for c in self.layers] + [5])
        lines = [f"{self.model}: {self.image_size[0]}x{self.image_size[1]} px, patch "
                 f"{self.patch[0]}x{self.patch[1]}, "
                 + (f"stride {self.stride[0]}x{self.stride[1]}, " if self.stride else "")
                 + f"{self.positions} positions, tau {self.tau:g}, mode {self.mode}",
                 f"{'layer':<{width}}  {'type':<7} {'full MMACs':>14} {'incr. MMACs':>14} "
                 f"{'speedup':>8}"]
        for c in self.layers:
            lines.append(f"{c.name:<{width}}  {c.type:<7} {c.full_macs / 1e6:14.1f} "
                         f"{c.incremental_macs / 1e6:14.1f} {c.speedup:8.2f}")
        lines.append(f"{'total':<{width}}  {'':<7} {self.full_macs / 1e6:14.1f} "
                     f"{self.incremental_macs / 1e6:14.1f} {self.speedup:8.2f}")
        lines.append(f"speedup (MACs): aggregate {self.speedup:.2f}x, centre "
                     f"{self.centre_speedup:.2f}x at {tuple(self.centre_position)}, "
                     f"min {self.min_speedup:.2f}x, max {self.max_speedup:.2f}x")
        return "\n".join(lines)


def speedup(model, patch=16, stride=4, tau=1.0, mode="paper", positions=None, batch_size=64,
            name=None):
    """Theoretical speedup of incremental over full inference (Algorithm 1, generalised).

    Parameters
    ----------
    model : Model or Graph
    patch : int or (int, int)
        Patch size ``(h, w)``.
    stride : int or (int, int)
        Patch stride; positions ``p*S`` with ``p*S + w <= W`` on each axis.
    tau : float in (0, 1]
        Projective-field threshold; 1 is exact.
    mode : {"paper", "executed"}
    positions : array-like (P, 2), optional
        Explicit top-left ``(y, x)`` positions instead of the stride grid.
    batch_size : int
        Positions per batch in ``executed`` mode, taken in the engine's order
        (:func:`kryptonref.schedule.batch_order`); the per-position results keep
        the order of the positions.
    name : str, optional
        Name printed in the report.

    Returns
    -------
    SpeedupReport
    """
    graph = model.graph if isinstance(model, Model) else model
    if not isinstance(graph, Graph):
        raise TypeError(f"model must be a kryptonref Model or Graph, got {type(model).__name__}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    tau = check_tau(tau)
    patch_hw = _pair(patch, "patch")
    image_hw = graph.input_shape[1:]
    if patch_hw[0] > image_hw[0] or patch_hw[1] > image_hw[1]:
        raise ValueError(f"patch {patch_hw} is larger than the image {tuple(image_hw)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if positions is None:
        stride_hw = _pair(stride, "stride")
        pos = patch_positions(image_hw, patch_hw, stride_hw)
        grid = (len(range(0, image_hw[0] - patch_hw[0] + 1, stride_hw[0])),
                len(range(0, image_hw[1] - patch_hw[1] + 1, stride_hw[1])))
    else:
        from ..engine import _check_positions
        pos = _check_positions(positions, image_hw, patch_hw)
        stride_hw, grid = None, None

    full_per_node = graph.macs()
    costs = _incremental_macs(graph, pos, patch_hw, tau, mode, batch_size)
    n_pos = len(pos)
    full_one = sum(full_per_node.values())
    per_position = sum(costs.values())
    layers = [LayerCost(n, type(graph.nodes[n].layer).__name__, full_per_node[n] * n_pos,
                        int(costs[n].sum()))
              for n in graph.order if isinstance(graph.nodes[n].layer, (Conv2d, Linear))]
    position_speedup = full_one / np.maximum(per_position, 1)
    centre = _centre_index(pos, patch_hw, image_hw)
    total_incremental = int(per_position.sum())
    return SpeedupReport(
        model=name or "model", image_size=tuple(image_hw), patch=patch_hw, stride=stride_hw,
        tau=tau, mode=mode, positions=n_pos, full_macs=full_one * n_pos,
        incremental_macs=total_incremental,
        speedup=full_one * n_pos / max(total_incremental, 1),
        centre_speedup=float(position_speedup[centre]),
        min_speedup=float(position_speedup.min()), max_speedup=float(position_speedup.max()),
        centre_position=tuple(int(v) for v in pos[centre]), layers=layers,
        speedup_map=None if grid is None else position_speedup.reshape(grid))


def _centre_index(pos, patch_hw, image_hw):
    """Index of the position whose patch centre is nearest the image centre."""
    centre = (np.asarray(image_hw) - np.asarray(patch_hw)) / 2.0
    return int(np.argmin(np.abs(pos - centre).sum(axis=1)))


def _incremental_macs(graph, pos, patch_hw, tau, mode, batch_size):
    """Per node, the incremental MACs of each position, shape (P,), in the order of ``pos``.

    Walks the regions as the engine plans them (:func:`schedule.walk_regions`).
    In ``executed`` mode the positions are batched in the engine's order
    (:func:`schedule.batch_order`), a whole node is computed for a batch when any
    of its positions changed it, and a conv layer computes the batch's region.
    """
    n_pos = len(pos)
    starts = np.arange(0, n_pos, batch_size)
    if mode == "executed":
        order = batch_order(graph, pos, patch_hw, tau)
        spread = partial(_batch_any, starts=starts)
    else:
        order, spread = np.arange(n_pos), None
    macs = {}
    for name, exact, live in walk_regions(graph, pos[order], patch_hw, tau, spread):
        node = graph.nodes[name]
        layer, shape = node.layer, graph.shapes[name]
        cost = np.zeros(n_pos, np.int64)
        if isinstance(layer, Conv2d):
            per_output = layer.macs([graph.shapes[node.inputs[0]]], (shape[0], 1, 1))
            cost = per_output * _area(exact, mode, starts)
        elif layer.kind == "global":
            counted = live if mode == "executed" else np.ones(n_pos, bool)
            cost = counted * layer.macs([graph.shapes[i] for i in node.inputs], shape)
        macs[name] = unpermute(cost, order)
    return macs


def _batch_any(flags, starts):
    """Per position: does any position of its batch have the flag set?"""
    per_batch = np.logical_or.reduceat(flags, starts)
    return np.repeat(per_batch, np.diff(np.append(starts, len(flags))))


def _area(region, mode, starts):
    """Outputs computed per position: exact area (paper) or the batch's region (executed)."""
    y0, y1, x0, x1 = region
    if mode == "paper":
        return (y1 - y0) * (x1 - x0)
    counts = np.diff(np.append(starts, len(y0)))
    h = np.repeat(np.maximum.reduceat(y1 - y0, starts), counts)
    w = np.repeat(np.maximum.reduceat(x1 - x0, starts), counts)
    alive = np.repeat(np.logical_or.reduceat(~is_empty(region), starts), counts)
    return h * w * alive
