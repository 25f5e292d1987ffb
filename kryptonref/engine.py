"""Incremental inference for batches of occlusion positions (paper Algorithm 2).

:class:`Occluder` is the one driver every occlusion computation runs through
(:func:`incremental_inference`, :func:`kryptonref.occlusion`, the full
re-inference baseline and the tuners): a model, an image, a fill and a device
in, the model's output for any set of patch positions out. It runs full
inference once on the unoccluded image (``M``), then batch after batch:

1. the planner (:func:`kryptonref.schedule.plan`) gives every node of the
   batch a :class:`~kryptonref.schedule.NodePlan`: unchanged, a region (one
   size per batch, an offset per position, a read window for conv and pool
   layers) or whole;
2. :func:`execute` computes the changed nodes on a backend
   (:mod:`kryptonref.backends`): a compact tensor ``(B, C, h, w)`` per region
   node, read windows gathered from the input's region, ``M`` and the padding
   in one pass, and whole tensors where every output changes. Each node's
   computation is chosen by its layer's rule in the registry.

Batches take the positions in :func:`kryptonref.schedule.batch_order` (equal
regions together); results come back in the caller's order. ``mode="full"``
re-infers every occluded image instead (the naive baseline).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Protocol, Union, cast

import numpy as np
import numpy.typing as npt

from . import validate
from .backends import get_backend
from .layers.base import Spatial, broadcasts
from .layers.registry import Rule, entry
from .model import Model
from .runtime import entry_point
from .schedule import REGION, UNCHANGED, WHOLE, batch_order, plan, run_in_order

if TYPE_CHECKING:
    from .backends.base import Backend
    from .graph import Graph
    from .layers.registry import LayerType
    from .schedule import NodePlan, Plan

__all__ = ["incremental_inference", "IncrementalResult", "patch_positions", "Occluder",
           "execute", "MODES"]

#: How an :class:`Occluder` computes each position's output.
MODES = ("incremental", "full")

#: A backend's array: a NumPy array on the CPU, a device array with CUDA.
DeviceArray = Any
#: Host arrays of the output and other nodes, per position.
HostArray = npt.NDArray[Any]
#: Top-left patch positions ``(P, 2)``.
Positions = npt.NDArray[np.int64]
#: Offsets of a batch's regions and read windows (:func:`_pack_offsets`).
Offsets = dict[Union[str, tuple[str, str]], tuple[DeviceArray, DeviceArray]]
#: Per node, its computed data for the batch (None: unchanged or freed).
NodeData = dict[str, Optional[DeviceArray]]


class Progress(Protocol):
    """Told the number of positions of every finished batch (tqdm's ``update``)."""

    def update(self, n: int) -> object: ...


@dataclass
class IncrementalResult:
    """What :func:`incremental_inference` returns.

    Attributes
    ----------
    output : ndarray (P, ...)
        The output node's value for every position.
    positions : ndarray (P, 2)
        Top-left ``(y, x)`` of each patch.
    nodes : dict
        ``name -> (P, ...)`` stitched values of the nodes asked for.
    macs : dict
        ``name -> MACs`` the engine performed per node, summed over positions,
        counted as direct convolution (the paper's count; a Winograd layer
        executes fewer multiplications, :mod:`kryptonref.layers.winograd`).
    region_sizes : dict
        ``name -> list of (h, w)``: the region computed per node, one per batch
        (batches in the order of :func:`schedule.batch_order`).
    """

    output: HostArray
    positions: Positions
    nodes: dict[str, HostArray] = field(default_factory=dict)
    macs: dict[str, int] = field(default_factory=dict)
    region_sizes: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    @property
    def total_macs(self) -> int:
        """Sum of the MACs over all nodes and positions."""
        return int(sum(self.macs.values()))


def patch_positions(image_hw: Sequence[int], patch: Union[int, Sequence[int]],
                    stride: Union[int, Sequence[int]]) -> Positions:
    """All top-left positions ``p*S`` with ``p*S + patch <= W`` per axis, row-major.

    This is the corrected position count of Algorithms 1-2:
    ``floor((W - W_patch) / S_patch) + 1`` per axis (the paper's
    ``floor((W - W_patch + 1) / S_patch)`` drops the last position for many strides).

    Returns
    -------
    ndarray of int64, shape (n_y * n_x, 2)
    """
    (ph, pw), (sh, sw) = validate.int_pair(patch, "patch"), validate.int_pair(stride, "stride")
    height, width = image_hw
    validate.patch_fits((ph, pw), (height, width))
    ys = np.arange(0, height - ph + 1, sh)
    xs = np.arange(0, width - pw + 1, sw)
    grid = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1)
    return grid.reshape(-1, 2).astype(np.int64)


