"""The headline benchmark: occlusion explanations of VGG16, ResNet18 and Inception v3.

What is measured
----------------
Zoo models with seeded random weights (``kryptonref.zoo(name, seed=0)``, 1000
classes, float32): VGG16 and ResNet18 at 224 px, Inception v3 at 299 px
(``--quick``: 224 / 112 / 150 px, with 16 positions: VGG16 stays at 224 px because
its export at 112 px has a 3 x 3 -> 7 x 7 adaptive average pool, which ONNX cannot
express). A deterministic synthetic image (``synthetic_image`` below: a smooth
background, a bright disc, a dark bar), a 16 x 16 zero patch, stride 4. The heatmap
grid is 53 x 53 = 2809 positions at 224 px and 71 x 71 = 5041 at 299 px; at 299 px
Captum's windows also include the 143 truncated border windows (72 x 72 = 5184
windows), which ``kryptonref.occlusion`` evaluates too for the attribution, so
"windows" below is the number of occluded inferences really performed and
per-window times divide by it.

(a) incremental: ``kryptonref.occlusion(model, image, 16, 4, mode="incremental",
    batch_size=B)`` over *all* windows, one call, wall time (includes the base
    inference, the attribution and all bookkeeping). It is also timed on the subset
    below (``incremental_inference`` with the base activations precomputed) for a
    same-positions comparison.
(b) our full: re-inference of every occluded image with ``model.forward`` in
    batches of B (what ``mode="full"`` does per batch).
(c) onnxruntime: the same model and weights exported to ONNX by ``kryptonref.to_onnx``
    (checked against ``model.forward`` on one image), one ``InferenceSession`` with default options (default threading),
    occluded images fed in batches of B: the work a Captum user's ``Occlusion``
    does with an ORT-backed forward function.
(d) PyTorch + Captum: only reported as skipped when ``import captum`` fails.

Full re-inference of every window is slow on a 2-core machine, so by default
(b) and (c) run on a stratified subset of ``--positions N`` heatmap positions
(about sqrt(N) rows x sqrt(N) columns spread evenly over the grid, borders
included); their per-window time is extrapolated to all windows
(total = per-window time x windows; the single base inference is left out,
< 0.05 %). ``--all-positions`` runs (b) as ``kryptonref.occlusion(mode="full")``
and (c) over every window, with nothing extrapolated. The output says, per
number, whether it was measured or extrapolated.

Per model the script prints the times (total s, ms per window), the ratios
incremental vs onnxruntime and incremental vs our full (totals, and on the
subset), the simulator's theoretical ratio (``kryptonref.speedup(model, 16, 4,
mode="executed", batch_size=B)``, the batched engine's MACs, and ``mode="paper"``,
each position's exact regions), the engine's own MAC ratio for this run, and the
achieved fraction = measured (incremental vs our full) / theoretical (executed).
Once per model the heatmaps of (a), (b) and (c) are compared (max abs diff on
the positions (b) and (c) ran).

Peak memory: ``kryptonref.occlusion`` on VGG16 at 224 px,
batch 16 and 128, stride ``--memory-stride`` (by default the largest of 16, 8, 4
that fills a batch of 128: 16 at 224 px, 196 windows; 8 at 112 px; the peak is set
by one batch, not by the number of batches, and stride 4 takes many minutes per
run), each in a fresh subprocess, before the timings (printed first): the tracemalloc peak of the call
(NumPy allocations; arrays Numba allocates inside compiled code are not traced)
and the growth of the peak RSS (``resource.getrusage(...).ru_maxrss`` after the
call minus the RSS before it; the kernel's high-water mark is reset through
``/proc/self/clear_refs`` after the model is built and the kernels compiled, so
building the weights does not mask the call's peak).

Targets (printed, never asserted)
---------------------------------
incremental at least 7x faster than onnxruntime full re-inference for VGG16,
2.5x for ResNet18, 2x for Inception v3; incremental vs our own full at least
85 % of the theoretical (executed) ratio. Timings on a shared 2-core machine are
noisy: the load average is printed with the machine information.

Run time: (a) always covers every window, so the default run takes as long as
incremental inference on all 2809 + 2809 + 5184 windows plus the subsets: about
14 minutes on an otherwise quiet 2-core machine ((a) alone: 108 s VGG16, 39 s
ResNet18, 586 s Inception v3), three to four times longer while other jobs load
the cores.

Usage
-----
    python benchmarks/occlusion.py                 # 224/299 px, (b) (c) on 64 positions
    python benchmarks/occlusion.py --quick         # 224/112/150 px, 16 positions
    python benchmarks/occlusion.py --all-positions # nothing extrapolated (slow)
    python benchmarks/occlusion.py --models resnet18 --batch-size 32 --positions 100
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kryptonref.runtime import prepare_command_process  # noqa: E402
prepare_command_process()  # before NumPy: OpenBLAS reads its thread timeout when it loads
import kryptonref as kr  # noqa: E402
import numpy as np  # noqa: E402
from common import best_of, machine_info  # noqa: E402
from kryptonref.models.zoo import zoo_entry  # noqa: E402
from kryptonref.explain import captum_windows  # noqa: E402

PATCH = 16
STRIDE = 4
FILL = 0.0
MODELS = ("vgg16", "resnet18", "inception_v3")
SIZES = {"full": {"vgg16": 224, "resnet18": 224, "inception_v3": 299},
         "quick": {"vgg16": 224, "resnet18": 112, "inception_v3": 150}}
ORT_TARGET = {"vgg16": 7.0, "resnet18": 2.5, "inception_v3": 2.0}
ACHIEVED_TARGET = 0.85
MEMORY_BATCHES = (16, 128)


def ort_session(model, workdir):
    """An onnxruntime session (default threading) for ``model``, exported by ``kr.to_onnx``.

    The export is checked against ``model.forward`` on one image first; returns the
    session and a note saying how well they agree.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    probe = synthetic_image(model.graph.input_shape[1], seed=7).astype(np.float32)[None]
    want = model.forward(probe)
    scale = float(np.max(np.abs(want))) or 1.0
    path = os.path.join(workdir, "model.onnx")
    try:
        kr.to_onnx(model, path)
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    finally:
        if os.path.exists(path):
            os.remove(path)  # the session holds its own copy
    got = session.run(None, {session.get_inputs()[0].name: probe})[0]
    diff = float(np.max(np.abs(got - want)))
    if diff > 1e-3 * scale + 1e-5:
        raise RuntimeError(f"kryptonref.to_onnx disagrees with model.forward "
                           f"(max abs diff {diff:.2e}, output scale {scale:.1e})")
    return session, (f"kryptonref.to_onnx: used (vs model.forward on one image: max abs "
                     f"diff {diff:.1e}, output scale {scale:.1e})")


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------

