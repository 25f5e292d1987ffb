"""Incremental against full inference on the VGG16 conv body (KRYPTON, Algorithm 2).

What is measured
----------------
The VGG16 convolutional body (13 conv 3x3 pad 1 + ReLU, 5 max pools 2x2 stride 2,
no dense layers), built with the kryptonref Graph IR with seeded random weights,
at 224 x 224 (112 x 112 with ``--quick``), float32. A 16 x 16 zero patch is placed
at 16 positions near the centre (a 4 x 4 grid of stride 4; at 224 px
y, x in {100, 104, 108, 112}).

* full: ``model.forward`` on one image, best of N (ms per image);
* incremental, batch 1: ``incremental_inference`` called once per position with
  ``batch_size=1`` (ms per position, best of N sweeps over the 16 positions);
* incremental, batch 16: one call with all 16 positions, ``batch_size=16``
  (ms per position, best of N).

Both incremental runs reuse ``base = model.forward_all(image[None])``, computed once
outside the timing. The measured speedup is full time / incremental time per
position; the theoretical speedup is ``full conv MACs * n_positions /
result.total_macs`` (the MACs the engine executed, which for batch 16 include
the growth of every region to the batch's largest); the achieved fraction is
measured / theoretical.

Target
------
achieved fraction >= 0.85. The script also checks once that the incremental
outputs equal ``model.forward`` on the occluded images (max abs diff printed).
Nothing asserts on timings; on a shared machine they are noisy.

Usage
-----
    python benchmarks/bench_incremental.py            # 224 px
    python benchmarks/bench_incremental.py --quick    # 112 px, fewer repetitions
    python benchmarks/bench_incremental.py --profile  # also time the engine's stages
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kryptonref.runtime import prepare_command_process  # noqa: E402
prepare_command_process()  # before NumPy: OpenBLAS reads its thread timeout when it loads
import kryptonref as kr  # noqa: E402
import numpy as np  # noqa: E402
from common import best_of, machine_info  # noqa: E402

PATCH = 16


def vgg16_body(size=224):
    """The VGG16 conv body (no classifier) as a kryptonref Graph at ``size`` px."""
    graph = kr.Graph((3, size, size))
    c_in = 3
    for block, (width, n_convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)],
                                             start=1):
        for i in range(1, n_convs + 1):
            graph.add(kr.Conv2d(c_in, width, 3, padding=1), name=f"conv{block}_{i}")
            graph.add(kr.ReLU(), name=f"relu{block}_{i}")
            c_in = width
        graph.add(kr.MaxPool2d(2, stride=2), name=f"pool{block}")
    return graph


def centre_positions(size, patch=PATCH, step=4, n=4):
    """``n x n`` positions on a ``step`` grid around the centre (100..112 at 224 px)."""
    first = size // 2 - patch // 2 - (n - 1) * step // 2 + step // 2
    first = max(0, min(first, size - patch - (n - 1) * step))
    coords = first + step * np.arange(n)
    grid = np.stack(np.meshgrid(coords, coords, indexing="ij"), axis=-1)
    return grid.reshape(-1, 2).astype(np.int64)


class StageTimer:
    """Monkeypatches the engine's kernels to accumulate time per stage.

    Stages: ``gather`` (read-window assembly), ``conv row taps`` (tiled im2col +
    BLAS GEMMs), ``conv batched`` (one im2col + GEMM for many small regions),
    ``conv other`` (the rest of ``conv2d_valid``: allocation, bias),
    ``pool`` (max pooling), ``elementwise`` (ReLU), ``to_whole`` (stitching the
    output), and ``other`` (engine bookkeeping: geometry, dispatch, allocation).
    """

    def __init__(self):
        from kryptonref import engine
        from kryptonref.layers import conv, ops
        self.times = defaultdict(float)
        self.calls = defaultdict(int)
        self._saved = []
        self._patch(engine, "gather_windows", "gather")
        self._patch(conv, "_conv_row_taps", "row_taps")
        self._patch(conv, "_conv_batched", "batched")
        self._patch(conv, "conv2d_valid", "conv_total", owner_names=(ops,))
        self._patch(ops, "max_pool_valid", "pool")
        self._patch(ops, "elementwise", "elementwise")
        self._patch(engine, "_to_whole", "to_whole")

    def _patch(self, module, attr, stage, owner_names=()):
        original = getattr(module, attr)

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.times[stage] += time.perf_counter() - t0
                self.calls[stage] += 1

        for mod in (module,) + tuple(owner_names):
            if getattr(mod, attr, None) is original:
                self._saved.append((mod, attr, original))
                setattr(mod, attr, wrapper)

    def restore(self):
        for mod, attr, original in reversed(self._saved):
            setattr(mod, attr, original)
        self._saved.clear()

    def report(self, total, n_positions, title):
        t = dict(self.times)
        conv_rest = t.get("conv_total", 0.0) - t.get("row_taps", 0.0) - t.get("batched", 0.0)
        rows = [("gather", t.get("gather", 0.0)),
                ("conv row taps", t.get("row_taps", 0.0)),
                ("conv batched", t.get("batched", 0.0)), ("conv other", conv_rest),
                ("maxpool", t.get("pool", 0.0)), ("relu", t.get("elementwise", 0.0)),
                ("to_whole", t.get("to_whole", 0.0))]
        accounted = sum(v for _, v in rows)
        rows.append(("other (engine)", total - accounted))
        print(f"  {title}: {total / n_positions * 1e3:.2f} ms/position")
        for name, value in rows:
            print(f"    {name:15} {value / n_positions * 1e3:8.3f} ms/pos  "
                  f"{100 * value / total:5.1f} %")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="112 px image, fewer repetitions")
    parser.add_argument("--size", type=int, default=None, help="image size (default 224, 112 quick)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed repetitions, best kept (default 5, 3 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true",
                        help="also time the engine's stages (gather/im2col/GEMM/unpack/...)")
    args = parser.parse_args(argv)
    size = args.size or (112 if args.quick else 224)
    repeat = args.repeat or (3 if args.quick else 5)

    print(f"== bench_incremental: VGG16 conv body at {size} px, float32, "
          f"{PATCH}x{PATCH} patch ==")
    machine_info()
    graph = vgg16_body(size)
    model = kr.Model(graph, seed=args.seed, dtype=np.float32)
    rng = np.random.default_rng(args.seed + 1)
    image = rng.standard_normal((3, size, size)).astype(np.float32)
    positions = centre_positions(size)
    n_pos = len(positions)
    full_macs = sum(graph.macs().values())
    ys = sorted({int(v) for v in positions[:, 0]})
    print(f"{n_pos} positions, y, x in {ys}; full conv MACs {full_macs / 1e9:.3f} G per image; "
          f"best of {repeat}")
    print()

    # Warm-up: compile every kernel for every shape class used below.
    base = model.forward_all(image[None])
    kr.incremental_inference(model, image, positions[:1], PATCH, fill=0.0, batch_size=1, base=base)
    kr.incremental_inference(model, image, positions, PATCH, fill=0.0, batch_size=n_pos, base=base)

    # Correctness, once: incremental (batch 16 and batch 1) against full inference.
    occluded = np.repeat(image[None], n_pos, axis=0)
    for i, (y, x) in enumerate(positions):
        occluded[i, :, y:y + PATCH, x:x + PATCH] = 0.0
    reference = model.forward(occluded)
    scale = float(np.max(np.abs(reference))) or 1.0
    res16 = kr.incremental_inference(model, image, positions, PATCH, fill=0.0,
                                     batch_size=n_pos, base=base)
    res1 = kr.incremental_inference(model, image, positions, PATCH, fill=0.0, batch_size=1,
                                    base=base)
    diff16 = float(np.max(np.abs(res16.output - reference)))
    diff1 = float(np.max(np.abs(res1.output - reference)))
    print(f"check vs model.forward on the occluded images: max abs diff "
          f"B=1 {diff1:.3e}, B=16 {diff16:.3e} (output scale {scale:.3e}, "
          f"relative {max(diff1, diff16) / scale:.1e})")

    # Timings.
    t_full, _ = best_of(lambda: model.forward(image[None]), repeat)

    def run_b1():
        for pos in positions:
            kr.incremental_inference(model, image, pos[None], PATCH, fill=0.0, batch_size=1,
                                     base=base)

    def run_b16():
        return kr.incremental_inference(model, image, positions, PATCH, fill=0.0,
                                        batch_size=n_pos, base=base)

    t_b1, _ = best_of(run_b1, repeat)
    t_b16, _ = best_of(run_b16, repeat)
    per_b1, per_b16 = t_b1 / n_pos, t_b16 / n_pos
    theo_b1 = full_macs * n_pos / res1.total_macs
    theo_b16 = full_macs * n_pos / res16.total_macs
    meas_b1, meas_b16 = t_full / per_b1, t_full / per_b16

    print()
    print(f"full inference            {t_full * 1e3:9.2f} ms/image "
          f"({2 * full_macs / t_full / 1e9:.1f} GFLOP/s)")
    print(f"{'':26}{'ms/position':>12} {'GFLOP/s':>8} {'measured':>9} {'theory':>8} "
          f"{'achieved':>9}")
    for label, per, meas, theo, res in (("incremental B=1", per_b1, meas_b1, theo_b1, res1),
                                        ("incremental B=16", per_b16, meas_b16, theo_b16, res16)):
        gflops = 2 * res.total_macs / n_pos / per / 1e9
        print(f"{label:26}{per * 1e3:12.2f} {gflops:8.1f} {meas:8.2f}x {theo:7.2f}x "
              f"{meas / theo:9.2f}")
    print()
    print("measured = full ms / incremental ms per position; theory = full MACs x positions / "
          "engine MACs (result.total_macs); achieved = measured / theory (target >= 0.85)")
    print(f"engine MACs per position: B=1 {res1.total_macs / n_pos / 1e9:.3f} G, "
          f"B=16 {res16.total_macs / n_pos / 1e9:.3f} G")
    print("region sizes per conv (B=16): " + ", ".join(
        f"{name}:{res16.region_sizes[name][0][0]}x{res16.region_sizes[name][0][1]}"
        for name in graph.order if name.startswith("conv")))

    if args.profile:
        print()
        print("stage profile (monkeypatched wrappers; adds a little overhead):")
        for label, fn in (("B=1", run_b1), ("B=16", run_b16)):
            timer = StageTimer()
            try:
                t0 = time.perf_counter()
                fn()
                total = time.perf_counter() - t0
            finally:
                timer.restore()
            timer.report(total, n_pos, label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
