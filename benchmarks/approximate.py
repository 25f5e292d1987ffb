"""Approximate occlusion: speed against onnxruntime and heatmap quality against exact.

What is measured
----------------
1. The trained demo models (``kr.zoo("demo_vgg" | "demo_resnet", weights="pretrained")``,
   5 classes, 224 px, float32), where heatmap quality means something. ``--images N``
   images (16 by default, 3 with ``--quick``) of ``kryptonref.datasets.shapes`` with
   ``--seed`` (2026 by default: not a training, validation or test seed of the
   demo models; the CLI demo's image is sample 7 of that seed), a 16 x 16 zero patch,
   stride ``--stride`` (4 by default: a 53 x 53 heatmap), batches of ``--batch-size``
   (64 by default, as ``kr.occlusion``), the target
   class = the image's true label. Per image:

   * exact: ``kr.occlusion(mode="incremental")``, wall time of the call;
   * each approximate setting, ``kr.occlusion(mode="approximate", tau=..., drilldown=...)``:
     projective-field threshold tau in (0.9, 0.7, 0.5) without drill-down, and adaptive
     drill-down (``r_drill`` 0.25, ``target_speedup`` 3: coarse stride 16 at stride 4,
     32 at stride 8) with tau in (1.0, 0.9, 0.7, 0.5). tau = 1 without drill-down is
     the exact run, so it is not repeated;
   * tau and drill-down tuned jointly by ``kr.tune_drilldown`` (tau in ``TUNE_TAUS`` =
     (1.0, 0.9, 0.7, 0.5)) for SSIM >= ``--tune-ssim`` (0.92 by default: the target
     0.9 plus a margin for other images; 95% lower bound of the mean) on
     ``--tune-images`` images of their own (seed ``--seed + 1``; 24 by default, 6 with
     ``--quick``): the tau, coarse stride and ``r_drill`` the cost model predicts
     fastest at that quality. The benchmark images are held out from that tuning;
   * quality of each approximate heatmap against the exact one: SSIM
     (``kryptonref.analysis.ssim``, data range = the exact map's), mean absolute
     error, and for both heatmaps the pointing game (is the cell with the largest
     drop inside the object's true box?) and the share of the drop energy inside the
     box.

   onnxruntime full re-inference (``benchmarks/occlusion.py``'s ONNX export and
   session, default threading, occluded images in the same batches): timed on a subset
   of ``--positions`` heatmap positions of the first image (stratified over the grid,
   best of 2), and **extrapolated** to the whole heatmap grid (ms per position x
   positions). "vs ORT" = that extrapolated time / the setting's measured wall time;
   "vs exact" = our exact incremental time / the setting's time (sums over images).

   "predicted" is the speedup over full re-inference the cost model predicts:
   ``kr.speedup(model, 16, stride, tau=tau, mode="executed", batch_size=64).speedup``
   (incremental inference with threshold tau, batched as the engine runs it), times,
   with drill-down, ``drilldown_speedup(S1, S2, r_drill) = S1^2 / (S2^2 + r S1^2)``:
   drill-down evaluates about ``1/drilldown_speedup`` of the fine grid's positions
   (all coarse cells plus the refined fraction ``r``), each at tau's incremental
   cost, so the two factors multiply (it ignores that the refined positions cluster
   and batch differently from a full sweep of the grid). "MACs" is the same ratio counted by
   the engine in this run: one full inference's MACs x heatmap positions / the MACs
   the call performed (base inference included). Both ignore the time that is not
   convolution: measured speedups fall below them.

2. Zoo VGG16 and ResNet18 at 224 px and Inception v3 at 299 px, seeded random weights
   (``kr.zoo(name, seed=0)``): **speed only**, since the heatmap of a random network
   is noise and SSIM against exact would mean nothing. One image (``synthetic_image``
   of ``benchmarks/occlusion.py``), the same approximate settings, target = the
   predicted class, and the demo models' tuned drill-down settings (the same coarse
   stride in multiples of the fine stride), at stride ``--zoo-stride`` (8 by default:
   27 x 27 positions at 224 px, 36 x 36 at 299 px; exact incremental VGG16 takes ~55 s
   at stride 4 and Inception ~5 min on 2 cores), the exact run only with
   ``--zoo-exact``; onnxruntime
   timed on ``--zoo-positions`` positions and extrapolated. ``--quick`` leaves out
   Inception v3. ``--budget`` seconds bound the zoo part: once its wall time exceeds
   the budget, the remaining zoo settings and models are skipped with a message (a
   setting already running is finished). Without drill-down the engine also occludes
   Captum's truncated border windows (at 299 px stride 8: 37 x 37 windows for 36 x 36
   heatmap cells) for the attribution; the ORT baseline counts heatmap positions only.

3. The targets of the issue (printed, never asserted): at mean SSIM >= 0.9 against
   exact, the VGG-style demo model >= 25x faster than onnxruntime full re-inference
   (paper: 19.9x ImageNet, 34.5x OCT for VGG16) and the ResNet-style one >= 8x (paper:
   8.5x ImageNet for ResNet18). Per demo model: the fastest setting (exact included)
   with mean SSIM >= 0.9, and PASS/MISS.

4. ``--plot PATH.png``: speedup vs ORT (log x) against mean SSIM, one panel per demo
   model, one labelled marker per setting (needs matplotlib). ``--json PATH``: every
   number.

Timings are single runs on a shared 2-core machine: noisy (the load average is
printed). Every mode is run once on a coarse grid first, so JIT compilation is not
timed.

Usage
-----
    PYTHONPATH=. python3 benchmarks/approximate.py                     # ~15-30 min (zoo part capped by --budget)
    PYTHONPATH=. python3 benchmarks/approximate.py --quick             # 3 images, no Inception: ~6 min
    PYTHONPATH=. python3 benchmarks/approximate.py --quick --images 1 --stride 8   # smoke test
    PYTHONPATH=. python3 benchmarks/approximate.py --no-zoo --images 16 --plot tradeoff.png
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kryptonref.runtime import prepare_command_process  # noqa: E402
prepare_command_process()  # before NumPy: OpenBLAS reads its thread timeout when it loads
import kryptonref as kr  # noqa: E402
import numpy as np  # noqa: E402
from common import machine_info  # noqa: E402
from kryptonref import datasets  # noqa: E402
from kryptonref.analysis import (drilldown_speedup, energy_in_box,  # noqa: E402
                                 mean_absolute_error, pointing_game, ssim)
from kryptonref.models.zoo import zoo_entry  # noqa: E402
from occlusion import (ort_session, run_forward, subset_indices,  # noqa: E402
                       synthetic_image)

PATCH = 16
FILL = 0.0
R_DRILL = 0.25
TARGET_SPEEDUP = 3.0
TAUS = (0.9, 0.7, 0.5)
#: The taus kr.tune_drilldown chooses among, with drill-down's coarse stride and r_drill.
TUNE_TAUS = (1.0, 0.9, 0.7, 0.5)
DEMO_MODELS = ("demo_vgg", "demo_resnet")
ZOO_MODELS = ("vgg16", "resnet18", "inception_v3")
SSIM_TARGET = 0.9
#: The SSIM kr.tune_drilldown tunes for (``--tune-ssim``): the target plus a margin for the
#: difference between image sets. The same setting's mean SSIM differed by 0.03 between
#: 24 tuning images (seed 2027) and 32 benchmark images (seed 2026) on demo_vgg.
TUNE_SSIM = 0.92
ORT_TARGET = {"demo_vgg": 25.0, "demo_resnet": 8.0}
PAPER = {"demo_vgg": "paper VGG16: 19.9x ImageNet, 34.5x OCT",
         "demo_resnet": "paper ResNet18: 8.5x ImageNet"}
#: The full-size zoo model each demo model is a 1/8-width copy of.
ZOO_TWIN = {"demo_vgg": "vgg16", "demo_resnet": "resnet18"}


@dataclass(frozen=True)
class Setting:
    """One way of computing the heatmap.

    Drill-down takes ``coarse_stride`` when it is set (a multiple of the fine
    stride, ``coarse_steps`` times it), else the paper's formula for
    ``TARGET_SPEEDUP``.
    """

    label: str
    tau: float
    drilldown: bool
    r_drill: float = R_DRILL
    coarse_steps: int = None

    @property
    def exact(self):
        return self.tau == 1.0 and not self.drilldown

    def kwargs(self, stride):
        if self.exact:
            return dict(mode="incremental")
        if not self.drilldown:
            return dict(mode="approximate", tau=self.tau)
        coarse = (dict(target_speedup=TARGET_SPEEDUP) if self.coarse_steps is None
                  else dict(coarse_stride=self.coarse_steps * stride))
        return dict(mode="approximate", tau=self.tau, drilldown=True, r_drill=self.r_drill,
                    **coarse)


EXACT = Setting("exact", 1.0, False)


def approximate_settings():
    """tau < 1 without drill-down, then drill-down with tau = 1 and tau < 1."""
    plain = [Setting(f"tau {t}", t, False) for t in TAUS]
    drill = [Setting("drill", 1.0, True)] + [Setting(f"tau {t}+drill", t, True) for t in TAUS]
    return plain + drill


# --------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------

def occlude(model, image, stride, setting, batch, target=None, **extra):
    """``kr.occlusion`` for one setting: (result, wall seconds of the call)."""
    t0 = time.perf_counter()
    res = kr.occlusion(model, image, PATCH, stride, fill=FILL, target=target,
                       batch_size=batch, **{**setting.kwargs(stride), **extra})
    return res, time.perf_counter() - t0


def warm_up(model, image, batch):
    """Compile every kernel the settings use, on a coarse 5 x 5 grid (not timed)."""
    size = model.graph.input_shape[1]
    stride = max(1, (size - PATCH) // 4)
    for setting in (EXACT, Setting("", 0.5, False), Setting("", 1.0, True),
                    Setting("", 0.5, True)):
        extra = dict(coarse_stride=2 * stride) if setting.drilldown else {}
        occlude(model, image, stride, setting, batch, **extra)


def heatmap_positions(size, stride):
    """Top-left corners of the heatmap grid (full windows only), row-major."""
    starts = np.arange(0, size - PATCH + 1, stride)
    return np.array([(y, x) for y in starts for x in starts], np.int64), len(starts)


def ort_baseline(model, image, stride, batch, n_sub, workdir):
    """onnxruntime full re-inference: ms per position on a stratified subset (best of 2).

    Returns (ms per position, positions timed, converter note).
    """
    size = model.graph.input_shape[1]
    positions, n_grid = heatmap_positions(size, stride)
    k = max(1, int(round(np.sqrt(n_sub))))
    idx = subset_indices(n_grid, k)
    sub = positions.reshape(n_grid, n_grid, 2)[np.ix_(idx, idx)].reshape(-1, 2)
    session, note = ort_session(model, workdir)
    name = session.get_inputs()[0].name
    n_out = model.graph.shapes[model.graph.output][0]

    def forward(x):
        return session.run(None, {name: x})[0]

    run_forward(forward, image, sub[:batch], batch, n_out)  # warm-up: arenas, kernels
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        run_forward(forward, image, sub, batch, n_out)
        times.append(time.perf_counter() - t0)
    return min(times) / len(sub) * 1e3, len(sub), note


class Predictor:
    """The cost model's predicted speedup over full re-inference, cached per tau."""

    def __init__(self, model, stride, batch):
        self.model, self.stride, self.batch = model, stride, batch
        self._executed = {}

    def executed(self, tau):
        if tau not in self._executed:
            self._executed[tau] = kr.speedup(self.model, PATCH, self.stride, tau=tau,
                                             mode="executed", batch_size=self.batch).speedup
        return self._executed[tau]

    def __call__(self, setting, coarse_stride=None):
        value = self.executed(setting.tau)
        if setting.drilldown:
            value *= drilldown_speedup(coarse_stride, self.stride, setting.r_drill)
        return value


