"""Every layer kernel of kryptonref against the naive oracle (tests/naive.py).

Three paths are checked:

* the full path, the CPU backend's ``full`` (directly, with ``Model.prepared`` parameters,
  and through ``Model.forward`` on one-layer graphs), for every layer type over
  a grid of hyper-parameters, in float64 and float32;
* the region path: ``window.gather_windows`` against a plain NumPy
  construction of the read window, and the CPU backend's ``region`` for conv / max pool /
  avg pool against the oracle's full output sliced at the region;
* ``pool.avg_pool_divisors`` against the oracle's per-output divisors.

The oracle computes in float64; float32 kernels see float32-rounded inputs and
weights, and the oracle is fed the same rounded values.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kryptonref as kr
from kryptonref.backends import get_backend
from kryptonref.layers.pool import avg_pool_divisors
from kryptonref.layers.window import gather_windows

from . import naive

CPU = get_backend("cpu")

DTYPES = [np.float64, np.float32]
TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}


# --- helpers ----------------------------------------------------------------------------

def assert_close(got, want, dtype, what=""):
    assert got.dtype == np.dtype(dtype), f"{what}: dtype {got.dtype}, expected {np.dtype(dtype)}"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    np.testing.assert_allclose(got, want, err_msg=what, **TOL[dtype])


def rounded(x, dtype):
    """``x`` as the kernel sees it in ``dtype``, returned in float64 for the oracle."""
    return np.asarray(x).astype(dtype).astype(np.float64)


def rounded_params(params, dtype):
    return {node: {k: rounded(v, dtype) for k, v in ps.items()} for node, ps in params.items()}


def one_layer(layer, in_shape, dtype, seed=0):
    """A one-layer graph and its model; returns ``(model, node_name)``."""
    graph = kr.Graph(in_shape)
    name = graph.add(layer, name="layer")
    return kr.Model(graph, seed=seed, dtype=dtype), name


def image_batch(in_shape, n=2, seed=1, scale=1.0):
    return np.random.default_rng(seed).normal(0.0, scale, (n,) + tuple(in_shape))


def check_full(layer, in_shape, dtype, n=2, seed=0, scale=1.0):
    """``Model.forward`` and ``ops.full`` on a one-layer graph vs the oracle."""
    model, name = one_layer(layer, in_shape, dtype, seed)
    x = image_batch(in_shape, n, seed + 1, scale)
    want = naive.naive_layer(layer, rounded_params(model.params, dtype).get(name, {}),
                             [rounded(x, dtype)])
    out_shape = model.graph.shapes[name]
    assert want.shape[1:] == out_shape, "spec output shape disagrees with the oracle"
    assert_close(model.forward(x), want, dtype, f"forward {layer}")
    direct = CPU.full(layer, model.prepared[name], [x.astype(dtype)], out_shape)
    assert_close(direct, want, dtype, f"CPU.full {layer}")


def geom_id(geom):
    """``{'kernel_size': 3, 'stride': 2, ...}`` -> ``"k3-s2-..."`` for test ids."""
    short = dict(kernel_size="k", stride="s", padding="p", dilation="d", ceil_mode="ceil",
                 count_include_pad="cip")
    return "-".join(f"{short[k]}{v}".replace(" ", "") for k, v in geom.items())


def valid(layer, in_shape):
    try:
        layer.output_shape([in_shape])
    except ValueError:
        return False
    return True


# --- the oracle itself: a few hand-checked facts ----------------------------------------

@pytest.mark.parametrize("n, k, s, p0, p1, d, ceil, expected", [
    (5, 2, 2, 1, 1, 1, True, 3),     # ceil gives 4, but the 4th window starts in the padding
    (5, 2, 2, 1, 1, 1, False, 3),
    (6, 3, 2, 0, 0, 1, True, 3),     # last window hangs one past the input
    (6, 3, 2, 0, 0, 1, False, 2),
    (4, 3, 2, 1, 1, 1, True, 3),
    (112, 3, 2, 1, 1, 1, False, 56),  # ResNet max pool
    (55, 3, 2, 0, 0, 1, True, 27),   # SqueezeNet ceil-mode pool
    (10, 3, 1, 0, 0, 2, False, 6),   # dilation: span 5
])
def test_oracle_output_size(n, k, s, p0, p1, d, ceil, expected):
    assert naive.output_size(n, k, s, p0, p1, d, ceil) == expected
    assert kr.geometry.output_size(n, k, s, p0, p1, d, ceil) == expected


def test_oracle_avg_pool_pytorch_example():
    # torch.nn.functional.avg_pool1d([1, 2, 3, 4], 3, 2, padding=1, ceil_mode=True):
    # [1, 3, 2] with count_include_pad (the last window counts one pad, not the
    # element past the padding) and [1.5, 3, 4] without.
    x = np.array([1.0, 2, 3, 4]).reshape(1, 1, 1, 4)
    args = dict(kernel_size=(1, 3), stride=(1, 2), padding=((0, 0), (1, 1)), ceil_mode=True)
    np.testing.assert_array_equal(naive.avg_pool2d(x, **args, count_include_pad=True)[0, 0, 0],
                                  [1.0, 3.0, 2.0])
    np.testing.assert_array_equal(naive.avg_pool2d(x, **args, count_include_pad=False)[0, 0, 0],
                                  [1.5, 3.0, 4.0])
    for cip in (True, False):
        layer = kr.AvgPool2d(**args, count_include_pad=cip)
        got = CPU.full(layer, {}, [x], (1, 1, 3))
        np.testing.assert_allclose(got, naive.avg_pool2d(x, **args, count_include_pad=cip))


def test_oracle_conv_matches_scipy():
    from scipy.signal import correlate
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 9, 8))
    w = rng.normal(size=(4, 3, 3, 2))
    b = rng.normal(size=4)
    pad = ((1, 2), (0, 1))
    xp = np.pad(x, ((0, 0), (0, 0)) + pad)
    want = np.stack([np.stack([correlate(xp[n], w[o], mode="valid")[0] + b[o]
                               for o in range(4)]) for n in range(2)])
    np.testing.assert_allclose(naive.conv2d(x, w, b, padding=pad), want, rtol=1e-12, atol=1e-12)


def test_oracle_max_pool_small_example():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    got = naive.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=False)
    np.testing.assert_array_equal(got[0, 0], [[5, 7], [13, 15]])


def test_naive_occlude():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 6, 7))
    keep = image.copy()
    for fill in (0.5, np.array([1.0, 2.0, 3.0]), rng.normal(size=(3, 2, 4))):
        got = naive.naive_occlude(image, 1, 2, (2, 4), fill)
        want = image.copy()
        want[:, 1:3, 2:6] = np.broadcast_to(np.reshape(fill, (-1, 1, 1)) if np.ndim(fill) == 1
                                            else fill, (3, 2, 4))
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(image, keep)


# --- convolution: full path -------------------------------------------------------------

CONV_GRID = [
    dict(kernel_size=k, stride=s, padding=p, dilation=d)
    for k, s, p, d in itertools.product([1, 2, 3, (3, 5), 7], [1, 2, 3],
                                        [0, 1, ((0, 2), (3, 1))], [1, 2])
]
CONV_IN = (3, 13, 16)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("geom", CONV_GRID, ids=geom_id)
def test_conv_dense_grid(geom, dtype):
    layer = kr.Conv2d(3, 4, **geom)
    assert valid(layer, CONV_IN), "the grid holds only geometries that fit the input"
    check_full(layer, CONV_IN, dtype)


CONV_CASES = [
    # (layer, input shape)
    (kr.Conv2d(4, 6, 3, padding=1, groups=2), (4, 9, 11)),
    (kr.Conv2d(6, 6, 3, stride=2, padding=((1, 0), (0, 1)), groups=3), (6, 10, 9)),
    (kr.Conv2d(4, 4, 3, padding=1, groups=4), (4, 12, 7)),                   # depthwise
    (kr.Conv2d(4, 8, 5, stride=2, padding=2, dilation=2, groups=4), (4, 13, 12)),
    (kr.Conv2d(4, 4, (1, 7), padding=(0, 3), groups=4), (4, 6, 10)),
    (kr.Conv2d(4, 8, (7, 1), padding=(3, 0), groups=2, bias=False), (4, 10, 6)),
    (kr.Conv2d(5, 5, 2, stride=3, groups=5, bias=False), (5, 11, 13)),
    (kr.Conv2d(3, 6, 3, stride=(1, 2), padding=((3, 0), (0, 3)), dilation=(2, 1), groups=3),
     (3, 9, 8)),
    (kr.Conv2d(3, 5, 1, stride=2, bias=False), (3, 9, 10)),                 # pointwise
    (kr.Conv2d(3, 5, 7, stride=2, padding=3), (3, 20, 18)),                 # ResNet stem
    (kr.Conv2d(16, 8, 3, padding=1), (16, 8, 9)),                           # larger fan-in
    (kr.Conv2d(2, 3, 3, padding=((2, 3), (3, 2))), (2, 1, 1)),              # 1x1 input
    (kr.Conv2d(2, 3, (2, 6), stride=(3, 1), padding=((0, 0), (2, 1))), (2, 7, 3)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("layer, in_shape", CONV_CASES, ids=lambda v: str(v))
def test_conv_cases(layer, in_shape, dtype):
    check_full(layer, in_shape, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (1, 3)])
@pytest.mark.parametrize("out_hw, n_items", [((2, 3), 5), ((5, 5), 4), ((7, 8), 3), ((2, 2), 1)])
def test_conv_1x1_per_window_and_batched_gemms(out_hw, n_items, stride, dtype):
    """A 1x1 convolution's two GEMM layouts (per window from POINTWISE_AREA outputs, else
    one over the batch) equal the oracle, on windows longer than the samples they use."""
    from kryptonref.layers import conv
    rng = np.random.default_rng(8)
    (oh, ow), (sh, sw) = out_hw, stride
    win = rng.normal(size=(n_items, 6, (oh - 1) * sh + 2, (ow - 1) * sw + 3)).astype(dtype)
    weight, bias = rng.normal(size=(4, 6, 1, 1)).astype(dtype), rng.normal(size=4).astype(dtype)
    got = conv.conv2d_valid(win, weight, bias, stride, (1, 1), 1, out_hw)
    want = naive.conv2d(win.astype(np.float64), weight.astype(np.float64),
                        bias.astype(np.float64), stride=stride)[:, :, :oh, :ow]
    assert_close(got, want, dtype, f"1x1 {out_hw} stride {stride}")


@pytest.mark.parametrize("out_hw", [(2, 3), (7, 8)])   # one GEMM over the batch; per window
def test_conv_1x1_chunking(monkeypatch, out_hw):
    """A batch split into several chunks of samples gives the same result."""
    from kryptonref.layers import conv
    rng = np.random.default_rng(9)
    (oh, ow) = out_hw
    win = rng.normal(size=(5, 6, 2 * oh, 2 * ow))
    weight, bias = rng.normal(size=(4, 6, 1, 1)), rng.normal(size=4)
    whole = conv.conv2d_valid(win, weight, bias, (2, 2), (1, 1), 1, out_hw)
    monkeypatch.setattr(conv, "IM2COL_BYTES", 2 * 6 * oh * ow * 8)  # two items per chunk
    chunked = conv.conv2d_valid(win, weight, bias, (2, 2), (1, 1), 1, out_hw)
    np.testing.assert_allclose(chunked, whole, rtol=1e-12, atol=1e-12)
    want = naive.conv2d(win, weight, bias, stride=2)[:, :, :oh, :ow]
    np.testing.assert_allclose(chunked, want, rtol=1e-10, atol=1e-10)


def test_conv_im2col_chunking(monkeypatch):
    """A batch split into several im2col chunks gives the same result."""
    from kryptonref.layers import conv
    layer = kr.Conv2d(3, 4, 3, stride=2, padding=1)
    monkeypatch.setattr(conv, "IM2COL_BYTES", 3 * 9 * 25 * 8)  # one item per chunk
    check_full(layer, (3, 9, 10), np.float64, n=3)


# --- pooling: full path -----------------------------------------------------------------

POOL_IN = (3, 11, 9)


def make_layer(cls, geom):
    """The pooling layer, or None where the spec rejects the geometry (padding > kernel/2)."""
    try:
        return cls(**geom)
    except ValueError:
        return None


def pool_grid(cls, combos):
    """Geometries that make a valid layer on ``POOL_IN``."""
    grid = []
    for geom in combos:
        layer = make_layer(cls, geom)
        if layer is not None and valid(layer, POOL_IN):
            grid.append(geom)
    return grid


MAX_GRID = pool_grid(kr.MaxPool2d, [
    dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=c)
    for k, s, p, d, c in itertools.product([1, 2, 3, (2, 3)], [1, 2, 3],
                                           [0, 1, ((1, 0), (0, 1))], [1, 2], [False, True])
    if not (k == 1 and d == 2)
])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("geom", MAX_GRID, ids=geom_id)
def test_max_pool_grid(geom, dtype):
    check_full(kr.MaxPool2d(**geom), POOL_IN, dtype)


AVG_GRID = pool_grid(kr.AvgPool2d, [
    dict(kernel_size=k, stride=s, padding=p, ceil_mode=c, count_include_pad=cip)
    for k, s, p, c, cip in itertools.product([2, 3, (3, 2)], [1, 2, 3],
                                             [0, 1, ((1, 0), (0, 1))], [False, True],
                                             [False, True])
] + [
    dict(kernel_size=1, stride=2, padding=0, ceil_mode=True, count_include_pad=True),
    dict(kernel_size=5, stride=2, padding=2, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=5, stride=3, padding=((2, 1), (0, 2)), ceil_mode=True,
         count_include_pad=True),
    dict(kernel_size=7, stride=3, padding=3, ceil_mode=True, count_include_pad=True),
    dict(kernel_size=7, stride=3, padding=3, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=(6, 4), stride=(3, 1), padding=((3, 0), (2, 2)), ceil_mode=False,
         count_include_pad=False),
])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("geom", AVG_GRID, ids=geom_id)
def test_avg_pool_grid(geom, dtype):
    check_full(kr.AvgPool2d(**geom), POOL_IN, dtype)


@pytest.mark.parametrize("geom", AVG_GRID, ids=geom_id)
def test_avg_pool_divisors(geom):
    """Per-axis divisors, multiplied, equal the oracle's 2-D divisor of every output."""
    layer = kr.AvgPool2d(**geom)
    for in_hw in [(11, 9), (7, 8), (5, 13), (4, 3)]:
        if not valid(layer, (1,) + in_hw):
            continue
        want = naive.avg_pool_divisor_map(in_hw, layer.kernel_size, layer.stride,
                                          layer.padding, layer.ceil_mode,
                                          layer.count_include_pad)
        axes = []
        for d in (0, 1):
            div = avg_pool_divisors(in_hw[d], want.shape[d], layer.kernel_size[d],
                                    layer.stride[d], layer.padding[d][0], layer.padding[d][1],
                                    layer.count_include_pad)
            assert div.shape == (want.shape[d],)
            axes.append(div)
        np.testing.assert_array_equal(np.outer(*axes), want, err_msg=f"input {in_hw}")


