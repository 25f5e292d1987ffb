"""Localisation metrics of occlusion heatmaps against a ground-truth box.

An occlusion heatmap holds, per patch position, the target-class probability
with the patch there: cell ``(i, j)`` is the patch with top-left corner
``(i * stride_y, j * stride_x)`` (row-major, as
:func:`kryptonref.patch_positions` lists them). A cell maps to one image
point, the **patch centre** ``(i * stride_y + patch_h / 2, j * stride_x +
patch_w / 2)``, in continuous pixel coordinates where pixel ``k`` spans
``[k, k + 1)``. A box ``(y0, x0, y1, x1)`` is half-open in pixel indices (as
NumPy slices, :class:`kryptonref.datasets.ShapesData`), so it spans ``[y0, y1]
x [x0, x1]`` in those coordinates; a centre lies in the box when ``y0 - tol <=
cy <= y1 + tol`` and ``x0 - tol <= cx <= x1 + tol``.

* :func:`pointing_game`: does the most sensitive cell, the one with the
  **lowest** target probability (the largest drop), lie in the box?
* :func:`energy_in_box`: the share of the drop energy ``sum(max(p_unoccluded -
  p_occluded, 0))`` of the cells whose centres lie in the box.
"""
from __future__ import annotations

from typing import cast

import numpy as np
import numpy.typing as npt

from ..validate import int_pair as _pair

__all__ = ["cell_centres", "centres_in_box", "pointing_game", "energy_in_box"]


def _heatmap(heatmap: npt.ArrayLike) -> npt.NDArray[np.float64]:
    heat = np.asarray(heatmap, dtype=np.float64)
    if heat.ndim != 2 or heat.size == 0:
        raise ValueError(f"heatmap must be a non-empty 2-D array (positions_y, positions_x), "
                         f"got shape {heat.shape}")
    if not np.all(np.isfinite(heat)):
        raise ValueError("heatmap contains NaN or Inf values")
    return heat


def _box(box: npt.ArrayLike) -> tuple[float, float, float, float]:
    arr = np.asarray(box)
    if arr.shape != (4,):
        raise ValueError(f"box must be (y0, x0, y1, x1), got {box!r}")
    y0, x0, y1, x1 = (float(v) for v in arr)
    if not (y1 > y0 and x1 > x0):
        raise ValueError(f"box must have y1 > y0 and x1 > x0, got {box!r}")
    return y0, x0, y1, x1


def cell_centres(shape: tuple[int, ...], patch: int | tuple[int, int], stride: int | tuple[int, int]
                 ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Patch centres of a heatmap's cells in image coordinates.

    Parameters
    ----------
    shape : (int, int)
        Heatmap shape ``(positions_y, positions_x)``.
    patch, stride : int or (int, int)
        Patch size and stride of the occlusion experiment.

    Returns
    -------
    cy, cx : ndarray (positions_y, 1), ndarray (1, positions_x)
        ``i * stride_y + patch_h / 2`` and ``j * stride_x + patch_w / 2``.

    Examples
    --------
    >>> cy, cx = cell_centres((3, 2), patch=4, stride=2)
    >>> cy.ravel().tolist(), cx.ravel().tolist()
    ([2.0, 4.0, 6.0], [2.0, 4.0])
    """
    (ph, pw), (sh, sw) = _pair(patch, "patch"), _pair(stride, "stride")
    ny, nx = shape
    cy = (np.arange(ny, dtype=np.float64) * sh + ph / 2)[:, None]
    cx = (np.arange(nx, dtype=np.float64) * sw + pw / 2)[None, :]
    return cy, cx


def centres_in_box(shape: tuple[int, ...], box: npt.ArrayLike, patch: int | tuple[int, int],
                   stride: int | tuple[int, int], tolerance: float = 0.0) -> npt.NDArray[np.bool_]:
    """Boolean ``shape`` map: does the cell's patch centre lie in ``box`` (grown by ``tolerance``)?"""
    y0, x0, y1, x1 = _box(box)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    cy, cx = cell_centres(shape, patch, stride)
    return cast("npt.NDArray[np.bool_]",
                ((cy >= y0 - tolerance) & (cy <= y1 + tolerance))
                & ((cx >= x0 - tolerance) & (cx <= x1 + tolerance)))


def pointing_game(heatmap: npt.ArrayLike, box: npt.ArrayLike, patch: int | tuple[int, int],
                  stride: int | tuple[int, int], tolerance: float = 0.0) -> bool:
    """Whether the most sensitive occlusion cell lies in the ground-truth box.

    Parameters
    ----------
    heatmap : array (positions_y, positions_x)
        Target-class probability (or any increasing function of it, such as the
        log-probability) with the patch at each position.
    box : (y0, x0, y1, x1)
        Ground-truth box, half-open in pixel indices.
    patch, stride : int or (int, int)
        Patch size and stride of the experiment.
    tolerance : float
        Pixels by which the box is grown on every side (0: the plain game; Zhang
        et al. use 15 px at 224 px).

    Returns
    -------
    bool
        ``True`` if the centre of the cell with the lowest value (the largest
        drop; the first in row-major order among ties, as ``np.argmin``) lies in
        the box.

    Examples
    --------
    >>> heat = np.ones((5, 5)); heat[3, 1] = 0.2           # patch 8, stride 4
    >>> pointing_game(heat, (12, 4, 20, 12), patch=8, stride=4)   # centre (16, 8)
    True
    """
    heat = _heatmap(heatmap)
    inside = centres_in_box(heat.shape, box, patch, stride, tolerance)
    return bool(inside.flat[int(np.argmin(heat))])


def energy_in_box(heatmap: npt.ArrayLike, box: npt.ArrayLike, patch: int | tuple[int, int],
                  stride: int | tuple[int, int], baseline: float, tolerance: float = 0.0) -> float:
    """Share of the heatmap's drop energy whose patch centres lie in the box.

    The drop energy of a cell is ``max(baseline - heatmap, 0)``: how much the
    patch there lowers the target probability below the unoccluded one.

    Parameters
    ----------
    heatmap : array (positions_y, positions_x)
        Target-class probability with the patch at each position.
    box : (y0, x0, y1, x1)
        Ground-truth box, half-open in pixel indices.
    patch, stride : int or (int, int)
        Patch size and stride of the experiment.
    baseline : float
        The target probability on the unoccluded image.
    tolerance : float
        Pixels by which the box is grown on every side.

    Returns
    -------
    float
        ``sum(drop[in box]) / sum(drop)`` in [0, 1]; ``nan`` when no cell drops
        below the baseline (nothing to localise).

    Examples
    --------
    >>> heat = np.full((3, 3), 0.9); heat[1, 1] = 0.3; heat[0, 2] = 0.7
    >>> share = energy_in_box(heat, (3, 3, 8, 8), patch=4, stride=2, baseline=0.9)
    >>> round(share, 6)          # drop 0.6 at centre (4, 4) in the box, 0.2 at (2, 6) outside
    0.75
    """
    heat = _heatmap(heatmap)
    base = float(baseline)
    if not np.isfinite(base):
        raise ValueError(f"baseline must be finite, got {baseline!r}")
    inside = centres_in_box(heat.shape, box, patch, stride, tolerance)
    drop = np.maximum(base - heat, 0.0)
    total = drop.sum()
    if total <= 0:
        return float("nan")
    return float(drop[inside].sum() / total)
