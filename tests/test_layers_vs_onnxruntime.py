"""onnxruntime as an outside oracle for the layer semantics of kryptonref.

Every test builds one small architecture twice: as a kryptonref ``Graph`` +
``Model`` (seeded random weights) and as an ONNX model written by hand with
``onnx.helper`` (opset 17, the weights taken from ``model.params``). Both run on
the same input and every node's output is compared (each node is an ONNX graph
output), not only the last one.

dtypes
    onnxruntime's CPU provider has no float64 kernel for Conv, AveragePool and
    GlobalAveragePool (``NOT_IMPLEMENTED``), so graphs holding those run in
    float32 only; MaxPool, Relu, Clip, BatchNormalization, Dropout, Flatten,
    Gemm, Softmax, Add, Sum and Concat also run in float64.

Tolerances
    float32: rtol 1e-4, atol 1e-5; float64: rtol 1e-10 (atol 1e-12 for values
    near zero).

Average pooling with ``ceil_mode`` and ``count_include_pad``
    kryptonref follows PyTorch: the divisor counts the padding but stops at
    ``W_in + P_after``, so a ceil-mode window hanging past the right padding
    is divided by fewer than ``K`` elements (``avg_pool_divisors``). Old
    onnxruntime releases divided that last window by the full kernel size
    (microsoft/onnxruntime#16203; #16752 fixed it for opset >= 19 only, and
    pytorch/pytorch#183528 reports it again at opset 18), and some also kept a
    last ceil-mode window that starts inside the right padding. The module probes the
    installed onnxruntime once on PyTorch's published example (hard-coded
    values below) and, only where it does not follow PyTorch's rule, skips the
    affected configurations instead of loosening tolerances. onnxruntime 1.32
    follows PyTorch in every configuration here (checked at opsets 11, 17, 19
    and 22 on the exhaustive ceil-mode grid), so nothing is skipped there. ``onnx.reference.ReferenceEvaluator`` (onnx 1.23)
    does *not* follow it (it divides some windows by the full kernel), which is
    why it is not used as the oracle.

AdaptiveAvgPool2d
    ONNX has no adaptive pooling. Output 1x1 is exactly GlobalAveragePool, and
    an output size dividing the input size is exactly AveragePool with
    kernel = stride = input // output (PyTorch's windows
    ``[floor(i*H/oh), ceil((i+1)*H/oh))`` are then disjoint and of equal size),
    which covers "output equals input" as kernel 1. Non-dividing sizes (the
    overlapping, uneven windows) have no ONNX equivalent and are not tested here.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from .conftest import require

ort = require("onnxruntime", "onnx")
onnx = require("onnx", "onnx")
from onnx import TensorProto, helper  # noqa: E402

import kryptonref as kr  # noqa: E402
from kryptonref.geometry import effective_kernel, output_size  # noqa: E402

OPSET = 17
TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
ONNX_TYPE = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE}
BOTH = [np.float32, np.float64]
#: A batch-norm eps that float32 holds exactly (ONNX's epsilon attribute is a float32).
EPS32 = 2.0 ** -17


# --------------------------------------------------------------------------------------
# kryptonref Graph -> ONNX
# --------------------------------------------------------------------------------------

def _onnx_pads(padding):
    """kryptonref ``((top, bottom), (left, right))`` -> ONNX ``[top, left, bottom, right]``."""
    (top, bottom), (left, right) = padding
    return [top, left, bottom, right]


def to_onnx(graph, params, dtype):
    """The ONNX model computing ``graph`` with ``params`` in ``dtype``; every node is an output."""
    tp = ONNX_TYPE[np.dtype(dtype).type]
    nodes, inits = [], []

    def init(name, value):
        arr = np.asarray(value, dtype=dtype)
        inits.append(helper.make_tensor(name, tp, arr.shape, arr.ravel().tolist()))
        return name

    for name in graph.order:
        node = graph.nodes[name]
        layer, ins = node.layer, list(node.inputs)
        p = params.get(name, {})
        if isinstance(layer, kr.Conv2d):
            ins.append(init(f"{name}.weight", p["weight"]))
            if layer.bias:
                ins.append(init(f"{name}.bias", p["bias"]))
            nodes.append(helper.make_node(
                "Conv", ins, [name], name=name, kernel_shape=list(layer.kernel_size),
                strides=list(layer.stride), pads=_onnx_pads(layer.padding),
                dilations=list(layer.dilation), group=layer.groups))
        elif isinstance(layer, kr.MaxPool2d):
            nodes.append(helper.make_node(
                "MaxPool", ins, [name], name=name, kernel_shape=list(layer.kernel_size),
                strides=list(layer.stride), pads=_onnx_pads(layer.padding),
                dilations=list(layer.dilation), ceil_mode=int(layer.ceil_mode)))
        elif isinstance(layer, kr.AvgPool2d):
            nodes.append(helper.make_node(
                "AveragePool", ins, [name], name=name, kernel_shape=list(layer.kernel_size),
                strides=list(layer.stride), pads=_onnx_pads(layer.padding),
                ceil_mode=int(layer.ceil_mode), count_include_pad=int(layer.count_include_pad)))
        elif isinstance(layer, kr.GlobalAvgPool2d):
            nodes.append(helper.make_node("GlobalAveragePool", ins, [name], name=name))
        elif isinstance(layer, kr.AdaptiveAvgPool2d):
            _, h, w = graph.shapes[ins[0]]
            oh, ow = layer.output_size
            if (oh, ow) == (1, 1):
                nodes.append(helper.make_node("GlobalAveragePool", ins, [name], name=name))
            elif h % oh == 0 and w % ow == 0:
                k = [h // oh, w // ow]
                nodes.append(helper.make_node("AveragePool", ins, [name], name=name,
                                              kernel_shape=k, strides=k))
            else:
                raise NotImplementedError("AdaptiveAvgPool2d with uneven windows has no ONNX op")
        elif isinstance(layer, kr.ReLU):
            nodes.append(helper.make_node("Relu", ins, [name], name=name))
        elif isinstance(layer, kr.ReLU6):
            ins += [init(f"{name}.min", 0.0), init(f"{name}.max", 6.0)]
            nodes.append(helper.make_node("Clip", ins, [name], name=name))
        elif isinstance(layer, kr.BatchNorm2d):
            if float(np.float32(layer.eps)) != layer.eps and tp == TensorProto.DOUBLE:
                raise ValueError("ONNX stores epsilon as a float32 attribute; a float64 "
                                 "comparison needs an eps that float32 holds exactly")
            ins += [init(f"{name}.{k}", p[k])
                    for k in ("weight", "bias", "running_mean", "running_var")]
            nodes.append(helper.make_node("BatchNormalization", ins, [name], name=name,
                                          epsilon=float(layer.eps)))
        elif isinstance(layer, kr.Dropout):
            # Opset >= 12 Dropout is the identity unless training_mode is given.
            nodes.append(helper.make_node("Dropout", ins, [name], name=name))
        elif isinstance(layer, kr.Flatten):
            nodes.append(helper.make_node("Flatten", ins, [name], name=name, axis=1))
        elif isinstance(layer, kr.Linear):
            ins.append(init(f"{name}.weight", p["weight"]))
            if layer.bias:
                ins.append(init(f"{name}.bias", p["bias"]))
            nodes.append(helper.make_node("Gemm", ins, [name], name=name, transB=1))
        elif isinstance(layer, kr.Softmax):
            nodes.append(helper.make_node("Softmax", ins, [name], name=name, axis=1))
        elif isinstance(layer, kr.Add):
            op = "Add" if len(ins) == 2 else "Sum"
            nodes.append(helper.make_node(op, ins, [name], name=name))
        elif isinstance(layer, kr.Concat):
            nodes.append(helper.make_node("Concat", ins, [name], name=name, axis=1))
        else:  # pragma: no cover - every spec is mapped above
            raise NotImplementedError(type(layer).__name__)

    inputs = [helper.make_tensor_value_info(graph.input_name, tp,
                                            ["N"] + list(graph.input_shape))]
    # Output dims stay symbolic: the model claims no shape, onnxruntime's is compared.
    outputs = [helper.make_tensor_value_info(
        n, tp, ["N"] + [f"{n}_{i}" for i in range(len(graph.shapes[n]))]) for n in graph.order]
    g = helper.make_graph(nodes, "kryptonref_oracle", inputs, outputs, inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by every onnxruntime the test extra allows
    onnx.checker.check_model(model)
    return model


def _session(model):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    # onnx's static shape inference keeps a ceil-mode window that starts in the
    # right padding while the kernels drop it; that only logs a warning.
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def run_ort(model, x):
    sess = _session(model)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {sess.get_inputs()[0].name: x})))


def check(graph, dtype, seed=0, batch=2, scale=1.0):
    """Run ``graph`` in kryptonref and onnxruntime and compare every node's output."""
    dtype = np.dtype(dtype).type
    for name in graph.order:
        node = graph.nodes[name]
        if isinstance(node.layer, (kr.MaxPool2d, kr.AvgPool2d)):
            reason = ort_disagreement(node.layer, graph.shapes[node.inputs[0]])
            if reason:
                pytest.skip(f"node {name}: {reason}")
    model = kr.Model(graph, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 1)
    x = rng.normal(0.0, scale, (batch,) + graph.input_shape).astype(dtype)
    ours = model.forward_all(x)
    theirs = run_ort(to_onnx(graph, model.params, dtype), x)
    for name in graph.order:
        got, want = ours[name], theirs[name]
        assert got.dtype == dtype, f"{name}: dtype {got.dtype}, expected {np.dtype(dtype)}"
        assert got.shape == want.shape, (
            f"{name} ({graph.nodes[name].layer}): shape {got.shape}, onnxruntime {want.shape}")
        np.testing.assert_allclose(got, want, **TOL[dtype],
                                   err_msg=f"node {name}: {graph.nodes[name].layer}")
    return ours


