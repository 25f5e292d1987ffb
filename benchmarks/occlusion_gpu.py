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
  weights in ``torch.nn.functional`` ops; fp32, TF32 off), in two settings:
  "torch" = PyTorch's defaults (``cudnn.benchmark = False``: cuDNN's heuristics pick
  the algorithms; what a Captum user runs) and "torch-tuned" = ``cudnn.benchmark =
  True`` (autotuned once per batch shape, during the warm-up). Occluded batches
  built on the GPU, all positions, ``torch.no_grad()``, synchronised before the
  clock stops; peak from ``torch.cuda.max_memory_allocated``. The default run's
  outputs are compared with ours (max abs diff, and relative to the largest |logit|).

Compile/warm-up time is reported apart. A timed phase that would overrun
``--phase-cap`` or its share of the time left before ``--deadline`` (estimated
from one timed batch) runs a prefix of whole batches and is extrapolated (said so
in the output). The summary gives the speedups (vs torch default, vs torch tuned,
vs our full), the cost simulator's theoretical speedup (``kr.speedup``, "executed"
at the batch size / "paper"), the fraction of the executed theory that incremental
vs our full achieves, peak device memory and the targets, which are judged against
PyTorch's DEFAULT settings (incremental vs "torch": VGG16 >= 4x, ResNet18 >= 1.6x,
Inception v3 >= 1x; the 8.9 s VGG16 reference they were set against was PyTorch's
defaults on an H100). The VGG16 table times each distinct conv layer (full
inference shapes, batch ``--layer-batch``) with our GEMM on cuBLAS (CuPy), our
tiled Numba GEMM, our direct kernel and cuDNN's ``F.conv2d`` autotuned ("cudnn")
and with PyTorch's default heuristics ("cudnn-df"), in TFLOP/s (best of 3 after a
warm-up; one run when the warm-up took over 2 s).

``--profile`` (needs torch): after each model's timed phases (and its layer table;
``TEARDOWN_CUPTI=1`` so that no profiler overhead outlives it), one batch of ours
incremental (``--batch`` positions, plus its base inference) and one of ours full
run under ``torch.profiler`` (CPU + CUDA activity: every kernel of the process,
Numba's and CuPy's included); the top 15 kernels by total GPU time, the sum of
kernel (and memcpy/memset) time and the batch's wall time are printed, to show
whether the GPU or the Python launch overhead dominates. Without CUDA in torch
(the smoke run) only CPU activity is recorded.