def mac_ratio(model, n_positions, res):
    """Full re-inference MACs of the heatmap grid / the MACs this call performed."""
    return sum(model.graph.macs().values()) * n_positions / res.macs


def _load():
    return f"{os.getloadavg()[0]:.2f}"


def time_budget_left(deadline):
    return deadline is None or time.perf_counter() < deadline


# --------------------------------------------------------------------------------------
# Part 1: demo models, speed and quality
# --------------------------------------------------------------------------------------

def quality(exact, approx, box, stride):
    """Quality of ``approx`` against ``exact`` and the localisation of ``approx``."""
    return dict(ssim=ssim(exact.heatmap, approx.heatmap),
                mae=mean_absolute_error(exact.heatmap, approx.heatmap),
                pointing=pointing_game(approx.heatmap, box, PATCH, stride),
                energy=energy_in_box(approx.heatmap, box, PATCH, stride, exact.probability))


def bench_demo(name, data, args, workdir):
    """All settings on every image for one demo model; returns its summary rows."""
    model = kr.zoo(name, weights="pretrained")
    size = model.graph.input_shape[1]
    positions, n_grid = heatmap_positions(size, args.stride)
    n_pos = len(positions)
    print(f"\n== {name} (trained, {size} px): {len(data)} images, patch {PATCH}, stride "
          f"{args.stride} ({n_grid} x {n_grid} = {n_pos} positions), batch {args.batch_size}, "
          f"target = true label; load average {_load()} ==")
    warm_up(model, data.images[0], args.batch_size)
    ms, n_sub, note = ort_baseline(model, data.images[0], args.stride, args.batch_size,
                                   args.positions, workdir)
    t_ort = ms * n_pos / 1e3
    print(f"onnxruntime full re-inference: {ms:.2f} ms/position measured on {n_sub} positions "
          f"of image 0 (best of 2) -> {t_ort:.2f} s for {n_pos} positions (EXTRAPOLATED); "
          f"onnx: {note}")
    predict = Predictor(model, args.stride, args.batch_size)
    tuned = tuned_setting(model, args)
    settings = [EXACT] + approximate_settings() + ([tuned] if tuned else [])
    runs = {s.label: [] for s in settings}
    for i in range(len(data)):
        image, label = data.images[i], int(data.labels[i])
        box = tuple(int(v) for v in data.boxes[i])
        exact, t_exact = occlude(model, image, args.stride, EXACT, args.batch_size, label)
        runs["exact"].append(dict(time=t_exact, ssim=1.0, mae=0.0,
                                  pointing=pointing_game(exact.heatmap, box, PATCH, args.stride),
                                  energy=energy_in_box(exact.heatmap, box, PATCH, args.stride,
                                                       exact.probability),
                                  macs=mac_ratio(model, n_pos, exact),
                                  predicted=predict(EXACT)))
        line = [f"image {i}: {data.class_names[label]} p={exact.probability:.3f} "
                f"exact {t_exact:.2f}s"]
        for s in settings[1:]:
            res, t = occlude(model, image, args.stride, s, args.batch_size, label)
            runs[s.label].append(dict(time=t, **quality(exact, res, box, args.stride),
                                      macs=mac_ratio(model, n_pos, res),
                                      predicted=predict(s, res.coarse_stride),
                                      coarse_stride=res.coarse_stride,
                                      computed=None if res.computed is None
                                      else float(res.computed.mean())))
            line.append(f"{s.label} {t:.2f}s/{runs[s.label][-1]['ssim']:.3f}")
        print("  " + " | ".join(line), flush=True)
    rows = [summarise(s, runs[s.label], runs["exact"], t_ort) for s in settings]
    print_demo_table(name, rows, ms, n_sub, t_ort, args.stride)
    return dict(model=name, size=size, stride=args.stride, positions=n_pos,
                ort_ms_per_position=ms, ort_positions_timed=n_sub, ort_seconds_extrapolated=t_ort,
                rows=rows, runs=runs, tuned=tuned)


