"""Freezing global context: speed and heatmap quality of ``freeze_context=True``.

What is measured
----------------
1. ``demo_effnet`` (``kr.zoo("demo_effnet", weights="pretrained")``: MBConv blocks with
   SiLU and squeeze-excitation, trained on ``kryptonref.datasets.shapes``; 224 px,
   float32), where heatmap quality means something. ``--images N`` held-out images of
   ``datasets.shapes`` with ``--seed`` (2026 by default: not a training, validation or
   test seed), a 16 x 16 zero patch at stride ``--stride`` (16 by default: 14 x 14
   positions; 8 gives 27 x 27), batches of ``--batch-size`` (64), target = the true
   label. Settings, each ``kr.occlusion`` on every image:

   * ``exact``: ``mode="incremental"`` (every squeeze-excitation gate depends on the
     whole map, so from the first block on the changed region is whole: this is
     nearly full re-inference);
   * ``frozen``: ``mode="approximate", freeze_context=True`` (gates kept at their
     value on the unoccluded image; regions stay local through the blocks);
   * ``frozen+tau 0.5``: the same with the projective-field threshold tau = 0.5;
   * ``frozen+drill``: the same with adaptive drill-down at its defaults
     (``r_drill`` 0.25, ``target_speedup`` 3);
   * ``tau 0.5``: tau = 0.5 without freezing (the paper's approximation alone).

   Per setting: SSIM against the exact heatmap (``kryptonref.analysis.ssim``; mean
   and minimum over images), the pointing game (largest-drop cell in the true box),
   wall time, speedup vs exact (summed times), speedup vs onnxruntime full
   re-inference (``benchmarks/occlusion.py``'s session; timed on ``--positions``
   stratified positions of the first image, best of 2, and EXTRAPOLATED to the grid),
   the MACs the engine counted against full re-inference and against exact
   (``full MACs x positions / MACs run``; ``exact MACs / MACs run``), and the cost
   model's prediction (``kr.speedup(..., mode="executed", freeze_context=...)``).

2. Zoo ``efficientnet_b0`` (``kr.zoo("efficientnet_b0", seed=0)``: seeded random weights,
   224 px, no torchvision needed): **speed only** (a random network's heatmap is
   noise), one synthetic image (``benchmarks/occlusion.py``'s), the same settings at
   ``--zoo-stride`` (16 by default), onnxruntime timed on ``--zoo-positions``.

Timings are single runs on a shared machine (the load average is printed before each
part). Every setting is first run on a coarse grid so that JIT compilation is not timed.

Usage
-----
    PYTHONPATH=. python3 benchmarks/frozen_context.py                    # 5 images, stride 16
    PYTHONPATH=. python3 benchmarks/frozen_context.py --images 1 --no-zoo   # smoke test
    PYTHONPATH=. python3 benchmarks/frozen_context.py --stride 8 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kryptonref.runtime import prepare_command_process  # noqa: E402
prepare_command_process()  # before NumPy: OpenBLAS reads its thread timeout when it loads
import kryptonref as kr  # noqa: E402
import numpy as np  # noqa: E402
from common import machine_info  # noqa: E402
from kryptonref import datasets  # noqa: E402
from kryptonref.analysis import pointing_game, ssim  # noqa: E402
from approximate import heatmap_positions as grid_positions  # noqa: E402
from approximate import ort_baseline as ort_ms_per_position  # noqa: E402
from occlusion import synthetic_image  # noqa: E402

PATCH = 16
FILL = 0.0

#: label -> kr.occlusion keyword arguments.
SETTINGS = {
    "exact": dict(mode="incremental"),
    "frozen": dict(mode="approximate", freeze_context=True),
    "frozen+tau 0.5": dict(mode="approximate", freeze_context=True, tau=0.5),
    "frozen+drill": dict(mode="approximate", freeze_context=True, drilldown=True),
    "tau 0.5": dict(mode="approximate", tau=0.5),
}


def _load():
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def occlude(model, image, stride, label, batch, target=None):
    t0 = time.perf_counter()
    res = kr.occlusion(model, image, PATCH, stride, fill=FILL, target=target, batch_size=batch,
                       **SETTINGS[label])
    return res, time.perf_counter() - t0


def warm_up(model, image, batch):
    """Compile every kernel the settings use, on a coarse grid (not timed)."""
    stride = max(1, (model.graph.input_shape[1] - PATCH) // 4)
    for label in SETTINGS:
        occlude(model, image, stride, label, batch)


def predicted(model, stride, batch, label):
    kwargs = SETTINGS[label]
    return kr.speedup(model, PATCH, stride, tau=kwargs.get("tau", 1.0), mode="executed",
                      batch_size=batch,
                      freeze_context=kwargs.get("freeze_context", False)).speedup


def setup(model, image, stride, args, workdir, n_ort):
    positions, n_grid = grid_positions(model.graph.input_shape[1], stride)
    t0 = time.perf_counter()
    warm_up(model, image, args.batch_size)
    ms, n_sub, note = ort_ms_per_position(model, image, stride, args.batch_size, n_ort, workdir)
    t_ort = ms * len(positions) / 1e3
    print(f"warm-up and ORT in {time.perf_counter() - t0:.0f} s; onnxruntime full "
          f"re-inference {ms:.2f} ms/position on {n_sub} positions -> {t_ort:.2f} s for "
          f"{len(positions)} positions (EXTRAPOLATED); onnx: {note}", flush=True)
    return len(positions), n_grid, ms, n_sub, t_ort


def bench_demo(args, workdir):
    model = kr.zoo("demo_effnet", weights="pretrained")
    size = model.graph.input_shape[1]
    data = datasets.shapes(args.images, image_size=size, seed=args.seed)
    n_pos, n_grid, ms, n_sub, t_ort = 0, 0, 0.0, 0, 0.0
    print(f"\n== demo_effnet (trained, {size} px): {args.images} images of seed {args.seed}, "
          f"patch {PATCH}, stride {args.stride}, batch {args.batch_size}, target = true label; "
          f"load average {_load()} ==", flush=True)
    n_pos, n_grid, ms, n_sub, t_ort = setup(model, data.images[0], args.stride, args, workdir,
                                            args.positions)
    full_macs = sum(model.graph.macs().values()) * n_pos
    runs = {label: [] for label in SETTINGS}
    for i in range(args.images):
        image, label_id = data.images[i], int(data.labels[i])
        box = tuple(int(v) for v in data.boxes[i])
        exact = None
        line = [f"image {i}: {data.class_names[label_id]}"]
        for label in SETTINGS:
            res, t = occlude(model, image, args.stride, label, args.batch_size, label_id)
            exact = exact or res
            runs[label].append(dict(time=t, macs=float(res.macs),
                                    ssim=float(ssim(exact.heatmap, res.heatmap)),
                                    pointing=bool(pointing_game(res.heatmap, box, PATCH,
                                                                args.stride))))
            line.append(f"{label} {t:.2f}s/{runs[label][-1]['ssim']:.3f}")
        print("  " + " | ".join(line), flush=True)
    rows = []
    exact_time = sum(r["time"] for r in runs["exact"])
    exact_macs = np.mean([r["macs"] for r in runs["exact"]])
    for label, items in runs.items():
        macs = float(np.mean([r["macs"] for r in items]))
        ssims = np.array([r["ssim"] for r in items])
        rows.append(dict(setting=label, time=float(np.mean([r["time"] for r in items])),
                         vs_exact=exact_time / sum(r["time"] for r in items),
                         vs_ort=t_ort / float(np.mean([r["time"] for r in items])),
                         ssim=float(ssims.mean()), ssim_min=float(ssims.min()),
                         pointing=float(np.mean([r["pointing"] for r in items])),
                         macs_vs_full=full_macs / macs, macs_vs_exact=exact_macs / macs,
                         predicted=predicted(model, args.stride, args.batch_size, label)
                         if "drilldown" not in SETTINGS[label] else None))
    print_table("demo_effnet", rows, quality=True)
    return dict(model="demo_effnet", images=args.images, seed=args.seed, stride=args.stride,
                positions=n_pos, grid=n_grid, ort_ms_per_position=ms, ort_positions_timed=n_sub,
                ort_seconds_extrapolated=t_ort, rows=rows, runs=runs)


def bench_zoo(args, workdir):
    size = 224
    model = kr.zoo("efficientnet_b0", image_size=size, seed=0)
    image = synthetic_image(size, seed=0).astype(np.float32)
    print(f"\n== zoo efficientnet_b0 (seeded random weights, {size} px): one synthetic image, "
          f"patch {PATCH}, stride {args.zoo_stride}, batch {args.batch_size}; speed only; "
          f"load average {_load()} ==", flush=True)
    n_pos, n_grid, ms, n_sub, t_ort = setup(model, image, args.zoo_stride, args, workdir,
                                            args.zoo_positions)
    full_macs = sum(model.graph.macs().values()) * n_pos
    rows, exact_time, exact_macs = [], None, None
    for label in SETTINGS:
        res, t = occlude(model, image, args.zoo_stride, label, args.batch_size)
        exact_time = exact_time or t
        exact_macs = exact_macs or res.macs
        rows.append(dict(setting=label, time=t, vs_exact=exact_time / t, vs_ort=t_ort / t,
                         ssim=float("nan"), ssim_min=float("nan"), pointing=float("nan"),
                         macs_vs_full=full_macs / res.macs, macs_vs_exact=exact_macs / res.macs,
                         predicted=predicted(model, args.zoo_stride, args.batch_size, label)
                         if "drilldown" not in SETTINGS[label] else None))
        print(f"  {label}: {t:.2f} s", flush=True)
    print_table("efficientnet_b0", rows, quality=False)
    return dict(model="efficientnet_b0", stride=args.zoo_stride, positions=n_pos, grid=n_grid,
                ort_ms_per_position=ms, ort_positions_timed=n_sub,
                ort_seconds_extrapolated=t_ort, rows=rows)


def print_table(name, rows, quality):
    print(f"\n-- {name}: vs ORT against extrapolated full re-inference; MACs: full "
          f"re-inference / run and exact / run (engine counts); predicted: cost model over full "
          f"re-inference --")
    head = f"{'setting':16}{'time s':>8}{'vs exact':>9}{'vs ORT':>8}{'MACs/full':>10}" \
           f"{'MACs/exact':>11}{'predicted':>10}"
    if quality:
        head += f"{'SSIM':>7}{'min':>7}{'pointing':>9}"
    print(head)
    for r in rows:
        pred = "-" if r["predicted"] is None else f"{r['predicted']:.1f}x"
        line = (f"{r['setting']:16}{r['time']:8.2f}{r['vs_exact']:8.2f}x{r['vs_ort']:7.2f}x"
                f"{r['macs_vs_full']:9.2f}x{r['macs_vs_exact']:10.2f}x{pred:>10}")
        if quality:
            line += f"{r['ssim']:7.3f}{r['ssim_min']:7.3f}{r['pointing']:9.2f}"
        print(line)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--positions", type=int, default=49,
                        help="positions onnxruntime is timed on (demo_effnet)")
    parser.add_argument("--no-zoo", action="store_true", help="skip efficientnet_b0")
    parser.add_argument("--zoo-stride", type=int, default=16)
    parser.add_argument("--zoo-positions", type=int, default=25)
    parser.add_argument("--json", default=None, help="write every number here")
    args = parser.parse_args(argv)
    machine_info()
    t0 = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        results["demo_effnet"] = bench_demo(args, workdir)
        if not args.no_zoo:
            results["efficientnet_b0"] = bench_zoo(args, workdir)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; load average {_load()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
