"""Choosing approximate inference's settings for a target heatmap quality.

:func:`tune_tau` follows the paper's procedure for the projective-field
threshold (SIGMOD 2019, ``docs/design.md``, Approximate inference): on sample images, compute the
exact heatmap and the approximate one for tau on a grid from 1.0 down to 0.4,
take the mean SSIM per tau, fit a quadratic ``SSIM(tau)``, and solve it for the
target SSIM.

:func:`tune_drilldown` picks adaptive drill-down's coarse stride and
``r_drill`` the same way, by a search instead of a fit: a drill-down heatmap
takes its values from the heatmap at the fine stride (exact, or at ``tau``),
so one such heatmap per image gives the drill-down heatmap of every setting
without occluding again. Given several taus, it searches them jointly with
drill-down's knobs, ranking settings by the cost model's predicted work.
Both check their choice on held-out images.

With ``freeze_context=True`` both tune the frozen-context approximation
(``docs/approximate.md``, Freezing global context): the reference heatmaps stay
exact, every approximate heatmap (tau = 1 included, which is then no longer
exact) keeps the squeeze-excitation gates at their unoccluded values, and the
predicted speedups count the MACs of frozen-context inference.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Union, cast

import numpy as np
import numpy.typing as npt

from .analysis.cost import speedup as cost_model_speedup
from . import validate
from .analysis.quality import ssim
from .drilldown import drilldown
from .engine import patch_positions
from .explain import DEFAULT_BATCH, ProgressBar, _progress_bar, occlusion
from .validate import FloatArray

if TYPE_CHECKING:
    from .explain import OcclusionResult
    from .model import Model

#: Images: an (N, C, H, W) array or a sequence of (C, H, W) arrays.
Images = Union[FloatArray, Sequence[FloatArray]]

__all__ = ["tune_tau", "TauTuning", "DEFAULT_GRID", "tune_drilldown", "DrilldownTuning",
           "DRILL_STEPS", "DRILL_FRACTIONS", "CONFIDENCE_Z"]

#: The paper's grid of tau values.
DEFAULT_GRID = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)


@dataclass
class TauTuning:
    """What :func:`tune_tau` returns.

    Attributes
    ----------
    tau : float
        The smallest tau whose fitted SSIM reaches the target (and stays above it
        up to tau = 1); 1.0 when even the fit at 1 does not.
    target_ssim : float
    reached : bool
        Whether the fitted curve reaches the target below tau = 1.
    grid, mean_ssim : ndarray
        The taus tried and the mean SSIM of each over the fitting images.
    coefficients : ndarray (3,)
        The quadratic ``a tau^2 + b tau + c`` fitted to ``mean_ssim``.
    held_out_ssim : float or None
        Mean SSIM at ``tau`` on the held-out images (None without any).
    n_fit, n_held_out : int
        Images used for the fit and for the check.
    ssim_per_image : list of list of float
        SSIM per fitting image (rows) and tau (columns).
    freeze_context : bool
        Whether the approximate heatmaps kept global-context gates frozen (then
        tau = 1 is measured, not taken as exact).
    """

    tau: float
    target_ssim: float
    reached: bool
    grid: npt.NDArray[np.float64]
    mean_ssim: npt.NDArray[np.float64]
    coefficients: npt.NDArray[np.float64]
    held_out_ssim: Optional[float]
    n_fit: int
    n_held_out: int
    ssim_per_image: list[list[float]] = field(default_factory=list)
    freeze_context: bool = False

    def fitted(self, tau: Union[float, npt.NDArray[np.float64]]) -> Any:
        """The fitted SSIM at ``tau`` (scalar or array)."""
        return np.polyval(self.coefficients, tau)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {"tau": self.tau, "target_ssim": self.target_ssim, "reached": bool(self.reached),
                "grid": [float(t) for t in self.grid],
                "mean_ssim": [float(v) for v in self.mean_ssim],
                "coefficients": [float(c) for c in self.coefficients],
                "held_out_ssim": self.held_out_ssim, "n_fit": self.n_fit,
                "n_held_out": self.n_held_out, "freeze_context": bool(self.freeze_context)}


def _solve(coefficients: npt.NDArray[np.float64], target: float, low: float) -> tuple[float, bool]:
    """Smallest tau in [low, 1] from which the fitted curve stays >= target up to 1."""
    taus = np.linspace(1.0, low, 1201)
    ok = np.polyval(coefficients, taus) >= target
    if not ok[0]:
        return 1.0, False
    first_bad = int(np.argmin(ok)) if not ok.all() else len(taus)
    return float(taus[first_bad - 1]), bool(first_bad > 1)


def _heatmap_pair_ssim(model: Model, image: FloatArray, taus: Iterable[float],
                       settings: dict[str, Any], bar: ProgressBar,
                       freeze_context: bool = False) -> list[float]:
    exact = occlusion(model, image, mode="incremental", **settings)
    values: list[float] = []
    for tau in taus:
        if tau >= 1.0 and not freeze_context:
            values.append(1.0)  # tau = 1 is exact: the same heatmap
        else:
            approx = occlusion(model, image, mode="approximate", tau=tau, target=exact.label,
                               freeze_context=freeze_context, **settings)
            values.append(ssim(exact.heatmap, approx.heatmap))
        bar.update(1)
    return values


def tune_tau(model: Model, images: Images, target_ssim: float = 0.9,
             patch: Union[int, Sequence[int]] = 16, stride: Union[int, Sequence[int]] = 4,
             fill: Any = 0.0, grid: Iterable[float] = DEFAULT_GRID,
             held_out: Optional[Images] = None, batch_size: Optional[int] = None,
             device: str = "cpu", progress: bool = False,
             freeze_context: bool = False) -> TauTuning:
    """Tune tau so that approximate heatmaps reach ``target_ssim`` against exact ones.

    Parameters
    ----------
    model : Model
    images : array (N, C, H, W) or sequence of (C, H, W) arrays
        Sample images (the paper uses about 30). Each is explained for its
        predicted class.
    target_ssim : float in (0, 1]
    patch, stride, fill, batch_size, device
        As for :func:`kryptonref.occlusion` (``batch_size=None``: its defaults);
        the heatmap must be at least 11 x 11 for SSIM.
    grid : sequence of float
        The taus to try, in (0, 1]; the paper's 1.0 .. 0.4 by default.
    held_out : array or sequence of images, optional
        Images to check the chosen tau on. By default, with three or more
        images, the last third of ``images`` is held out.
    progress : bool
        A progress bar over the occlusion runs (needs tqdm).
    freeze_context : bool
        Tune tau for the frozen-context approximation: the approximate heatmaps
        (at every tau of the grid, 1 included) keep global-context gates at their
        unoccluded values; the references stay exact.

    Returns
    -------
    TauTuning
    """
    target_ssim = validate.unit_interval(target_ssim, "target_ssim")
    fit_images, check_images = _split_held_out(model, images, held_out, "tune_tau")
    grid = tuple(grid)
    taus = np.array(sorted({float(t) for t in grid}, reverse=True))
    if len(taus) < 3 or taus.min() <= 0 or taus.max() > 1:
        raise ValueError(f"grid needs at least 3 distinct taus in (0, 1], got {grid}")
    _check_heatmap_size(model, patch, stride)
    settings = dict(patch=patch, stride=stride, fill=fill, batch_size=batch_size, device=device)

    bar = _progress_bar(len(fit_images) * len(taus) + len(check_images), progress)
    freeze_context = bool(freeze_context)
    per_image = [_heatmap_pair_ssim(model, im, taus, settings, bar, freeze_context)
                 for im in fit_images]
    mean = np.mean(per_image, axis=0)
    coefficients = np.polyfit(taus, mean, 2)
    tau, reached = _solve(coefficients, target_ssim, float(taus.min()))
    checks = [_heatmap_pair_ssim(model, im, [tau], settings, bar, freeze_context)[0]
              for im in check_images]
    bar.close()
    return TauTuning(tau=tau, target_ssim=target_ssim, reached=reached, grid=taus,
                     mean_ssim=mean, coefficients=coefficients,
                     held_out_ssim=float(np.mean(checks)) if checks else None,
                     n_fit=len(fit_images), n_held_out=len(check_images),
                     ssim_per_image=per_image,
                     freeze_context=freeze_context)


#: Coarse strides :func:`tune_drilldown` tries, in multiples of the fine stride.
DRILL_STEPS = (2, 3, 4, 5, 6)
#: ``r_drill`` values :func:`tune_drilldown` tries.
DRILL_FRACTIONS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
#: One-sided 95% normal quantile: :func:`tune_drilldown` requires the mean SSIM less
#: this many standard errors to reach the target.
CONFIDENCE_Z = 1.645


@dataclass
class DrilldownTuning:
    """What :func:`tune_drilldown` returns.

    Attributes
    ----------
    coarse_stride : (int, int)
        The chosen coarse stride ``S1`` (pass as ``coarse_stride=`` to
        :func:`kryptonref.occlusion`).
    r_drill : float
    tau : float
        The chosen projective-field threshold (1: exact), the only one when the
        search was given one.
    target_ssim : float
    reached : bool
        Whether some setting reaches the target (its lower bound, below); if none
        does, the setting with the highest lower bound.
    speedup : float
        Heatmap cells over the cells drill-down occludes, over the fitting images
        (the measured count; :func:`kryptonref.analysis.drilldown_speedup` predicts it).
    predicted_speedup : float
        The chosen setting's predicted speedup over exact incremental inference:
        ``speedup`` times the MACs of exact incremental inference over those at
        ``tau`` (:func:`kryptonref.speedup`, ``mode="executed"``, over the whole grid).
        The search keeps the passing setting with the largest.
    mean_ssim : float
        Mean SSIM of the chosen setting against exact heatmaps, fitting images.
    lower_ssim : float
        Its one-sided 95% lower confidence bound, ``mean - 1.645 s / sqrt(n)`` over
        the ``n`` fitting images (the mean itself for one image).
    held_out_ssim : float or None
        Mean SSIM of ``kryptonref.occlusion`` run with the chosen setting on the
        held-out images (None without any).
    n_fit, n_held_out : int
    table : list of dict
        Every setting tried, by tau (largest first), then coarse step, then
        ``r_drill``: ``tau``, ``steps`` (S1 / S2), ``r_drill``, ``mean_ssim``,
        ``lower_ssim``, ``min_ssim``, ``speedup`` (the cells ratio, as above),
        ``predicted_speedup``.
    freeze_context : bool
        Whether the chosen setting (and every one tried) keeps global-context gates
        frozen; ``predicted_speedup`` then counts frozen-context MACs.
    """

    coarse_stride: tuple[int, int]
    r_drill: float
    tau: float
    target_ssim: float
    reached: bool
    speedup: float
    predicted_speedup: float
    mean_ssim: float
    lower_ssim: float
    held_out_ssim: Optional[float]
    n_fit: int
    n_held_out: int
    table: list[dict[str, Any]] = field(default_factory=list)
    freeze_context: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {"coarse_stride": list(self.coarse_stride), "r_drill": self.r_drill,
                "tau": self.tau, "target_ssim": self.target_ssim, "reached": bool(self.reached),
                "speedup": self.speedup, "predicted_speedup": self.predicted_speedup,
                "mean_ssim": self.mean_ssim,
                "lower_ssim": self.lower_ssim, "held_out_ssim": self.held_out_ssim,
                "n_fit": self.n_fit, "n_held_out": self.n_held_out, "table": self.table,
                "freeze_context": bool(self.freeze_context)}


def _split_held_out(model: Model, images: Images, held_out: Optional[Images],
                    tuner: str) -> tuple[list[FloatArray], list[FloatArray]]:
    """The fitting images and the held-out ones (the last third by default), every one
    checked before any is explained (a NaN in the second image was found only after the
    first one's long run, without its index).

    Raises ValueError, naming ``tuner``, when no image is left to fit on.
    """
    validate.model(model)
    fit = validate.image_list(images, model.graph.input_shape, model.dtype, "images")
    if not fit:
        raise ValueError(f"{tuner} needs at least one image")
    if held_out is not None:
        return fit, validate.image_list(held_out, model.graph.input_shape, model.dtype,
                                        "held_out")
    if len(fit) >= 3:
        n_hold = len(fit) // 3
        return fit[:-n_hold], fit[-n_hold:]
    return fit, []


def _check_heatmap_size(model: Model, patch: Union[int, Sequence[int]],
                        stride: Union[int, Sequence[int]]) -> None:
    """Raise ValueError before any occlusion if the heatmap is too small for SSIM."""
    image_hw = tuple(model.graph.input_shape[1:])
    positions = patch_positions(image_hw, patch, stride)
    cells = tuple(len(np.unique(positions[:, axis])) for axis in (0, 1))
    if min(cells) < 11:
        raise ValueError(f"patch {validate.int_pair(patch, 'patch')} at stride {validate.int_pair(stride, 'stride')} "
                         f"gives a {cells[0]} x {cells[1]} heatmap on {image_hw[0]} x "
                         f"{image_hw[1]} images; SSIM needs at least 11 x 11 (use a smaller "
                         f"stride)")


def _drilldown_quality(exact: OcclusionResult, source: OcclusionResult, steps: tuple[int, int],
                      r_drill: float) -> tuple[float, int]:
    """SSIM against ``exact`` and the cells occluded, of drill-down reading ``source``.

    ``exact`` and ``source`` are OcclusionResults on the same fine grid; drill-down
    evaluates exactly ``source``'s values at the cells it occludes.
    """
    def evaluate(cells: npt.NDArray[np.int64]) -> FloatArray:
        return source.heatmap[cells[:, 0], cells[:, 1]]

    heatmap, computed = drilldown(evaluate, source.heatmap.shape, steps, r_drill,
                                  float(source.probability))
    return ssim(exact.heatmap, heatmap), int(computed.sum())


def _lower_bound(values: Sequence[float] | FloatArray) -> float:
    """One-sided 95% lower confidence bound of the mean (the mean for one value)."""
    if len(values) < 2:
        return float(np.mean(values))
    return float(np.mean(values) - CONFIDENCE_Z * np.std(values, ddof=1) / np.sqrt(len(values)))


def _check_taus(tau: Union[float, Iterable[float]]) -> list[float]:
    """tau (a number or an iterable of numbers) as a list of distinct values in (0, 1],
    largest first."""
    values: list[Any]
    try:
        # (a number raises TypeError)
        values = [tau] if isinstance(tau, str) else list(cast(Iterable[Any], tau))
    except TypeError:
        values = [tau]
    taus = sorted({validate.tau(t) for t in values}, reverse=True)
    if not taus:
        raise ValueError("tau needs at least one value in (0, 1]")
    return taus


def _mac_ratios(model: Model, patch: tuple[int, int], stride: tuple[int, int],
                taus: Sequence[float], batch_size: Optional[int],
                freeze_context: bool = False) -> dict[float, float]:
    """Exact incremental inference's MACs over those at each tau (with global-context
    gates frozen if ``freeze_context``), each batched as :func:`kryptonref.occlusion`
    runs it (cost model, executed, over the whole grid)."""
    def macs(tau: float, frozen: bool) -> int:
        mode = "incremental" if tau == 1.0 and not frozen else "approximate"
        batch = DEFAULT_BATCH[mode] if batch_size is None else batch_size
        return cost_model_speedup(model, patch, stride, tau=tau, mode="executed",
                                  batch_size=batch, freeze_context=frozen).incremental_macs

    exact = macs(1.0, False)
    return {tau: exact / macs(tau, freeze_context) for tau in taus}


def _drilldown_table(pairs: Sequence[tuple[OcclusionResult, dict[float, OcclusionResult]]],
                     taus: Sequence[float], steps: Sequence[int], fractions: Sequence[float],
                     mac_ratios: dict[float, float]) -> list[dict[str, Any]]:
    """One row per (tau, coarse step, r_drill): SSIM statistics and speedups."""
    n_cells = sum(exact.heatmap.size for exact, _ in pairs)
    table: list[dict[str, Any]] = []
    for tau in taus:
        for k in steps:
            for r_drill in fractions:
                scores = [_drilldown_quality(exact, sources[tau], (k, k), r_drill)
                          for exact, sources in pairs]
                values = np.array([v for v, _ in scores])
                cells = n_cells / sum(n for _, n in scores)
                table.append(dict(tau=tau, steps=k, r_drill=r_drill,
                                  mean_ssim=float(values.mean()),
                                  lower_ssim=_lower_bound(values), min_ssim=float(values.min()),
                                  speedup=cells, predicted_speedup=cells * mac_ratios[tau]))
    return table


def tune_drilldown(model: Model, images: Images, target_ssim: float = 0.9,
                   patch: Union[int, Sequence[int]] = 16, stride: Union[int, Sequence[int]] = 4,
                   fill: Any = 0.0, tau: Union[float, Iterable[float]] = 1.0,
                   steps: Iterable[int] = DRILL_STEPS, fractions: Iterable[float] = DRILL_FRACTIONS,
                   held_out: Optional[Images] = None, batch_size: Optional[int] = None,
                   device: str = "cpu", progress: bool = False,
                   freeze_context: bool = False) -> DrilldownTuning:
    """Choose drill-down's coarse stride and ``r_drill`` (and tau) for a target heatmap SSIM.

    Adaptive drill-down (SIGMOD 2019, ``docs/design.md``, Approximate inference) has two knobs, and
    the paper's formula picks the coarse stride from a target speedup. Which
    pair keeps the heatmap closest to the exact one for the same work depends on
    the model and the images (on the trained demo models, small coarse strides
    with a small ``r_drill`` beat the default ``r_drill = 0.25``). This search
    tries every coarse stride ``k * stride`` (``k`` in ``steps``) with every
    ``r_drill`` in ``fractions``, and with every tau given, and keeps the
    setting with the largest predicted speedup whose mean SSIM against exact
    heatmaps reaches ``target_ssim`` with 95% confidence: the mean less 1.645
    standard errors. (The SSIM of a setting varies widely between images, and
    the plain mean of the best of 35 settings on 8 images overstated it on new
    images by up to 0.1.) The predicted speedup over exact incremental inference
    is the heatmap's cells over the cells occluded, times the MACs exact
    incremental inference performs over those it performs at tau (the cost
    model, :func:`kryptonref.speedup` with ``mode="executed"``): tau and
    drill-down's savings multiply.

    The MAC ratio is over the whole fine grid: drill-down's sparser positions
    batch a little differently, so the prediction is approximate.

    Drill-down takes each value it occludes from the fine-stride heatmap (exact,
    or approximate at ``tau``), so the search occludes each image once, plus once
    per tau below 1; the held-out check runs :func:`kryptonref.occlusion` itself.

    Parameters
    ----------
    model : Model
    images : array (N, C, H, W) or sequence of (C, H, W) arrays
        Sample images, each explained for its predicted class.
    target_ssim : float in (0, 1]
    patch, stride, fill, batch_size, device
        As for :func:`kryptonref.occlusion`; ``stride`` is the fine stride ``S2``.
    tau : float or sequence of float, each in (0, 1]
        Projective-field threshold(s) combined with drill-down (1: exact); with
        several, the search chooses among them too.
    steps : sequence of int
        Coarse strides to try, as multiples (at least 2) of the fine stride.
    fractions : sequence of float
        ``r_drill`` values to try, each in (0, 1).
    held_out : array or sequence of images, optional
        By default, with three or more images, the last third of ``images``.
    progress : bool
        A progress bar over the occlusion runs (needs tqdm).
    freeze_context : bool
        Search the frozen-context approximation's settings: every heatmap drill-down
        reads (tau = 1 included) keeps global-context gates at their unoccluded
        values, the references stay exact, and the predicted speedups count the
        frozen MACs.

    Returns
    -------
    DrilldownTuning
    """
    target_ssim = validate.unit_interval(target_ssim, "target_ssim")
    taus = _check_taus(tau)
    images, held_out = _split_held_out(model, images, held_out, "tune_drilldown")
    if not steps or any(isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer))
                        or k < 2 for k in steps):
        raise ValueError(f"steps must be integers >= 2 (coarse stride / fine stride), "
                         f"got {tuple(steps)}")
    steps = sorted({int(k) for k in steps})
    fractions = sorted({validate.open_fraction(r, "r_drill") for r in fractions})
    if not fractions:
        raise ValueError("fractions needs at least one r_drill value")
    stride_hw = validate.int_pair(stride, "stride")
    _check_heatmap_size(model, patch, stride_hw)
    settings = dict(patch=patch, stride=stride_hw, fill=fill, batch_size=batch_size,
                    device=device)
    freeze_context = bool(freeze_context)
    approximate_taus = [t for t in taus if t < 1.0 or freeze_context]

    bar = _progress_bar(len(images) * (1 + len(approximate_taus)) + len(held_out) * 2,
                        progress)
    pairs = []
    for image in images:
        exact = occlusion(model, image, **settings)
        bar.update(1)
        sources = {1.0: exact}
        for t in approximate_taus:
            sources[t] = occlusion(model, image, target=exact.label, mode="approximate", tau=t,
                                   freeze_context=freeze_context, **settings)
            bar.update(1)
        pairs.append((exact, sources))
    table = _drilldown_table(pairs, taus, steps, fractions,
                             _mac_ratios(model, validate.int_pair(patch, "patch"), stride_hw,
                                         taus, batch_size,
                                         freeze_context))
    passing = [row for row in table if row["lower_ssim"] >= target_ssim]
    best = (max(passing, key=lambda row: (row["predicted_speedup"], row["lower_ssim"]))
            if passing else max(table, key=lambda row: row["lower_ssim"]))
    coarse_stride = (best["steps"] * stride_hw[0], best["steps"] * stride_hw[1])
    checks = []
    for image in held_out:
        exact = occlusion(model, image, **settings)
        bar.update(1)
        chosen = occlusion(model, image, target=exact.label, mode="approximate",
                           tau=best["tau"], drilldown=True, r_drill=best["r_drill"],
                           coarse_stride=coarse_stride, freeze_context=freeze_context,
                           **settings)
        bar.update(1)
        checks.append(ssim(exact.heatmap, chosen.heatmap))
    bar.close()
    return DrilldownTuning(coarse_stride=coarse_stride, r_drill=best["r_drill"],
                           tau=best["tau"], target_ssim=target_ssim, reached=bool(passing),
                           speedup=best["speedup"], predicted_speedup=best["predicted_speedup"],
                           mean_ssim=best["mean_ssim"], lower_ssim=best["lower_ssim"],
                           held_out_ssim=float(np.mean(checks)) if checks else None,
                           n_fit=len(images), n_held_out=len(held_out), table=table,
                           freeze_context=freeze_context)