@pytest.mark.parametrize("with_patch", [True, False])
def test_gather_windows_accumulate_adds_to_out(with_patch):
    """``accumulate=True`` adds each window to ``out``, padding included (residual adds)."""
    rng = np.random.default_rng(13)
    base = rng.normal(size=(2, 5, 4))
    patch = rng.normal(size=(3, 2, 2, 2)) if with_patch else None
    py, px = np.array([0, 3, 1]), np.array([2, 0, 1])
    wy, wx = np.array([-1, 2, 4]), np.array([-2, 1, 3])
    start = rng.normal(size=(3, 3, 4, 3))
    out = start.copy()
    got = gather_windows(base, patch, py, px, wy, wx, 4, 3, 0.5, out=out, c_offset=1,
                         accumulate=True)
    assert got is out
    want = reference_windows(base, patch, py, px, wy, wx, 4, 3, 0.5)
    np.testing.assert_array_equal(out[:, 1:], start[:, 1:] + want)
    np.testing.assert_array_equal(out[:, :1], start[:, :1])


@settings(max_examples=60, deadline=None, database=None)
@given(data=st.data())
def test_pool_random_geometry(data):
    """Random pooling geometry (any kernel, stride, padding, ceil mode) against the oracle."""
    kh, kw = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    pads = tuple((data.draw(st.integers(0, k // 2)), data.draw(st.integers(0, k // 2)))
                 for k in (kh, kw))
    stride = (data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)))
    ceil = data.draw(st.booleans())
    in_shape = (2, data.draw(st.integers(kh, 10)), data.draw(st.integers(kw, 10)))
    if data.draw(st.booleans()):
        layer = kr.AvgPool2d((kh, kw), stride, pads, ceil, data.draw(st.booleans()))
    else:
        dil = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
        layer = make_layer(kr.MaxPool2d, dict(kernel_size=(kh, kw), stride=stride,
                                              padding=pads, dilation=dil, ceil_mode=ceil))
        if layer is None or not valid(layer, in_shape):
            return
    check_full(layer, in_shape, np.float64, n=1)


# --- global, element-wise, dense and merge layers -----------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("layer", [
    kr.GlobalAvgPool2d(), kr.AdaptiveAvgPool2d(1), kr.AdaptiveAvgPool2d((2, 3)),
    kr.AdaptiveAvgPool2d(3), kr.AdaptiveAvgPool2d((5, 4)), kr.AdaptiveAvgPool2d((7, 9)),
    kr.AdaptiveAvgPool2d((8, 10)),  # more bins than input rows/columns (bins overlap)
    kr.ReLU(), kr.ReLU6(), kr.Dropout(0.3), kr.BatchNorm2d(3), kr.BatchNorm2d(3, eps=1e-3),
    kr.MaxPool2d(2), kr.AvgPool2d((2, 3)),  # default stride = kernel
], ids=str)
def test_feature_map_layers(layer, dtype):
    check_full(layer, (3, 7, 9), dtype, scale=5.0)  # scale: ReLU6 must clip at 6