def single(layer, in_shape):
    g = kr.Graph(in_shape)
    g.add(layer, name="layer")
    return g


# --------------------------------------------------------------------------------------
# Probing onnxruntime's ceil-mode semantics against PyTorch's
# --------------------------------------------------------------------------------------

# torch.nn.functional.avg_pool2d(torch.arange(1, 17.).reshape(1, 1, 4, 4), 3, 2, 1,
#                                ceil_mode=True, count_include_pad=True)  (PyTorch eager)
TORCH_AVG_CEIL_PAD = np.array([[1.5555556, 3.3333333, 2.0],
                               [6.3333335, 11.0, 6.0],
                               [4.5, 7.5, 4.0]], np.float32)


def _probe_avg_divisor():
    """Does onnxruntime divide a ceil-mode window past the padding like PyTorch?"""
    g = single(kr.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=True), (1, 4, 4))
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
    got = run_ort(to_onnx(g, {}, np.float32), x)["layer"]
    return got.shape == (1, 1, 3, 3) and np.allclose(got[0, 0], TORCH_AVG_CEIL_PAD, rtol=1e-6)


def _probe_drop_window():
    """Does onnxruntime drop a ceil-mode window starting in the right padding (PyTorch)?

    Input 3, kernel 2, stride 2, padding 1: ceil gives 3 windows, the third starts
    at padded index 4 = W_in + P, i.e. inside the right padding, so PyTorch has 2.
    """
    ok = True
    for layer in (kr.MaxPool2d(2, 2, 1, ceil_mode=True),
                  kr.AvgPool2d(2, 2, 1, ceil_mode=True, count_include_pad=True),
                  kr.AvgPool2d(2, 2, 1, ceil_mode=True, count_include_pad=False)):
        g = single(layer, (1, 3, 3))
        got = run_ort(to_onnx(g, {}, np.float32), np.ones((1, 1, 3, 3), np.float32))["layer"]
        ok &= got.shape == (1, 1, 2, 2)
    return ok