Usage
-----
    python benchmarks/occlusion_gpu.py                # ~4 min on one H100 (~1 min compile)
    python benchmarks/occlusion_gpu.py --profile      # + kernel profile of one batch per model
    python benchmarks/occlusion_gpu.py --quick        # vgg16 + resnet18, 1 full batch, no table
    python benchmarks/occlusion_gpu.py --json out.json --models resnet18
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/occlusion_gpu.py --smoke --profile  # CPU check
"""
from __future__ import annotations

import argparse
import importlib.metadata as metadata
import importlib.util
import json
import math
import os
import re
import signal
import sys
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
import kryptonref as kr  # noqa: E402

FILL = 0.0
TARGETS = {"vgg16": 4.0, "resnet18": 1.6, "inception_v3": 1.0}  # vs torch default settings
# the two PyTorch settings: (row key prefix, cudnn.benchmark, label)
TORCH_RUNS = (("torch", False, "torch default:"), ("torch_tuned", True, "torch tuned:"))
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
    """torch (configured for strict fp32, PyTorch's default cuDNN settings) and its
    device, or (None, why not)."""
    if importlib.util.find_spec("torch") is None:
        return None, "torch not installed"
    import torch
    from torch_graph import configure_fp32
    configure_fp32(benchmark=False)
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


def bench_torch(torch, dev, net, image, positions, row, key, tuned, label):
    """PyTorch full re-inference of every position with ``cudnn.benchmark = tuned``;
    the outputs (host array) of the timed batches, or None when ``tuned``."""
    from torch_graph import configure_fp32
    configure_fp32(benchmark=tuned)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    img, pos = torch.from_numpy(image).to(dev), torch.from_numpy(positions).to(dev)

    def run_batch(sl):  # occluded on the device: one masked select per batch
        return net(torch.where(patch_mask(torch, pos[sl], ARGS.patch, *image.shape[1:]),
                               FILL, img[None]))

    parts = slices(len(positions), ARGS.batch)
    try:
        with torch.no_grad():
            t0 = now()
            for sl in {sl.stop - sl.start: sl for sl in (parts[0], parts[-1])}.values():
                run_batch(sl)  # with cudnn.benchmark: autotunes once per batch shape
            sync()
            row[f"{key}_warmup_s"] = now() - t0
            t0 = now()
            run_batch(parts[0])
            sync()
            k = batches_within(len(parts), now() - t0, label.rstrip(":"))
            if dev == "cuda":
                torch.cuda.reset_peak_memory_stats()
            outs = []
            t0 = now()
            for sl in parts[:k]:
                y = run_batch(sl)
                if not tuned:
                    outs.append(y)
            sync()
            t = now() - t0
    finally:
        configure_fp32(benchmark=False)  # back to PyTorch's default
    n = parts[k - 1].stop
    row.update({f"{key}_s": t * len(positions) / n, f"{key}_positions": n,
                f"{key}_peak": torch.cuda.max_memory_allocated() if dev == "cuda" else None})
    print(f"  {label:17} {row[f'{key}_s']:8.3f} s ({how(n, len(positions))}; warm-up "
          f"{row[f'{key}_warmup_s']:.1f} s; cudnn.benchmark={tuned}), peak "
          f"{mib(row[f'{key}_peak'])}")
    return None if tuned else torch.cat(outs).cpu().numpy()


def bench_torch_all(torch, dev, model, image, positions, row, incr, full):
    """Both PyTorch settings; the default one's outputs are compared with ours."""
    from torch_graph import TorchGraph
    try:
        net = TorchGraph(model, dev)
    except Exception:  # noqa: BLE001 - keep our numbers: the run happens once
        traceback.print_exc()
        return
    for key, tuned, label in TORCH_RUNS:
        try:
            ref = bench_torch(torch, dev, net, image, positions, row, key, tuned, label)
            if ref is not None:
                n = min(len(ref), len(incr))
                row["diff_incr_vs_torch"] = compare(incr[:n], ref[:n])
                n = min(len(ref), len(full))
                row["diff_full_vs_torch"] = compare(full[:n], ref[:n])
        except Exception:  # noqa: BLE001 - keep the other numbers
            traceback.print_exc()
    del net
    if dev == "cuda":
        torch.cuda.empty_cache()


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
        v.nbytes for p in model.params.values() for v in p.values()))
    print(f"\n== {name}: {row['size']} px, {len(positions)} positions, patch {ARGS.patch}, "
          f"stride {ARGS.stride}, batch {ARGS.batch}, weights {mib(row['weights'])} ==")
    row["theory_exec"] = kr.speedup(model, ARGS.patch, ARGS.stride, mode="executed",
                                    batch_size=ARGS.batch).speedup
    row["theory_paper"] = kr.speedup(model, ARGS.patch, ARGS.stride, mode="paper").speedup
    incr = bench_incremental(model, image, positions, be, row)
    full = bench_ours_full(model, image, positions, be, row)
    row["diff_full_vs_incr"] = compare(incr[:len(full)], full)
    if torch is not None:
        bench_torch_all(torch, torch_dev, model, image, positions, row, incr, full)
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
    if ARGS.profile and torch is not None:  # last: nothing timed runs after it for this model
        try:
            profile_ours(torch, be, model, image, positions, row)
        except Exception:  # noqa: BLE001 - a profiler problem never ends the run
            traceback.print_exc()


# --------------------------------------------------------------------------------------
# --profile: the kernels of one batch (torch.profiler sees every kernel of the process)
# --------------------------------------------------------------------------------------

_CUDAPY_DEMANGLED = re.compile(r"cudapy::(?:[\w$]+::)*([\w$]+)")