@pytest.mark.parametrize("layer", [kr.ReLU(), kr.ReLU6(), kr.BatchNorm2d(3)], ids=str)
def test_elementwise_in_place_equals_a_new_array(layer):
    """``out=x`` (the engine's in-place path) gives bitwise what a fresh array does."""
    model, name = one_layer(layer, (3, 5, 6), np.float32, seed=4)
    params = model.prepared[name]
    x = (np.random.default_rng(5).normal(size=(2, 3, 5, 6)) * 5).astype(np.float32)
    fresh = CPU.apply(layer, params, x)
    inplace = x.copy()
    got = CPU.apply(layer, params, inplace, out=inplace)
    assert got is inplace and fresh is not x
    np.testing.assert_array_equal(got, fresh)


@pytest.mark.parametrize("layer", [kr.MaxPool2d(3, 1, 1), kr.MaxPool2d(2), kr.AvgPool2d(3, 1, 1),
                                   kr.AvgPool2d(2), kr.AvgPool2d(3, 2, 1, count_include_pad=False)],
                         ids=str)
def test_pools_propagate_nan_and_inf_as_pytorch(layer):
    """A NaN in a window gives NaN; +inf gives +inf (max and average), +inf with -inf NaN.

    (Model inputs must be finite; non-finite values can still arise inside a network.)
    """
    x = np.random.default_rng(6).normal(size=(2, 3, 7, 8))
    x[0, 0, 0, 0] = x[0, 1, 3, 4] = np.nan
    x[1, 0, 2, 2] = x[1, 2, 5, 6] = x[0, 2, 0, 0] = np.inf
    x[1, 2, 5, 5] = -np.inf
    model, name = one_layer(layer, (3, 7, 8), np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf in the oracle's sums
        want = naive.naive_layer(layer, {}, [x])
    assert np.isnan(want).any() and np.isinf(want).any()
    got = CPU.full(layer, model.prepared[name], [x], model.graph.shapes[name])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_pool_default_stride_is_kernel():
    assert kr.MaxPool2d(3).stride == (3, 3)
    assert kr.AvgPool2d((2, 3)).stride == (2, 3)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("bias", [True, False])
def test_vector_layers(bias, dtype):
    graph = kr.Graph((3, 4, 5))
    graph.add(kr.Flatten(), name="flat")
    graph.add(kr.Linear(60, 7, bias=bias), name="fc")
    graph.add(kr.ReLU(), name="relu")
    graph.add(kr.Linear(7, 5), name="fc2")
    graph.add(kr.Softmax(), name="prob")
    model = kr.Model(graph, seed=4, dtype=dtype)
    x = image_batch((3, 4, 5), n=3, seed=5, scale=3.0)
    want = naive.naive_forward(graph, rounded_params(model.params, dtype), rounded(x, dtype))
    got = model.forward_all(x)
    for name in graph.order:
        assert_close(got[name], want[name], dtype, name)
    # and each layer directly, on the oracle's own input
    for name in graph.order:
        node = graph.nodes[name]
        inputs = [want[i].astype(dtype) for i in node.inputs]
        layer_want = naive.naive_layer(node.layer, rounded_params(model.params, dtype).get(name, {}),
                                       [rounded(v, dtype) for v in inputs])
        assert_close(CPU.full(node.layer, model.prepared[name], inputs, graph.shapes[name]),
                     layer_want, dtype, f"CPU.full {name}")
    np.testing.assert_allclose(got["prob"].sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("layer, shapes", [
    (kr.Add(), [(3, 4, 5)] * 2),
    (kr.Add(), [(3, 4, 5)] * 3),
    (kr.Add(), [(6,)] * 2),
    (kr.Concat(), [(2, 4, 5), (3, 4, 5)]),
    (kr.Concat(), [(1, 3, 2), (4, 3, 2), (2, 3, 2)]),
], ids=str)
def test_merge_layers(layer, shapes, dtype):
    rng = np.random.default_rng(6)
    inputs = [rng.normal(size=(2,) + s).astype(dtype) for s in shapes]
    keep = [v.copy() for v in inputs]
    want = naive.naive_layer(layer, {}, [rounded(v, dtype) for v in inputs])
    got = CPU.full(layer, {}, inputs, layer.output_shape(shapes))
    assert_close(got, want, dtype, str(layer))
    for v, k in zip(inputs, keep):  # inputs are not modified in place
        np.testing.assert_array_equal(v, k)


def small_network():
    g = kr.Graph((3, 15, 13))
    g.add(kr.Conv2d(3, 8, 3, padding=1), name="c1")
    g.add(kr.BatchNorm2d(8), name="bn")
    g.add(kr.ReLU(), name="r")
    mp = g.add(kr.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), name="mp")   # 8 x 7
    g.add(kr.Conv2d(8, 8, 3, padding=1, groups=8), inputs=mp, name="dw")
    g.add(kr.ReLU6(), name="r6")
    g.add(kr.Conv2d(8, 8, 1, bias=False), name="pw")
    g.add(kr.Add(), inputs=["pw", mp, "dw"], name="sum")
    g.add(kr.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), inputs=mp, name="ap")
    g.add(kr.Concat(), inputs=["sum", "ap"], name="cat")
    g.add(kr.Conv2d(16, 6, (3, 2), stride=2, padding=((1, 0), (0, 1)), dilation=(1, 2)),
          name="c2")                                                              # 4 x 3
    g.add(kr.GlobalAvgPool2d(), inputs="c2", name="gap")
    g.add(kr.AdaptiveAvgPool2d((2, 3)), inputs="c2", name="adapt")
    g.add(kr.Flatten(), name="flat")
    g.add(kr.Dropout(), name="drop")
    g.add(kr.Linear(36, 5), name="fc")
    g.add(kr.Softmax(), name="prob")
    return g


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_network_forward_all(dtype):
    graph = small_network()
    model = kr.Model(graph, seed=7, dtype=dtype)
    x = image_batch(graph.input_shape, n=2, seed=8)
    want = naive.naive_forward(graph, rounded_params(model.params, dtype), rounded(x, dtype))
    got = model.forward_all(x)
    assert set(got) == set(want)
    for name in graph.order:
        assert_close(got[name], want[name], dtype, name)
    assert_close(model.forward(x), want["prob"], dtype, "forward")