ORT_AVG_DIVISOR_LIKE_TORCH = _probe_avg_divisor()
ORT_DROPS_PAD_WINDOW_LIKE_TORCH = _probe_drop_window()


def _axis_flags(layer, in_size, dim):
    """(window starting in the right padding was dropped, last window passes the padding)."""
    k, s, p0, p1, d, ceil = layer.axis(dim)
    if not ceil:
        return False, False
    span = in_size + p0 + p1 - effective_kernel(k, d)
    undropped = -(-span // s) + 1
    n = output_size(in_size, k, s, p0, p1, d, ceil)
    last_stop = (n - 1) * s + effective_kernel(k, d)  # in padded coordinates
    return n != undropped, last_stop > in_size + p0 + p1


def ort_disagreement(layer, in_shape):
    """Why onnxruntime (this version) differs from PyTorch for ``layer``, or ``None``."""
    flags = [_axis_flags(layer, in_shape[1 + dim], dim) for dim in (0, 1)]
    if any(f[0] for f in flags) and not ORT_DROPS_PAD_WINDOW_LIKE_TORCH:
        return ("onnxruntime %s keeps a ceil-mode window that starts in the right padding "
                "(PyTorch drops it)" % ort.__version__)
    if (isinstance(layer, kr.AvgPool2d) and layer.count_include_pad
            and any(f[1] for f in flags) and not ORT_AVG_DIVISOR_LIKE_TORCH):
        return ("onnxruntime %s divides a ceil-mode window past the padding by the full "
                "kernel; PyTorch (kryptonref) by the part up to W_in + P_after"
                % ort.__version__)
    return None


# --------------------------------------------------------------------------------------
# Configuration grids
# --------------------------------------------------------------------------------------

def _valid(layer, in_shape):
    try:
        single(layer, in_shape)
    except ValueError:
        return False
    return True


def _conv_cases():
    cases = [
        # (in_shape, Conv2d kwargs)
        ((3, 8, 8), dict(in_channels=3, out_channels=4, kernel_size=1)),
        ((3, 9, 7), dict(in_channels=3, out_channels=5, kernel_size=3, padding=1)),
        ((2, 11, 9), dict(in_channels=2, out_channels=3, kernel_size=5, stride=2, padding=2)),
        ((2, 13, 12), dict(in_channels=2, out_channels=2, kernel_size=7, stride=3, padding=3)),
        ((3, 10, 8), dict(in_channels=3, out_channels=4, kernel_size=3, dilation=2, padding=2)),
        ((4, 9, 10), dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, padding=1)),
        ((6, 8, 9), dict(in_channels=6, out_channels=6, kernel_size=3, groups=6, padding=1)),
        ((4, 10, 7), dict(in_channels=4, out_channels=8, kernel_size=3, groups=4, stride=2)),
        ((3, 9, 11), dict(in_channels=3, out_channels=2, kernel_size=(1, 7), padding=(0, 3))),
        ((3, 11, 9), dict(in_channels=3, out_channels=2, kernel_size=(7, 1), padding=(3, 0))),
        ((2, 10, 12), dict(in_channels=2, out_channels=3, kernel_size=(3, 5),
                           stride=(1, 2), dilation=(2, 1))),
        ((2, 9, 8), dict(in_channels=2, out_channels=3, kernel_size=3,
                         padding=((0, 2), (1, 0)))),
        ((2, 8, 10), dict(in_channels=2, out_channels=3, kernel_size=4, stride=3,
                          padding=((3, 1), (0, 2)))),
        ((3, 7, 7), dict(in_channels=3, out_channels=4, kernel_size=3, bias=False)),
        ((1, 6, 5), dict(in_channels=1, out_channels=1, kernel_size=(6, 5))),
        ((2, 5, 6), dict(in_channels=2, out_channels=2, kernel_size=2, stride=3,
                         padding=((1, 0), (0, 1)), dilation=2)),
    ]
    rng = np.random.default_rng(20240601)
    while len(cases) < 40:
        cin = int(rng.choice([1, 2, 3, 4, 6]))
        groups = int(rng.choice([g for g in (1, 2, 3, cin) if cin % g == 0]))
        cout = groups * int(rng.integers(1, 3))
        kw = dict(in_channels=cin, out_channels=cout,
                  kernel_size=tuple(int(v) for v in rng.integers(1, 8, 2)),
                  stride=tuple(int(v) for v in rng.integers(1, 4, 2)),
                  padding=tuple(tuple(int(v) for v in rng.integers(0, 4, 2)) for _ in range(2)),
                  dilation=tuple(int(v) for v in rng.integers(1, 3, 2)),
                  groups=groups, bias=bool(rng.integers(0, 2)))
        shape = (cin, int(rng.integers(5, 14)), int(rng.integers(5, 14)))
        if _valid(kr.Conv2d(**kw), shape):
            cases.append((shape, kw))
    return cases


