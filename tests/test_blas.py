"""kryptonref.layers.blas.matmul: NumPy's matmul, as single-threaded BLAS GEMMs split
over Numba's threads (row or column blocks, stacks, transposed operands, beta)."""
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from kryptonref import runtime
from kryptonref.layers import blas

SIDE = st.integers(0, 70)


def _operand(rng, shape, dtype, transposed):
    """A matrix (stack) of ``shape``, stored C-contiguous or as a transposed view."""
    if not transposed:
        return rng.standard_normal(shape).astype(dtype)
    stored = rng.standard_normal(shape[:-2] + shape[:-3:-1]).astype(dtype)
    return np.swapaxes(stored, -1, -2)


@settings(max_examples=60, deadline=None)
@given(m=SIDE, n=SIDE, k=SIDE, stack=st.sampled_from([None, 1, 3, 4]),
       shared=st.sampled_from(["a", "b", None]), trans_a=st.booleans(), trans_b=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), threads=st.integers(1, 2),
       seed=st.integers(0, 2 ** 16))
@example(m=0, n=0, k=0, stack=1, shared="b", trans_a=False, trans_b=False,   # an empty
         dtype=np.float32, threads=1, seed=0)                                  # stack
def test_matmul_equals_numpys(m, n, k, stack, shared, trans_a, trans_b, dtype, threads, seed):
    import numba
    rng = np.random.default_rng(seed)
    lead = () if stack is None else (stack,)
    a = _operand(rng, (() if shared == "a" else lead) + (m, k), dtype, trans_a)
    b = _operand(rng, (() if shared == "b" else lead) + (k, n), dtype, trans_b)
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    numba.set_num_threads(threads)
    try:
        with runtime.job():
            got = blas.matmul(a, b)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert got.shape == want.shape and got.dtype == dtype
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1, k))


@pytest.mark.parametrize("a_shape, b_shape", [((3, 40, 70), (70, 33)), ((40, 70), (3, 70, 33)),
                                              ((70, 20), (20, 300))])
def test_matmul_accumulates_into_out_with_beta_one(a_shape, b_shape):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(a_shape).astype(np.float32)
    b = rng.standard_normal(b_shape).astype(np.float32)
    out = rng.standard_normal(np.broadcast_shapes(a_shape[:-2], b_shape[:-2])
                              + (a_shape[-2], b_shape[-1])).astype(np.float32)
    want = out.astype(np.float64) + np.matmul(a.astype(np.float64), b.astype(np.float64))
    with runtime.job():
        assert blas.matmul(a, b, out=out, beta=1.0) is out
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-3)


def test_matmul_of_longer_stacks_and_broadcasts_falls_back_to_the_same_answer():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 3, 4, 5))
    cases = [(a, rng.standard_normal((2, 3, 5, 6))), (a, rng.standard_normal((5, 6))),
             (a, rng.standard_normal((1, 3, 5, 6))),                  # broadcast: np.matmul
             (a.astype(np.float32), rng.standard_normal((5, 6)))]     # mixed dtypes: np.matmul
    for x, y in cases:
        np.testing.assert_allclose(blas.matmul(x, y), np.matmul(x, y), rtol=1e-6)


def test_matmul_refuses_a_wrong_out():
    a, b = np.ones((4, 5), np.float32), np.ones((5, 6), np.float32)
    with pytest.raises(ValueError, match="out must be C-contiguous float32 of shape"):
        blas.matmul(a, b, out=np.empty((6, 4), np.float32))
    with pytest.raises(ValueError, match="beta needs out"):
        blas.matmul(a, b, beta=1.0)


def _with_threads(n, function):
    import numba
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        with runtime.job():
            return function()
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 300), n=st.integers(1, 300), k=st.integers(1, 80),
       stack=st.sampled_from([None, 1, 3, 40]), seed=st.integers(0, 2 ** 16))
def test_matmul_gives_the_same_bits_on_any_thread_count(m, n, k, stack, seed):
    """Blocks are cut from the shapes alone: a BLAS kernel's rounding may depend on the
    block it is given, and the answer must not depend on the machine's cores."""
    rng = np.random.default_rng(seed)
    lead = () if stack is None else (stack,)
    a = rng.standard_normal(lead + (m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    np.testing.assert_array_equal(_with_threads(1, lambda: blas.matmul(a, b)),
                                  _with_threads(2, lambda: blas.matmul(a, b)))


def test_occlusion_gives_the_same_bits_on_any_thread_count():
    import kryptonref as kr
    model = kr.zoo("demo_vgg", image_size=64)
    image = np.random.default_rng(0).standard_normal((3, 64, 64)).astype(np.float32)
    one, two = (_with_threads(n, lambda: kr.occlusion(model, image, patch=8, stride=4))
                for n in (1, 2))
    np.testing.assert_array_equal(one.heatmap, two.heatmap)
