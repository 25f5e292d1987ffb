"""GPU benchmark: KRYPTON incremental inference vs full re-inference (ours and PyTorch/cuDNN).

What is measured (per model: VGG16 and ResNet18 at 224 px, Inception v3 at 299 px;
seeded random weights, float32; a seeded random normal image; zero patch 16,
stride 4, every grid position: 2809 at 224 px, 5041 at 299 px; batches of 128):

* ours incremental: ``kr.incremental_inference(device="cuda")`` over all positions
  in one call (wall time; it returns host arrays, so it is synchronous; the base
  inference is included); peak memory from ``be.reset_peak()`` / ``be.memory()``.
* ours full: ``model.forward(batch, device="cuda")`` on ``--full-batches`` batches
  of occluded images built on the host (build time shown apart), extrapolated per
  position to all positions.
* PyTorch + cuDNN full re-inference (``torch_graph.TorchGraph``: the same graph and
  weights in ``torch.nn.functional`` ops; fp32, TF32 off, ``cudnn.benchmark``):
  occluded batches built on the GPU, all positions, ``torch.no_grad()``, synchronised
  before the clock stops; peak from ``torch.cuda.max_memory_allocated``. Outputs
  are compared with ours (max abs diff, and relative to the largest |logit|).

Compile/warm-up time is reported apart. A timed phase that would overrun
``--phase-cap`` or its share of the time left before ``--deadline`` (estimated
from one timed batch) runs a prefix of whole batches and is extrapolated (said so
in the output). The summary gives the speedups, the cost simulator's theoretical
speedup (``kr.speedup``, "executed" at the batch size / "paper"), the fraction of
the executed theory that incremental vs our full achieves, peak device memory
and the targets (incremental vs PyTorch: VGG16 >= 4x, ResNet18 >= 1.6x,
Inception v3 >= 1x). The VGG16 table times each distinct conv layer (full
inference shapes, batch ``--layer-batch``) with our GEMM on cuBLAS (CuPy), our
tiled Numba GEMM, our direct kernel and cuDNN's ``F.conv2d``, in TFLOP/s (best of
3 after a warm-up; one run when the warm-up took over 2 s).

Usage
-----
    python benchmarks/occlusion_gpu.py                # ~4 min on one H100 (~1 min compile)
    python benchmarks/occlusion_gpu.py --quick        # vgg16 + resnet18, 1 full batch, no table
    python benchmarks/occlusion_gpu.py --json out.json --models resnet18
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/occlusion_gpu.py --smoke  # CPU check, tiny graph
"""
from __future__ import annotations

import argparse
import importlib.metadata as metadata
import importlib.util
import json
import math
import os
import signal
import sys
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
import kryptonref as kr  # noqa: E402

FILL = 0.0
TARGETS = {"vgg16": 4.0, "resnet18": 1.6, "inception_v3": 1.0}
RESULTS = {"machine": {}, "models": [], "layers": []}  # filled in as phases complete
now = time.perf_counter
ARGS, STARTED = None, now()


def mib(nbytes):
    return "-" if nbytes is None else f"{nbytes / 2**20:.{0 if nbytes > 2**24 else 3}f} MiB"


def fmt(value, spec, width, suffix=""):
    if value is None:
        return f"{'-':>{width}}" + " " * len(suffix)
    return f"{value:{width}{spec}}{suffix}"


def ratio(a, b):
    return a / b if a is not None and b else None


def compare(got, want):
    """(max abs diff, max abs diff / max |want|)."""
    diff = float(np.max(np.abs(got - want)))
    return diff, diff / max(float(np.max(np.abs(want))), 1e-30)


def load_torch():
    """torch (configured for strict fp32) and its device, or (None, why not)."""
    if importlib.util.find_spec("torch") is None:
        return None, "torch not installed"
    import torch
    from torch_graph import configure_fp32
    configure_fp32()
    if torch.cuda.is_available():
        return torch, "cuda"
    if ARGS.smoke:
        return torch, "cpu"  # the smoke run exercises the torch code path on the CPU
    return None, "torch has no CUDA device"


