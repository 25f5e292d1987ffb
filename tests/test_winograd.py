"""Winograd F(2x2, 3x3) convolution against the plain oracle, and its use in the engine."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kryptonref as kr
from kryptonref.layers import conv, winograd
from kryptonref.layers.registry import entry

from . import naive
from .strategies import occlusions
from .test_engine import check_identity

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])


def random_conv(rng, n_items, c_in, c_out, oh, ow, dtype):
    win = rng.normal(size=(n_items, c_in, oh + 2, ow + 2)).astype(dtype)
    weight = (rng.normal(size=(c_out, c_in, 3, 3)) / np.sqrt(9 * c_in)).astype(dtype)
    bias = rng.normal(size=c_out).astype(dtype)
    return win, weight, bias


def winograd_output(win, weight, bias):
    n_out = weight.shape[0]
    out = np.empty((win.shape[0], n_out, win.shape[2] - 2, win.shape[3] - 2), win.dtype)
    return winograd.winograd_conv(win, winograd.winograd_filters(weight), bias, out)


@settings(max_examples=60, deadline=None)
@given(n_items=st.integers(1, 3), c_in=st.integers(1, 20), c_out=st.integers(1, 9),
       oh=st.integers(1, 9), ow=st.integers(1, 9), dtype=st.sampled_from([np.float64, np.float32]),
       seed=st.integers(0, 2**16))
def test_winograd_equals_the_oracle(n_items, c_in, c_out, oh, ow, dtype, seed):
    """Odd and even output sizes (odd ones round up to whole tiles and drop the extra)."""
    win, weight, bias = random_conv(np.random.default_rng(seed), n_items, c_in, c_out, oh, ow,
                                    dtype)
    want = naive.conv2d(win, weight, bias)
    got = winograd_output(win, weight, bias)
    assert got.dtype == dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.parametrize("oh, ow", [(5, 7), (4, 3), (1, 1)])
def test_winograd_reads_only_the_window(oh, ow):
    """Odd sizes read nothing past the window: the transformed input is what an explicitly
    zero-padded window gives, and finite even where NaN lies beyond the window."""
    rng = np.random.default_rng(3)
    win = rng.normal(size=(2, 3, oh + 2, ow + 2))
    tiles_h, tiles_w = (oh + 1) // 2, (ow + 1) // 2
    nan_beyond = np.full((2, 3, 2 * tiles_h + 3, 2 * tiles_w + 3), np.nan)
    nan_beyond[:, :, :oh + 2, :ow + 2] = win
    zero_beyond = np.zeros_like(nan_beyond)
    zero_beyond[:, :, :oh + 2, :ow + 2] = win
    got = np.empty((16, 3, 2 * tiles_h * tiles_w))
    want = np.empty_like(got)
    winograd._input_transform(nan_beyond[:, :, :oh + 2, :ow + 2], tiles_h, tiles_w, got)
    winograd._input_transform(zero_beyond[:, :, :2 * tiles_h + 2, :2 * tiles_w + 2],
                              tiles_h, tiles_w, want)
    assert np.all(np.isfinite(got))
    np.testing.assert_array_equal(got, want)


def test_winograd_chunks(monkeypatch):
    """A batch split into one-item chunks gives the same result."""
    rng = np.random.default_rng(4)
    win, weight, bias = random_conv(rng, 3, 5, 6, 4, 3, np.float64)
    monkeypatch.setattr(winograd, "CHUNK_BYTES", 1)
    np.testing.assert_allclose(winograd_output(win, weight, bias),
                               naive.conv2d(win, weight, bias), **TOL[np.float64])


def test_filter_transform_is_g_g_gt():
    weight = np.random.default_rng(5).normal(size=(2, 3, 3, 3))
    u = winograd.winograd_filters(weight)
    for o in range(2):
        for c in range(3):
            want = winograd.G @ weight[o, c] @ winograd.G.T
            np.testing.assert_allclose(u[:, o, c].reshape(4, 4), want, rtol=1e-14)


def test_documented_matrices_compute_the_convolution():
    """``A^T [(G g G^T) * (B^T d B)] A`` is the 2x2 valid correlation of a 4x4 tile."""
    rng = np.random.default_rng(6)
    d, g = rng.normal(size=(4, 4)), rng.normal(size=(3, 3))
    product = (winograd.G @ g @ winograd.G.T) * (winograd.B_T @ d @ winograd.B_T.T)
    want = [[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(2)] for i in range(2)]
    np.testing.assert_allclose(winograd.A_T @ product @ winograd.A_T.T, want, rtol=1e-12)


def prepare(layer, params):
    """The CPU's kernel-ready parameters of ``layer``, as a model prepares them."""
    record = entry(layer)
    return record.cpu.prepare(layer, record.prepare(layer, params, np.float32))


