"""Choosing the projective-field threshold tau for a target heatmap quality.

The paper's procedure (SIGMOD 2019, DESIGN.md section 6): on sample images,
compute the exact heatmap and the approximate one for tau on a grid from 1.0
down to 0.4, take the mean SSIM per tau, fit a quadratic ``SSIM(tau)``, and
solve it for the target SSIM. :func:`tune_tau` also checks the tau it picks on
held-out images.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .analysis.quality import ssim
from .occlusion import _progress_bar, occlusion

__all__ = ["tune_tau", "TauTuning", "DEFAULT_GRID"]

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
    """

    tau: float
    target_ssim: float
    reached: bool
    grid: np.ndarray
    mean_ssim: np.ndarray
    coefficients: np.ndarray
    held_out_ssim: float
    n_fit: int
    n_held_out: int
    ssim_per_image: list = field(default_factory=list)

    def fitted(self, tau):
        """The fitted SSIM at ``tau`` (scalar or array)."""
        return np.polyval(self.coefficients, tau)

    def to_dict(self):
        """A JSON-ready summary."""
        return {"tau": self.tau, "target_ssim": self.target_ssim, "reached": bool(self.reached),
                "grid": [float(t) for t in self.grid],
                "mean_ssim": [float(v) for v in self.mean_ssim],
                "coefficients": [float(c) for c in self.coefficients],
                "held_out_ssim": self.held_out_ssim, "n_fit": self.n_fit,
                "n_held_out": self.n_held_out}


def _solve(coefficients, target, low):
    """Smallest tau in [low, 1] from which the fitted curve stays >= target up to 1."""
    taus = np.linspace(1.0, low, 1201)
    ok = np.polyval(coefficients, taus) >= target
    if not ok[0]:
        return 1.0, False
    first_bad = np.argmin(ok) if not ok.all() else len(taus)
    return float(taus[first_bad - 1]), bool(first_bad > 1)


def _heatmap_pair_ssim(model, image, taus, settings, bar):
    exact = occlusion(model, image, mode="incremental", **settings)
    values = []
    for tau in taus:
        if tau >= 1.0:
            values.append(1.0)  # tau = 1 is exact: the same heatmap
        else:
            approx = occlusion(model, image, mode="approximate", tau=tau, target=exact.label,
                               **settings)
            values.append(ssim(exact.heatmap, approx.heatmap))
        bar.update(1)
    return values


def tune_tau(model, images, target_ssim=0.9, patch=16, stride=4, fill=0.0, grid=DEFAULT_GRID,
             held_out=None, batch_size=None, device="cpu", progress=False):
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

    Returns
    -------
    TauTuning
    """
    images = [np.asarray(im) for im in images]
    if not images:
        raise ValueError("tune_tau needs at least one image")
    target_ssim = float(target_ssim)
    if not 0.0 < target_ssim <= 1.0:
        raise ValueError(f"target_ssim must lie in (0, 1], got {target_ssim!r}")
    taus = np.array(sorted({float(t) for t in grid}, reverse=True))
    if len(taus) < 3 or taus.min() <= 0 or taus.max() > 1:
        raise ValueError(f"grid needs at least 3 distinct taus in (0, 1], got {tuple(grid)}")
    if held_out is None and len(images) >= 3:
        n_hold = len(images) // 3
        images, held_out = images[:-n_hold], images[-n_hold:]
    held_out = [] if held_out is None else [np.asarray(im) for im in held_out]
    settings = dict(patch=patch, stride=stride, fill=fill, batch_size=batch_size, device=device)

    bar = _progress_bar(len(images) * len(taus) + len(held_out) * 2, progress)
    per_image = [_heatmap_pair_ssim(model, im, taus, settings, bar) for im in images]
    mean = np.mean(per_image, axis=0)
    coefficients = np.polyfit(taus, mean, 2)
    tau, reached = _solve(coefficients, target_ssim, float(taus.min()))
    checks = [_heatmap_pair_ssim(model, im, [1.0, tau], settings, bar)[1] for im in held_out]
    bar.close()
    return TauTuning(tau=tau, target_ssim=target_ssim, reached=reached, grid=taus,
                     mean_ssim=mean, coefficients=coefficients,
                     held_out_ssim=float(np.mean(checks)) if checks else None,
                     n_fit=len(images), n_held_out=len(held_out), ssim_per_image=per_image)