class _NoProgress:
    def update(self, n: int) -> None:
        pass


class Occluder:
    """One image, one fill, one device: the model's output for any set of patch positions.

    The driver of every occlusion computation (Algorithm 2). It holds what all
    batches share: the backend, the materialised activations ``M`` of the
    unoccluded image (on the device), the kernel-ready parameters and the fill;
    it counts the MACs and region sizes of every batch it runs.

    Parameters
    ----------
    model : Model
    image : ndarray (C, H, W)
        The unoccluded image.
    patch : int or (int, int)
        The largest patch this occluder applies: ``fill`` is checked against it,
        and a smaller patch (Captum's truncated border windows) reads its top-left part.
    fill : float, array (C,), array (C, h, w) or "mean"
        Values of the occluding patch (``"mean"``: the image's per-channel mean).
    device : {"cpu", "cuda"}
    tau : float in (0, 1]
        Projective-field threshold of approximate inference (1: exact).
    mode : {"incremental", "full"}
        Incremental inference, or full re-inference of every occluded image.
    freeze_context : bool
        Approximate: squeeze-excitation gates (any gate broadcast over a map by a
        merge) keep their value on the unoccluded image (:func:`kryptonref.schedule.plan`).
    base : dict, optional
        ``M`` from ``model.forward_all(image[None])``, to skip recomputing it.

    Attributes
    ----------
    base_output : ndarray
        The output node's value on the unoccluded image.
    base_macs : int
        MACs of the one full inference on the unoccluded image.
    node_macs : dict
        ``name -> MACs`` performed by the batches run so far.
    region_sizes : dict
        ``name -> list of (h, w)``, one per batch run so far.
    """

    @entry_point
    def __init__(self, model: Model, image: npt.NDArray[np.floating[Any]],
                 patch: Union[int, Sequence[int]], fill: Any = 0.0, device: str = "cpu",
                 tau: float = 1.0, mode: str = "incremental",
                 base: Optional[dict[str, npt.ArrayLike]] = None,
                 freeze_context: bool = False) -> None:
        if not isinstance(model, Model):
            raise TypeError(f"model must be a kryptonref Model, got {type(model).__name__}")
        self.model, self.graph = model, model.graph
        self.backend: Backend = get_backend(device)
        self.mode = validate.one_of(mode, MODES, "mode")
        self.tau = validate.tau(tau)
        self.freeze_context = bool(freeze_context)
        self.image = validate.image(image, self.graph.input_shape, model.dtype)
        self.patch_hw = validate.int_pair(patch, "patch")
        validate.patch_fits(self.patch_hw, self.graph.input_shape[1:])
        self.fill_patch = validate.fill_patch(fill, self.graph.input_shape[0], self.patch_hw,
                                              model.dtype, self.image)
        self.base: dict[str, DeviceArray]
        if base is None:
            self.base = model.run_on(self.backend, self.image[None],
                                     keep_all=self.mode == "incremental")
        else:
            self.base = {name: self.backend.to_device(np.ascontiguousarray(value))
                         for name, value in _checked_base(base, self.graph, self.image,
                                                          keep_all=self.mode == "incremental"
                                                          ).items()}
        self.base_output = self.backend.to_host(self.base[self.graph.output])[0]
        self._base_items = {name: value[0] for name, value in self.base.items()}
        self.base_macs = int(sum(self.graph.macs().values()))
        self.params = self.backend.params(model)
        self.node_macs: dict[str, int] = {name: 0 for name in self.graph.order}
        self.region_sizes: dict[str, list[tuple[int, int]]] = {
            name: [] for name in self.graph.order}
        self._fills: dict[tuple[int, int], DeviceArray] = {}
        self._image_on_device: Optional[DeviceArray] = None

    @property
    def macs(self) -> int:
        """MACs performed by the batches run so far (the base inference not included)."""
        return int(sum(self.node_macs.values()))

    def _fill(self, patch_hw: tuple[int, int]) -> DeviceArray:
        """The fill of a ``patch_hw`` patch on the device (its top-left part), cached."""
        if patch_hw not in self._fills:
            if patch_hw[0] > self.patch_hw[0] or patch_hw[1] > self.patch_hw[1]:
                raise ValueError(f"patch {patch_hw} is larger than the occluder's patch "
                                 f"{self.patch_hw}")
            part = self.fill_patch[:, :patch_hw[0], :patch_hw[1]]
            self._fills[patch_hw] = self.backend.to_device(np.ascontiguousarray(part))
        return self._fills[patch_hw]

    @entry_point
    def run(self, positions: npt.ArrayLike, batch_size: int,
            patch: Union[None, int, Sequence[int]] = None, nodes: Iterable[str] = (),
            progress: Optional[Progress] = None) -> dict[str, HostArray]:
        """The output (and ``nodes``) for the image occluded at each position.

        Parameters
        ----------
        positions : array-like (P, 2)
            Top-left ``(y, x)`` of each patch.
        batch_size : int
            Positions computed together (memory stays bounded).
        patch : (int, int), optional
            This call's patch size (at most the occluder's; by default the same).
        nodes : sequence of str
            Other nodes whose stitched values to return (incremental mode only).
        progress : object with ``update(n)``, optional
            Told the number of positions of every finished batch.

        Returns
        -------
        dict
            ``name -> (P, ...)`` host arrays for the output node and ``nodes``,
            in the order of ``positions``.
        """
        patch_hw = self.patch_hw if patch is None else validate.int_pair(patch, "patch")
        at = validate.positions(positions, self.graph.input_shape[1:], patch_hw)
        batch_size = validate.positive_int(batch_size, "batch_size")
        node_names = validate.node_names(nodes, self.graph)
        if node_names and self.mode == "full":
            raise ValueError("nodes: intermediate values are returned in incremental mode only")
        told: Progress = progress or _NoProgress()
        wanted = (self.graph.output,) + tuple(n for n in node_names if n != self.graph.output)
        compute: Callable[[Positions, tuple[int, int], tuple[str, ...]], dict[str, HostArray]]
        if self.mode == "full":
            order = np.arange(len(at), dtype=np.int64)
            compute = self._full_batch
        else:
            order = batch_order(self.graph, at, patch_hw, self.tau, self.freeze_context)
            compute = self._incremental_batch

        def batch(indices: Positions) -> dict[str, HostArray]:
            values = compute(at[indices], patch_hw, wanted)
            told.update(len(indices))
            return values

        return run_in_order(order, batch_size, batch)

    def scores(self, positions: npt.ArrayLike, batch_size: int,
               patch: Union[None, int, Sequence[int]] = None,
               progress: Optional[Progress] = None) -> HostArray:
        """The output node's values ``(P, ...)`` (see :meth:`run`)."""
        return self.run(positions, batch_size, patch, progress=progress)[self.graph.output]

    def _count(self, batch_plan: Plan) -> None:
        for name in self.graph.order:
            node_plan = batch_plan.nodes[name]
            self.node_macs[name] += node_plan.macs
            self.region_sizes[name].append(node_plan.size)

    def _incremental_batch(self, positions: Positions, patch_hw: tuple[int, int],
                           wanted: tuple[str, ...]) -> dict[str, HostArray]:
        backend = self.backend
        batch_plan = plan(self.graph, positions, patch_hw, self.tau, self.freeze_context,
                          keep=wanted)
        self._count(batch_plan)
        base = self._base_items
        with backend.batch_scope():
            data, offsets = execute(backend, self.graph, self.params, base, batch_plan,
                                    self._fill(patch_hw), keep=wanted)
            return {name: backend.to_host(_to_whole(backend, data[name],
                                                    batch_plan.nodes[name], offsets.get(name),
                                                    base[name], len(positions)))
                    for name in wanted}

    def _full_batch(self, positions: Positions, patch_hw: tuple[int, int],
                    wanted: tuple[str, ...]) -> dict[str, HostArray]:
        """Full re-inference of the occluded images, built on the device."""
        backend = self.backend
        if self._image_on_device is None:
            self._image_on_device = backend.to_device(self.image)
        ys, xs = backend.pack_ints([positions[:, 0], positions[:, 1]])
        fill = backend.repeat(self._fill(patch_hw), len(positions))
        occluded = backend.stitch(self._image_on_device, fill, ys, xs)
        out = self.model.run_on(backend, occluded, keep_all=False)[self.graph.output]
        for name, macs in self.graph.macs().items():
            self.node_macs[name] += macs * len(positions)
        return {self.graph.output: backend.to_host(out)}