@pytest.fixture(autouse=True)
def winograd_on(monkeypatch):
    """Every test starts with Winograd on (the default), whatever the environment says."""
    monkeypatch.delenv("KRYPTONREF_WINOGRAD", raising=False)
    yield
    kr.runtime.configure(winograd=None)


def test_winograd_can_be_turned_off(monkeypatch):
    """The ``winograd`` setting off leaves im2col + GEMM; ``KRYPTONREF_WINOGRAD=0`` turns it
    off too, read when parameters are prepared (no fresh interpreter needed)."""
    layer = kr.Conv2d(64, 8, 3, padding=1)
    params = {"weight": np.ones((8, 64, 3, 3))}
    assert "winograd" in prepare(layer, params)
    kr.runtime.configure(winograd=False)
    assert "winograd" not in prepare(layer, params)
    kr.runtime.configure(winograd=None)
    monkeypatch.setenv("KRYPTONREF_WINOGRAD", "0")
    assert "winograd" not in prepare(layer, params)
    monkeypatch.setenv("KRYPTONREF_WINOGRAD", "1")
    assert "winograd" in prepare(layer, params)


@pytest.mark.parametrize("oh, ow, pays", [(1, 1, False), (1, 8, False), (2, 1, False),
                                          (2, 2, True), (3, 3, True), (7, 7, True),
                                          (2, 3, True)])
def test_winograd_only_where_it_saves_multiplications(oh, ow, pays):
    assert winograd.winograd_pays_off(oh, ow, winograd.WIDE_CHANNELS) == pays


@pytest.mark.parametrize("oh, ow, channels, pays", [
    (10, 10, 64, False), (15, 17, 64, False), (16, 16, 64, True), (30, 9, 64, True),
    (10, 10, 128, True), (4, 4, 512, True), (1, 40, 64, False)])
def test_narrow_layers_use_winograd_only_on_large_regions(oh, ow, channels, pays):
    assert winograd.winograd_pays_off(oh, ow, channels) == pays


def test_thin_regions_take_the_gemm_path(monkeypatch):
    """A one-row output skips Winograd even when its filters are given (same result)."""
    rng = np.random.default_rng(8)
    win, weight, bias = random_conv(rng, 3, 4, 5, 1, 6, np.float64)
    called = []
    monkeypatch.setattr(conv, "winograd_conv", lambda *a: called.append(a))
    got = conv.conv2d_valid(win, weight, bias, (1, 1), (1, 1), 1, (1, 6),
                            winograd=winograd.winograd_filters(weight))
    assert not called
    np.testing.assert_allclose(got, naive.conv2d(win, weight, bias), **TOL[np.float64])


