"""kryptonref._pool: NumPy work in chunks on several threads gives what one call gives,
bit for bit, and falls back to one call where it cannot split."""
import numba
import numpy as np
import pytest

from kryptonref import _pool
from kryptonref.layers import activations, channels


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 1000 elements from 3000 on: many uneven chunks on a small array."""
    monkeypatch.setattr(_pool, "CHUNK_ELEMENTS", 1000)
    monkeypatch.setattr(_pool, "PARALLEL_ELEMENTS", 3000)


@pytest.mark.parametrize("layer", [activations.GELU(), activations.GELU("tanh"),
                                   activations.SiLU(), activations.Mish(),
                                   activations.Sigmoid(), activations.ELU(0.7)])
def test_chunked_activations_equal_one_call_bit_for_bit(layer, small_chunks):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 5, 17, 13)) * 4).astype(np.float32)
    x[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    with np.errstate(invalid="ignore", over="ignore"):     # inf * 0 in the definitions
        want = np.asarray(activations.UNARY[type(layer)](layer, x), dtype=x.dtype)
        got = activations._apply_unary(layer, {}, x)
        out = np.empty_like(x)
        assert activations._apply_unary(layer, {}, x, out=out) is out
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(out, want)


def test_layer_norm_over_groups_of_items_equals_one_call(small_chunks):
    rng = np.random.default_rng(1)
    layer = channels.LayerNorm2d(6)
    params = {"weight": rng.uniform(0.5, 1.5, 6), "bias": rng.normal(size=6)}
    x = rng.standard_normal((5, 6, 11, 9))
    np.testing.assert_array_equal(channels._layernorm_apply(layer, params, x),
                                  channels._layernorm(layer, params, x))


def test_what_cannot_be_split_runs_in_one_call(small_chunks):
    calls = []

    def double(x):
        calls.append(x.shape)
        return 2 * x
    x = np.arange(4000.0).reshape(40, 100)
    _pool.map_elementwise(double, x[:, ::2], np.empty((40, 50)))     # not contiguous
    _pool.map_elementwise(double, x[:20], np.empty((20, 100)))       # below the threshold
    assert calls == [(40, 50), (20, 100)]
    out = np.empty_like(x)
    _pool.map_elementwise(double, x, out)
    chunks = 4 if numba.get_num_threads() > 1 else 1
    assert len(calls) == 2 + chunks and np.array_equal(out, 2 * x)


def test_one_thread_means_one_call(small_chunks):
    calls = []
    numba.set_num_threads(1)
    try:
        _pool.map_elementwise(lambda x: calls.append(1) or x, np.zeros(5000), np.empty(5000))
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert calls == [1]


def test_the_callers_errstate_applies_in_every_chunk(small_chunks):
    x = np.full(5000, -1.0)
    with np.errstate(invalid="raise"), pytest.raises(FloatingPointError):
        _pool.map_elementwise(np.sqrt, x, np.empty(5000))
    with np.errstate(invalid="ignore"):
        assert np.isnan(_pool.map_elementwise(np.sqrt, x, np.empty(5000))).all()


def test_an_error_in_a_chunk_reaches_the_caller(small_chunks):
    def fails(x):
        raise FloatingPointError("chunk failed")
    with pytest.raises(FloatingPointError, match="chunk failed"):
        _pool.map_elementwise(fails, np.zeros(5000), np.empty(5000))