def machine_info(torch, torch_dev):
    from numba import cuda
    from kryptonref.layers import conv_cuda
    name = getattr(cuda.get_current_device(), "name", "CUDA simulator")
    info = dict(gpu=name.decode() if isinstance(name, bytes) else str(name),
                simulator=os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", numpy=np.__version__,
                cupy=None, torch=None, cudnn=None, gemm=conv_cuda.gemm_backend())
    for dist in ("numba", "numba-cuda"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = None
    if importlib.util.find_spec("cupy") is not None:
        import cupy
        info["cupy"] = cupy.__version__
    if torch is not None:
        info.update(torch=f"{torch.__version__} (CUDA {torch.version.cuda}, device {torch_dev})",
                    cudnn=torch.backends.cudnn.version())
    RESULTS["machine"] = info
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))


# --------------------------------------------------------------------------------------
# Models, occluded images, time limits
# --------------------------------------------------------------------------------------

def build_model(name):
    if name != "smoke":
        return kr.zoo(name, seed=ARGS.seed, dtype=np.float32)
    g = kr.Graph((3, 12, 12))  # 3 convs: BN, max pool, asymmetric padding, Linear
    g.add(kr.Conv2d(3, 4, 3, padding=1), g.input_name, name="c1")
    g.add(kr.ReLU(), name="r1")
    g.add(kr.MaxPool2d(2), name="p1")
    g.add(kr.Conv2d(4, 6, 3, padding=1), name="c2")
    g.add(kr.BatchNorm2d(6), name="bn2")
    g.add(kr.ReLU(), name="r2")
    g.add(kr.Conv2d(6, 8, 3, stride=2, padding=((0, 1), (0, 1))), name="c3")
    g.add(kr.Flatten(), name="flat")
    g.add(kr.Linear(8 * 3 * 3, 10), name="fc")
    return kr.Model(g, seed=ARGS.seed)


def patch_mask(xp, pos, patch, h, w):
    """(B, 1, H, W) boolean mask of each position's patch (NumPy or torch, ``xp``)."""
    kw = {} if xp is np else {"device": pos.device}
    ys, xs = xp.arange(h, **kw)[None], xp.arange(w, **kw)[None]
    rows = (ys >= pos[:, :1]) & (ys < pos[:, :1] + patch)
    cols = (xs >= pos[:, 1:]) & (xs < pos[:, 1:] + patch)
    return (rows[:, :, None] & cols[:, None, :])[:, None]


def occlude_host(image, pos):
    mask = patch_mask(np, pos, ARGS.patch, *image.shape[1:])
    return np.where(mask, np.float32(FILL), image[None]).astype(np.float32)


def slices(n, batch):
    return [slice(i, min(i + batch, n)) for i in range(0, n, batch)]


def batches_within(n_batches, per_batch_s, what):
    """How many batches of a timed phase to run: all, unless they would take longer than
    ``--phase-cap`` or this phase's share of the time left before ``--deadline``."""
    ARGS.phases_left = max(1, ARGS.phases_left - 1)
    share = (ARGS.deadline - (now() - STARTED)) / ARGS.phases_left
    cap = max(3.0, min(ARGS.phase_cap, share))
    fit = max(1, int(cap / max(per_batch_s, 1e-9)))
    if fit < n_batches:
        print(f"  ! {what}: ~{per_batch_s:.2f} s/batch x {n_batches} batches exceeds the "
              f"{cap:.0f} s allowed (--phase-cap/--deadline): {fit} batches, extrapolated")
    return min(fit, n_batches)


def how(measured, total):
    return "measured" if measured == total else f"extrapolated from {measured}"


# --------------------------------------------------------------------------------------
# The three ways of computing every occluded output
# --------------------------------------------------------------------------------------