def synthetic_image(size, seed=0):
    """A deterministic test image: a smooth background with a bright disc and a dark bar."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.stack([0.5 * np.sin(3 * xx + c) * np.cos(2 * yy - c) for c in range(3)])
    cy, cx, r = 0.6 * size, 0.35 * size, 0.15 * size
    disc = ((np.arange(size)[:, None] - cy) ** 2 + (np.arange(size)[None, :] - cx) ** 2) < r * r
    image[:, disc] += np.array([1.5, 0.8, -0.5])[:, None]
    image[:, int(0.2 * size):int(0.3 * size), int(0.5 * size):int(0.9 * size)] -= 1.0
    return image + 0.05 * rng.normal(size=image.shape)


def softmax(scores):
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted.astype(np.float64))
    return exp / exp.sum(axis=1, keepdims=True)


def subset_indices(n, k):
    """``k`` indices spread evenly over ``0..n-1``, both ends included."""
    if k >= n:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max(k, 1))).astype(np.int64))


def occluded_batches(image, positions, batch_size, patch=PATCH, fill=FILL):
    """Occluded copies of ``image`` in batches: yields (first index, (b, C, H, W) array).

    Patches at the border are truncated (Captum's windows).
    """
    for first in range(0, len(positions), batch_size):
        chunk = positions[first:first + batch_size]
        batch = np.repeat(image[None], len(chunk), axis=0)
        for i, (y, x) in enumerate(chunk):
            batch[i, :, y:y + patch, x:x + patch] = fill
        yield first, batch


def run_forward(fn, image, positions, batch_size, n_out):
    """Scores of ``fn`` on every occluded image, batched."""
    out = np.empty((len(positions), n_out), np.float32)
    for first, batch in occluded_batches(image, positions, batch_size):
        out[first:first + len(batch)] = fn(batch)
    return out


def all_windows(size):
    """Every Captum window start (y, x) on a square image, row-major, truncated ones too."""
    starts, _ = captum_windows(size, PATCH, STRIDE)
    return np.array([(y, x) for y in starts for x in starts], np.int64)


def _row(line):
    print(line.rstrip())


def fmt_s(seconds):
    return f"{seconds:9.2f}"


# --------------------------------------------------------------------------------------
# One model
# --------------------------------------------------------------------------------------

def bench_model(name, size, args, workdir):
    batch = args.batch_size
    print(f"\n== {name} at {size} px: patch {PATCH}, stride {STRIDE}, batch {batch}, float32 ==")
    t0 = time.perf_counter()
    model = kr.zoo(name, image_size=size, seed=args.seed)
    graph = model.graph
    n_out = graph.shapes[graph.output][0]
    image = synthetic_image(size, seed=args.seed).astype(np.float32)
    full_one = sum(graph.macs().values())
    windows = all_windows(size)
    n_windows = len(windows)
    heat_starts = np.arange(0, size - PATCH + 1, STRIDE)
    n_grid = len(heat_starts)
    print(f"model built in {time.perf_counter() - t0:.1f} s; {full_one / 1e9:.3f} GMACs per "
          f"image; heatmap {n_grid} x {n_grid} = {n_grid * n_grid} positions; "
          f"{n_windows} windows evaluated (Captum's, truncated border windows included)")

    # Theory (the simulator), full grid of heatmap positions.
    executed = kr.speedup(model, PATCH, STRIDE, mode="executed", batch_size=batch)
    paper = kr.speedup(model, PATCH, STRIDE, mode="paper")

    # Subset: every k-th row and column of the heatmap grid.
    if args.all_positions:
        sub_pos = windows
        sub_label = f"all {n_windows} windows"
    else:
        k = max(1, int(round(np.sqrt(args.positions))))
        rows = heat_starts[subset_indices(n_grid, k)]
        sub_pos = np.array([(y, x) for y in rows for x in rows], np.int64)
        sub_label = (f"stratified subset: {len(rows)} x {len(rows)} = {len(sub_pos)} heatmap "
                     f"positions, rows/cols {rows[0]}..{rows[-1]} about every "
                     f"{(n_grid - 1) / max(len(rows) - 1, 1):.1f}th grid line")
    n_sub = len(sub_pos)

    session, converter = ort_session(model, workdir)
    print(f"onnx: {converter}")
    ort_input = session.get_inputs()[0].name

    def ort_forward(x):
        return session.run(None, {ort_input: x})[0]

    # Warm-up: compile/load the kernels, let onnxruntime allocate its arenas.
    base = model.forward_all(image[None])
    warm = sub_pos[:min(batch, n_sub)]
    kr.incremental_inference(model, image, warm, PATCH, fill=FILL, batch_size=batch, base=base)
    run_forward(model.forward, image, warm, batch, n_out)
    run_forward(ort_forward, image, warm, batch, n_out)

    # (a) all windows, one kryptonref.occlusion call.
    t0 = time.perf_counter()
    res_a = kr.occlusion(model, image, PATCH, STRIDE, fill=FILL, mode="incremental",
                         batch_size=batch)
    t_a = time.perf_counter() - t0
    target = res_a.label

    def incr_sub():  # (a) on the subset, base activations precomputed
        return kr.incremental_inference(model, image, sub_pos, PATCH, fill=FILL,
                                        batch_size=batch, base=base).output

    # (a) on the subset, then (b) our full, back to back (similar load).
    t_a_sub, scores_a_sub = best_of(incr_sub, args.repeat) if not args.all_positions else (
        None, None)
    if args.all_positions:
        t0 = time.perf_counter()
        res_b = kr.occlusion(model, image, PATCH, STRIDE, fill=FILL, mode="full",
                             batch_size=batch)
        t_b_total = time.perf_counter() - t0
        t_b_sub, scores_b = t_b_total, None
        heat_b = res_b.heatmap
    else:
        t_b_sub, scores_b = best_of(
            lambda: run_forward(model.forward, image, sub_pos, batch, n_out), args.repeat)
        t_b_total = t_b_sub / n_sub * n_windows

    # (c) onnxruntime.
    t_c_sub, scores_c = best_of(lambda: run_forward(ort_forward, image, sub_pos, batch, n_out),
                                args.repeat)
    t_c_total = t_c_sub / n_sub * n_windows

    # Heatmap agreement on the positions (b) and (c) ran.
    if args.all_positions:
        full_size = (windows[:, 0] + PATCH <= size) & (windows[:, 1] + PATCH <= size)
        heat_c = softmax(scores_c[full_size])[:, target].reshape(n_grid, n_grid)
        d_ab = float(np.max(np.abs(res_a.heatmap - heat_b)))
        d_ac = float(np.max(np.abs(res_a.heatmap - heat_c)))
        d_bc = float(np.max(np.abs(heat_b - heat_c)))
        d_sub = None
        compared = f"all {n_grid * n_grid} heatmap positions"
    else:
        idx = (sub_pos[:, 0] // STRIDE, sub_pos[:, 1] // STRIDE)
        heat_a = res_a.heatmap[idx]
        heat_b = softmax(scores_b)[:, target]
        heat_c = softmax(scores_c)[:, target]
        heat_a_sub = softmax(scores_a_sub)[:, target]
        d_ab = float(np.max(np.abs(heat_a - heat_b)))
        d_ac = float(np.max(np.abs(heat_a - heat_c)))
        d_bc = float(np.max(np.abs(heat_b - heat_c)))
        d_sub = float(np.max(np.abs(heat_a - heat_a_sub)))
        compared = f"the {n_sub} subset positions"

    # Ratios.
    r_ort = t_c_total / t_a
    r_full = t_b_total / t_a
    engine_ratio = full_one * (n_windows + 1) / res_a.macs
    achieved = r_full / executed.speedup
    ext = "measured" if args.all_positions else "extrapolated"

    print(f"(b), (c) timed on: {sub_label}" + (
        "" if args.all_positions else
        f"; (b), (c) totals = ms/window on the subset x {n_windows} windows (extrapolated)"))
    per = lambda t, n: t / n * 1e3  # noqa: E731
    gf_a = 2 * res_a.macs / t_a / 1e9
    gf_full = lambda t, n: 2 * full_one * n / t / 1e9  # noqa: E731
    _row(f"{'':34}{'total s':>9}  {'ms/window':>9}  {'GFLOP/s':>7}  {'':12}  "
         f"{'subset s':>9}  {'ms/window':>9}")
    _row(f"{'(a) incremental (all windows)':34}{fmt_s(t_a)}  {per(t_a, n_windows):9.2f}  "
         f"{gf_a:7.1f}  {'measured':12}  " + ("" if t_a_sub is None else
                                             f"{fmt_s(t_a_sub)}  {per(t_a_sub, n_sub):9.2f}"))
    _row(f"{'(b) our full (model.forward)':34}{fmt_s(t_b_total)}  "
         f"{per(t_b_total, n_windows):9.2f}  {gf_full(t_b_total, n_windows):7.1f}  {ext:12}  "
         + ("" if args.all_positions else f"{fmt_s(t_b_sub)}  {per(t_b_sub, n_sub):9.2f}"))
    _row(f"{'(c) onnxruntime full re-inference':34}{fmt_s(t_c_total)}  "
         f"{per(t_c_total, n_windows):9.2f}  {gf_full(t_c_total, n_windows):7.1f}  {ext:12}  "
         + ("" if args.all_positions else f"{fmt_s(t_c_sub)}  {per(t_c_sub, n_sub):9.2f}"))
    print(f"{'(d) PyTorch + Captum':34}{'skipped':>9}  ({CAPTUM_NOTE})")
    print(f"incremental vs onnxruntime: {r_ort:6.2f}x (totals)"
          + ("" if t_a_sub is None else f", {t_c_sub / t_a_sub:6.2f}x (same subset positions)")
          + f"   target >= {ORT_TARGET.get(name, float('nan')):.1f}x")
    print(f"incremental vs our full:    {r_full:6.2f}x (totals)"
          + ("" if t_a_sub is None else f", {t_b_sub / t_a_sub:6.2f}x (same subset positions)"))
    print(f"theoretical (MAC ratio):    executed B={batch} {executed.speedup:.2f}x, "
          f"paper {paper.speedup:.2f}x, this run's engine count {engine_ratio:.2f}x "
          f"(full MACs x {n_windows + 1} / res.macs)")
    print(f"achieved fraction:          {achieved:.2f} (incremental vs our full / executed "
          f"theory; target >= {ACHIEVED_TARGET:.2f})")
    print(f"onnxruntime vs our full:    our full / ORT = {t_b_total / t_c_total:.2f} "
          f"(> 1: ORT is faster per full inference; the achieved fraction above is only "
          f"meaningful when this is near 1)")
    gf_c = gf_full(t_c_total, n_windows)
    need = ORT_TARGET.get(name, float("nan")) / engine_ratio
    print(f"throughput:                 incremental {gf_a:.1f} GFLOP/s = {gf_a / gf_c:.2f} of "
          f"ORT's {gf_c:.1f}; the ORT target needs >= {need:.2f} of ORT's GFLOP/s "
          f"(target / engine MAC ratio)")
    print(f"heatmap agreement (max abs diff of the target-class probability on {compared}; "
          f"target class {target}, p = {res_a.probability:.3f}): "
          f"(a)-(b) {d_ab:.1e}, (a)-(c) {d_ac:.1e}, (b)-(c) {d_bc:.1e}"
          + ("" if d_sub is None else f", (a) full run vs (a) on subset {d_sub:.1e}"))
    return dict(model=name, size=size, windows=n_windows, t_a=t_a, t_b=t_b_total, t_c=t_c_total,
                r_ort=r_ort, r_full=r_full, executed=executed.speedup, paper=paper.speedup,
                engine=engine_ratio, achieved=achieved, d_max=max(d_ab, d_ac, d_bc),
                extrapolated=not args.all_positions)


# --------------------------------------------------------------------------------------
# Peak memory (fresh subprocess per setting)
# --------------------------------------------------------------------------------------

def _proc_status_kib(field):
    """``VmRSS`` (resident now) or ``VmHWM`` (its high-water mark) in KiB, 0 if unknown."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_child(name, size, batch, stride, seed):
    """Runs in a fresh interpreter: prints a JSON line with the call's memory figures."""
    model = kr.zoo(name, image_size=size, seed=seed)
    image = synthetic_image(size, seed=seed).astype(np.float32)
    model.prepared  # noqa: B018 - the cached kernel parameters, built once per model
    # Compile/load the kernels on a tiny model so that the call measured does no JIT work.
    tiny = kr.zoo("vgg16", image_size=32, num_classes=10, seed=seed)
    kr.occlusion(tiny, synthetic_image(32).astype(np.float32), PATCH, STRIDE, batch_size=batch)
    del tiny
    reset = True
    try:
        with open("/proc/self/clear_refs", "w") as fh:  # reset the RSS high-water mark
            fh.write("5")
    except OSError:
        reset = False
    rss_before = _proc_status_kib("VmRSS")
    hwm_before = _proc_status_kib("VmHWM")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    res = kr.occlusion(model, image, PATCH, stride, fill=FILL, mode="incremental",
                       batch_size=batch)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm_after = _proc_status_kib("VmHWM")
    windows = len(captum_windows(size, PATCH, stride)[0]) ** 2
    print(json.dumps(dict(tracemalloc_peak=peak, rss_before_kib=rss_before,
                          maxrss_before_kib=maxrss_before, maxrss_after_kib=maxrss_after,
                          hwm_before_kib=hwm_before, hwm_after_kib=hwm_after,
                          hwm_reset=reset, seconds=seconds, windows=windows,
                          heatmap=list(res.heatmap.shape))))


def memory_stride(size, requested=None):
    """The stride of the memory runs: the largest of 16, 8, 4 with a full batch of 128."""
    if requested is not None:
        return requested
    for stride in (16, 8, 4):
        if len(captum_windows(size, PATCH, stride)[0]) ** 2 >= max(MEMORY_BATCHES):
            return stride
    return STRIDE


def bench_memory(size, args):
    """Runs the memory children; returns the lines to print (printed at the end)."""
    lines = []
    print = lines.append  # noqa: A001 - collect, so that the caller decides when to show them
    stride = memory_stride(size, args.memory_stride)
    n_win = len(captum_windows(size, PATCH, stride)[0]) ** 2
    print(f"\n== peak memory of kryptonref.occlusion(mode='incremental'): vgg16 at {size} px, "
          f"patch {PATCH}, stride {stride} ({n_win} windows), one fresh subprocess per batch "
          f"size ==")
    if stride != STRIDE:
        print(f"(stride {stride}, not {STRIDE}, to save time: the peak is set by one batch of "
              f"positions, not by how many batches follow; at 112 px the traced peak with "
              f"B=16 was 145 MiB at stride 16 and 146 MiB at stride 4; --memory-stride 4 "
              f"measures the timed setting itself)")
    if n_win < max(MEMORY_BATCHES):
        print(f"(only {n_win} windows: the batch of {max(MEMORY_BATCHES)} is not filled)")
    print(f"{'batch':>6} {'tracemalloc peak':>17} {'RSS before':>11} {'ru_maxrss after':>16} "
          f"{'growth':>8} {'VmHWM growth':>13} {'time (traced)':>14}")
    for batch in MEMORY_BATCHES:
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-child",
               f"vgg16,{size},{batch},{stride},{args.seed}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{batch:>6} failed: {proc.stderr.strip()[-400:]}")
            continue
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        mib = lambda kib: kib / 1024  # noqa: E731
        growth = mib(m["maxrss_after_kib"] - m["rss_before_kib"])
        hwm_growth = mib(m["hwm_after_kib"] - m["rss_before_kib"])
        flags = []
        if not m["hwm_reset"]:
            flags.append("high-water mark not reset: ru_maxrss may reflect model building")
        elif m["maxrss_before_kib"] > m["rss_before_kib"] + 8 * 1024:
            flags.append(f"ru_maxrss was {mib(m['maxrss_before_kib']):.0f} MiB before the call "
                         f"(inherited high-water mark): trust VmHWM")
        elif m["hwm_before_kib"] > m["rss_before_kib"] + 8 * 1024:
            flags.append(f"reset incomplete: VmHWM {mib(m['hwm_before_kib']):.0f} MiB at "
                         f"the start")
        print(f"{batch:>6} {m['tracemalloc_peak'] / 2**20:13.1f} MiB "
              f"{mib(m['rss_before_kib']):7.0f} MiB {mib(m['maxrss_after_kib']):12.0f} MiB "
              f"{growth:4.0f} MiB {hwm_growth:9.0f} MiB {m['seconds']:12.1f} s"
              + (f"  ({'; '.join(flags)})" if flags else ""))
    print("tracemalloc peak: the call's peak of traced (NumPy) allocations; growth: "
          "ru_maxrss after the call - RSS just before it (the ~528 MiB of VGG16 weights are in "
          "'RSS before'); VmHWM growth: the same from /proc/self/status; the high-water mark "
          "is reset after model building and JIT warm-up. Times run under tracemalloc: "
          "not timings. Measured before the timing runs, while this process is small: on "
          "Linux a child's ru_maxrss starts from the high-water mark of the address space it "
          "was spawned from (vfork + exec), so a child spawned by a process holding the "
          "models would report that process's peak.")
    return lines


