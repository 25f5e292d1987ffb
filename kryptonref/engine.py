"""Incremental inference for batches of occlusion positions (paper Algorithm 2).

Positions are batched in :func:`schedule.batch_order`, which puts positions
with equal changed regions next to each other. Each batch is first *planned*
on the host, then *executed* by a backend (:mod:`kryptonref.backend`: CPU or CUDA). The plan
gives every node a geometry for the batch, one of

* ``None``: unchanged for every position; consumers read the materialised
  activations ``M`` of the unoccluded image;
* :class:`_Geo`: a compact region ``(h, w)`` per position at offsets
  ``(y0, x0)``, and the exact changed region it covers (one region size per
  layer for the batch, regions shifted inward at the borders: DESIGN.md s. 5);
* ``_WHOLE``: the whole tensor per position, after a layer whose every output
  changes (global pooling, flatten, dense, softmax).

Execution holds the data: a compact tensor ``(B, C, h, w)`` per region node.
Conv and pool layers compute only their (batch-uniform) changed region from a
read window gathered from the input's patch, ``M`` and the padding in one pass.
Since the plan is known before any arithmetic, a batch's integer offsets move
to the device in one packed array.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._memory import retained_memory
from ._numba import exclusive
from .backend import get_backend
from .geometry import read_window
from .layers import Add, Concat, Dropout
from .layers.conv import conv_macs
from .model import Model, check_image_batch
from .schedule import (batch_order, batch_region, check_tau, is_empty, merge_region,
                       run_in_order, spatial_region, whole_region)

__all__ = ["incremental_inference", "IncrementalResult", "patch_positions"]


@dataclass
class _Geo:
    y0: np.ndarray            # (B,) computed region start, rows
    x0: np.ndarray            # (B,) computed region start, columns
    h: int                    # computed region size, the same for the batch
    w: int
    exact: tuple              # (ey0, ey1, ex0, ex1), each (B,): the exact changed region


#: Geometry of a node whose every output changes: the whole tensor per position.
_WHOLE = "whole"


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

    output: np.ndarray
    positions: np.ndarray
    nodes: dict = field(default_factory=dict)
    macs: dict = field(default_factory=dict)
    region_sizes: dict = field(default_factory=dict)

    @property
    def total_macs(self):
        """Sum of the MACs over all nodes and positions."""
        return int(sum(self.macs.values()))


def patch_positions(image_hw, patch, stride):
    """All top-left positions ``p*S`` with ``p*S + patch <= W`` per axis, row-major.

    This is the corrected position count of Algorithms 1-2:
    ``floor((W - W_patch) / S_patch) + 1`` per axis (the paper's
    ``floor((W - W_patch + 1) / S_patch)`` drops the last position for many strides).

    Returns
    -------
    ndarray of int64, shape (n_y * n_x, 2)
    """
    (ph, pw), (sh, sw) = _pair(patch, "patch"), _pair(stride, "stride")
    height, width = image_hw
    if ph > height or pw > width:
        raise ValueError(f"patch {(ph, pw)} is larger than the image {(height, width)}")
    ys = np.arange(0, height - ph + 1, sh)
    xs = np.arange(0, width - pw + 1, sw)
    grid = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1)
    return grid.reshape(-1, 2).astype(np.int64)


def _pair(value, what):
    if isinstance(value, (tuple, list, np.ndarray)):
        if len(value) != 2:
            raise ValueError(f"{what} must be an int or a pair (h, w), got {value!r}")
        pair = tuple(value)
    else:
        pair = (value, value)
    for v in pair:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{what} must be a positive integer or a pair, got {value!r}")
        if v < 1:
            raise ValueError(f"{what} must be positive, got {value!r}")
    return int(pair[0]), int(pair[1])


def _fill_patch(fill, channels, patch_hw, dtype):
    """The occluding patch ``(C, h, w)`` from a scalar, per-channel values or an array."""
    arr = np.asarray(fill, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full((channels,) + patch_hw, float(arr))
    elif arr.shape == (channels,):
        arr = np.broadcast_to(arr[:, None, None], (channels,) + patch_hw)
    elif arr.shape != (channels,) + patch_hw:
        raise ValueError(f"fill must be a scalar, {channels} per-channel values or an array of "
                         f"shape {(channels,) + patch_hw}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("fill contains NaN or Inf values")
    return np.ascontiguousarray(arr, dtype=dtype)


def _check_positions(positions, image_hw, patch_hw):
    pos = np.asarray(positions)
    if pos.ndim == 1 and pos.shape == (2,):
        pos = pos[None]
    if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] == 0:
        raise ValueError(f"positions must be a non-empty (P, 2) array of (y, x), got shape {pos.shape}")
    if pos.dtype.kind not in "iu":
        if pos.dtype.kind == "f" and np.all(pos == np.round(pos)):
            pos = pos.astype(np.int64)
        else:
            raise TypeError(f"positions must be integers, got dtype {pos.dtype}")
    pos = pos.astype(np.int64)
    limit = np.array(image_hw) - np.array(patch_hw)
    bad = np.any((pos < 0) | (pos > limit), axis=1)
    if bad.any():
        first = tuple(int(v) for v in pos[np.argmax(bad)])
        raise ValueError(f"patch {patch_hw} at position {first} lies outside the image "
                         f"{tuple(image_hw)}; valid (y, x) are 0..{tuple(int(v) for v in limit)}")
    return pos


@exclusive
@retained_memory()
def incremental_inference(model: Model, image, positions, patch, fill=0.0, batch_size=64,
                          nodes=(), base=None, device="cpu", tau=1.0):
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
    fill : float, array (C,) or array (C, h, w)
        Values of the occluding patch.
    batch_size : int
        Positions processed together; bounds the memory in use. The batches
        take the positions in :func:`schedule.batch_order` (equal regions
        together); the results come back in the order of ``positions``.
    nodes : sequence of str
        Nodes whose stitched values to return as well (``P`` full tensors each).
    base : dict, optional
        Materialised activations of ``image`` from ``model.forward_all`` (without
        the batch axis is not accepted: pass what ``forward_all(image[None])``
        returned) to skip recomputing them.
    device : {"cpu", "cuda"}
        Where to compute. ``"cuda"`` needs numba-cuda (extra ``kryptonref[cuda]``)
        and a GPU; the results are returned as host arrays either way.
    tau : float in (0, 1]
        Projective-field threshold of approximate inference (SIGMOD 2019 eq. 21-27,
        DESIGN.md section 6): a conv or pool layer whose changed region is wider
        than ``round(tau * W_out)`` computes only that many outputs, centred, and
        reads the unoccluded activations elsewhere. ``tau = 1`` (the default) is
        exact; smaller values compute less and approximate more.

    Returns
    -------
    IncrementalResult
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a kryptonref Model, got {type(model).__name__}")
    backend = get_backend(device)
    graph = model.graph
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a NumPy array, got {type(image).__name__}")
    if image.ndim != 3:
        raise ValueError(f"image must have shape {graph.input_shape} (C, H, W), got {image.shape}")
    image = check_image_batch(image[None], graph.input_shape, model.dtype, "image")
    patch_hw = _pair(patch, "patch")
    image_hw = graph.input_shape[1:]
    if patch_hw[0] > image_hw[0] or patch_hw[1] > image_hw[1]:
        raise ValueError(f"patch {patch_hw} is larger than the image {tuple(image_hw)}")
    positions = _check_positions(positions, image_hw, patch_hw)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    for name in nodes:
        if name not in graph.shapes:
            raise ValueError(f"nodes: {name!r} is not a node of the graph")
    fill_patch = _fill_patch(fill, graph.input_shape[0], patch_hw, model.dtype)
    tau = check_tau(tau)
    if base is None:
        materialised = model.run_on(backend, image, keep_all=True)
    else:
        materialised = {name: backend.to_device(np.ascontiguousarray(value))
                        for name, value in base.items()}
    runner = IncrementalRunner(model, backend, materialised, patch_hw, fill_patch, tau)

    order = batch_order(graph, positions, patch_hw, tau)
    values = run_in_order(order, batch_size, lambda batch: runner.run(positions[batch], nodes))
    return IncrementalResult(
        output=values[graph.output],
        positions=positions,
        nodes={name: values[name] for name in nodes},
        macs=runner.macs,
        region_sizes=runner.sizes,
    )


class IncrementalRunner:
    """Incremental inference of one image and one patch, batch after batch.

    Holds what every batch shares: the backend, the materialised activations
    ``M`` (as the backend's arrays: on the GPU for ``"cuda"``), the kernel-ready
    parameters and the fill patch; counts MACs and region sizes per node.

    Parameters
    ----------
    model : Model
    backend : object
        From :func:`kryptonref.backend.get_backend`.
    materialised : dict
        ``name -> (1, ...)`` backend arrays of the unoccluded image's activations.
    patch_hw : (int, int)
    fill_patch : ndarray (C, h, w)
        The occluding patch in the model's dtype.
    tau : float in (0, 1]
        Projective-field threshold (1: exact), already validated.
    """

    def __init__(self, model, backend, materialised, patch_hw, fill_patch, tau=1.0):
        self.model, self.backend, self.patch_hw, self.tau = model, backend, patch_hw, tau
        self.graph = model.graph
        self.base = {name: value[0] for name, value in materialised.items()}
        self.params = backend.params(model)
        self.fill = backend.to_device(np.ascontiguousarray(fill_patch))
        self.macs = {name: 0 for name in self.graph.order}
        self.sizes = {name: [] for name in self.graph.order}

    def run(self, batch, nodes=()):
        """Host arrays ``name -> (B, ...)`` of the output node and of ``nodes``.

        ``batch`` is an already validated ``(B, 2)`` int64 array of positions.
        """
        graph = self.graph
        geos, windows = _plan_batch(graph, batch, self.patch_hw, self.tau)
        self._count(geos, len(batch))
        wanted = (graph.output,) + tuple(n for n in nodes if n != graph.output)
        with self.backend.batch_scope():
            data, offsets = _execute(self.backend, graph, self.params, self.base, geos,
                                     windows, self.fill, len(batch), keep=wanted)
            return {name: self.backend.to_host(_to_whole(self.backend, data[name], geos[name],
                                                         offsets.get(name), self.base[name],
                                                         len(batch)))
                    for name in wanted}

    def _count(self, geos, n_items):
        graph = self.graph
        for name in graph.order:
            geo, layer = geos[name], graph.nodes[name].layer
            shape = graph.shapes[name]
            if isinstance(geo, _Geo):
                self.sizes[name].append((geo.h, geo.w))
                if layer.kind == "spatial" and hasattr(layer, "out_channels"):
                    self.macs[name] += conv_macs(layer, n_items, geo.h, geo.w)
            elif geo is None:
                self.sizes[name].append((0, 0))
            else:
                self.sizes[name].append(tuple(shape[1:]) if len(shape) == 3 else (1, 1))
                if layer.kind == "global":
                    in_shapes = [graph.shapes[i] for i in graph.nodes[name].inputs]
                    self.macs[name] += n_items * layer.macs(in_shapes, shape)


def _plan_batch(graph, batch, patch_hw, tau=1.0):
    """Geometry of every node for one batch, and the read window of each conv/pool node.

    With ``tau < 1`` the conv and pool regions are clamped (:func:`schedule.clamp_region`);
    merges take the bounding box of their inputs' (clamped) regions.

    Returns
    -------
    geos : dict
        ``name -> None | _Geo | _WHOLE``.
    windows : dict
        ``name -> (ry0, rx0, rh, rw)`` for the conv/pool nodes that compute a region.
    """
    n_items = len(batch)
    ys, xs = batch[:, 0].copy(), batch[:, 1].copy()
    geos = {graph.input_name: _Geo(ys, xs, patch_hw[0], patch_hw[1],
                                   (ys, ys + patch_hw[0], xs, xs + patch_hw[1]))}
    windows = {}
    for name in graph.order:
        node = graph.nodes[name]
        layer = node.layer
        ins = [geos[i] for i in node.inputs]
        if layer.kind == "spatial":
            geo, window = _plan_spatial(layer, ins[0], graph.shapes[node.inputs[0]],
                                        graph.shapes[name], n_items, tau)
            if window is not None:
                windows[name] = window
        elif layer.kind == "elementwise":
            geo = ins[0]
        elif layer.kind == "merge":
            geo = _plan_merge(ins, graph.shapes[name])
        else:
            geo = None if ins[0] is None else _WHOLE
        geos[name] = geo
    return geos, windows


def _as_geo(geo, shape, n_items):
    """A whole-tensor geometry seen as a region covering the whole feature map."""
    if geo is not _WHOLE:
        return geo
    exact = whole_region(shape, n_items)
    return _Geo(exact[0], exact[2], shape[1], shape[2], exact)


def _plan_spatial(layer, geo_in, in_shape, out_shape, n_items, tau):
    if geo_in is None:
        return None, None
    geo_in = _as_geo(geo_in, in_shape, n_items)
    exact = spatial_region(layer, geo_in.exact, out_shape, tau)
    if np.all(is_empty(exact)):
        return None, None
    (start_y, start_x), size = batch_region(exact, out_shape[1:])
    windows = []
    for dim, start in enumerate((start_y, start_x)):
        kernel, stride, pad, _, dilation, _ = layer.axis(dim)
        r0, r1 = read_window(start, start + size[dim], kernel, stride, pad, dilation)
        windows.append((r0, int(r1[0] - r0[0])))
    (ry0, rh), (rx0, rw) = windows
    return _Geo(start_y, start_x, size[0], size[1], exact), (ry0, rx0, rh, rw)


def _plan_merge(geos_in, out_shape):
    if all(g is None for g in geos_in):
        return None
    if any(g is _WHOLE for g in geos_in):
        return _WHOLE
    exact = merge_region([None if g is None else g.exact for g in geos_in])
    (start_y, start_x), (h, w) = batch_region(exact, out_shape[1:])
    return _Geo(start_y, start_x, h, w, exact)


def _pack_offsets(backend, graph, geos, windows, n_items):
    """Every integer offset of the batch as backend arrays, moved in one transfer.

    Returns ``name -> (y0, x0)`` for region nodes (whole-tensor nodes read as
    regions at 0), and ``name -> (ry0, rx0)`` for read windows, keyed ``(name, "window")``.
    """
    keys, rows = [], []
    zeros = np.zeros(n_items, np.int64)
    for name in (graph.input_name,) + tuple(graph.order):
        geo = geos[name]
        if isinstance(geo, _Geo):
            keys.append(name)
            rows += [geo.y0, geo.x0]
        elif geo is _WHOLE:
            keys.append(name)
            rows += [zeros, zeros]
    for name, (ry0, rx0, _, _) in windows.items():
        keys.append((name, "window"))
        rows += [ry0, rx0]
    packed = backend.pack_ints(rows)
    return {key: (packed[2 * i], packed[2 * i + 1]) for i, key in enumerate(keys)}


def _execute(backend, graph, params, base, geos, windows, fill, n_items, keep=()):
    """Compute the data of every changed node of a planned batch on ``backend``.

    With ``tau < 1`` nothing changes here: a batch's regions are at most the
    clamped width, so the outputs a batch adds beyond a position's own region
    (:func:`schedule.batch_region`) lie outside its unclamped changed region too,
    read only unchanged inputs, and equal ``M``, as approximate inference wants.
    """
    offsets = _pack_offsets(backend, graph, geos, windows, n_items)
    data = {graph.input_name: backend.repeat(fill, n_items)}
    remaining = {name: len(users) for name, users in graph.consumers().items()}
    fresh = set()  # nodes whose data is an array no other node's data shares
    for name in graph.order:
        node = graph.nodes[name]
        first = node.inputs[0]
        reuse = (node.layer.kind == "elementwise" and first in fresh and remaining[first] == 1
                 and first not in keep)
        _compute_node(backend, graph, params, base, geos, windows, offsets, data, name, n_items,
                      reuse)
        if _owns_its_data(node.layer, geos[name]):
            fresh.add(name)
        else:
            fresh.difference_update(node.inputs)
        for src in node.inputs:  # free what no later node reads
            remaining[src] -= 1
            if remaining[src] == 0 and src not in keep:
                data[src] = None
    return data, offsets


def _owns_its_data(layer, geo):
    """Whether a node's computed data is an array no other node's data shares.

    Conv, pool and region merges write new arrays; element-wise layers write a
    new array or, in place, one that nothing else reads any more. Dropout returns
    its input, and whole-tensor layers may return it or a view of it (Flatten).
    """
    if layer.kind == "elementwise":
        return not isinstance(layer, Dropout)
    return layer.kind == "spatial" or (layer.kind == "merge" and geo is not _WHOLE)


def _compute_node(backend, graph, params, base, geos, windows, offsets, data, name, n_items,
                  reuse=False):
    """The data of one node of a planned batch (``None`` when it is unchanged).

    ``reuse``: an element-wise layer may overwrite its input, which nothing else reads.
    """
    node = graph.nodes[name]
    layer, geo = node.layer, geos[name]
    if geo is None:
        data[name] = None
        return
    src = node.inputs[0]
    if layer.kind == "spatial":
        if _reads_its_input_as_is(windows[name], geos[src], graph.shapes[src], n_items):
            win = data[src]
        else:
            _, _, rh, rw = windows[name]
            wy0, wx0 = offsets[(name, "window")]
            py0, px0 = offsets[src]
            win = backend.gather_windows(base[src], data[src], py0, px0, wy0, wx0, rh, rw,
                                         layer.pad_value)
        y0, x0 = offsets[name]
        data[name] = backend.region(layer, params[name], win, graph.shapes[src][1:],
                                    graph.shapes[name][1:], y0, x0, (geo.h, geo.w))
    elif layer.kind == "elementwise":
        x = data[src]
        data[name] = backend.elementwise(layer, params[name], x, out=x if reuse else None)
    elif layer.kind == "merge" and geo is not _WHOLE:
        data[name] = _merge_windows(backend, layer, node.inputs, base, data, offsets,
                                    offsets[name], geo, graph.shapes[name][0])
    else:
        wholes = [_to_whole(backend, data[i], geos[i], offsets.get(i), base[i], n_items)
                  for i in node.inputs]
        data[name] = backend.full(layer, params[name], wholes, graph.shapes[name])


def _reads_its_input_as_is(window, geo_in, in_shape, n_items):
    """Whether a read window is exactly the input's computed region, for every position.

    Then the input's data is the window (no padding, nothing from ``M``): a 1x1
    convolution with stride 1 and no padding reads what its input computed, and
    gathering it would only copy it.
    """
    if geo_in is None:
        return False
    geo_in = _as_geo(geo_in, in_shape, n_items)
    ry0, rx0, rh, rw = window
    return ((rh, rw) == (geo_in.h, geo_in.w) and np.array_equal(ry0, geo_in.y0)
            and np.array_equal(rx0, geo_in.x0))


def _merge_windows(backend, layer, inputs, base, data, offsets, out_offsets, geo, channels):
    """A merge's region, assembled in one array by gathering its inputs' windows.

    ``Add`` gathers the first input's window and accumulates the others' into
    it (in input order, as :func:`ops.full` sums); ``Concat`` gathers each
    input's window into its own channels.
    """
    y0, x0 = out_offsets
    concat = isinstance(layer, Concat)
    if not concat and not isinstance(layer, Add):
        raise TypeError(f"no region computation for merge layer {type(layer).__name__}")
    out = backend.empty((len(y0), channels, geo.h, geo.w), base[inputs[0]].dtype)
    c_offset = 0
    for k, name in enumerate(inputs):
        patch_y0, patch_x0 = offsets[name] if data[name] is not None else (None, None)
        backend.gather_windows(base[name], data[name], patch_y0, patch_x0, y0, x0, geo.h, geo.w,
                               out=out, c_offset=c_offset, accumulate=not concat and k > 0)
        if concat:
            c_offset += base[name].shape[0]
    return out


def _to_whole(backend, data, geo, offsets, base, n_items):
    """Per-position full tensors ``(B, ...)`` of a node (backend arrays)."""
    if geo is None:
        return backend.repeat(base, n_items)
    if geo is _WHOLE:
        return data
    return backend.stitch(base, data, offsets[0], offsets[1])