def bench_incremental(model, image, positions, be, row):
    kw = dict(patch=ARGS.patch, fill=FILL, batch_size=ARGS.batch, device="cuda")
    t0 = now()
    kr.incremental_inference(model, image, positions[:ARGS.warm], **kw)
    model.forward(occlude_host(image, positions[:2]), device="cuda")
    row["warmup_s"] = now() - t0
    t0 = now()  # one timed batch (with the base inference): the estimate for the limits
    kr.incremental_inference(model, image, positions[:ARGS.batch], **kw)
    n_batches = math.ceil(len(positions) / ARGS.batch)
    run = positions[:batches_within(n_batches, now() - t0, "incremental") * ARGS.batch]
    be.reset_peak()
    t0 = now()
    res = kr.incremental_inference(model, image, run, **kw)
    t = now() - t0
    full_one = sum(model.graph.macs().values())
    row.update(incr_s=t * len(positions) / len(run), incr_positions=len(run),
               incr_peak=be.memory()[1], engine_ratio=full_one * len(run) / res.total_macs)
    print(f"  ours incremental: {row['incr_s']:8.3f} s ({how(len(run), len(positions))}; "
          f"compile/warm-up {row['warmup_s']:.1f} s), engine MAC ratio "
          f"{row['engine_ratio']:.2f}x, peak {mib(row['incr_peak'])} (weights included)")
    return res.output


def bench_ours_full(model, image, positions, be, row):
    sub = positions[:ARGS.full_batches * ARGS.batch]
    t_build = t_fwd = 0.0
    outs = []
    be.reset_peak()
    for sl in slices(len(sub), ARGS.batch):
        t0 = now()
        x = occlude_host(image, sub[sl])
        t1 = now()
        outs.append(model.forward(x, device="cuda"))
        t_build, t_fwd = t_build + t1 - t0, t_fwd + now() - t1
    scale = len(positions) / len(sub)
    row.update(full_s=(t_build + t_fwd) * scale, full_build_s=t_build * scale,
               full_positions=len(sub), full_peak=be.memory()[1])
    print(f"  ours full:        {row['full_s']:8.3f} s ({how(len(sub), len(positions))}; "
          f"host occlusion {row['full_build_s']:.3f} s of it), peak {mib(row['full_peak'])} "
          f"(weights included)")
    return np.concatenate(outs)


def bench_torch(torch, dev, model, image, positions, row):
    from torch_graph import TorchGraph
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    net = TorchGraph(model, dev)
    img, pos = torch.from_numpy(image).to(dev), torch.from_numpy(positions).to(dev)

    def run_batch(sl):  # occluded on the device: one masked select per batch
        return net(torch.where(patch_mask(torch, pos[sl], ARGS.patch, *image.shape[1:]),
                               FILL, img[None]))

    parts = slices(len(positions), ARGS.batch)
    with torch.no_grad():
        t0 = now()
        for sl in {sl.stop - sl.start: sl for sl in (parts[0], parts[-1])}.values():
            run_batch(sl)  # cudnn.benchmark autotunes once per batch shape
        sync()
        row["torch_warmup_s"] = now() - t0
        t0 = now()
        run_batch(parts[0])
        sync()
        k = batches_within(len(parts), now() - t0, "torch")
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = now()
        outs = [run_batch(sl) for sl in parts[:k]]
        sync()
        t = now() - t0
    out = torch.cat(outs).cpu().numpy()
    row.update(torch_s=t * len(positions) / len(out), torch_positions=len(out),
               torch_peak=torch.cuda.max_memory_allocated() if dev == "cuda" else None)
    print(f"  torch full:       {row['torch_s']:8.3f} s ({how(len(out), len(positions))}; "
          f"warm-up {row['torch_warmup_s']:.1f} s), peak {mib(row['torch_peak'])}")
    return out