def tuned_setting(model, args):
    """tau and drill-down tuned by ``kr.tune_drilldown`` over ``TUNE_TAUS`` for SSIM >=
    ``--tune-ssim`` on images of their own: the setting the cost model predicts fastest.

    The tuning images are ``datasets.shapes`` with seed ``--seed + 1``, so the
    benchmark images measure the tuned setting as held-out ones. None with
    ``--tune-images 0`` or when no setting reaches the target.
    """
    if args.tune_images == 0:
        return None
    size = model.graph.input_shape[1]
    images = datasets.shapes(args.tune_images, image_size=size, seed=args.seed + 1).images
    t0 = time.perf_counter()
    tuned = kr.tune_drilldown(model, images, target_ssim=args.tune_ssim, patch=PATCH,
                              stride=args.stride, fill=FILL, tau=TUNE_TAUS, held_out=[],
                              batch_size=args.batch_size)
    steps = tuned.coarse_stride[0] // args.stride
    print(f"kr.tune_drilldown for SSIM >= {args.tune_ssim} on {tuned.n_fit} images of seed "
          f"{args.seed + 1}, tau in "
          f"{TUNE_TAUS} ({time.perf_counter() - t0:.0f} s): tau {tuned.tau:g}, coarse stride "
          f"{steps} x {args.stride}, r_drill {tuned.r_drill}, mean SSIM {tuned.mean_ssim:.3f} "
          f"(95% lower bound {tuned.lower_ssim:.3f}), {tuned.speedup:.2f}x fewer positions, "
          f"{tuned.predicted_speedup:.2f}x predicted over exact"
          f"{'' if tuned.reached else ': target not reached, not used'}")
    if not tuned.reached:
        return None
    return Setting(f"tuned {tuned.tau:g} {steps}x/{tuned.r_drill:g}", tuned.tau, True,
                   r_drill=tuned.r_drill, coarse_steps=steps)