@pytest.mark.parametrize("fill", [0.0, "channel", "patch"])
def test_network_on_occluded_images(fill):
    """Full inference on occluded images (what the incremental engine must equal)."""
    graph = small_network()
    model = kr.Model(graph, seed=9, dtype=np.float64)
    rng = np.random.default_rng(10)
    image = rng.normal(size=graph.input_shape)
    fill = {"channel": rng.normal(size=3), "patch": rng.normal(size=(3, 4, 3))}.get(fill, fill)
    batch = np.stack([naive.naive_occlude(image, y, x, (4, 3), fill)
                      for y, x in [(0, 0), (5, 6), (11, 10)]])
    want = naive.naive_forward(graph, model.params, batch)["prob"]
    assert_close(model.forward(batch), want, np.float64, "occluded")


# --- region path: gather_windows ------------------------------------------------------------

def reference_windows(base, patch, patch_y0, patch_x0, win_y0, win_x0, win_h, win_w, pad_value):
    """Plain NumPy: overlay each patch on a copy of base, pad generously, slice the window."""
    c, h, w = base.shape
    margin = win_h + win_w + h + w + int(np.max(np.abs(np.concatenate([win_y0, win_x0]))))
    out = np.empty((len(win_y0), c, win_h, win_w), base.dtype)
    for b in range(len(win_y0)):
        canvas = base.copy()
        if patch is not None:
            ph, pw = patch.shape[2:]
            canvas[:, patch_y0[b]:patch_y0[b] + ph, patch_x0[b]:patch_x0[b] + pw] = patch[b]
        padded = np.pad(canvas, ((0, 0), (margin, margin), (margin, margin)),
                        constant_values=pad_value)
        y, x = win_y0[b] + margin, win_x0[b] + margin
        out[b] = padded[:, y:y + win_h, x:x + win_w]
    return out