def bench_model(name, be, torch, torch_dev):
    t_model = now()
    model = build_model(name)
    row = {"model": name, "size": model.graph.input_shape[1]}
    RESULTS["models"].append(row)
    positions = kr.patch_positions(model.graph.input_shape[1:], ARGS.patch, ARGS.stride)
    positions = positions[:ARGS.max_positions]
    image = np.random.default_rng(ARGS.seed).standard_normal(
        model.graph.input_shape).astype(np.float32)
    row.update(positions=len(positions), weights=sum(
        v.nbytes for p in model.prepared.values() for k, v in p.items() if k != "taps"))
    print(f"\n== {name}: {row['size']} px, {len(positions)} positions, patch {ARGS.patch}, "
          f"stride {ARGS.stride}, batch {ARGS.batch}, weights {mib(row['weights'])} ==")
    row["theory_exec"] = kr.speedup(model, ARGS.patch, ARGS.stride, mode="executed",
                                    batch_size=ARGS.batch).speedup
    row["theory_paper"] = kr.speedup(model, ARGS.patch, ARGS.stride, mode="paper").speedup
    incr = bench_incremental(model, image, positions, be, row)
    full = bench_ours_full(model, image, positions, be, row)
    row["diff_full_vs_incr"] = compare(incr[:len(full)], full)
    if torch is not None:
        try:
            ref = bench_torch(torch, torch_dev, model, image, positions, row)
            n = min(len(ref), len(incr))
            row["diff_incr_vs_torch"] = compare(incr[:n], ref[:n])
            row["diff_full_vs_torch"] = compare(full, ref[:len(full)])
        except Exception:  # noqa: BLE001 - keep our numbers: the run happens once
            traceback.print_exc()
        if torch_dev == "cuda":
            torch.cuda.empty_cache()
    for key in ("diff_full_vs_incr", "diff_incr_vs_torch", "diff_full_vs_torch"):
        if key in row:
            print(f"  {key}: max abs {row[key][0]:.2e}, relative to max |logit| "
                  f"{row[key][1]:.2e} ({'ok' if row[key][1] <= 1e-4 else 'CHECK: > 1e-4'})")
    print(f"  ({now() - t_model:.1f} s for this model, {now() - STARTED:.0f} s so far)")
    if name in ARGS.layer_models and now() - STARTED > ARGS.deadline:
        print(f"\n(conv-layer table skipped: past --deadline {ARGS.deadline:.0f} s)")
    elif name in ARGS.layer_models:
        try:
            layer_table(name, model, be, torch, torch_dev)
        except Exception:  # noqa: BLE001 - keep the model rows
            traceback.print_exc()


# --------------------------------------------------------------------------------------
# Per-conv-layer throughput: ours (cuBLAS GEMM, tiled GEMM, direct) vs cuDNN
# --------------------------------------------------------------------------------------

def time_kernel(fn, sync):
    """Best of 3 after a warm-up (which may compile); one run when the warm-up took > 2 s."""
    sync()
    t0 = now()
    result = fn()
    sync()
    times = []
    for _ in range(3 if now() - t0 <= 2.0 else 1):
        t0 = now()
        fn()
        sync()
        times.append(now() - t0)
    return min(times), result