def _pool_cases(kind):
    """(in_shape, kwargs) for MaxPool2d (kind "max") or AvgPool2d (kind "avg")."""
    cases = []
    rng = np.random.default_rng(7 if kind == "max" else 8)
    # Every ceil_mode / count_include_pad combination on a fixed set of geometries,
    # chosen so that ceil mode adds partial windows (some past the right padding,
    # some dropped because they would start inside it).
    fixed = [
        ((2, 6, 7), dict(kernel_size=3, stride=2, padding=1)),
        ((2, 6, 9), dict(kernel_size=2, stride=2, padding=((1, 1), (0, 1)))),
        ((2, 4, 4), dict(kernel_size=3, stride=2, padding=1)),
        ((2, 9, 8), dict(kernel_size=(3, 2), stride=(3, 2), padding=((1, 0), (0, 1)))),
        ((2, 8, 11), dict(kernel_size=(2, 5), stride=(2, 3), padding=((0, 1), (2, 2)))),
        ((2, 5, 6), dict(kernel_size=4, stride=3, padding=((2, 0), (1, 2)))),
        ((2, 11, 8), dict(kernel_size=7, stride=3, padding=3)),
        ((2, 3, 3), dict(kernel_size=2, stride=2, padding=1)),
        ((2, 7, 10), dict(kernel_size=1, stride=3)),
        ((2, 8, 8), dict(kernel_size=2)),
    ]
    extras = [dict(ceil_mode=c) for c in (False, True)]
    if kind == "avg":
        extras = [dict(ceil_mode=c, count_include_pad=p)
                  for c, p in itertools.product((False, True), (False, True))]
    for (shape, kw), extra in itertools.product(fixed, extras):
        cases.append((shape, dict(kw, **extra)))
    if kind == "max":
        cases += [
            ((2, 9, 9), dict(kernel_size=3, stride=1, padding=2, dilation=2)),
            ((2, 11, 8), dict(kernel_size=3, stride=2, padding=((2, 1), (0, 2)), dilation=2,
                              ceil_mode=True)),
            ((2, 10, 12), dict(kernel_size=(2, 3), stride=(3, 1), dilation=(2, 1),
                               ceil_mode=True)),
        ]
    while len(cases) < (60 if kind == "max" else 70):
        k = tuple(int(v) for v in rng.integers(1, 8, 2))
        kw = dict(kernel_size=k, stride=tuple(int(v) for v in rng.integers(1, 4, 2)),
                  padding=tuple(tuple(int(v) for v in rng.integers(0, k[d] // 2 + 2, 2))
                                for d in (0, 1)),
                  ceil_mode=bool(rng.integers(0, 2)))
        if kind == "max":
            kw["dilation"] = tuple(int(v) for v in rng.integers(1, 3, 2))
        else:
            kw["count_include_pad"] = bool(rng.integers(0, 2))
        shape = (2, int(rng.integers(3, 13)), int(rng.integers(3, 13)))
        layer_cls = kr.MaxPool2d if kind == "max" else kr.AvgPool2d
        try:
            layer = layer_cls(**kw)
        except ValueError:  # padding larger than half the kernel
            continue
        if _valid(layer, shape):
            cases.append((shape, kw))
    return cases


CONV_CASES = _conv_cases()
MAX_CASES = _pool_cases("max")
AVG_CASES = _pool_cases("avg")


def _id(case):
    shape, kw = case
    return "x".join(map(str, shape)) + "-" + ",".join(f"{k}={v}" for k, v in kw.items())


# --------------------------------------------------------------------------------------
# Single layers
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CONV_CASES, ids=[_id(c) for c in CONV_CASES])
def test_conv2d(case):
    shape, kw = case
    check(single(kr.Conv2d(**kw), shape), np.float32)


@pytest.mark.parametrize("dtype", BOTH)
@pytest.mark.parametrize("case", MAX_CASES, ids=[_id(c) for c in MAX_CASES])
def test_maxpool2d(case, dtype):
    shape, kw = case
    check(single(kr.MaxPool2d(**kw), shape), dtype)


@pytest.mark.parametrize("case", AVG_CASES, ids=[_id(c) for c in AVG_CASES])
def test_avgpool2d(case):
    shape, kw = case
    check(single(kr.AvgPool2d(**kw), shape), np.float32)


def test_pool_grids_cover_the_ceil_mode_corner_cases():
    """The grids hold ceil-mode windows past the right padding and dropped ones."""
    past = dropped = 0
    for shape, kw in AVG_CASES:
        layer = kr.AvgPool2d(**kw)
        flags = [_axis_flags(layer, shape[1 + d], d) for d in (0, 1)]
        dropped += any(f[0] for f in flags)
        past += layer.count_include_pad and any(f[1] for f in flags)
    assert past >= 5 and dropped >= 3


def _axis_configs(sizes=range(2, 9), kernels=range(1, 5), strides=range(1, 4)):
    """Every (size, kernel, stride, pad_before, pad_after) with legal pooling padding."""
    out = []
    for n, k, s, p0, p1 in itertools.product(sizes, kernels, strides, range(3), range(3)):
        if 2 * max(p0, p1) <= k and output_size(n, k, s, p0, p1, 1, True) > 0 \
                and output_size(n, k, s, p0, p1, 1, False) > 0:
            out.append((n, k, s, p0, p1))
    return out


@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avgpool_ceil_mode_exhaustive(count_include_pad):
    """Every small ceil-mode geometry, both axes varying (rows and columns paired)."""
    rows = _axis_configs()
    cols = rows[::-1]
    skipped, compared = [], 0
    for (h, kh, sh, t, b), (w, kw, sw, l, r) in zip(rows, cols):
        layer = kr.AvgPool2d((kh, kw), (sh, sw), ((t, b), (l, r)), ceil_mode=True,
                             count_include_pad=count_include_pad)
        shape = (1, h, w)
        reason = ort_disagreement(layer, shape)
        if reason:
            skipped.append(reason)
            continue
        check(single(layer, shape), np.float32, batch=1)
        compared += 1
    assert compared + len(skipped) == len(rows) > 300
    if skipped:  # only with an onnxruntime that does not follow PyTorch's rule
        pytest.skip(f"{len(skipped)} of {len(rows)} configurations not compared: {skipped[0]}")


def test_avgpool_ceil_count_include_pad_matches_pytorch_eager():
    """kryptonref reproduces PyTorch's published values (independent of onnxruntime)."""
    g = single(kr.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=True), (1, 4, 4))
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
    got = kr.Model(g).forward(x)[0, 0]
    np.testing.assert_allclose(got, TORCH_AVG_CEIL_PAD, rtol=1e-6)


