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
    layer (the largest in the batch), border shifts included. It sums the very
    plans the engine executes (:func:`kryptonref.schedule.plan`), so its MACs
    equal the engine's count (``IncrementalResult.macs``) by construction.

Both take ``tau``, the projective-field threshold of approximate inference
(``docs/design.md``); ``tau = 1`` is exact. Both count with the layer
registry's MAC rules: conv and fully-connected layers, as the paper does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from .. import validate
from ..engine import patch_positions
from ..graph import Graph
from ..model import Model
from ..schedule import WHOLE, batch_order, executed_macs, paper_macs, plan, run_in_order

if TYPE_CHECKING:
    from ..schedule import Plan

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
    def speedup(self) -> float:
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
        The nodes with MACs (conv and fully-connected) in topological order.
    first_whole, why_whole : str or None
        The first node (in topological order) where the changed region becomes a whole
        feature map of more than one position (from there on the network is computed in
        full), or else the first whole node (the head), and why. ``None`` when no node
        is whole.
    freeze_context : bool
        Whether squeeze-excitation gates were kept at their unoccluded value.
    """

    model: str
    image_size: tuple[int, ...]
    patch: tuple[int, int]
    stride: tuple[int, int] | None
    tau: float
    mode: str
    positions: int
    full_macs: int
    incremental_macs: int
    speedup: float
    centre_speedup: float
    min_speedup: float
    max_speedup: float
    centre_position: tuple[int, ...]
    layers: list[LayerCost] = field(default_factory=list)
    speedup_map: npt.NDArray[np.float64] | None = None
    first_whole: str | None = None
    why_whole: str | None = None
    freeze_context: bool = False

    def to_dict(self) -> dict[str, Any]:
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
            "first_whole": self.first_whole, "why_whole": self.why_whole,
            "freeze_context": self.freeze_context,
        }

    def table(self) -> str:
        """A readable per-layer table with totals."""
        width = max([len(c.name) for c in self.layers] + [5])
        lines = [f"{self.model}: {self.image_size[0]}x{self.image_size[1]} px, patch "
                 f"{self.patch[0]}x{self.patch[1]}, "
                 + (f"stride {self.stride[0]}x{self.stride[1]}, " if self.stride else "")
                 + f"{self.positions} positions, tau {self.tau:g}, mode {self.mode}"
                 + (", gates frozen" if self.freeze_context else ""),
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
        if self.first_whole is not None:
            lines.append(f"the region becomes whole at {self.first_whole!r}: {self.why_whole}")
        return "\n".join(lines)


def speedup(model: Model | Graph, patch: int | tuple[int, int] = 16,
            stride: int | tuple[int, int] = 4, tau: float = 1.0, mode: str = "paper",
            positions: npt.ArrayLike | None = None, batch_size: int = 64,
            name: str | None = None, freeze_context: bool = False) -> SpeedupReport:
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
    freeze_context : bool
        Count the global-context approximation: squeeze-excitation gates keep their
        value on the unoccluded image (:func:`kryptonref.schedule.plan`).

    Returns
    -------
    SpeedupReport
    """
    graph = model.graph if isinstance(model, Model) else model
    if not isinstance(graph, Graph):
        raise TypeError(f"model must be a kryptonref Model or Graph, got {type(model).__name__}")
    mode = validate.one_of(mode, MODES, "mode")
    tau = validate.tau(tau)
    patch_hw = validate.int_pair(patch, "patch")
    image_hw = graph.input_shape[1:]
    validate.patch_fits(patch_hw, image_hw)
    batch_size = validate.positive_int(batch_size, "batch_size")
    if positions is None:
        stride_hw = validate.int_pair(stride, "stride")
        pos = patch_positions(image_hw, patch_hw, stride_hw)
        grid: tuple[int, int] | None = (
            len(range(0, image_hw[0] - patch_hw[0] + 1, stride_hw[0])),
            len(range(0, image_hw[1] - patch_hw[1] + 1, stride_hw[1])))
    else:
        pos = validate.positions(positions, image_hw, patch_hw)
        stride_hw, grid = None, None

    full_per_node = graph.macs()
    freeze_context = bool(freeze_context)
    whole_batch = plan(graph, pos, patch_hw, tau, freeze_context)
    costs = _incremental_macs(graph, pos, patch_hw, tau, mode, batch_size, freeze_context,
                              whole_batch)
    first_whole = _first_whole(graph, whole_batch)
    n_pos = len(pos)
    full_one = sum(full_per_node.values())
    per_position = cast("npt.NDArray[np.int64]", sum(costs.values()))   # never empty
    layers = [LayerCost(n, type(graph.nodes[n].layer).__name__, full_per_node[n] * n_pos,
                        int(costs[n].sum()))
              for n in graph.order if full_per_node[n] > 0]
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
        speedup_map=None if grid is None else position_speedup.reshape(grid),
        first_whole=first_whole, freeze_context=freeze_context,
        why_whole=None if first_whole is None else whole_batch.nodes[first_whole].why_whole)


def _first_whole(graph: Graph, whole_batch: Plan) -> str | None:
    """The first node computed whole: the first whole feature map of more than one
    position (where the network stops being local, e.g. a squeeze-excitation product),
    else the first whole node (the head's global pooling or flatten), else None."""
    whole = [n for n in graph.order if whole_batch.nodes[n].state == WHOLE]
    maps: list[str | None] = [n for n in whole if len(graph.shapes[n]) == 3 and
                              graph.shapes[n][1] * graph.shapes[n][2] > 1]
    return (maps or whole or cast("list[str | None]", [None]))[0]


def _centre_index(pos: npt.NDArray[np.integer[Any]], patch_hw: tuple[int, int],
                  image_hw: tuple[int, int]) -> int:
    """Index of the position whose patch centre is nearest the image centre."""
    centre = (np.asarray(image_hw) - np.asarray(patch_hw)) / 2.0
    return int(np.argmin(np.abs(pos - centre).sum(axis=1)))


def _incremental_macs(graph: Graph, pos: npt.NDArray[np.integer[Any]], patch_hw: tuple[int, int],
                      tau: float, mode: str, batch_size: int, freeze_context: bool,
                      whole_batch: Plan) -> dict[str, npt.NDArray[np.int64]]:
    """Per node, the incremental MACs of each position, shape (P,), in the order of ``pos``.

    ``paper``: one plan over all positions, each counted with its own exact
    regions (:func:`schedule.paper_macs`). ``executed``: the plans of the
    engine's batches (:func:`schedule.batch_order`, ``batch_size`` at a time),
    each position charged its share of its batch (:func:`schedule.executed_macs`).
    """
    if mode == "paper":
        return paper_macs(graph, whole_batch)
    order = batch_order(graph, pos, patch_hw, tau, freeze_context)
    return cast("dict[str, npt.NDArray[np.int64]]", run_in_order(
        order, batch_size, lambda batch: executed_macs(
            graph, plan(graph, pos[batch], patch_hw, tau, freeze_context))))