def layer_table(model_name, model, be, torch, torch_dev):
    from kryptonref.layers import conv_cuda
    graph, params, n = model.graph, be.params(model), ARGS.layer_batch
    seen = {}
    for name in graph.order:
        layer = graph.nodes[name].layer
        if isinstance(layer, kr.Conv2d):
            seen.setdefault((layer, graph.shapes[graph.nodes[name].inputs[0]]), name)
    # our kernels: method="gemm" on every GEMM backend there is, and method="direct"
    ours = [(g, "gemm", g) for g in getattr(conv_cuda, "GEMM_BACKENDS", ("cublas", "tiled"))]
    ours.append(("direct", "direct", "auto"))
    cols = [label for label, _, _ in ours] + ["cudnn"]
    rng = np.random.default_rng(ARGS.seed)
    print(f"\n== {model_name}: {len(seen)} distinct conv layers (full inference shapes), batch "
          f"{n}: TFLOP/s, best of 3 after a warm-up; max rel diff: ours vs cuDNN ==")
    print(f"{'layer':14}{'input':>16}{'out':>5}{'GFLOP':>8}" + "".join(f"{c:>8}" for c in cols)
          + f"{'best/cuDNN':>11}{'max rel diff':>13}")
    try:
        for (layer, (c, h, w)), name in seen.items():
            p, out_hw = params[name], graph.shapes[name][1:]
            (pt, pb), (pl, pr) = layer.padding
            x = rng.standard_normal((n, c, h, w)).astype(np.float32)
            win = be.to_device(np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr))))
            flops = conv_cuda.conv_flops(p["weight"].shape, n, out_hw)
            rec = {"layer": name, "input": [c, h, w], "out": graph.shapes[name][0],
                   "gflop": flops / 1e9, "cudnn": None, "rel_diff": None}
            for label, method, gemm in ours:
                try:
                    conv_cuda.gemm_backend(gemm)
                except ImportError:  # no CuPy (always so under the simulator)
                    rec[label] = None
                    continue
                t, y = time_kernel(lambda: conv_cuda.conv2d_valid(
                    win, p["weight"], p.get("bias"), layer.stride, layer.dilation, layer.groups,
                    out_hw, method=method, weight_matrix=p.get("weight_matrix")), be.synchronize)
                rec[label] = flops / t / 1e12
            conv_cuda.gemm_backend("auto")
            if torch is not None:
                rec["cudnn"], rec["rel_diff"] = cudnn_conv(torch, torch_dev, model, name, x,
                                                           be.to_host(y), flops)
            best = max(rec[k] for k in cols[:-1] if rec[k] is not None)
            rec["best_over_cudnn"] = ratio(best, rec["cudnn"])
            RESULTS["layers"].append(rec)
            print(f"{name:14}{str((c, h, w)):>16}{rec['out']:>5}{rec['gflop']:8.1f}"
                  + "".join(fmt(rec[k], ".2f", 8) for k in cols)
                  + fmt(rec["best_over_cudnn"], ".2f", 11) + fmt(rec["rel_diff"], ".1e", 13))
    finally:
        conv_cuda.gemm_backend("auto")