def short_kernel_name(name, width=None):
    """A Numba kernel's Python function name (``_ZN6cudapy10kryptonref6layers9conv_cuda7
    _im2colB2v1...E...`` or its demangled ``cudapy::kryptonref::...::_im2col[abi:v1]...``
    -> ``_im2col``); other names as they are; truncated to ``width`` characters if given."""
    short = name
    if name.startswith("_ZN") and "cudapy" in name:
        i, idents = 3, []
        while True:  # length-prefixed identifiers, up to the B (ABI tag) / E suffix
            m = re.match(r"\d+", name[i:])
            if m is None:
                break
            i += len(m.group())
            idents.append(name[i:i + int(m.group())])
            i += int(m.group())
        if len(idents) > 1:
            short = idents[-1]
    elif "cudapy::" in name:
        m = _CUDAPY_DEMANGLED.search(name)
        short = m.group(1) if m else name
    return short if width is None or len(short) <= width else short[:width - 3] + "..."


def kernel_table(events, wall, top=15):
    """Device events of a profile, grouped by (short) name: the top ``top`` by total time."""
    from torch.autograd import DeviceType
    groups, kernel_us, copy_us, launches, odd = {}, 0.0, 0.0, 0, 0
    for ev in events:
        if ev.device_type != DeviceType.CUDA:
            continue
        us = ev.time_range.elapsed_us()
        if not 0 <= us <= wall * 1e6:  # a corrupt CUPTI timestamp (seen at session starts)
            odd += 1
            continue
        if ev.name.startswith(("Memcpy", "Memset", "memcpy", "memset")):
            copy_us += us
        else:
            kernel_us, launches = kernel_us + us, launches + 1
        group = groups.setdefault(short_kernel_name(ev.name), [0, 0.0])
        group[0] += 1
        group[1] += us
    rows = sorted(groups.items(), key=lambda kv: -kv[1][1])[:top]
    return {"wall_s": wall, "kernel_s": kernel_us / 1e6, "kernel_launches": launches,
            "memcpy_memset_s": copy_us / 1e6, "distinct": len(groups), "skipped_odd": odd,
            "gpu_busy_fraction": (kernel_us + copy_us) / 1e6 / wall if wall > 0 else None,
            "top": [{"name": name if len(name) <= 60 else name[:57] + "...", "full_name": name,
                     "count": c, "total_ms": us / 1e3, "mean_us": us / c}
                    for name, (c, us) in rows]}


