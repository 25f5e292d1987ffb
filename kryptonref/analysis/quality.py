"""How close an approximate heatmap is to the exact one, and adaptive drill-down's costs.

* :func:`ssim`: structural similarity (Wang, Bovik, Sheikh & Simoncelli 2004),
  the paper's quality measure for approximate heatmaps; written with SciPy's
  Gaussian filter and checked against scikit-image's ``structural_similarity``
  (``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``) in the tests.
* :func:`mean_absolute_error` of two heatmaps.
* :func:`drilldown_speedup` and :func:`coarse_stride_for`: adaptive drill-down's
  predicted speedup ``S1^2 / (S2^2 + r S1^2)`` and the coarse stride reaching a
  target speedup (SIGMOD 2019, ``docs/design.md``, Approximate inference).
"""
from __future__ import annotations

import math
from typing import cast

import numpy as np
import numpy.typing as npt
from scipy.ndimage import gaussian_filter

from ..validate import open_fraction

__all__ = ["ssim", "mean_absolute_error", "drilldown_speedup", "coarse_stride_for",
           ]

#: Gaussian window of Wang et al. 2004: sigma 1.5, cut at 3.5 sigma (11 x 11).
SIGMA, TRUNCATE = 1.5, 3.5
K1, K2 = 0.01, 0.03


def _window_size() -> int:
    return 2 * int(TRUNCATE * SIGMA + 0.5) + 1


def ssim(reference: npt.ArrayLike, other: npt.ArrayLike,
         data_range: float | None = None) -> float:
    """Mean structural similarity of two 2-D maps (1 = identical).

    Local means, variances and covariance are Gaussian-weighted (sigma 1.5,
    11 x 11 window, reflected borders); the SSIM map is averaged over the
    pixels at least 5 from the border, as scikit-image does.

    Parameters
    ----------
    reference, other : array (H, W)
        The exact and the approximate heatmap; at least 11 x 11.
    data_range : float, optional
        The dynamic range of the values; by default the reference's
        ``max - min`` (1 if the reference is constant).

    Returns
    -------
    float
    """
    a, b = (np.asarray(m, np.float64) for m in (reference, other))
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"ssim needs two 2-D maps of the same shape, got {a.shape} and {b.shape}")
    size = _window_size()
    if min(a.shape) < size:
        raise ValueError(f"ssim needs maps of at least {size} x {size} (its Gaussian window), "
                         f"got {a.shape}; use a smaller stride for a larger heatmap")
    if data_range is None:
        data_range = float(a.max() - a.min()) or 1.0
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range!r}")

    def blur(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return cast("npt.NDArray[np.float64]",
                    gaussian_filter(x, sigma=SIGMA, truncate=TRUNCATE, mode="reflect"))

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    pad = (size - 1) // 2
    return float(index[pad:-pad, pad:-pad].mean())


def mean_absolute_error(reference: npt.ArrayLike, other: npt.ArrayLike) -> float:
    """Mean of ``|reference - other|`` over two maps of the same shape."""
    a, b = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"maps of different shapes: {a.shape} and {b.shape}")
    return float(np.mean(np.abs(a - b)))


def drilldown_speedup(coarse_stride: int | tuple[int, int], fine_stride: int | tuple[int, int],
                      r_drill: float) -> float:
    """Predicted speedup of drill-down over the fine grid: ``S1^2 / (S2^2 + r S1^2)``.

    Adaptive drill-down's cost model (SIGMOD 2019, ``docs/design.md``, Approximate inference):
    stage 1 costs ``(S2 / S1)^2`` of the fine grid, stage 2 the fraction ``r``.

    Strides may be ints or ``(S_y, S_x)`` pairs (then ``S^2`` is ``S_y S_x``).
    """
    r: float = open_fraction(r_drill, "r_drill")
    s1, s2 = (float(np.prod(np.broadcast_to(s, (2,)))) for s in (coarse_stride, fine_stride))
    return s1 / (s2 + r * s1)


def coarse_stride_for(target_speedup: float, fine_stride: int, r_drill: float,
                      extent: int) -> int:
    """The coarse stride reaching ``target_speedup``: ``S2 sqrt(T / (1 - r T))``.

    :func:`drilldown_speedup` solved for ``S1`` (SIGMOD 2019, ``docs/design.md``, Approximate inference).

    Rounded up to a multiple of the fine stride (so that coarse positions lie on
    the fine grid) and kept at most ``extent``, the image's size on that axis
    (``W`` in the bound below).

    Raises
    ------
    ValueError
        When the target is not above 1, or not below the bound
        ``min(W^2 / (S2^2 + r W^2), 1 / r)`` with ``W = extent``.
    """
    r: float = open_fraction(r_drill, "r_drill")
    target = float(target_speedup)
    bound = min(extent * extent / (fine_stride * fine_stride + r * extent * extent), 1.0 / r)
    if not 1.0 < target < bound:
        raise ValueError(f"target speedup {target_speedup!r} cannot be reached with r_drill {r} "
                         f"and stride {fine_stride} over {extent} px: it must lie in (1, "
                         f"{bound:.3g}) (the bound min(W^2/(S2^2 + r W^2), 1/r))")
    exact = fine_stride * math.sqrt(target / (1.0 - r * target))
    stride = fine_stride * max(2, math.ceil(exact / fine_stride - 1e-9))
    return int(min(stride, max(fine_stride, extent)))
