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
           "clamp_region", "check_tau"]


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