@entry_point
def incremental_inference(model: Model, image: npt.NDArray[np.floating[Any]],
                          positions: npt.ArrayLike, patch: Union[int, Sequence[int]],
                          fill: Any = 0.0, batch_size: int = 64, nodes: Iterable[str] = (),
                          base: Optional[dict[str, npt.ArrayLike]] = None, device: str = "cpu",
                          tau: float = 1.0) -> IncrementalResult:
    """Network output for the image occluded at each position, computed incrementally.

    Implements Algorithm 2 of the paper for any DAG: full inference once on the
    unoccluded image (``M``), then per batch of positions only the changed region
    of every conv/pool layer (eq. 1-8 generalised, :mod:`kryptonref.geometry`).
    The result equals full inference on each occluded image.

    Parameters
    ----------
    model : Model
    image : ndarray (C, H, W)
        The unoccluded image.
    positions : array-like (P, 2)
        Top-left ``(y, x)`` of the patch for each position (see :func:`patch_positions`).
    patch : int or (int, int)
        Patch size ``(h, w)``.
    fill : float, array (C,), array (C, h, w) or "mean"
        Values of the occluding patch (``"mean"``: the image's per-channel mean).
    batch_size : int
        Positions processed together; bounds the memory in use. The batches
        take the positions in :func:`schedule.batch_order` (equal regions
        together); the results come back in the order of ``positions``.
    nodes : sequence of str
        Nodes whose stitched values to return as well (``P`` full tensors each).
    base : dict, optional
        Materialised activations of ``image`` from ``model.forward_all``
        (what ``forward_all(image[None])`` returned, batch axis included) to
        skip recomputing them.
    device : {"cpu", "cuda"}
        Where to compute. ``"cuda"`` needs numba-cuda (extra ``kryptonref[cuda]``)
        and a GPU; the results are returned as host arrays either way.
    tau : float in (0, 1]
        Projective-field threshold of approximate inference (SIGMOD 2019 eq. 21-27,
        ``docs/design.md``): a conv or pool layer whose changed region is wider
        than ``round(tau * W_out)`` computes only that many outputs, centred, and
        reads the unoccluded activations elsewhere. ``tau = 1`` (the default) is
        exact; smaller values compute less and approximate more.

    Returns
    -------
    IncrementalResult
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a kryptonref Model, got {type(model).__name__}")
    node_names = validate.node_names(nodes, model.graph)
    occluder = Occluder(model, image, patch, fill=fill, device=device, tau=tau, base=base)
    at = validate.positions(positions, model.graph.input_shape[1:], occluder.patch_hw)
    values = occluder.run(at, batch_size, nodes=node_names)
    return IncrementalResult(output=values[model.graph.output], positions=at,
                             nodes={name: values[name] for name in node_names},
                             macs=occluder.node_macs, region_sizes=occluder.region_sizes)


# -- executing a plan ----------------------------------------------------------------------
def _pack_offsets(backend: Backend, graph: Graph, batch_plan: Plan) -> Offsets:
    """Every integer offset of the batch as backend arrays, moved in one transfer.

    Returns ``name -> (y0, x0)`` for changed feature maps (whole ones at 0) and
    ``name -> (ry0, rx0)`` for read windows, keyed ``(name, "window")``.
    """
    keys: list[Union[str, tuple[str, str]]] = []
    rows: list[npt.NDArray[np.int64]] = []  # the plan's y0, x0 and window starts
    for name in (graph.input_name,) + tuple(graph.order):
        node_plan = batch_plan.nodes[name]
        if node_plan.state != UNCHANGED and node_plan.y0 is not None:
            keys.append(name)
            rows += [node_plan.y0, cast(npt.NDArray[np.int64], node_plan.x0)]
        if node_plan.window is not None:
            keys.append((name, "window"))
            rows += [node_plan.window[0], node_plan.window[1]]
    packed = backend.pack_ints(rows)
    return {key: (packed[2 * i], packed[2 * i + 1]) for i, key in enumerate(keys)}


def _owns_its_data(record: LayerType, node_plan: NodePlan) -> bool:
    """Whether a node's computed data is an array no other node's data shares.

    Window layers and region merges write new arrays; position-wise layers
    write a new array or, in place, one that nothing else reads any more (or
    return their input: Dropout). Whole-tensor layers may return their input or
    a view of it (Flatten).
    """
    if record.rule is Rule.POSITIONWISE:
        return not record.aliases_input
    return record.rule is Rule.WINDOW or (record.rule is Rule.MERGE
                                          and node_plan.state == REGION)


def _checked_base(base: object, graph: Graph, image: npt.NDArray[np.floating[Any]],
                  keep_all: bool = True) -> dict[str, npt.NDArray[Any]]:
    """``base`` (``model.forward_all(image[None])``) if it holds this image's activations of
    this graph: every node (the output at least when not ``keep_all``) with its shape and a
    batch of one, and an input equal to ``image``. Activations of another image gave wrong
    outputs without a word.
    """
    if not isinstance(base, dict):
        raise TypeError(f"base must be the dict model.forward_all(image[None]) returns, got "
                        f"{type(base).__name__}")
    needed = [graph.input_name] + (list(graph.order) if keep_all else [graph.output])
    missing = [name for name in needed if name not in base]
    if missing:
        raise ValueError(f"base lacks the activations of {len(missing)} node(s) "
                         f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); "
                         "pass model.forward_all(image[None])")
    checked: dict[str, npt.NDArray[Any]] = {}
    for name, value in base.items():
        want = (1,) + tuple(graph.shapes[name]) if name in graph.shapes else None
        array = np.asarray(value)
        if want is not None and array.shape != want:
            raise ValueError(f"base[{name!r}] has shape {array.shape}, expected {want} "
                             "(model.forward_all(image[None]) of this model)")
        checked[name] = array.astype(image.dtype, copy=False)
    if not np.array_equal(checked[graph.input_name][0], image):
        raise ValueError("base holds the activations of another image: its input differs "
                         "from `image`")
    return checked


def execute(backend: Backend, graph: Graph, params: dict[str, dict[str, Any]],
            base: dict[str, DeviceArray], batch_plan: Plan, fill: DeviceArray,
            keep: Sequence[str] = ()) -> tuple[NodeData, Offsets]:
    """Compute the data of every changed node of a planned batch on ``backend``.

    Parameters
    ----------
    base : dict
        ``name -> (C, H, W)`` (or ``(F,)``) backend arrays: ``M``, without the batch axis.
    fill : backend array (C, h, w)
        The patch.
    keep : sequence of str
        Nodes whose data must survive (the others are freed after their last reader).

    Returns
    -------
    data : dict
        ``name -> (B, C, h, w)`` region data, ``(B, ...)`` whole data, or None (unchanged).
    offsets : dict
        From :func:`_pack_offsets`.

    With ``tau < 1`` nothing changes here: a batch's regions are at most the
    clamped width, so the outputs a batch adds beyond a position's own region
    (:func:`schedule.batch_region`) lie outside its unclamped changed region too,
    read only unchanged inputs, and equal ``M``, as approximate inference wants.
    """
    n_items = batch_plan.n_items
    offsets = _pack_offsets(backend, graph, batch_plan)
    data: NodeData = {graph.input_name: backend.repeat(fill, n_items)}
    remaining = {name: len(users) for name, users in graph.consumers().items()}
    fresh: set[str] = set()  # nodes whose data is an array no other node's data shares
    for name in graph.order:
        node = graph.nodes[name]
        record = entry(node.layer)
        node_plan = batch_plan.nodes[name]
        first = node.inputs[0]
        if node_plan.state == UNCHANGED:
            data[name] = None
        else:
            reuse = (record.rule is Rule.POSITIONWISE and first in fresh
                     and remaining[first] == 1 and first not in keep)
            data[name] = _COMPUTE[record.rule](backend, graph, params, base, batch_plan,
                                               offsets, data, name, reuse)
        if node_plan.state != UNCHANGED and _owns_its_data(record, node_plan):
            fresh.add(name)
        else:
            fresh.difference_update(node.inputs)
        for src in node.inputs:  # free what no later node reads
            remaining[src] -= 1
            if remaining[src] == 0 and src not in keep:
                data[src] = None
    return data, offsets


def _compute_window(backend: Backend, graph: Graph, params: dict[str, dict[str, Any]],
                    base: dict[str, DeviceArray], batch_plan: Plan, offsets: Offsets,
                    data: NodeData, name: str, reuse: bool) -> DeviceArray:
    """A conv or pool layer's region, from its read window (or its input's data as is)."""
    node = graph.nodes[name]
    node_plan, src = batch_plan.nodes[name], node.inputs[0]
    layer = cast(Spatial, node.layer)  # the WINDOW rule's layers are Spatial
    if node_plan.reads_input_as_is:
        win = data[src]
    else:
        assert node_plan.window is not None, "the planner gives every region a read window"
        _, _, rh, rw = node_plan.window
        wy0, wx0 = offsets[(name, "window")]
        py0, px0 = offsets[src]
        win = backend.gather_windows(base[src], data[src], py0, px0, wy0, wx0, rh, rw,
                                     layer.pad_value)
    y0, x0 = offsets[name]
    return backend.region(layer, params[name], win, graph.shapes[src][1:],
                          graph.shapes[name][1:], y0, x0, (node_plan.h, node_plan.w))


def _compute_positionwise(backend: Backend, graph: Graph, params: dict[str, dict[str, Any]],
                          base: dict[str, DeviceArray], batch_plan: Plan, offsets: Offsets,
                          data: NodeData, name: str, reuse: bool) -> DeviceArray:
    """A position-wise layer on its input's data (in place when nothing else reads it)."""
    node = graph.nodes[name]
    x = data[node.inputs[0]]
    return backend.apply(node.layer, params[name], x, out=x if reuse else None)