# --------------------------------------------------------------------------------------

def _captum_note():
    import importlib.util
    if importlib.util.find_spec("captum") is None:
        return "captum is not importable here; column (d) skipped"
    return "captum is importable, but this script does not run it (column (d) not implemented)"


CAPTUM_NOTE = ""
_STARTED = time.perf_counter()


def _on_sigterm(signum, frame):
    print(f"\n*** stopped by signal {signum} after {time.perf_counter() - _STARTED:.0f} s; "
          f"the results above are complete, the model in progress is lost ***", flush=True)
    sys.exit(128 + signum)


def main(argv=None):
    global CAPTUM_NOTE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="112 px VGG16/ResNet18, 150 px Inception v3, 16 positions")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated zoo names (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="positions per batch for every engine (default 16)")
    parser.add_argument("--positions", type=int, default=None,
                        help="heatmap positions of the subset (b) and (c) run on "
                             "(default 64, 16 with --quick)")
    parser.add_argument("--all-positions", action="store_true",
                        help="run (b) and (c) on every window too (slow)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="best of N for the subset timings (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory part")
    parser.add_argument("--memory-stride", type=int, default=None,
                        help="stride of the peak-memory runs (default: the largest of 16, 8, "
                             "4 giving at least 128 windows: 16 at 224 px, 8 at 112 px)")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)  # a long run: say so when it is stopped
    if args.memory_child:
        name, size, batch, stride, seed = args.memory_child.split(",")
        memory_child(name, int(size), int(batch), int(stride), int(seed))
        return 0
    if args.positions is None:
        args.positions = 16 if args.quick else 64
    if args.positions < 1 or args.batch_size < 1 or args.repeat < 1:
        parser.error("--positions, --batch-size and --repeat must be positive")
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    sizes = SIZES["quick" if args.quick else "full"]
    for n in names:
        if n not in kr.zoo_names():
            parser.error(f"unknown model {n!r}")
    CAPTUM_NOTE = _captum_note()

    preset = "quick" if args.quick else "full"
    print(f"== occlusion benchmark ({preset} preset): {', '.join(names)}; patch {PATCH}, "
          f"stride {STRIDE}, zero fill, batch {args.batch_size}, seeded random weights, "
          f"float32 ==")
    machine_info()
    import onnxruntime as ort
    print(f"onnxruntime {ort.__version__} (default SessionOptions: default threading), "
          f"{CAPTUM_NOTE}")
    print("(b) and (c): " + ("every window (nothing extrapolated)" if args.all_positions else
                              f"a stratified subset of ~{args.positions} heatmap positions, "
                              f"extrapolated to all windows") + "; (a): always every window")
    print("targets: incremental vs onnxruntime >= "
          + ", ".join(f"{n} {t:.1f}x" for n, t in ORT_TARGET.items())
          + f"; incremental vs our full >= {ACHIEVED_TARGET:.0%} of the theoretical "
          f"(executed) ratio. Printed, not asserted.")

    if not args.no_memory:  # first: see bench_memory on ru_maxrss and the parent's size
        for line in bench_memory(SIZES["quick" if args.quick else "full"]["vgg16"], args):
            print(line)
        sys.stdout.flush()

    results = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        for n in names:
            results.append(bench_model(n, sizes.get(n, zoo_entry(n).default_size), args,
                                       workdir))

    print("\n== summary ==" + ("" if args.all_positions else
                               "  ((b), (c) totals extrapolated from the subset; (a) measured)"))
    print(f"{'model':14}{'px':>4}{'windows':>8}{'incr s':>9}{'full s':>9}{'ORT s':>9}"
          f"{'vs ORT':>8}{'target':>7}{'vs full':>8}{'theory ex':>10}{'paper':>7}"
          f"{'achieved':>9}{'max|dp|':>9}")
    for r in results:
        t = ORT_TARGET.get(r["model"], float("nan"))
        ok_ort = "ok" if r["r_ort"] >= t else "MISS"
        ok_ach = "ok" if r["achieved"] >= ACHIEVED_TARGET else "MISS"
        print(f"{r['model']:14}{r['size']:>4}{r['windows']:>8}{r['t_a']:9.1f}{r['t_b']:9.1f}"
              f"{r['t_c']:9.1f}{r['r_ort']:7.2f}x{t:6.1f}x{r['r_full']:7.2f}x"
              f"{r['executed']:9.2f}x{r['paper']:6.2f}x{r['achieved']:9.2f}{r['d_max']:9.1e}"
              f"  ORT {ok_ort}, achieved {ok_ach}")
    print(f"(benchmark time so far {time.perf_counter() - t_start:.0f} s; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())})")

    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