def summarise(setting, runs, exact_runs, t_ort):
    """One table row: means over images (speedups: ratios of summed times)."""
    times = np.array([r["time"] for r in runs])
    exact_times = np.array([r["time"] for r in exact_runs])
    ssims = np.array([r["ssim"] for r in runs])
    return dict(setting=setting.label, tau=setting.tau, drilldown=setting.drilldown,
                time=float(times.mean()), vs_ort=float(t_ort / times.mean()),
                vs_exact=float(exact_times.sum() / times.sum()),
                predicted=float(np.mean([r["predicted"] for r in runs])),
                macs=float(np.mean([r["macs"] for r in runs])),
                ssim=float(ssims.mean()), ssim_min=float(ssims.min()),
                ssim_se=float(ssims.std(ddof=1) / np.sqrt(len(ssims))) if len(ssims) > 1
                else float("nan"),
                mae=float(np.mean([r["mae"] for r in runs])),
                pointing=float(np.mean([r["pointing"] for r in runs])),
                pointing_exact=float(np.mean([r["pointing"] for r in exact_runs])),
                energy=_nanmean([r["energy"] for r in runs]))


def _nanmean(values):
    values = np.asarray(values, np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def print_demo_table(name, rows, ms, n_sub, t_ort, stride):
    print(f"\n-- {name}: means over images; vs ORT against {t_ort:.2f} s extrapolated "
          f"({ms:.2f} ms/position x positions, measured on {n_sub}); predicted and MACs: "
          f"speedup over full re-inference (cost model / this run's engine count) --")
    print(f"{'setting':18}{'time s':>8}{'vs ORT':>9}{'vs exact':>9}{'predicted':>10}{'MACs':>8}"
          f"{'SSIM':>7}{'min':>7}{'MAE':>8}{'pointing':>10}{'exact':>7}{'energy':>8}")
    for r in rows:
        print(f"{r['setting']:18}{r['time']:8.2f}{r['vs_ort']:8.1f}x{r['vs_exact']:8.2f}x"
              f"{r['predicted']:9.1f}x{r['macs']:7.1f}x{r['ssim']:7.3f}{r['ssim_min']:7.3f}"
              f"{r['mae']:8.4f}{r['pointing']:10.2f}{r['pointing_exact']:7.2f}"
              f"{r['energy']:8.2f}")
    print(f"(pointing: fraction of images whose largest-drop cell lies in the true box, "
          f"approximate / exact heatmap; energy: mean share of the drop inside the box; "
          f"stride {stride})")


# --------------------------------------------------------------------------------------
# Part 2: zoo models, speed only
# --------------------------------------------------------------------------------------

def bench_zoo(name, args, workdir, deadline, tuned=()):
    """Approximate settings (and exact with --zoo-exact) on one synthetic image.

    ``tuned``: the drill-down settings tuned on the demo models, with the same
    coarse stride in multiples of the (zoo) fine stride.
    """
    size = zoo_entry(name).default_size
    stride = args.zoo_stride
    positions, n_grid = heatmap_positions(size, stride)
    n_pos = len(positions)
    print(f"\n== {name} (seeded random weights, {size} px): one synthetic image, patch {PATCH}, "
          f"stride {stride} ({n_grid} x {n_grid} = {n_pos} positions), batch "
          f"{args.batch_size}; speed only; load average {_load()} ==", flush=True)
    t0 = time.perf_counter()
    model = kr.zoo(name, image_size=size, seed=0)
    image = synthetic_image(size, seed=0).astype(np.float32)
    warm_up(model, image, args.batch_size)
    ms, n_sub, note = ort_baseline(model, image, stride, args.batch_size, args.zoo_positions,
                                   workdir)
    t_ort = ms * n_pos / 1e3
    print(f"model, warm-up and ORT in {time.perf_counter() - t0:.0f} s; onnxruntime: {ms:.1f} "
          f"ms/position on {n_sub} positions -> {t_ort:.1f} s for {n_pos} positions "
          f"(EXTRAPOLATED); onnx: {note}")
    predict = Predictor(model, stride, args.batch_size)
    settings = ([EXACT] if args.zoo_exact else []) + approximate_settings() + list(tuned)
    rows = []
    print(f"{'setting':18}{'time s':>8}{'vs ORT':>9}{'predicted':>10}{'MACs':>8}")
    for s in settings:
        if not time_budget_left(deadline):
            print(f"{s.label:18}  skipped: zoo time budget of {args.budget:.0f} s exceeded")
            rows.append(dict(setting=s.label, skipped=True))
            continue
        res, t = occlude(model, image, stride, s, args.batch_size)
        row = dict(setting=s.label, tau=s.tau, drilldown=s.drilldown, time=t, stride=stride,
                   vs_ort=t_ort / t, predicted=predict(s, res.coarse_stride),
                   macs=mac_ratio(model, n_pos, res), coarse_stride=res.coarse_stride)
        rows.append(row)
        print(f"{s.label:18}{t:8.2f}{row['vs_ort']:8.1f}x{row['predicted']:9.1f}x"
              f"{row['macs']:7.1f}x", flush=True)
    return dict(model=name, size=size, stride=stride, positions=n_pos, ort_ms_per_position=ms,
                ort_positions_timed=n_sub, ort_seconds_extrapolated=t_ort, rows=rows)


# --------------------------------------------------------------------------------------
# Targets, plot
# --------------------------------------------------------------------------------------

def print_targets(demo_results, zoo_results=()):
    """Per demo model: the fastest setting at the target SSIM, and its tuned drill-down's
    speed on the full-size zoo twin (quality measured on the demo model)."""
    print(f"\n== targets (at mean SSIM >= {SSIM_TARGET} against exact; vs onnxruntime full "
          f"re-inference, extrapolated; printed, not asserted) ==")
    zoo_rows = {r["model"]: r.get("rows", []) for r in zoo_results}
    for result in demo_results:
        name = result["model"]
        target = ORT_TARGET.get(name)
        ok = [r for r in result["rows"] if r["ssim"] >= SSIM_TARGET]
        best = max(ok, key=lambda r: r["vs_ort"])  # exact (SSIM 1) is always a candidate
        verdict = "n/a" if target is None else ("PASS" if best["vs_ort"] >= target else "MISS")
        print(f"{name:12} target >= {target}x ({PAPER.get(name, '')}): fastest setting with "
              f"SSIM >= {SSIM_TARGET} is '{best['setting']}': {best['vs_ort']:.1f}x vs ORT, "
              f"{best['vs_exact']:.2f}x vs exact, SSIM {best['ssim']:.3f} +- "
              f"{best['ssim_se']:.3f} (standard error; min {best['ssim_min']:.3f})  {verdict}")
        tuned, twin = result.get("tuned"), ZOO_TWIN.get(name)
        row = [r for r in zoo_rows.get(twin, []) if tuned and r.get("setting") == tuned.label]
        if row and not row[0].get("skipped") and target is not None:
            quality = [r for r in result["rows"] if r["setting"] == tuned.label][0]
            verdict = "PASS" if row[0]["vs_ort"] >= target and quality["ssim"] >= SSIM_TARGET \
                else "MISS"
            print(f"{'':12} the same setting '{tuned.label}' on zoo {twin} (full width, stride "
                  f"{row[0]['stride']}): {row[0]['vs_ort']:.1f}x vs ORT; its SSIM on "
                  f"{name}'s benchmark images {quality['ssim']:.3f} +- {quality['ssim_se']:.3f}"
                  f"  {verdict}")


def plot(demo_results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        print(f"plot not written ({path}): matplotlib is not installed")
        return
    fig, axes = plt.subplots(1, len(demo_results), figsize=(6 * len(demo_results), 4.5),
                             squeeze=False)
    for ax, result in zip(axes[0], demo_results):
        rows = result["rows"]
        offsets = [(6, 4), (6, -10), (-10, 10), (-10, -16)]  # coincident points stay legible
        for k, r in enumerate(rows):
            marker = "s" if r["drilldown"] else ("*" if r["setting"] == "exact" else "o")
            ax.scatter(r["vs_ort"], r["ssim"], marker=marker, s=60)
            ax.annotate(r["setting"], (r["vs_ort"], r["ssim"]), textcoords="offset points",
                        xytext=offsets[k % len(offsets)], fontsize=7)
        ax.axhline(SSIM_TARGET, color="grey", ls="--", lw=0.8)
        if result["model"] in ORT_TARGET:
            ax.axvline(ORT_TARGET[result["model"]], color="red", ls=":", lw=0.8,
                       label=f"target {ORT_TARGET[result['model']]:.0f}x")
            ax.legend(loc="lower left", fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(FuncFormatter(
            lambda v, _: f"{v:g}x" if f"{v:.0e}"[0] in "25" else ""))
        ax.set_xlabel("speedup vs onnxruntime full re-inference (log)")
        ax.set_ylabel("mean SSIM vs exact heatmap")
        ax.set_title(f"{result['model']}: stride {result['stride']}, "
                     f"{len(result['runs']['exact'])} images")
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot written to {path}")


# --------------------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="3 images, 16 ORT positions on the zoo models, no Inception v3")
    parser.add_argument("--images", type=int, default=None,
                        help="demo images (default 16, 3 with --quick)")
    parser.add_argument("--seed", type=int, default=2026, help="datasets.shapes seed")
    parser.add_argument("--stride", type=int, default=4, help="demo models' stride (default 4)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="positions per batch, ours and onnxruntime's (default 64)")
    parser.add_argument("--positions", type=int, default=64,
                        help="positions ORT is timed on, demo models (default 64)")
    parser.add_argument("--tune-images", type=int, default=None,
                        help="images kr.tune_drilldown tunes drill-down on, per demo model "
                             "(default 24, 6 with --quick; 0: no tuned setting)")
    parser.add_argument("--tune-ssim", type=float, default=TUNE_SSIM,
                        help=f"the mean SSIM (95%% lower bound) kr.tune_drilldown tunes for "
                             f"(default {TUNE_SSIM}: the target {SSIM_TARGET} plus a margin "
                             f"for other images)")
    parser.add_argument("--zoo-stride", type=int, default=8,
                        help="zoo models' stride (default 8: 27 x 27 at 224 px)")
    parser.add_argument("--zoo-positions", type=int, default=None,
                        help="positions ORT is timed on, zoo models (default 36, 16 with --quick)")
    parser.add_argument("--zoo-models", default=None,
                        help=f"comma-separated (default {','.join(ZOO_MODELS)}; --quick: "
                             f"without inception_v3); 'none' skips the zoo part")
    parser.add_argument("--no-zoo", action="store_true", help="skip the zoo part")
    parser.add_argument("--zoo-exact", action="store_true",
                        help="also time exact incremental on the zoo models")
    parser.add_argument("--budget", type=float, default=1500.0,
                        help="seconds of wall time for the zoo part; later settings are "
                             "skipped once exceeded (default 1500)")
    parser.add_argument("--json", help="write every number to this JSON file")
    parser.add_argument("--plot", help="write the speed/quality plot to this PNG file")
    args = parser.parse_args(argv)
    if args.images is None:
        args.images = 3 if args.quick else 16
    if args.tune_images is None:
        args.tune_images = 6 if args.quick else 24
    if args.tune_images < 0:
        parser.error("--tune-images must be 0 or more")
    if args.zoo_positions is None:
        args.zoo_positions = 16 if args.quick else 36
    if args.zoo_models is None:
        args.zoo_models = ",".join(m for m in ZOO_MODELS
                                   if not (args.quick and m == "inception_v3"))
    args.zoo = [] if args.no_zoo or args.zoo_models == "none" else [
        m.strip() for m in args.zoo_models.split(",") if m.strip()]
    for value, what in ((args.images, "--images"), (args.stride, "--stride"),
                        (args.batch_size, "--batch-size"), (args.positions, "--positions"),
                        (args.zoo_stride, "--zoo-stride"), (args.zoo_positions, "--zoo-positions")):
        if value < 1:
            parser.error(f"{what} must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    print(f"== approximate occlusion benchmark{' (quick)' if args.quick else ''}: demo models "
          f"{', '.join(DEMO_MODELS)} at stride {args.stride} on {args.images} images (seed "
          f"{args.seed}); zoo {', '.join(args.zoo) or 'skipped'} at stride {args.zoo_stride}, "
          f"speed only; patch {PATCH}, zero fill, batch {args.batch_size}, float32 ==")
    machine_info()
    import onnxruntime as ort
    print(f"onnxruntime {ort.__version__} (default threading); ORT times are extrapolated "
          f"from a subset of positions")
    print(f"settings: exact, tau in {TAUS}, drill-down (r_drill {R_DRILL}, target_speedup "
          f"{TARGET_SPEEDUP}) with tau in (1.0,) + {TAUS}, and tau with drill-down tuned per demo "
          f"model by kr.tune_drilldown on {args.tune_images} images of seed {args.seed + 1}")

    data = datasets.shapes(args.images, image_size=224, seed=args.seed)
    out = dict(args={k: v for k, v in vars(args).items()}, demo=[], zoo=[])
    with tempfile.TemporaryDirectory() as workdir:
        for name in DEMO_MODELS:
            out["demo"].append(bench_demo(name, data, args, workdir))
        if args.zoo:
            print(f"\n== zoo models: speed only (random weights: the heatmap is noise, SSIM "
                  f"against exact is meaningless); stride {args.zoo_stride}; time budget "
                  f"{args.budget:.0f} s ==")
        zoo_start = time.perf_counter()
        deadline = zoo_start + args.budget
        for name in args.zoo:
            if not time_budget_left(deadline):
                print(f"\n== {name}: skipped, zoo time budget of {args.budget:.0f} s exceeded ==")
                out["zoo"].append(dict(model=name, skipped=True))
                continue
            tuned = {r["tuned"].label: r["tuned"] for r in out["demo"] if r.get("tuned")}
            out["zoo"].append(bench_zoo(name, args, workdir, deadline, tuned.values()))
        if args.zoo:
            print(f"(zoo part: {time.perf_counter() - zoo_start:.0f} s)")

    print_targets(out["demo"], out["zoo"])
    if args.plot:
        plot(out["demo"], args.plot)
    wall = time.perf_counter() - started
    out["wall_seconds"] = wall
    out["load_average_end"] = list(os.getloadavg())
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1, default=_jsonable)
        print(f"results written to {args.json}")
    print(f"wall time {wall:.0f} s; load average at the end "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} (2 cores: above ~2, other "
          f"work competed with the timings)")
    return 0


def _jsonable(value):
    if isinstance(value, Setting):
        return asdict(value)
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
