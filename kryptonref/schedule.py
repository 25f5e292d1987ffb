"""The batched schedule: which region of each node a batch of positions changes.

This is the geometry half of incremental inference, shared by the engine
(:mod:`kryptonref.engine`, which also computes the values) and the cost
simulator (:mod:`kryptonref.analysis`, which only counts), so that the
simulator's ``executed`` mode counts exactly what the engine computes.

Regions are per position: ``exact = (y0, y1, x0, x1)``, four int64 arrays of
shape (P,), half-open, in the node's own coordinates. A rectangle empty on one
axis is stored empty on both.
"""
from __future__ import annotations

import numpy as np

from .geometry import changed_output, fit_region, union

__all__ = ["spatial_region", "merge_region", "whole_region", "batch_region", "is_empty",
           "clamp_region", "check_tau", "walk_regions", "batch_order", "unpermute",
           "run_in_order"]


def check_tau(tau):
    """Return ``tau`` as a float in (0, 1], else raise ValueError."""
    try:
        value = float(tau)
    except (TypeError, ValueError):
        raise TypeError(f"tau must be a number in (0, 1], got {tau!r}") from None
    if not 0.0 < value <= 1.0:
        raise ValueError(f"tau must lie in (0, 1], got {tau!r}")
    return value


def is_empty(exact):
    """Per position: does the rectangle hold no element?"""
    y0, y1, x0, x1 = exact
    return (y1 <= y0) | (x1 <= x0)


def _normalise(y0, y1, x0, x1):
    y0, y1, x0, x1 = (np.asarray(v, np.int64) for v in (y0, y1, x0, x1))
    empty = (y1 <= y0) | (x1 <= x0)
    return y0, np.where(empty, y0, y1), x0, np.where(empty, x0, x1)


def clamp_region(start, stop, out_size, tau):
    """Projective-field threshold (SIGMOD 2019 eq. 21-27, DESIGN.md section 6).

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


def spatial_region(layer, exact_in, out_shape, tau=1.0):
    """Changed output region of a conv or pool layer for each position (eq. 1-4 generalised)."""
    bounds = []
    for dim, (lo, hi) in enumerate(((exact_in[0], exact_in[1]), (exact_in[2], exact_in[3]))):
        kernel, stride, pad, _, dilation, _ = layer.axis(dim)
        start, stop = changed_output(lo, hi, kernel, stride, pad, dilation, out_shape[1 + dim])
        bounds += list(clamp_region(np.asarray(start), np.asarray(stop), out_shape[1 + dim], tau))
    return _normalise(*bounds)


def merge_region(exacts):
    """Bounding box of the inputs' regions (SIGMOD 2019 eq. 20); ``None`` inputs are unchanged."""
    live = [e for e in exacts if e is not None]
    lo_y, hi_y = union([e[0] for e in live], [e[1] for e in live])
    lo_x, hi_x = union([e[2] for e in live], [e[3] for e in live])
    return _normalise(lo_y, hi_y, lo_x, hi_x)


def whole_region(shape, n_positions):
    """The whole ``(C, H, W)`` feature map as every position's region."""
    zeros = np.zeros(n_positions, np.int64)
    return (zeros, np.full(n_positions, shape[1], np.int64),
            zeros, np.full(n_positions, shape[2], np.int64))


def batch_region(exact, out_hw):
    """One region size for a batch and each position's start (DESIGN.md section 5).

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


def walk_regions(graph, pos, patch_hw, tau=1.0, spread=None):
    """Each node's changed region for every position, node by node (SIGMOD 2019 eq. 1-8, 20).

    Vectorised over the positions. A node is either a *region node*, with each
    position's changed rectangle, or, from a layer whose every output changes
    (global pooling, flatten, dense, softmax) on, a *whole node*, with a flag per
    position saying whether it changed at all. A conv or pool layer reading a
    whole node sees the whole feature map as the region of the positions that
    changed it. This mirrors the engine's plan (:func:`kryptonref.engine._plan_batch`).

    Parameters
    ----------
    graph : Graph
    pos : ndarray of int64, shape (P, 2)
        Top-left ``(y, x)`` of each patch.
    patch_hw : (int, int)
    tau : float in (0, 1]
        Projective-field threshold (:func:`clamp_region`); 1 is exact.
    spread : callable, optional
        ``flags -> flags``, applied to a whole node's flags. The engine computes a
        whole node for every position of a batch as soon as one of them changed
        it; the cost simulator passes "any position of the batch" to count that.

    Yields
    ------
    name : str
        The nodes in topological order.
    exact : tuple of four ndarray (P,) or None
        A region node's ``(y0, y1, x0, x1)``; ``None`` for a whole node.
    live : ndarray of bool (P,) or None
        A whole node's flags; ``None`` for a region node.
    """
    ys, xs = pos[:, 0], pos[:, 1]
    exact = {graph.input_name: (ys, ys + patch_hw[0], xs, xs + patch_hw[1])}
    live = {}
    spread = spread or (lambda flags: flags)

    def changed(name):
        return live[name] if name in live else ~is_empty(exact[name])

    def as_region(name):
        if name not in live:
            return exact[name]
        return tuple(np.where(live[name], v, 0) for v in whole_region(graph.shapes[name], len(pos)))

    for name in graph.order:
        node = graph.nodes[name]
        layer, ins = node.layer, node.inputs
        if layer.kind == "spatial":
            exact[name] = spatial_region(layer, as_region(ins[0]), graph.shapes[name], tau)
        elif layer.kind == "elementwise":
            if ins[0] in live:
                live[name] = live[ins[0]]
            else:
                exact[name] = exact[ins[0]]
        elif layer.kind == "merge" and not all(i in live for i in ins):
            # A whole input changed for the batch makes the merge whole; one that did
            # not is left out of the bounding box (the engine's _plan_merge).
            exact[name] = merge_region([as_region(i) for i in ins])
        else:
            live[name] = spread(np.any([changed(i) for i in ins], axis=0))
        yield name, exact.get(name), live.get(name)


def batch_order(graph, positions, patch_hw, tau=1.0):
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
    for _, exact, _ in walk_regions(graph, positions, patch_hw, tau):
        if exact is not None:
            heights.append(exact[1] - exact[0])
            widths.append(exact[3] - exact[2])
    y_class, x_class = (_size_class(np.stack(sizes, axis=1)) for sizes in (heights, widths))
    return np.lexsort((np.arange(n_pos), _hilbert_index(y_class, x_class))).astype(np.int64)


def _size_class(sizes):
    """Per row of ``sizes`` (P, L): the rank of its distinct row, ordered by its sum."""
    sizes = np.ascontiguousarray(sizes, np.int64)
    # One opaque key per row: 20x faster than np.unique(sizes, axis=0) on Inception v3.
    keys = sizes.view(np.dtype((np.void, sizes.itemsize * sizes.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(sizes[first].sum(axis=1), kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def _hilbert_index(y, x):
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


def unpermute(values, order):
    """Rows computed for ``positions[order]``, back in the order of ``positions``."""
    out = np.empty_like(values)
    out[order] = values
    return out


def run_in_order(order, batch_size, compute):
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
    results = {}
    for first in range(0, len(order), batch_size):
        indices = order[first:first + batch_size]
        for name, values in compute(indices).items():
            if name not in results:
                results[name] = np.empty((len(order),) + values.shape[1:], values.dtype)
            results[name][indices] = values
    return results