@pytest.mark.parametrize("shape", [(3, 6, 9), (2, 1, 1), (4, 7, 5)])
def test_global_avg_pool(shape):
    check(single(kr.GlobalAvgPool2d(), shape), np.float32)


@pytest.mark.parametrize("shape,out", [
    ((3, 6, 9), 1), ((2, 5, 7), (1, 1)),        # GlobalAveragePool
    ((3, 6, 9), (6, 9)), ((2, 4, 4), 4),        # identity: AveragePool kernel 1
    ((3, 6, 9), (3, 3)), ((2, 8, 6), (2, 3)),   # dividing sizes: AveragePool K = S
])
def test_adaptive_avg_pool(shape, out):
    check(single(kr.AdaptiveAvgPool2d(out), shape), np.float32)


@pytest.mark.parametrize("dtype", BOTH)
@pytest.mark.parametrize("layer", [kr.ReLU(), kr.ReLU6(), kr.Dropout(0.3)],
                         ids=["relu", "relu6", "dropout"])
def test_elementwise(layer, dtype):
    # Input standard deviation 5, so that ReLU6 clips on both sides.
    out = check(single(layer, (3, 5, 6)), dtype, scale=5.0)["layer"]
    if isinstance(layer, kr.ReLU6):
        assert (out == 0).any() and (out == 6).any()


