"""Occlusion explanations end to end (paper Algorithm 2), with Captum-compatible attributions.

:func:`occlusion` slides a patch over an image and records, per position, the
probability of the target class (the paper's heatmap, Zeiler & Fergus), and
the attribution Captum's ``Occlusion`` computes (``docs/design.md``, Occlusion output): for each
pixel, the mean over the windows covering it of ``f(x) - f(x_occluded)``.

``mode="incremental"`` runs the batched incremental engine; ``mode="full"`` is
the naive baseline: batched full re-inference of every occluded image. Both
give the same numbers up to floating-point rounding. ``mode="approximate"``
trades exactness for speed (``docs/design.md``, Approximate inference): the projective-field
threshold ``tau`` and adaptive drill-down (:mod:`kryptonref.drilldown`).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Protocol, Union

import numpy as np
import numpy.typing as npt

from . import validate
from .drilldown import choose_coarse_stride
from .drilldown import drilldown as drilldown_heatmap
from .engine import Occluder, Progress
from .layers import Softmax
from .layers.dense import softmax
from .model import Model
from .runtime import entry_point
from .validate import FloatArray

if TYPE_CHECKING:
    from .graph import Graph

__all__ = ["occlusion", "OcclusionResult", "captum_windows"]

MODES = ("incremental", "full", "approximate")
#: Positions per batch by mode. Larger incremental batches amortise each batch's
#: dense layers and kernel launches; full re-inference holds whole activations.
DEFAULT_BATCH = {"incremental": 64, "full": 16, "approximate": 64}

#: Integer arrays: positions, window starts.
IntArray = npt.NDArray[np.int64]
#: Captum's scores by window: ``(y, x)`` -> the model's output row.
WindowScores = dict[tuple[int, int], FloatArray]


@dataclass
class OcclusionResult:
    """What :func:`occlusion` returns.

    Attributes
    ----------
    For a batch of images ``(N, C, H, W)`` (``batched`` true) every per-image field
    gains a leading axis of length N: ``heatmap`` (N, positions_y, positions_x),
    ``label`` and ``probability`` (N,), ``attribution`` (N, C, H, W), ``seconds`` and
    ``macs`` (N,) per image, ``computed`` (N, positions_y, positions_x).

    Attributes
    ----------
    heatmap : ndarray (positions_y, positions_x)
        Target-class probability with the patch at ``(i*S_y, j*S_x)`` (the paper's map).
    label : int
        The target class (the predicted one unless ``target`` was given).
    probability : float
        Its probability on the unoccluded image.
    attribution : ndarray (C, H, W) or None
        Captum's occlusion attribution of the model's output (the scores, before
        any softmax the heatmap applies) for ``label``: what Captum's ``Occlusion``
        returns with the model as forward function, the patch as sliding window over
        all channels, the stride, and the fill as baseline. Pixels no window covers
        (a stride larger than the patch) get 0, where Captum divides 0 by 0.
        ``None`` with drill-down, which does not occlude every window.
    positions : ndarray (P, 2)
        Top-left ``(y, x)`` of the heatmap's positions, row-major.
    seconds : float
        Wall time spent.
    macs : int
        Multiply-accumulates performed (conv and dense layers), base inference
        included, counted as direct convolution (the paper's count).
    mode, patch, stride, tau, coarse_stride
        The settings used (``coarse_stride``: drill-down's, else None).
    computed : ndarray of bool (positions_y, positions_x) or None
        With drill-down, the cells actually occluded (the others are
        interpolated bilinearly between the coarse positions).
    batched : bool
        Whether the fields hold a batch of images (a 4-D input).
    """

    heatmap: FloatArray
    label: Union[int, IntArray]
    probability: Union[float, FloatArray]
    attribution: Optional[FloatArray]
    positions: IntArray
    seconds: Union[float, FloatArray]
    macs: Union[int, IntArray]
    mode: str
    patch: tuple[int, int]
    stride: tuple[int, int]
    tau: float = 1.0
    coarse_stride: Optional[tuple[int, int]] = None
    computed: Optional[npt.NDArray[np.bool_]] = None
    batched: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (without the arrays; per-image lists for a batch)."""
        def plain(value: object) -> object:
            return value.tolist() if isinstance(value, np.ndarray) else value

        summary: dict[str, Any] = {"label": plain(self.label), "probability": plain(self.probability),
                   "heatmap_shape": list(self.heatmap.shape),
                   "positions": int(len(self.positions)), "seconds": plain(self.seconds),
                   "macs": plain(self.macs), "mode": self.mode, "patch": list(self.patch),
                   "stride": list(self.stride), "tau": self.tau}
        if self.batched:
            summary["images"] = int(self.heatmap.shape[0])
        if self.coarse_stride is not None and self.computed is not None:
            summary["coarse_stride"] = list(self.coarse_stride)
            computed = self.computed.reshape(len(self.computed), -1) if self.batched \
                else self.computed.reshape(1, -1)
            counts = [int(c) for c in computed.sum(axis=1)]
            summary["evaluated_positions"] = counts if self.batched else counts[0]
        return summary


def captum_windows(size: int, window: int, stride: int) -> tuple[IntArray, IntArray]:
    """Captum's window starts and lengths on one axis.

    ``ceil((W - w) / s) + 1`` windows starting at ``i*s``; the last one is
    truncated at the border when ``(W - w)`` is not a multiple of ``s``. A window
    starting past the border (possible when ``s > w``) occludes nothing and
    contributes nothing to Captum's attribution, so it is left out.
    """
    count = -(-(size - window) // stride) + 1
    starts = np.arange(count) * stride
    starts = starts[starts < size]
    return starts, np.minimum(window, size - starts)


@entry_point
def occlusion(model: Model, image: npt.NDArray[np.floating[Any]],
              patch: Union[int, Sequence[int]] = 16, stride: Union[int, Sequence[int]] = 4,
              fill: Union[float, str, npt.ArrayLike] = 0.0,
              target: Union[None, int, Sequence[int], IntArray] = None,
              mode: str = "incremental", batch_size: Optional[int] = None,
              progress: bool = False, device: str = "cpu", tau: float = 1.0,
              drilldown: bool = False, r_drill: float = 0.25, target_speedup: float = 3.0,
              coarse_stride: Union[None, int, Sequence[int]] = None,
              freeze_context: bool = False) -> OcclusionResult:
    """Occlusion heatmap and attribution of one image, or of a batch of images.

    Parameters
    ----------
    model : Model
        Any kryptonref model whose output is a vector of class scores; the heatmap
        applies a softmax unless the graph already ends in one.
    image : ndarray (C, H, W) or (N, C, H, W)
        The (normalised) input image, or a batch of them: the result's fields are
        then stacked per image (:class:`OcclusionResult`, ``batched``).
    patch, stride : int or (int, int)
        Patch size and stride; heatmap positions ``p*S`` with ``p*S + w <= W``.
    fill : float, array (C,), array (C, h, w) or "mean"
        The occluding patch: a value, per-channel values, a full patch, or the
        per-channel mean of the image.
    target : int or sequence of int, optional
        Class to explain; the predicted class by default. For a batch, one class
        for all images or one per image.
    mode : {"incremental", "full", "approximate"}
        Exact incremental inference, full re-inference per position, or
        approximate inference (``tau`` and/or ``drilldown``; ``docs/design.md``, Approximate inference).
    batch_size : int, optional
        Positions per batch (memory stays bounded); by default 64 for the
        incremental and approximate modes, 16 for full re-inference.
    progress : bool
        Show a progress bar (needs the ``progress`` extra: tqdm).
    device : {"cpu", "cuda"}
        Where to compute (``"cuda"``: numba-cuda kernels on a GPU, extra
        ``kryptonref[cuda]``); the materialised activations stay on the device
        and each batch moves its offsets (or occluded images) there once and its
        scores back once.
    tau : float in (0, 1]
        ``mode="approximate"``: projective-field threshold (1: no threshold).
    drilldown : bool
        ``mode="approximate"``: adaptive drill-down (:mod:`kryptonref.drilldown`):
        stage 1 at a coarse stride, stage 2 at ``stride`` in the ``r_drill``
        fraction of coarse cells with the largest probability drop. The heatmap
        is on the fine grid; there is no attribution (``None``).
    r_drill : float in (0, 1)
        Fraction of coarse cells refined (the paper's default 0.25).
    target_speedup : float
        Drill-down's predicted speedup, from which the coarse stride follows
        (``S1 = S2 sqrt(T / (1 - r T))``, rounded up to a multiple of ``stride``);
        ignored when ``coarse_stride`` is given.
    coarse_stride : int or (int, int), optional
        Drill-down's coarse stride: a multiple of ``stride``.
    freeze_context : bool
        ``mode="approximate"``: keep squeeze-excitation gates (any per-channel gate a
        merge broadcasts over a map) at their value on the unoccluded image, so that
        regions stay local through such blocks (an approximation the paper does not
        have; ``docs/approximate.md``).

    Returns
    -------
    OcclusionResult
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a kryptonref Model, got {type(model).__name__}")
    if isinstance(image, np.ndarray) and image.ndim == 4:
        return _occlusion_batch(model, image, target, dict(
            patch=patch, stride=stride, fill=fill, mode=mode, batch_size=batch_size,
            progress=progress, device=device, tau=tau, drilldown=drilldown, r_drill=r_drill,
            target_speedup=target_speedup, coarse_stride=coarse_stride,
            freeze_context=freeze_context))
    return _occlusion_one(model, image, patch, stride, fill, target, mode, batch_size, progress,
                          device, tau, drilldown, r_drill, target_speedup, coarse_stride,
                          freeze_context)


def _occlusion_batch(model: Model, images: FloatArray, target: Any,
                     settings: dict[str, Any]) -> OcclusionResult:
    """:func:`occlusion` of each image of ``images`` (N, C, H, W), stacked into one result."""
    graph = model.graph
    if tuple(images.shape[1:]) != tuple(graph.input_shape) or len(images) == 0:
        raise ValueError(f"image must be an array of shape {graph.input_shape} (C, H, W) or a "
                         f"batch (N, {', '.join(map(str, graph.input_shape))}), got "
                         f"{images.shape}")
    if len(graph.shapes[graph.output]) != 1:
        raise ValueError(f"occlusion needs a model whose output is a vector of class scores; "
                         f"{graph.output!r} has shape {graph.shapes[graph.output]}")
    n_classes = graph.shapes[graph.output][0]
    targets = validate.class_targets(target, len(images), n_classes)
    results = [_occlusion_one(model, img, target=t, **settings)
               for img, t in zip(images, targets)]
    first = results[0]

    def stacked(field: str, dtype: Optional[npt.DTypeLike] = None) -> Any:
        values = [getattr(r, field) for r in results]
        return None if values[0] is None else np.stack([np.asarray(v, dtype) for v in values])

    return OcclusionResult(
        heatmap=stacked("heatmap"), label=stacked("label", np.int64),
        probability=stacked("probability", np.float64), attribution=stacked("attribution"),
        positions=first.positions, seconds=stacked("seconds", np.float64),
        macs=stacked("macs", np.int64), mode=first.mode, patch=first.patch,
        stride=first.stride, tau=first.tau, coarse_stride=first.coarse_stride,
        computed=stacked("computed"), batched=True)


def _occlusion_one(model: Model, image: Any, patch: Any, stride: Any, fill: Any, target: Any,
                   mode: str, batch_size: Optional[int], progress: bool, device: str,
                   tau: float, drilldown: bool, r_drill: float, target_speedup: float,
                   coarse_stride: Any, freeze_context: bool) -> OcclusionResult:
    """:func:`occlusion` of one image (C, H, W)."""
    mode = validate.one_of(mode, MODES, "mode")
    tau = validate.tau(tau)
    if mode != "approximate" and (tau < 1.0 or drilldown or freeze_context):
        raise ValueError(f"tau < 1, drilldown and freeze_context need mode='approximate', got "
                         f"mode={mode!r}")
    graph = model.graph
    if len(graph.shapes[graph.output]) != 1:
        raise ValueError(f"occlusion needs a model whose output is a vector of class scores; "
                         f"{graph.output!r} has shape {graph.shapes[graph.output]}")
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        raise ValueError(f"image must be an array of shape {graph.input_shape} (C, H, W) or "
                         f"a batch (N, {', '.join(map(str, graph.input_shape))})")
    patch_hw, stride_hw = validate.int_pair(patch, "patch"), validate.int_pair(stride, "stride")
    image_hw = graph.input_shape[1:]
    validate.patch_fits(patch_hw, image_hw)
    batch_size = validate.positive_int(DEFAULT_BATCH[mode] if batch_size is None else batch_size,
                                       "batch_size")
    if drilldown:
        r_drill = validate.open_fraction(r_drill, "r_drill")
        coarse_stride = choose_coarse_stride(
            stride_hw, image_hw, patch_hw, r_drill, target_speedup,
            None if coarse_stride is None else validate.int_pair(coarse_stride, "coarse_stride"))

    start = time.perf_counter()
    occluder = Occluder(model, image, patch_hw, fill=fill, device=device, tau=tau,
                        freeze_context=freeze_context,
                        mode="full" if mode == "full" else "incremental")
    scores0 = occluder.base_output
    probs0 = _probabilities(graph, scores0[None])[0]
    n_classes = scores0.shape[0]
    if target is None:
        target = int(np.argmax(probs0))
    elif isinstance(target, bool) or not isinstance(target, (int, np.integer)) \
            or not 0 <= target < n_classes:
        raise ValueError(f"target must be a class index in 0..{n_classes - 1}, got {target!r}")
    target = int(target)

    windows = [captum_windows(image_hw[d], patch_hw[d], stride_hw[d]) for d in (0, 1)]
    starts = [w[0][w[1] == patch_hw[d]] for d, w in enumerate(windows)]  # full windows
    heat_positions = np.array([(y, x) for y in starts[0] for x in starts[1]], np.int64)
    computed = attribution = None
    if drilldown:
        steps = tuple(c // s for c, s in zip(coarse_stride, stride_hw))
        bar = _progress_bar(len(heat_positions), progress)

        def evaluate(cells: IntArray) -> FloatArray:
            at = np.stack([starts[0][cells[:, 0]], starts[1][cells[:, 1]]], axis=1)
            out = occluder.scores(at, batch_size, progress=bar)
            return _probabilities(graph, out)[:, target]

        heatmap, computed = drilldown_heatmap(evaluate, (len(starts[0]), len(starts[1])), steps,
                                              r_drill, float(probs0[target]))
        bar.close()
    else:
        jobs = _window_groups(windows)
        bar = _progress_bar(sum(len(p) for _, p in jobs), progress)
        scores: WindowScores = {}
        for size, positions in jobs:
            for (y, x), row in zip(positions, occluder.scores(positions, batch_size, size, bar)):
                scores[(int(y), int(x))] = row
        bar.close()
        heat_scores = np.array([scores[(int(y), int(x))] for y, x in heat_positions])
        heatmap = _probabilities(graph, heat_scores)[:, target].reshape(len(starts[0]), -1)
        attribution = _captum_attribution(scores, scores0[target], target, graph.input_shape,
                                          patch_hw)
    return OcclusionResult(
        heatmap=heatmap, label=target, probability=float(probs0[target]),
        attribution=attribution, positions=heat_positions,
        seconds=time.perf_counter() - start, macs=occluder.base_macs + occluder.macs,
        mode=mode, patch=patch_hw, stride=stride_hw, tau=tau,
        coarse_stride=coarse_stride if drilldown else None, computed=computed)


def _window_groups(
        windows: Sequence[tuple[IntArray, IntArray]]) -> list[tuple[tuple[int, int], IntArray]]:
    """Captum's windows grouped by their (possibly truncated) size: [(size, positions)]."""
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for y, h in zip(*windows[0]):
        for x, w in zip(*windows[1]):
            groups.setdefault((int(h), int(w)), []).append((int(y), int(x)))
    return [(size, np.array(pos, np.int64)) for size, pos in groups.items()]


def _probabilities(graph: Graph, scores: FloatArray) -> FloatArray:
    """Softmax of the scores, unless the graph already ends in a softmax."""
    if isinstance(graph.nodes[graph.output].layer, Softmax):
        return scores
    probabilities: FloatArray = softmax(scores)
    return probabilities


def _captum_attribution(scores: WindowScores, base_score: float, target: int,
                        shape: Sequence[int], patch_hw: Sequence[int]) -> FloatArray:
    """Mean over the windows covering each pixel of ``f(x) - f(x_occluded)`` (Captum)."""
    total = np.zeros(shape[1:], np.float64)
    count = np.zeros(shape[1:], np.float64)
    for (y, x), row in scores.items():
        total[y:y + patch_hw[0], x:x + patch_hw[1]] += float(base_score) - float(row[target])
        count[y:y + patch_hw[0], x:x + patch_hw[1]] += 1
    per_pixel = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return np.broadcast_to(per_pixel, shape).astype(np.float64)


class ProgressBar(Progress, Protocol):
    """A progress bar: the engine's :class:`~kryptonref.engine.Progress` (``update``), and
    ``close`` (tqdm's)."""

    def close(self) -> object: ...


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool) -> ProgressBar:
    if not enabled:
        return _NoBar()
    from ._optional import optional_module
    tqdm = optional_module("tqdm", "progress=True", "progress").tqdm
    bar: ProgressBar = tqdm(total=total, unit="position", desc="occlusion")
    return bar
