"""Adaptive drill-down (SIGMOD 2019, ``docs/design.md``, Approximate inference).

Stage 1 occludes at a coarse stride ``S1`` (a multiple of the fine stride ``S2``,
so its positions lie on the fine grid) and interpolates the fine grid between
them. Stage 2 occludes at the fine stride, but only inside the ``r_drill``
fraction of coarse cells where the patch lowered the target probability most. The fine-grid heatmap costs about
``S2^2 / S1^2 + r_drill`` of the exact one: a predicted speedup of
``S1^2 / (S2^2 + r S1^2)``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .analysis.quality import coarse_stride_for
from .validate import open_fraction

__all__ = ["choose_coarse_stride", "drilldown"]


def choose_coarse_stride(fine_stride: Sequence[int], image_hw: Sequence[int],
                         patch_hw: Sequence[int], r_drill: float, target_speedup: float,
                         coarse_stride: Sequence[int] | None = None) -> tuple[int, ...]:
    """The coarse stride per axis: the one given (checked), or the paper's formula's.

    Raises ValueError for a coarse stride smaller than the fine one or not a
    multiple of it, and for a target speedup outside the reachable range.
    """
    if coarse_stride is not None:
        for s1, s2 in zip(coarse_stride, fine_stride):
            if s1 < s2 or s1 % s2:
                raise ValueError(f"coarse stride {tuple(coarse_stride)} must be at least the fine "
                                 f"stride {tuple(fine_stride)} and a multiple of it on each axis")
        return tuple(int(s) for s in coarse_stride)
    return tuple(coarse_stride_for(target_speedup, s2, r_drill, image_hw[d])
                 for d, s2 in enumerate(fine_stride))


def _coarse_grid(n: int, step: int) -> npt.NDArray[np.int_]:
    """Fine indices of the coarse positions on one axis: 0, step, 2 step, ... (< n)."""
    return np.arange(0, n, step)


def _nearest_cells(coarse_index: int, step: int, n: int) -> range:
    """Fine indices nearest to the coarse position at ``coarse_index`` (its cell)."""
    return range(max(0, coarse_index - step // 2), min(n, coarse_index - step // 2 + step))


def drilldown(evaluate: Callable[[npt.NDArray[np.int64]], npt.ArrayLike],
              grid_shape: Sequence[int], steps: Sequence[int], r_drill: float,
              baseline: float) -> tuple[npt.NDArray[np.floating[Any]], npt.NDArray[np.bool_]]:
    """The fine-grid heatmap by drill-down.

    Stage 1 evaluates the coarse positions (every ``steps``-th fine cell) and
    fills the fine grid by bilinear interpolation between them (the nearest
    coarse value beyond the last one). Stage 2 evaluates every fine cell of the
    ``r_drill`` fraction of coarse cells with the largest drop, a coarse cell
    being the fine cells nearer to its position than to any other.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(fine_indices) -> values``: the target probability with the
        patch at each fine-grid cell ``(i, j)`` of an ``(n, 2)`` int array.
    grid_shape : (int, int)
        The fine grid's shape.
    steps : (int, int)
        Coarse stride over fine stride, per axis (the coarse cell size in fine cells).
    r_drill : float in (0, 1)
        Fraction of coarse cells refined at the fine stride.
    baseline : float
        Target probability without occlusion (the drop is ``baseline - value``).

    Returns
    -------
    heatmap : ndarray (n_y, n_x)
    computed : ndarray of bool (n_y, n_x)
        The cells evaluated (the others are interpolated).
    """
    r_drill = open_fraction(r_drill, "r_drill")
    n_y, n_x = grid_shape
    k_y, k_x = steps
    rows, cols = _coarse_grid(n_y, k_y), _coarse_grid(n_x, k_x)
    coarse = np.array([(i, j) for i in rows for j in cols], np.int64)
    coarse_values = np.asarray(evaluate(coarse), np.float64)
    grid = coarse_values.reshape(len(rows), len(cols))
    along_x = np.array([np.interp(np.arange(n_x), cols, row) for row in grid])
    heatmap = np.array([np.interp(np.arange(n_y), rows, column) for column in along_x.T]).T
    computed = np.zeros(grid_shape, bool)
    heatmap[coarse[:, 0], coarse[:, 1]] = coarse_values
    computed[coarse[:, 0], coarse[:, 1]] = True
    n_refined = math.ceil(r_drill * len(coarse))
    order = np.argsort(-(baseline - coarse_values), kind="stable")[:n_refined]
    fine = [(y, x) for i, j in coarse[order]
            for y in _nearest_cells(i, k_y, n_y) for x in _nearest_cells(j, k_x, n_x)
            if not computed[y, x]]
    if fine:
        cells = np.array(fine, np.int64)
        heatmap[cells[:, 0], cells[:, 1]] = evaluate(cells)
        computed[cells[:, 0], cells[:, 1]] = True
    return heatmap, computed
