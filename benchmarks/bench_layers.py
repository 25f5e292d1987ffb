"""Per-layer throughput of kryptonref's full convolution against ONNX Runtime.

What is measured
----------------
For each of the 13 convolutions of VGG16 (3x3, stride 1, padding 1, bias) at a
224 x 224 input, batch 1, float32, the FULL layer computation:

* ours: the CPU backend's ``full(layer, model.prepared[name], [x], out_shape)``,
  i.e. zero padding + im2col + one BLAS GEMM + bias/unpack
  (:func:`kryptonref.layers.conv.conv2d_valid`);
* ORT: a single-``Conv``-node ONNX model with the same weights, run by an
  ``onnxruntime.InferenceSession`` on the CPU execution provider with the default
  threading, in the same process.

The two are timed interleaved (one call of ours, one call of ORT, repeated),
after a warm-up that excludes Numba compilation and ORT's first-run costs; the
best of N calls is reported. A short pause (``--gap``, 0.2 s) precedes every
timed call: OpenBLAS's and ORT's worker threads keep spinning for a while after
a call, and on a small machine that spinning slows whichever library runs next
(by up to ~1.5x on 2 cores; ``--gap 0`` shows it). Throughput is
``2 * MACs / time`` (GFLOP/s). Each layer's output is checked once against ORT's
(``|ours - ort| <= 1e-4 * max|ort| + 1e-4 * |ort|``).

Target
------
ours >= 70 % of ORT's throughput per layer and in total (ratio column >= 0.70).
Nothing here asserts on timings; the machine may be shared and noisy.

Usage
-----
    python benchmarks/bench_layers.py            # all 13 layers
    python benchmarks/bench_layers.py --quick    # 4 layers, fewer repetitions
    python benchmarks/bench_layers.py --repeat 20 --gap 0.5
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kryptonref.runtime import prepare_command_process  # noqa: E402
prepare_command_process()  # before NumPy: OpenBLAS reads its thread timeout when it loads
import kryptonref as kr  # noqa: E402
import numpy as np  # noqa: E402
from common import machine_info  # noqa: E402
from kryptonref.backends import get_backend  # noqa: E402

#: (name, in_channels, out_channels, spatial size) of VGG16's convolutions at 224 px.
VGG16_CONVS = [
    ("conv1_1", 3, 64, 224), ("conv1_2", 64, 64, 224),
    ("conv2_1", 64, 128, 112), ("conv2_2", 128, 128, 112),
    ("conv3_1", 128, 256, 56), ("conv3_2", 256, 256, 56), ("conv3_3", 256, 256, 56),
    ("conv4_1", 256, 512, 28), ("conv4_2", 512, 512, 28), ("conv4_3", 512, 512, 28),
    ("conv5_1", 512, 512, 14), ("conv5_2", 512, 512, 14), ("conv5_3", 512, 512, 14),
]
QUICK_LAYERS = ("conv1_2", "conv3_2", "conv4_2", "conv5_1")


def ort_conv_session(weight, bias, in_shape, pads=1):
    """An ORT session running one ``Conv`` node with the given weights."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    c_out = weight.shape[0]
    out_hw = [n + 2 * pads - k + 1 for n, k in zip(in_shape[1:], weight.shape[2:])]
    node = helper.make_node("Conv", ["X", "W", "B"], ["Y"],
                            kernel_shape=list(weight.shape[2:]), pads=[pads] * 4,
                            strides=[1, 1], dilations=[1, 1], group=1)
    graph = helper.make_graph(
        [node], "conv",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, *in_shape])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, c_out, *out_hw])],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(weight, np.float32), "W"),
                     numpy_helper.from_array(np.ascontiguousarray(bias, np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def bench_layer(name, c_in, c_out, size, repeat, warmup, seed, gap):
    graph = kr.Graph((c_in, size, size))
    graph.add(kr.Conv2d(c_in, c_out, 3, padding=1), name=name)
    model = kr.Model(graph, seed=seed, dtype=np.float32)
    layer = graph.nodes[name].layer
    params = model.prepared[name]
    out_shape = graph.shapes[name]
    macs = graph.macs()[name]
    x = np.random.default_rng(seed + 1).standard_normal((1, c_in, size, size)).astype(np.float32)
    session = ort_conv_session(params["weight"], params["bias"], (c_in, size, size))
    feed = {"X": x}

    def ours():
        with kr.runtime.job():   # what every kryptonref entry point runs in (BLAS on one thread)
            return get_backend("cpu").full(layer, params, [x], out_shape)

    def theirs():
        return session.run(None, feed)[0]

    ref = theirs()
    got = ours()
    scale = float(np.max(np.abs(ref))) or 1.0
    err = np.abs(got.astype(np.float64) - ref)
    ok = bool(np.all(err <= 1e-4 * scale + 1e-4 * np.abs(ref)))
    for _ in range(warmup):
        ours()
        theirs()
    t_ours, t_ort = [], []
    for _ in range(repeat):
        time.sleep(gap)
        t0 = time.perf_counter()
        ours()
        t_ours.append(time.perf_counter() - t0)
        time.sleep(gap)
        t0 = time.perf_counter()
        theirs()
        t_ort.append(time.perf_counter() - t0)
    return dict(name=name, shape=f"{c_in}->{c_out} @{size}", macs=macs, ours=min(t_ours),
                ort=min(t_ort), ok=ok, err=float(err.max()) / scale)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"only {', '.join(QUICK_LAYERS)} and fewer repetitions")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed calls per layer and implementation (best is kept); "
                             "default 10, or 4 with --quick")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    parser.add_argument("--gap", type=float, default=0.2,
                        help="seconds of pause before each timed call, so that the other "
                             "library's spinning threads have gone to sleep (default 0.2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    repeat = args.repeat or (4 if args.quick else 10)
    if repeat < 1:
        parser.error("--repeat must be positive")

    import onnxruntime as ort
    print("== bench_layers: VGG16 conv layers, full computation, batch 1, float32 ==")
    machine_info()
    print(f"onnxruntime {ort.__version__} (CPUExecutionProvider, default threading)")
    print(f"best of {repeat} interleaved calls, {args.gap:g} s pause before each, after "
          f"{args.warmup} warm-up call(s); "
          "target: ours >= 0.70 x ORT throughput")
    print()

    layers = [spec for spec in VGG16_CONVS if not args.quick or spec[0] in QUICK_LAYERS]
    header = (f"{'layer':8} {'shape':16} {'MMACs':>8} {'ours ms':>9} {'ORT ms':>9} "
              f"{'ours GF/s':>10} {'ORT GF/s':>9} {'ratio':>6}  check")
    print(header)
    print("-" * len(header))
    rows = []
    for name, c_in, c_out, size in layers:
        r = bench_layer(name, c_in, c_out, size, repeat, args.warmup, args.seed, args.gap)
        rows.append(r)
        gf_ours = 2 * r["macs"] / r["ours"] / 1e9
        gf_ort = 2 * r["macs"] / r["ort"] / 1e9
        check = "ok" if r["ok"] else "MISMATCH"
        print(f"{r['name']:8} {r['shape']:16} {r['macs'] / 1e6:8.1f} {r['ours'] * 1e3:9.2f} "
              f"{r['ort'] * 1e3:9.2f} {gf_ours:10.1f} {gf_ort:9.1f} {r['ort'] / r['ours']:6.2f}  "
              f"{check} (max err {r['err']:.1e} x scale)", flush=True)
    macs = sum(r["macs"] for r in rows)
    t_ours = sum(r["ours"] for r in rows)
    t_ort = sum(r["ort"] for r in rows)
    print("-" * len(header))
    print(f"{'total':8} {'':16} {macs / 1e6:8.1f} {t_ours * 1e3:9.2f} {t_ort * 1e3:9.2f} "
          f"{2 * macs / t_ours / 1e9:10.1f} {2 * macs / t_ort / 1e9:9.1f} {t_ort / t_ours:6.2f}")
    print()
    print("ratio = ours GFLOP/s / ORT GFLOP/s = ORT time / ours time (target >= 0.70); "
          "total ratio = sum of ORT times / sum of ours times")
    below = [r["name"] for r in rows if r["ort"] / r["ours"] < 0.70]
    print("layers below target: " + (", ".join(below) if below else "none"))
    if not all(r["ok"] for r in rows):
        print("WARNING: some outputs differ from ORT beyond tolerance")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