def border_offsets(h, w, win_h, win_w):
    """Window offsets hanging off every border and corner, inside, and covering everything."""
    ys = [-win_h + 1, -2, 0, (h - win_h) // 2, h - win_h, h - 1, h + 1]
    xs = [-win_w + 1, -1, 0, (w - win_w) // 2, w - win_w, w - 2, w]
    grid = np.array(list(itertools.product(ys, xs)), np.int64)
    return grid[:, 0], grid[:, 1]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("pad_value", [0.0, -np.inf, 2.5])
@pytest.mark.parametrize("with_patch", [False, True])
@pytest.mark.parametrize("win_hw", [(1, 1), (3, 4), (6, 5), (11, 12)])
def test_gather_windows_borders(win_hw, with_patch, pad_value, dtype):
    rng = np.random.default_rng(11)
    c, h, w = 3, 7, 6
    base = rng.normal(size=(c, h, w)).astype(dtype)
    win_y0, win_x0 = border_offsets(h, w, *win_hw)
    n = len(win_y0)
    if with_patch:
        patch = rng.normal(size=(n, c, 3, 2)).astype(dtype)
        patch_y0 = rng.integers(0, h - 3 + 1, n)
        patch_x0 = rng.integers(0, w - 2 + 1, n)
    else:
        patch = patch_y0 = patch_x0 = None
    got = gather_windows(base, patch, patch_y0, patch_x0, win_y0, win_x0, *win_hw, pad_value)
    want = reference_windows(base, patch, patch_y0, patch_x0, win_y0, win_x0, *win_hw, pad_value)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, want)


def test_gather_windows_out_and_channel_offset():
    rng = np.random.default_rng(12)
    base = rng.normal(size=(2, 5, 4))
    patch = rng.normal(size=(3, 2, 2, 2))
    py, px = np.array([0, 3, 1]), np.array([2, 0, 1])
    wy, wx = np.array([-1, 2, 4]), np.array([-2, 1, 3])
    out = np.full((3, 5, 4, 3), 9.0)
    got = gather_windows(base, patch, py, px, wy, wx, 4, 3, 0.0, out=out, c_offset=2)
    assert got is out
    want = reference_windows(base, patch, py, px, wy, wx, 4, 3, 0.0)
    np.testing.assert_array_equal(out[:, 2:4], want)
    np.testing.assert_array_equal(out[:, :2], 9.0)   # other channels untouched
    np.testing.assert_array_equal(out[:, 4:], 9.0)


@settings(max_examples=60, deadline=None, database=None)
@given(data=st.data())
def test_gather_windows_random(data):
    draw = data.draw
    c, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 8)), draw(st.integers(1, 8))
    n = draw(st.integers(1, 4))
    win_h, win_w = draw(st.integers(1, h + 5)), draw(st.integers(1, w + 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    win_y0 = rng.integers(-win_h - 1, h + 2, n)
    win_x0 = rng.integers(-win_w - 1, w + 2, n)
    dtype = draw(st.sampled_from(DTYPES))
    pad_value = draw(st.sampled_from([0.0, -np.inf, -1.25]))
    base = rng.normal(size=(c, h, w)).astype(dtype)
    if draw(st.booleans()):
        ph, pw = draw(st.integers(0, h)), draw(st.integers(0, w))
        patch = rng.normal(size=(n, c, ph, pw)).astype(dtype)
        patch_y0 = rng.integers(0, h - ph + 1, n)
        patch_x0 = rng.integers(0, w - pw + 1, n)
    else:
        patch = patch_y0 = patch_x0 = None
    got = gather_windows(base, patch, patch_y0, patch_x0, win_y0, win_x0, win_h, win_w,
                         pad_value)
    want = reference_windows(base, patch, patch_y0, patch_x0, win_y0, win_x0, win_h, win_w,
                             pad_value)
    np.testing.assert_array_equal(got, want)


# --- region path: CPU.region ------------------------------------------------------------------

REGION_CASES = [
    (kr.Conv2d(3, 4, 3, padding=1), (3, 9, 8)),
    (kr.Conv2d(3, 4, (3, 5), stride=2, padding=((0, 2), (3, 1)), dilation=(2, 1)), (3, 11, 10)),
    (kr.Conv2d(3, 5, 7, stride=3, padding=3), (3, 14, 12)),
    (kr.Conv2d(4, 4, 3, stride=2, padding=1, groups=4), (4, 9, 10)),
    (kr.Conv2d(4, 6, 2, dilation=2, groups=2, bias=False), (4, 8, 7)),
    (kr.MaxPool2d(3, stride=2, padding=1), (3, 9, 10)),
    (kr.MaxPool2d(2, stride=2, padding=1, ceil_mode=True), (3, 11, 9)),
    (kr.MaxPool2d((3, 2), stride=(3, 1), padding=((1, 0), (0, 1)), dilation=2, ceil_mode=True),
     (3, 10, 8)),
    (kr.AvgPool2d(3, stride=2, padding=1, ceil_mode=True), (3, 10, 9)),
    (kr.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), (3, 10, 9)),
    (kr.AvgPool2d((2, 3), stride=(1, 3), padding=((1, 0), (0, 1)), ceil_mode=True), (3, 8, 11)),
    (kr.AvgPool2d(5, stride=2, padding=2, count_include_pad=False), (3, 9, 12)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("region_hw", [(1, 1), (2, 3), None], ids=["1x1", "2x3", "whole"])
@pytest.mark.parametrize("layer, in_shape", REGION_CASES, ids=lambda v: str(v))
def test_region_vs_full(layer, in_shape, region_hw, dtype):
    """Every region of a given size, computed from read windows, equals the full output."""
    model, name = one_layer(layer, in_shape, dtype, seed=13)
    x = image_batch(in_shape, n=1, seed=14)[0]
    full = naive.naive_layer(layer, rounded_params(model.params, dtype).get(name, {}),
                             [rounded(x, dtype)[None]])[0]
    out_hw = full.shape[1:]
    rh, rw = out_hw if region_hw is None else (min(region_hw[0], out_hw[0]),
                                               min(region_hw[1], out_hw[1]))
    grid = np.array(list(itertools.product(range(out_hw[0] - rh + 1), range(out_hw[1] - rw + 1))),
                    np.int64)
    out_y0, out_x0 = grid[:, 0], grid[:, 1]
    # read window of region [o0, o0 + r): starts at o0*S - P0, spans (r-1)*S + D*(K-1) + 1
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    (dh, dw), ((pt, _), (pl, _)) = layer.dilation, layer.padding
    win_h, win_w = (rh - 1) * sh + dh * (kh - 1) + 1, (rw - 1) * sw + dw * (kw - 1) + 1
    win = gather_windows(x.astype(dtype), None, None, None, out_y0 * sh - pt, out_x0 * sw - pl,
                         win_h, win_w, layer.pad_value)
    got = CPU.region(layer, model.prepared[name], win, in_shape[1:], out_hw, out_y0, out_x0,
                     (rh, rw))
    want = np.stack([full[:, y:y + rh, x0:x0 + rw] for y, x0 in zip(out_y0, out_x0)])
    assert_close(got, want, dtype, f"region {layer} {rh}x{rw}")