@pytest.mark.parametrize("dtype", BOTH)
@pytest.mark.parametrize("eps", [1e-5, 1e-3, EPS32, 2.0 ** -10])
def test_batchnorm(dtype, eps):
    if dtype is np.float64 and float(np.float32(eps)) != eps:
        # BatchNormalization's epsilon is a float32 attribute: onnxruntime adds
        # float32(1e-3) = 1.00000005e-3, a relative change of 5e-8 that shows at
        # rtol 1e-10 (seen: 4e-12 absolute on outputs near zero). Compare the
        # formula with the eps ONNX can hold.
        eps = float(np.float32(eps))
    check(single(kr.BatchNorm2d(4, eps=eps), (4, 5, 7)), dtype)


@pytest.mark.parametrize("dtype", BOTH)
@pytest.mark.parametrize("bias", [True, False])
def test_flatten_linear_softmax(dtype, bias):
    g = kr.Graph((3, 4, 5))
    g.add(kr.Flatten(), name="flat")
    g.add(kr.Linear(60, 7, bias=bias), name="fc")
    g.add(kr.Softmax(), name="prob")
    out = check(g, dtype)
    np.testing.assert_allclose(out["prob"].sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("dtype", BOTH)
@pytest.mark.parametrize("n_inputs", [2, 3, 4])
def test_add(dtype, n_inputs):
    g = kr.Graph((3, 5, 4))
    branches = []
    for i in range(n_inputs):
        g.add(kr.MaxPool2d(i + 1, 1, padding=((i // 2, i - i // 2),) * 2), inputs="input",
              name=f"b{i}")
        branches.append(f"b{i}")
    g.add(kr.Add(), inputs=branches, name="sum")
    check(g, dtype)


@pytest.mark.parametrize("dtype", BOTH)
@pytest.mark.parametrize("n_inputs", [2, 3])
def test_concat(dtype, n_inputs):
    g = kr.Graph((2, 6, 5))
    branches = []
    for i in range(n_inputs):
        g.add(kr.BatchNorm2d(2, eps=EPS32), inputs="input", name=f"bn{i}")
        g.add(kr.MaxPool2d(3, 1, 1), inputs=f"bn{i}", name=f"pool{i}")
        branches.append(f"pool{i}" if i % 2 else f"bn{i}")
    g.add(kr.Concat(), inputs=branches, name="cat")
    check(g, dtype)


# --------------------------------------------------------------------------------------
# Multi-layer graphs
# --------------------------------------------------------------------------------------

def test_residual_block():
    g = kr.Graph((4, 9, 7))
    g.add(kr.Conv2d(4, 4, 3, padding=1, bias=False), name="conv1")
    g.add(kr.BatchNorm2d(4), name="bn1")
    g.add(kr.ReLU(), name="relu1")
    g.add(kr.Conv2d(4, 4, 3, padding=1, bias=False), name="conv2")
    g.add(kr.BatchNorm2d(4), name="bn2")
    g.add(kr.Add(), inputs=["bn2", "input"], name="add")
    g.add(kr.ReLU(), name="relu2")
    # A downsampling block with a strided 1x1 projection shortcut.
    g.add(kr.Conv2d(4, 8, 3, stride=2, padding=1, bias=False), name="conv3")
    g.add(kr.BatchNorm2d(8), name="bn3")
    g.add(kr.ReLU6(), name="relu3")
    g.add(kr.Conv2d(8, 8, 3, padding=1, groups=8), name="dw")
    g.add(kr.Conv2d(4, 8, 1, stride=2, bias=False), inputs="relu2", name="proj")
    g.add(kr.BatchNorm2d(8), name="bnp")
    g.add(kr.Add(), inputs=["dw", "bnp"], name="add2")
    g.add(kr.ReLU(), name="out")
    check(g, np.float32)


def test_inception_block():
    g = kr.Graph((4, 10, 9))
    g.add(kr.Conv2d(4, 3, 1), inputs="input", name="b1")
    g.add(kr.Conv2d(4, 2, 1), inputs="input", name="b2a")
    g.add(kr.ReLU(), name="b2r")
    g.add(kr.Conv2d(2, 3, 3, padding=1), name="b2")
    g.add(kr.Conv2d(4, 2, 1), inputs="input", name="b3a")
    g.add(kr.Conv2d(2, 2, (1, 5), padding=(0, 2)), name="b3b")
    g.add(kr.Conv2d(2, 2, (5, 1), padding=(2, 0)), name="b3")
    g.add(kr.MaxPool2d(3, 1, 1), inputs="input", name="b4a")
    g.add(kr.Conv2d(4, 2, 1), name="b4")
    g.add(kr.AvgPool2d(3, 1, 1, count_include_pad=False), inputs="input", name="b5a")
    g.add(kr.Conv2d(4, 1, 1), name="b5")
    g.add(kr.Concat(), inputs=["b1", "b2", "b3", "b4", "b5"], name="cat")
    g.add(kr.ReLU(), name="relu")
    g.add(kr.AvgPool2d(3, 2, ceil_mode=True), name="pool")
    g.add(kr.GlobalAvgPool2d(), name="gap")
    g.add(kr.Flatten(), name="flat")
    g.add(kr.Linear(11, 5), name="fc")
    check(g, np.float32)


def test_vgg_like_chain():
    g = kr.Graph((3, 16, 12))
    g.add(kr.Conv2d(3, 6, 3, padding=1), name="c1")
    g.add(kr.ReLU(), name="r1")
    g.add(kr.Conv2d(6, 6, 3, padding=1), name="c2")
    g.add(kr.BatchNorm2d(6), name="bn2")
    g.add(kr.ReLU(), name="r2")
    g.add(kr.MaxPool2d(2), name="p1")
    g.add(kr.Conv2d(6, 8, 3, padding=1), name="c3")
    g.add(kr.ReLU(), name="r3")
    g.add(kr.MaxPool2d(2, ceil_mode=True), name="p2")
    g.add(kr.Conv2d(8, 8, (3, 2), padding=((1, 1), (0, 1))), name="c4")
    g.add(kr.ReLU6(), name="r4")
    g.add(kr.AdaptiveAvgPool2d((2, 3)), name="adapt")
    g.add(kr.Flatten(), name="flat")
    g.add(kr.Linear(48, 16), name="fc1")
    g.add(kr.ReLU(), name="r5")
    g.add(kr.Dropout(), name="drop")
    g.add(kr.Linear(16, 10), name="fc2")
    g.add(kr.Softmax(), name="prob")
    check(g, np.float32)


@pytest.mark.parametrize("dtype", BOTH)
def test_conv_free_chain(dtype):
    """A conv-free chain, so that the whole graph also runs in float64."""
    g = kr.Graph((3, 9, 8))
    g.add(kr.BatchNorm2d(3, eps=EPS32), name="bn")
    g.add(kr.ReLU6(), name="r6")
    g.add(kr.MaxPool2d(3, 2, padding=((1, 0), (1, 1)), ceil_mode=True), name="pool")
    g.add(kr.MaxPool2d(2, 1, dilation=2), inputs="bn", name="dpool")
    g.add(kr.MaxPool2d(3, 1, padding=((0, 0), (1, 0))), name="dpool2")
    g.add(kr.Concat(), inputs=["pool", "dpool2"], name="cat")
    g.add(kr.Add(), inputs=["cat", "cat", "cat"], name="sum3")
    g.add(kr.Flatten(), name="flat")
    g.add(kr.Linear(g.shapes["flat"][0], 6), name="fc")
    g.add(kr.Dropout(), name="drop")
    g.add(kr.Softmax(), name="prob")
    check(g, dtype)