def cudnn_conv(torch, dev, model, name, x, ours, flops):
    """cuDNN's TFLOP/s on the same layer (``F.conv2d``, same weights) and its agreement."""
    from torch_graph import TorchGraph
    net, layer = TorchGraph(model, dev, nodes=[name]), model.graph.nodes[name].layer
    xt = torch.from_numpy(x).to(dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    with torch.no_grad():
        t, y = time_kernel(lambda: net.op(name, layer, [xt]), sync)
    return flops / t / 1e12, compare(ours, y.cpu().numpy())[1]


# --------------------------------------------------------------------------------------

def print_summary():
    print("\n== summary: seconds for all positions (ours full: extrapolated; '*': other "
          "extrapolated totals); peak device memory in MiB, weights included ==")
    print(f"{'model':13}{'pos':>5}{'incr s':>9}{'full s':>8}{'torch s':>9}{'vs torch':>9}"
          f"{'vs full':>8}{'theory ex/pa':>13}{'achieved':>9}{'peak ours/torch':>16}  target")
    for r in RESULTS["models"]:
        star = lambda k: "*" if r.get(k, r["positions"]) < r["positions"] else " "  # noqa
        incr = r.get("incr_s")
        vs_full, vs_torch = ratio(r.get("full_s"), incr), ratio(r.get("torch_s"), incr)
        achieved = ratio(vs_full, r.get("theory_exec"))
        peak = None if incr is None else r["incr_peak"]
        target = TARGETS.get(r["model"])
        verdict = "-" if target is None or vs_torch is None else (
            f">= {target:.1f}x " + ("PASS" if vs_torch >= target else "MISS"))
        print(f"{r['model']:13}{r['positions']:>5}{fmt(incr, '.2f', 8)}{star('incr_positions')}"
              f"{fmt(r.get('full_s'), '.2f', 8)}{fmt(r.get('torch_s'), '.2f', 8)}"
              f"{star('torch_positions')}{fmt(vs_torch, '.2f', 8, 'x')}"
              f"{fmt(vs_full, '.2f', 7, 'x')}"
              f"{fmt(r.get('theory_exec'), '.2f', 7)}/{fmt(r.get('theory_paper'), '.2f', 4, 'x')}"
              f"{fmt(achieved, '.2f', 9)}{fmt(peak and peak / 2**20, '.1f', 8)}/"
              f"{fmt(r.get('torch_peak') and r['torch_peak'] / 2**20, '.1f', 7)}  {verdict}")
        r.update(vs_full=vs_full, vs_torch=vs_torch, achieved=achieved, ours_peak=peak,
                 verdict=verdict)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="vgg16,resnet18,inception_v3")
    ap.add_argument("--batch", type=int, default=128, help="positions per batch")
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--full-batches", type=int, default=2,
                    help="batches of our full re-inference (extrapolated to all positions)")
    ap.add_argument("--layer-batch", type=int, default=16)
    ap.add_argument("--layer-models", default="vgg16", help="models with a conv-layer table")
    ap.add_argument("--no-layers", action="store_true", help="no conv-layer table")
    ap.add_argument("--phase-cap", type=float, default=45.0,
                    help="seconds a timed phase may take before it is extrapolated")
    ap.add_argument("--deadline", type=float, default=210.0,
                    help="seconds after start by which the timed phases should end (their "
                         "batches are capped to fit; the layer table is skipped after it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write every number to this JSON file")
    ap.add_argument("--quick", action="store_true",
                    help="vgg16 + resnet18, 1 full batch, no layer table")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny graph, for the CUDA simulator (NUMBA_ENABLE_CUDASIM=1)")
    args = ap.parse_args(argv)
    args.max_positions, args.warm = None, 4
    if args.quick:
        args.models, args.full_batches, args.no_layers = "vgg16,resnet18", 1, True
    if args.smoke:
        args.models, args.layer_models = "smoke", "smoke"
        args.patch, args.stride, args.batch, args.full_batches = 3, 3, 4, 1
        args.layer_batch, args.max_positions, args.warm = 2, 5, 2
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.layer_models = [] if args.no_layers else args.layer_models.split(",")
    args.phases_left = 2 * len(args.models) + 1  # incremental + torch per model (+1: see use)
    return args


def _on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    global ARGS, STARTED
    ARGS, STARTED = parse_args(argv), now()
    print("GPU benchmark of kryptonref (device='cuda'): needs an NVIDIA GPU, or "
          "NUMBA_ENABLE_CUDASIM=1 with --smoke")
    try:
        from kryptonref.backend import get_backend
        be = get_backend("cuda")
    except (RuntimeError, ImportError) as err:
        print(f"cannot run this GPU benchmark here: {err}")
        return 2
    signal.signal(signal.SIGTERM, _on_signal)
    torch, torch_dev = load_torch()
    if torch is None:
        print(f"PyTorch column skipped: {torch_dev}")
        ARGS.phases_left -= len(ARGS.models)
    machine_info(torch, torch_dev)
    status = 0
    try:
        for name in ARGS.models:
            try:
                bench_model(name, be, torch, torch_dev)
            except Exception:  # noqa: BLE001 - go on with the next model
                traceback.print_exc()
                status = 1
    except KeyboardInterrupt as err:
        print(f"\n*** interrupted ({err or 'Ctrl-C'}) after {now() - STARTED:.0f} s: "
              f"what was measured so far ***")
        status = 130
    print_summary()
    print(f"total wall time {now() - STARTED:.1f} s")
    if ARGS.json:
        with open(ARGS.json, "w") as fh:
            json.dump(RESULTS, fh, indent=1, default=float)
        print(f"wrote {ARGS.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