def _compute_merge(backend: Backend, graph: Graph, params: dict[str, dict[str, Any]],
                   base: dict[str, DeviceArray], batch_plan: Plan, offsets: Offsets,
                   data: NodeData, name: str, reuse: bool) -> DeviceArray:
    """A merge's region, assembled from its inputs' windows; whole when an input is."""
    node_plan = batch_plan.nodes[name]
    if node_plan.state == WHOLE:
        return _compute_whole(backend, graph, params, base, batch_plan, offsets, data, name,
                              reuse)
    node = graph.nodes[name]
    layer, inputs = node.layer, node.inputs
    y0, x0 = offsets[name]
    h, w = node_plan.h, node_plan.w
    gather = backend.kernels(layer).gather
    if gather is None:  # each input's window on its own, then the merge on the windows
        windows = []
        for k, src in enumerate(inputs):
            if broadcasts(graph.shapes[src], graph.shapes[name]):  # a gate: unchanged here
                windows.append(base[src].reshape((1,) + tuple(base[src].shape)))
            else:
                src_data = None if k in node_plan.frozen else data[src]
                windows.append(_window_of(backend, base, src_data, offsets, src, y0, x0, h, w))
        return backend.full(layer, params[name], windows, (graph.shapes[name][0], h, w))
    out = backend.empty((len(y0), graph.shapes[name][0], h, w), base[inputs[0]].dtype)
    c_offset = 0
    for k, src in enumerate(inputs):
        patch_y0, patch_x0 = offsets[src] if data[src] is not None else (None, None)
        backend.gather_windows(base[src], data[src], patch_y0, patch_x0, y0, x0, h, w,
                               out=out, c_offset=c_offset,
                               accumulate=gather == "sum" and k > 0)
        if gather == "channels":
            c_offset += base[src].shape[0]
    return out