@pytest.mark.parametrize("layer, uses", [
    (kr.Conv2d(64, 8, 3, padding=1), True),
    (kr.Conv2d(128, 8, 3, padding=0, bias=False), True),
    (kr.Conv2d(32, 8, 3, padding=1), False),             # too few input channels
    (kr.Conv2d(64, 8, 3, stride=2, padding=1), False),
    (kr.Conv2d(64, 8, 3, dilation=2, padding=2), False),
    (kr.Conv2d(128, 128, 3, padding=1, groups=2), False),
    (kr.Conv2d(64, 8, (3, 5), padding=1), False),
    (kr.Conv2d(64, 8, 1), False),
])
def test_prepared_params_choose_winograd(layer, uses, monkeypatch):
    params = {"weight": np.ones((layer.out_channels, layer.in_channels // layer.groups)
                                + tuple(layer.kernel_size))}
    assert ("winograd" in prepare(layer, params)) == uses


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv_layer_through_winograd_equals_the_oracle(dtype, monkeypatch):
    """Full inference of a Winograd-eligible layer (padding 1) through ``Model.forward``."""
    calls = []
    monkeypatch.setattr(conv, "winograd_conv",
                        lambda *args: calls.append(1) or winograd.winograd_conv(*args))
    layer = kr.Conv2d(64, 5, 3, padding=1)
    graph = kr.Graph((64, 15, 18))  # 270 outputs: Winograd pays off with 64 channels
    graph.add(layer, name="conv")
    model = kr.Model(graph, seed=1, dtype=dtype)
    assert "winograd" in model.prepared["conv"]
    x = np.random.default_rng(2).normal(size=(2, 64, 15, 18)).astype(dtype)
    params = model.params["conv"]
    want = naive.conv2d(x, params["weight"], params["bias"], padding=1)
    np.testing.assert_allclose(model.forward(x), want, **TOL[dtype])
    direct = conv.conv2d_valid(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))),
                               model.prepared["conv"]["weight"], model.prepared["conv"]["bias"],
                               (1, 1), (1, 1), 1, (15, 18), None, model.prepared["conv"]["winograd"])
    np.testing.assert_allclose(direct, want, **TOL[dtype])
    assert len(calls) == 2


@st.composite
def winograd_networks(draw):
    """Random chains and residual blocks of 3x3 stride-1 convolutions (any padding)."""
    graph = kr.Graph((draw(st.integers(1, 4)), draw(st.integers(6, 24)),
                      draw(st.integers(6, 24))))
    current = graph.input_name
    for _ in range(draw(st.integers(1, 4))):
        c, h, w = graph.shapes[current]
        kind = draw(st.sampled_from(["conv", "res", "pool"]))
        pads = tuple(tuple(draw(st.integers(0, 2)) for _ in range(2)) for _ in range(2))
        if kind == "conv" and h + sum(pads[0]) >= 3 and w + sum(pads[1]) >= 3:
            current = graph.add(kr.Conv2d(c, draw(st.integers(1, 6)), 3, padding=pads,
                                          bias=draw(st.booleans())), current)
            current = graph.add(kr.ReLU(), current)
        elif kind == "res":
            branch = graph.add(kr.Conv2d(c, c, 3, padding=1), current)
            current = graph.add(kr.Add(), [current, branch])
        elif kind == "pool" and min(h, w) >= 2:
            current = graph.add(kr.MaxPool2d(2, 2), current)
    if current == graph.input_name:
        graph.add(kr.Conv2d(graph.input_shape[0], 2, 3, padding=1), current)
    return graph


@pytest.mark.parametrize("dtype, examples", [(np.float64, 40), (np.float32, 20)])
def test_incremental_identity_with_winograd_everywhere(dtype, examples):
    """The engine's identity with every dense 3x3 stride-1 conv on the Winograd path."""
    winograd_layers = []

    @settings(max_examples=examples, **SETTINGS)
    @given(st.data())
    def run(data):
        graph = data.draw(winograd_networks())
        _, model = check_identity(graph, data.draw(occlusions(graph)), dtype)
        winograd_layers.extend(n for n, p in model.prepared.items() if "winograd" in p)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(winograd, "MIN_CHANNELS", 1)
        patch.setattr(winograd, "WIDE_CHANNELS", 1)
        run()
    assert winograd_layers, "no drawn architecture had a Winograd convolution"