def profile_ours(torch, be, model, image, positions, row):
    """One batch of ours incremental and one of ours full under ``torch.profiler``."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    sub = positions[:ARGS.batch]
    x = occlude_host(image, sub)
    kw = dict(patch=ARGS.patch, fill=FILL, batch_size=ARGS.batch, device="cuda")
    runs = [("incremental", lambda: kr.incremental_inference(model, image, sub, **kw),
             "incl. its base inference",
             row.get("incr_s") and row["incr_s"] * len(sub) / row["positions"]),
            ("full", lambda: model.forward(x, device="cuda"), "host occlusion excluded",
             row.get("full_s") and (row["full_s"] - row["full_build_s"]) * len(sub)
             / row["positions"])]
    row["profile"] = {}
    what = "CPU + CUDA" if len(activities) > 1 else "CPU only: torch has no CUDA"
    for label, fn, note, unprofiled in runs:
        try:
            be.synchronize()
            with profile(activities=activities) as prof:
                t0 = now()
                fn()
                be.synchronize()
                wall = now() - t0
            rec = kernel_table(prof.events(), wall)
        except Exception:  # noqa: BLE001 - a profiler problem never ends the run
            traceback.print_exc()
            continue
        rec.update(positions=len(sub), unprofiled_batch_s=unprofiled)
        row["profile"][label] = rec
        print(f"\n  -- profile of one batch of ours {label} ({len(sub)} positions, {note}; "
              f"{what}) --")
        print(f"  wall {wall * 1e3:.1f} ms under the profiler (unprofiled, from the timed "
              f"phase: {fmt(unprofiled and unprofiled * 1e3, '.1f', 0)} ms); kernels "
              f"{rec['kernel_s'] * 1e3:.1f} ms in {rec['kernel_launches']} launches, "
              f"memcpy/memset {rec['memcpy_memset_s'] * 1e3:.1f} ms: GPU busy "
              f"{fmt(rec['gpu_busy_fraction'] and 100 * rec['gpu_busy_fraction'], '.0f', 0)}% "
              f"of the wall time" + (f" ({rec['skipped_odd']} events with impossible "
                                       f"durations skipped)" if rec["skipped_odd"] else ""))
        if not rec["top"]:
            print("  (no device events recorded)")
            continue
        print(f"  {'kernel':60}{'count':>7}{'total ms':>10}{'mean us':>10}")
        for k in rec["top"]:
            print(f"  {k['name']:60}{k['count']:>7}{k['total_ms']:10.2f}{k['mean_us']:10.1f}")


# --------------------------------------------------------------------------------------
# Per-conv-layer throughput: ours (cuBLAS GEMM, tiled GEMM, direct) vs cuDNN
# --------------------------------------------------------------------------------------

def time_kernel(fn, sync):
    """Best of 3 after a warm-up (which may compile); one run when the warm-up took > 2 s
    (and under --smoke: the simulator is slow)."""
    sync()
    t0 = now()
    result = fn()
    sync()
    times = []
    for _ in range(3 if now() - t0 <= 2.0 and not ARGS.smoke else 1):
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
    cols = [label for label, _, _ in ours] + ["cudnn", "cudnn-df"]
    n_ours = len(ours)
    rng = np.random.default_rng(ARGS.seed)
    print(f"\n== {model_name}: {len(seen)} distinct conv layers (full inference shapes), batch "
          f"{n}: TFLOP/s, best of 3 after a warm-up; cudnn: cudnn.benchmark=True (autotuned), "
          f"cudnn-df: PyTorch's default (benchmark=False); best/cuDNN and max rel diff: "
          f"ours vs the autotuned cuDNN ==")
    print(f"{'layer':14}{'input':>16}{'out':>5}{'GFLOP':>8}" + "".join(f"{c:>9}" for c in cols)
          + f"{'best/cuDNN':>11}{'max rel diff':>13}")
    try:
        for i, ((layer, (c, h, w)), name) in enumerate(seen.items()):
            p, out_hw = params[name], graph.shapes[name][1:]
            (pt, pb), (pl, pr) = layer.padding
            x = rng.standard_normal((n, c, h, w)).astype(np.float32)
            win = be.to_device(np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr))))
            flops = conv_cuda.conv_flops(p["weight"].shape, n, out_hw)
            rec = {"layer": name, "input": [c, h, w], "out": graph.shapes[name][0],
                   "gflop": flops / 1e9, "cudnn": None, "cudnn-df": None, "rel_diff": None}
            for label, method, gemm in ours:
                if ARGS.smoke and gemm == "tiled" and i < len(seen) - 1:
                    rec[label] = None  # slow in the simulator: the last (smallest) layer only
                    continue
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
                rec["cudnn"], rec["cudnn-df"], rec["rel_diff"] = cudnn_conv(
                    torch, torch_dev, model, name, x, be.to_host(y), flops)
            best = max((rec[k] for k in cols[:n_ours] if rec[k] is not None), default=None)
            rec["best_over_cudnn"] = ratio(best, rec["cudnn"])
            RESULTS["layers"].append(rec)
            print(f"{name:14}{str((c, h, w)):>16}{rec['out']:>5}{rec['gflop']:8.1f}"
                  + "".join(fmt(rec[k], ".2f", 9) for k in cols)
                  + fmt(rec["best_over_cudnn"], ".2f", 11) + fmt(rec["rel_diff"], ".1e", 13))
    finally:
        conv_cuda.gemm_backend("auto")


def cudnn_conv(torch, dev, model, name, x, ours, flops):
    """cuDNN's TFLOP/s on the same layer (``F.conv2d``, same weights), autotuned and with
    PyTorch's default heuristics, and the autotuned output's agreement with ours."""
    from torch_graph import TorchGraph, configure_fp32
    net, layer = TorchGraph(model, dev, nodes=[name]), model.graph.nodes[name].layer
    xt = torch.from_numpy(x).to(dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    tflops, outs = {}, {}
    try:
        for tuned in (True, False):
            configure_fp32(benchmark=tuned)
            with torch.no_grad():
                t, outs[tuned] = time_kernel(lambda: net.op(name, layer, [xt]), sync)
            tflops[tuned] = flops / t / 1e12
    finally:
        configure_fp32(benchmark=False)
    return tflops[True], tflops[False], compare(ours, outs[True].cpu().numpy())[1]


# --------------------------------------------------------------------------------------

def print_summary():
    print("\n== summary: seconds for all positions (ours full: extrapolated; '*': other "
          "extrapolated totals); torch: PyTorch's defaults (cudnn.benchmark=False), "
          "torch-tuned: cudnn.benchmark=True; peak device memory in MiB, weights included; "
          "targets: incremental vs torch with PyTorch's DEFAULT settings ('vs torch') ==")
    print(f"{'model':13}{'pos':>5}{'incr s':>9}{'full s':>8}{'torch s':>9}{'torch-tuned s':>14}"
          f"{'vs torch':>9}{'vs tuned':>9}{'vs full':>8}{'theory ex/pa':>13}{'achieved':>9}"
          f"{'peak ours/torch':>16}  target")
    for r in RESULTS["models"]:
        star = lambda k: "*" if r.get(k, r["positions"]) < r["positions"] else " "  # noqa
        incr = r.get("incr_s")
        vs_full, vs_torch = ratio(r.get("full_s"), incr), ratio(r.get("torch_s"), incr)
        vs_tuned = ratio(r.get("torch_tuned_s"), incr)
        achieved = ratio(vs_full, r.get("theory_exec"))
        peak = None if incr is None else r["incr_peak"]
        target = TARGETS.get(r["model"])
        verdict = "-" if target is None or vs_torch is None else (
            f">= {target:.1f}x " + ("PASS" if vs_torch >= target else "MISS"))
        print(f"{r['model']:13}{r['positions']:>5}{fmt(incr, '.2f', 8)}{star('incr_positions')}"
              f"{fmt(r.get('full_s'), '.2f', 8)}{fmt(r.get('torch_s'), '.2f', 8)}"
              f"{star('torch_positions')}{fmt(r.get('torch_tuned_s'), '.2f', 13)}"
              f"{star('torch_tuned_positions')}{fmt(vs_torch, '.2f', 8, 'x')}"
              f"{fmt(vs_tuned, '.2f', 8, 'x')}{fmt(vs_full, '.2f', 7, 'x')}"
              f"{fmt(r.get('theory_exec'), '.2f', 7)}/{fmt(r.get('theory_paper'), '.2f', 4, 'x')}"
              f"{fmt(achieved, '.2f', 9)}{fmt(peak and peak / 2**20, '.1f', 8)}/"
              f"{fmt(r.get('torch_peak') and r['torch_peak'] / 2**20, '.1f', 7)}  {verdict}")
        r.update(vs_full=vs_full, vs_torch=vs_torch, vs_torch_tuned=vs_tuned, achieved=achieved,
                 ours_peak=peak, verdict=verdict)


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
    ap.add_argument("--phase-cap", type=float, default=40.0,
                    help="seconds a timed phase may take before it is extrapolated")
    ap.add_argument("--deadline", type=float, default=190.0,
                    help="seconds after start by which the timed phases should end (their "
                         "batches are capped to fit; the layer table is skipped after it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write every number to this JSON file")
    ap.add_argument("--profile", action="store_true",
                    help="profile one batch of ours incremental and full per model "
                         "(torch.profiler, needs torch): top kernels, GPU vs wall time")
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
    # timed phases: incremental + torch default + torch tuned per model (+1: see use)
    args.phases_left = 3 * len(args.models) + 1
    return args


def _on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    global ARGS, STARTED
    ARGS, STARTED = parse_args(argv), now()
    print("GPU benchmark of kryptonref (device='cuda'): needs an NVIDIA GPU, or "
          "NUMBA_ENABLE_CUDASIM=1 with --smoke")
    try:
        from kryptonref.backends import get_backend
        be = get_backend("cuda")
    except (RuntimeError, ImportError) as err:
        print(f"cannot run this GPU benchmark here: {err}")
        return 2
    signal.signal(signal.SIGTERM, _on_signal)
    if ARGS.profile:  # CUPTI finalised after each profile: no profiler overhead left behind
        os.environ.setdefault("TEARDOWN_CUPTI", "1")
    torch, torch_dev = load_torch()
    if torch is None:
        print(f"PyTorch columns skipped: {torch_dev}")
        ARGS.phases_left -= 2 * len(ARGS.models)
        if ARGS.profile:
            print(f"--profile needs torch (torch.profiler): no profile ({torch_dev})")
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