def _window_of(backend: Backend, base: dict[str, DeviceArray], src_data: Optional[DeviceArray],
               offsets: Offsets, src: str, y0: DeviceArray, x0: DeviceArray, h: int,
               w: int) -> DeviceArray:
    patch_y0, patch_x0 = offsets[src] if src_data is not None else (None, None)
    return backend.gather_windows(base[src], src_data, patch_y0, patch_x0, y0, x0, h, w)


def _compute_whole(backend: Backend, graph: Graph, params: dict[str, dict[str, Any]],
                   base: dict[str, DeviceArray], batch_plan: Plan, offsets: Offsets,
                   data: NodeData, name: str, reuse: bool) -> DeviceArray:
    """A layer on every position's whole input tensors."""
    node = graph.nodes[name]
    n_items = batch_plan.n_items
    frozen = batch_plan.nodes[name].frozen
    wholes = [backend.repeat(base[i], n_items) if k in frozen else
              _to_whole(backend, data[i], batch_plan.nodes[i], offsets.get(i), base[i], n_items)
              for k, i in enumerate(node.inputs)]
    return backend.full(node.layer, params[name], wholes, graph.shapes[name])


_COMPUTE: dict[Rule, Callable[..., DeviceArray]] = {
    Rule.WINDOW: _compute_window, Rule.POSITIONWISE: _compute_positionwise,
    Rule.MERGE: _compute_merge, Rule.WHOLE: _compute_whole}


def _to_whole(backend: Backend, node_data: Optional[DeviceArray], node_plan: NodePlan,
              offsets: Optional[tuple[DeviceArray, DeviceArray]], base: DeviceArray,
              n_items: int) -> DeviceArray:
    """Per-position full tensors ``(B, ...)`` of a node (backend arrays)."""
    if node_plan.state == UNCHANGED:
        return backend.repeat(base, n_items)
    if node_plan.state == WHOLE:
        return node_data
    assert offsets is not None, "a region node has offsets"
    return backend.stitch(base, node_data, offsets[0], offsets[1])

