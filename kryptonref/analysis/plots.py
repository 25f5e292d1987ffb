"""Occlusion heatmaps in image coordinates, and the side-by-side overlay figure.

An occlusion experiment gives one value per patch position: a ``(n_y, n_x)`` heatmap
whose cell ``(i, j)`` belongs to the patch with top-left corner ``(i * S_y, j * S_x)``,
the row-major order of ``kryptonref.patch_positions``. ``upsample_heatmap`` spreads the
cells back over the pixels their patches cover; ``save_overlay`` draws the image next to
the image with the heatmap over it. matplotlib is needed only for ``save_overlay``
(``pip install 'kryptonref[plot]'``) and imported when it is called; the figure is drawn
with the Agg canvas directly, without pyplot, so no global backend is switched.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from ..files import atomic_write, check_writable, figure_format
from ..validate import int_pair as _pair

if TYPE_CHECKING:
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure as _Figure

__all__ = ["upsample_heatmap", "save_overlay"]


def _cover(length: int, patch: int, stride: int, count: int) -> npt.NDArray[np.float64]:
    """``(length, count)`` 0/1 matrix: pixel ``y`` lies in the patch of cell ``i``."""
    starts = np.arange(count) * stride
    pixels = np.arange(length)[:, None]
    return ((pixels >= starts[None, :]) & (pixels < starts[None, :] + patch)).astype(np.float64)


def _grid_shape(image_hw: tuple[int, int], patch: tuple[int, int],
                stride: tuple[int, int]) -> tuple[int, int]:
    (ph, pw), (sh, sw) = patch, stride
    height, width = image_hw
    if ph > height or pw > width:
        raise ValueError(f"patch {(ph, pw)} is larger than the image {(height, width)}")
    return (height - ph) // sh + 1, (width - pw) // sw + 1


def upsample_heatmap(heatmap: npt.ArrayLike, image_hw: Sequence[int], patch: int | tuple[int, int],
                     stride: int | tuple[int, int]) -> npt.NDArray[np.float64]:
    """Spread an occlusion heatmap over the pixels its patches cover.

    Cell ``(i, j)`` stands for the patch occupying rows ``i*S_y ... i*S_y + P_y - 1`` and
    columns ``j*S_x ... j*S_x + P_x - 1``. Each pixel gets the **mean of the cells whose
    patches cover it**. With ``stride == patch`` that is a block upsampling (every pixel
    in exactly one patch); with ``stride < patch`` the patches overlap and a pixel
    averages the (up to ``ceil(P/S)`` per axis) cells around it, so the map stays centred
    on the patches (a single hot cell spreads exactly over its own patch's area, with
    its centre of mass at the patch centre); with ``stride > patch`` the gaps between
    patches are not covered. Pixels no patch covers (gaps, and the right/bottom margin
    when ``(W - P) % S != 0``) are NaN, as are pixels covered only by NaN cells.

    Parameters
    ----------
    heatmap : array_like, shape (n_y, n_x) or (n_y * n_x,)
        One value per patch position (a flat array is in ``patch_positions`` order);
        ``n_y = (H - P_y) // S_y + 1`` and ``n_x = (W - P_x) // S_x + 1``.
    image_hw : (int, int)
        The image height and width the patches were placed on.
    patch, stride : int or (int, int)
        The occlusion patch size and stride.

    Returns
    -------
    ndarray of float64, shape (H, W)
    """
    patch, stride = (cast("tuple[int, int]", _pair(patch, "patch")),
                     cast("tuple[int, int]", _pair(stride, "stride")))
    height, width = (int(v) for v in image_hw)
    ny, nx = _grid_shape((height, width), patch, stride)
    values = np.asarray(heatmap, dtype=np.float64)
    if values.ndim == 1 and values.size == ny * nx:
        values = values.reshape(ny, nx)
    if values.shape != (ny, nx):
        raise ValueError(f"heatmap has shape {np.shape(heatmap)}, but patch {patch} with "
                         f"stride {stride} on a {height}x{width} image has {ny}x{nx} "
                         f"positions: expected ({ny}, {nx})")
    rows = _cover(height, patch[0], stride[0], ny)          # (H, n_y)
    cols = _cover(width, patch[1], stride[1], nx)           # (W, n_x)
    finite = np.isfinite(values)
    total = rows @ np.where(finite, values, 0.0) @ cols.T
    count = rows @ finite.astype(np.float64) @ cols.T
    with np.errstate(invalid="ignore", divide="ignore"):
        return cast("npt.NDArray[np.float64]",
                    np.where(count > 0, total / np.where(count > 0, count, 1.0), np.nan))


def _display_image(image: npt.ArrayLike) -> npt.NDArray[np.float64]:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        hint = " (use kryptonref.images.to_display for a (3, H, W) image)" \
            if arr.ndim == 3 and arr.shape[0] == 3 else ""
        raise ValueError(f"image_display must have shape (H, W, 3), got {arr.shape}{hint}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("image_display has non-finite values")
    return cast("npt.NDArray[np.float64]", np.clip(arr, 0.0, 1.0))


def _matplotlib() -> tuple[Any, Any, Any]:
    from .._optional import optional_module
    figure, backend, cm = (optional_module(name, "save_overlay", "plot", "matplotlib")
                           for name in ("matplotlib.figure", "matplotlib.backends.backend_agg",
                                        "matplotlib.cm"))
    return figure.Figure, backend.FigureCanvasAgg, cm.ScalarMappable


def save_overlay(image_display: npt.ArrayLike, heatmap: npt.ArrayLike,
                 path: os.PathLike[str] | str, patch: int | tuple[int, int],
                 stride: int | tuple[int, int], title: str | None = None, alpha: float = 0.5,
                 cmap: str | Colormap = "inferno",
                 score: float | None = None, score_name: str = "score") -> _Figure:
    """Write a figure (PNG, JPEG, PDF or SVG, by ``path``'s extension), whole or not at
    all: the image, and next to it the image with the occlusion heatmap over it.

    With ``score`` (the target's score on the unoccluded image, e.g.
    ``result.probability``), the overlay shows what occlusion explains: the *drop* in
    that score when each region is covered, ``score - heatmap``, so that the important
    regions are the hot ones; the colour bar is in those units, starts at no drop, and
    the panel states the drop's true range (a range of 0.993-0.999 is not stretched to
    look dramatic). Without it the heatmap is shown as given.

    Parameters
    ----------
    image_display : array_like, shape (H, W, 3)
        The image as displayed: floats in [0, 1] (clipped) or uint8; for a normalised
        ``(3, H, W)`` image use ``kryptonref.images.to_display``.
    heatmap : array_like, shape (n_y, n_x) or (n_y * n_x,)
        One value per patch position (e.g. the drop in the predicted class's
        probability), on the patch grid of ``patch`` and ``stride`` over ``(H, W)``.
    path : str or os.PathLike
        The file to write (its folder must exist; the format follows the extension).
    patch, stride : int or (int, int)
        The occlusion patch size and stride the heatmap was computed with.
    title : str, optional
        A title over both panels.
    alpha : float, default 0.5
        Opacity of the heatmap over the image, in [0, 1].
    cmap : str or matplotlib colormap, default "inferno"
        Hot colours for large values (large drops).
    score : float, optional
        The unoccluded score the heatmap's values are compared with (see above).
    score_name : str, default "score"
        What the score is, for the colour bar (e.g. ``"probability of 'cat'"``).

    Returns
    -------
    matplotlib.figure.Figure
        The figure written (for notebooks: display it, or save it again elsewhere).

    Raises
    ------
    ValueError
        If the shapes do not agree, ``alpha`` is outside [0, 1], the heatmap has no
        finite value, or matplotlib rejects an argument (e.g. an unknown ``cmap``).
    ImportError
        If matplotlib is not installed (``pip install 'kryptonref[plot]'``).
    """
    image = _display_image(image_display)
    height, width = image.shape[:2]
    values = np.asarray(heatmap, dtype=np.float64)
    if score is not None:
        if isinstance(score, (bool, np.bool_)) or not np.isfinite(score):
            raise ValueError(f"score must be a finite number, got {score!r}")
        values = float(score) - values                       # the drop: important = hot
    upsampled = upsample_heatmap(values, (height, width), patch, stride)
    if not np.any(np.isfinite(upsampled)):
        raise ValueError("heatmap has no finite values")
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.number)) \
            or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    path = os.fspath(path)
    fmt = figure_format(path)          # (format and destination checked before drawing)
    check_writable(path)
    patch_hw, stride_hw = _pair(patch, "patch"), _pair(stride, "stride")
    Figure, FigureCanvasAgg, ScalarMappable = _matplotlib()
    low, high = float(np.nanmin(upsampled)), float(np.nanmax(upsampled))
    if score is not None:              # the scale starts at "no drop", in true units
        low, high = min(low, 0.0), max(high, 0.0)
        label = f"drop in {score_name} when covered"
        # (the heatmap's own range, per patch position; pixels average their patches)
        detail = f"drop {np.nanmin(values):.3g} to {np.nanmax(values):.3g}"
    else:
        label, detail = "value with the patch", f"{low:.3g} to {high:.3g}"
    if high <= low:
        high = low + 1e-12
    panel_w = 4.5
    panel_h = panel_w * height / width
    fig: _Figure = Figure(figsize=(2 * panel_w + 1.2, panel_h + (0.9 if title else 0.5)),
                 layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.imshow(image, interpolation="nearest")
    left.set_title("image")
    right.imshow(image, interpolation="nearest")
    shown = right.imshow(np.ma.masked_invalid(upsampled), cmap=cmap, alpha=float(alpha),
                         interpolation="nearest", vmin=low, vmax=high)
    right.set_title(f"occlusion (patch {patch_hw[0]}x{patch_hw[1]}, stride "
                    f"{stride_hw[0]}x{stride_hw[1]}): {detail}", fontsize="medium")
    for ax in (left, right):
        ax.set_axis_off()
    opaque = ScalarMappable(norm=shown.norm, cmap=shown.cmap)  # the bar without alpha
    fig.colorbar(opaque, ax=right, shrink=0.9, label=label)
    if title:
        fig.suptitle(str(title))
    atomic_write(path, lambda target: fig.savefig(target, dpi=100, bbox_inches="tight",
                                                  format=fmt))
    return fig
