"""Incremental inference for batches of occlusion positions (paper Algorithm 2).

For each batch of patch positions the engine walks the graph once. A node's
state for the batch is one of

* ``None``: unchanged for every position; consumers read the materialised
  activations ``M`` of the unoccluded image;
* :class:`_Region`: a compact patch tensor ``(B, C, h, w)`` per position plus
  its offset, and the exact changed region it covers (one region size per
  layer for the batch, regions shifted inward at the borders: DESIGN.md s. 5);
* :class:`_Whole`: the whole tensor per position, after a layer whose every
  output changes (global pooling, flatten, dense, softmax).

Conv and pool layers compute only their (batch-uniform) changed region from a
read window gathered from the input's patch, ``M`` and the padding in one pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .geometry import read_window
from .layers import ops
from .layers.conv import conv_macs
from .layers.window import gather_windows, stitch
from .model import Model, check_image_batch
from .schedule import batch_region, is_empty, merge_region, spatial_region, whole_region

__all__ = ["incremental_inference", "IncrementalResult", "patch_positions"]


@dataclass
class _Region:
    data: np.ndarray          # (B, C, h, w) values of the computed region
    y0: np.ndarray            # (B,) computed region start, rows
    x0: np.ndarray            # (B,) computed region start, columns
    exact: tuple              # (ey0, ey1, ex0, ex1), each (B,): the exact changed region


@dataclass
class _Whole:
    data: np.ndarray          # (B, ...) the whole tensor per position


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
        ``name -> MACs`` the engine performed per node, summed over positions.
    region_sizes : dict
        ``name -> list of (h, w)``: the region computed per node, one per batch.
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


def incremental_inference(model: Model, image, positions, patch, fill=0.0, batch_size=64,
                          nodes=(), base=None):
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
        Positions processed together; bounds the memory in use.
    nodes : sequence of str
        Nodes whose stitched values to return as well (``P`` full tensors each).
    base : dict, optional
        Materialised activations of ``image`` from ``model.forward_all`` (without
        the batch axis is not accepted: pass what ``forward_all(image[None])``
        returned) to skip recomputing them.

    Returns
    -------
    IncrementalResult
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a kryptonref Model, got {type(model).__name__}")
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
    if base is None:
        base = model.forward_all(image)
    materialised = {name: value[0] for name, value in base.items()}

    outputs, extra = [], {name: [] for name in nodes}
    macs = {name: 0 for name in graph.order}
    sizes = {name: [] for name in graph.order}
    for first in range(0, len(positions), batch_size):
        batch = positions[first:first + batch_size]
        states = _run_batch(model, materialised, batch, patch_hw, fill_patch, macs, sizes)
        outputs.append(_to_whole(states[graph.output], materialised[graph.output], len(batch)))
        for name in nodes:
            extra[name].append(_to_whole(states[name], materialised[name], len(batch)))
    return IncrementalResult(
        output=np.concatenate(outputs),
        positions=positions,
        nodes={name: np.concatenate(vals) for name, vals in extra.items()},
        macs=macs,
        region_sizes=sizes,
    )


def _run_batch(model, materialised, batch, patch_hw, fill_patch, macs, sizes):
    graph = model.graph
    n_items = len(batch)
    ys, xs = batch[:, 0].copy(), batch[:, 1].copy()
    states = {graph.input_name: _Region(
        data=np.ascontiguousarray(np.broadcast_to(fill_patch, (n_items,) + fill_patch.shape)),
        y0=ys, x0=xs, exact=(ys, ys + patch_hw[0], xs, xs + patch_hw[1]))}
    prepared = model.prepared
    for name in graph.order:
        node = graph.nodes[name]
        layer = node.layer
        ins = [states[i] for i in node.inputs]
        if layer.kind == "spatial":
            state = _spatial(layer, prepared[name], ins[0], materialised[node.inputs[0]],
                             graph.shapes[name], n_items)
            if isinstance(state, _Region) and hasattr(layer, "out_channels"):
                macs[name] += conv_macs(layer, n_items, *state.data.shape[2:])
        elif layer.kind == "elementwise":
            state = _elementwise(layer, prepared[name], ins[0])
        elif layer.kind == "merge":
            state = _merge(layer, prepared[name], ins, [materialised[i] for i in node.inputs],
                           graph.shapes[name], n_items)
        else:
            state = _global(layer, prepared[name], ins[0], materialised[node.inputs[0]],
                            graph.shapes[name], n_items)
            if state is not None:
                in_shapes = [graph.shapes[i] for i in node.inputs]
                macs[name] += n_items * layer.macs(in_shapes, graph.shapes[name])
        states[name] = state
        sizes[name].append(_state_size(state, graph.shapes[name]))
    return states


def _state_size(state, shape):
    if state is None:
        return (0, 0)
    if isinstance(state, _Region):
        return tuple(state.data.shape[2:])
    return tuple(shape[1:]) if len(shape) == 3 else (1, 1)


def _as_region(state, shape, n_items):
    """A whole-tensor state seen as a region covering the whole feature map."""
    if not isinstance(state, _Whole):
        return state
    exact = whole_region(shape, n_items)
    return _Region(state.data, exact[0], exact[2], exact)


def _spatial(layer, params, state, base_in, out_shape, n_items):
    if state is None:
        return None
    state = _as_region(state, base_in.shape, n_items)
    exact = spatial_region(layer, state.exact, out_shape)
    if np.all(is_empty(exact)):
        return None
    (start_y, start_x), size = batch_region(exact, out_shape[1:])
    windows = []
    for dim, start in enumerate((start_y, start_x)):
        kernel, stride, pad, _, dilation, _ = layer.axis(dim)
        r0, r1 = read_window(start, start + size[dim], kernel, stride, pad, dilation)
        windows.append((r0, int(r1[0] - r0[0])))
    (ry0, rh), (rx0, rw) = windows
    win = gather_windows(base_in, state.data, state.y0, state.x0, ry0, rx0, rh, rw,
                         layer.pad_value)
    data = ops.region(layer, params, win, base_in.shape[1:], out_shape[1:], start_y, start_x,
                      size)
    return _Region(data, start_y, start_x, exact)


def _elementwise(layer, params, state):
    if state is None:
        return None
    data = ops.elementwise(layer, params, state.data)
    if isinstance(state, _Whole):
        return _Whole(data)
    return _Region(data, state.y0, state.x0, state.exact)


def _merge(layer, params, states, bases, out_shape, n_items):
    if all(s is None for s in states):
        return None
    if any(isinstance(s, _Whole) for s in states):
        wholes = [_to_whole(s, b, n_items) for s, b in zip(states, bases)]
        return _Whole(ops.full(layer, params, wholes, out_shape))
    exact = merge_region([None if s is None else s.exact for s in states])
    (start_y, start_x), (h, w) = batch_region(exact, out_shape[1:])
    pieces = [gather_windows(b, None if s is None else s.data,
                             None if s is None else s.y0, None if s is None else s.x0,
                             start_y, start_x, h, w)
              for s, b in zip(states, bases)]
    return _Region(ops.full(layer, params, pieces, out_shape), start_y, start_x, exact)


def _global(layer, params, state, base_in, out_shape, n_items):
    if state is None:
        return None
    whole = _to_whole(state, base_in, n_items)
    return _Whole(ops.full(layer, params, [whole], out_shape))


def _to_whole(state, base, n_items):
    """Per-position full tensors ``(B, ...)`` of a node's state."""
    if state is None:
        return np.broadcast_to(base, (n_items,) + base.shape).copy()
    if isinstance(state, _Whole):
        return state.data
    return stitch(base, np.ascontiguousarray(state.data), state.y0, state.x0)

