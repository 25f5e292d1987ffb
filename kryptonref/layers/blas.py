"""BLAS GEMMs called from Numba kernels, and :func:`matmul`, which splits GEMMs over
Numba's threads.

``np.dot`` inside ``@njit`` needs contiguous operands and cannot accumulate;
the convolution kernels need both (a GEMM whose operand is a column window of
a larger buffer, accumulated over kernel rows, written straight into an NCHW
output). SciPy exports the Fortran BLAS through ``scipy.linalg.cython_blas``;
its ``sgemm``/``dgemm`` function pointers are passed to the kernels as
arguments, which keeps the kernels cacheable.

Every GEMM of the CPU kernels runs this way, on Numba's threads, one
single-threaded BLAS call per thread: while a job runs, kryptonref limits the
process's BLAS libraries to one thread (the ``single_thread_blas`` setting,
:mod:`kryptonref.runtime`). A multi-threaded BLAS between Numba kernels costs
twice: its threads spin for a while after each GEMM and take the cores from the
kernel that follows. Measured on 2 cores (``docs/design.md``, Performance facts):
a 512-channel Winograd convolution of 16 windows of 7x7 took 31 ms with
``np.matmul`` between its transforms and 15 ms this way.

How a GEMM is cut into blocks depends on its shape alone, never on the thread
count (:func:`_split`): BLAS kernels may round differently on blocks of other
sizes, and kryptonref gives the same bits on any number of threads (tested).
"""
from __future__ import annotations

import ctypes

import numpy as np
from numba.core.extending import get_cython_function_address

from .._numba import KERNEL, njit, prange

__all__ = ["gemm", "gemm_function", "matmul"]

_GEMM_TYPE = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * 13))
_FUNCTIONS: dict = {}
#: Columns (or rows) a block of one GEMM is rounded to.
BLOCK_ALIGN = 16
#: Tasks a stack of GEMMs is cut into, where blocks stay :data:`MIN_BLOCK` wide: enough
#: to share among 32 threads.
MIN_TASKS = 32
#: Narrowest block (columns or rows) a GEMM is cut into.
MIN_BLOCK = 64


def gemm_function(dtype):
    """The BLAS ``sgemm`` (float32) or ``dgemm`` (float64) as a ctypes function."""
    key = np.dtype(dtype).char
    if key not in _FUNCTIONS:
        name = {"f": "sgemm", "d": "dgemm"}[key]
        address = get_cython_function_address("scipy.linalg.cython_blas", name)
        _FUNCTIONS[key] = _GEMM_TYPE(address)
    return _FUNCTIONS[key]


@njit(**KERNEL)
def gemm(fn, m, n, k, a, a_off, lda, b, b_off, ldb, c, c_off, ldc, beta, trans_a=False,
         trans_b=False):
    """Row-major ``C[m, n] = op(A) @ op(B) + beta * C`` on flat arrays.

    ``A`` starts at ``a[a_off]`` with rows ``lda`` apart, likewise ``B`` and ``C``;
    ``trans_a`` means ``a`` holds ``A^T`` (``k`` rows of ``m``), likewise
    ``trans_b``. Column-major BLAS computes ``C^T = op(B)^T op(A)^T``, which is
    the same memory.
    """
    flags = np.empty(2, np.uint8)
    flags[0] = 84 if trans_b else 78  # 'T' / 'N'
    flags[1] = 84 if trans_a else 78
    dims = np.empty(6, np.int32)
    dims[0] = n
    dims[1] = m
    dims[2] = k
    dims[3] = ldb
    dims[4] = lda
    dims[5] = ldc
    scalars = np.empty(2, c.dtype)
    scalars[0] = 1.0
    scalars[1] = beta
    fn(flags[0:].ctypes, flags[1:].ctypes, dims[0:].ctypes, dims[1:].ctypes,
       dims[2:].ctypes, scalars[0:].ctypes, b[b_off:].ctypes, dims[3:].ctypes,
       a[a_off:].ctypes, dims[4:].ctypes, scalars[1:].ctypes, c[c_off:].ctypes,
       dims[5:].ctypes)


@njit(parallel=True, **KERNEL)
def _matmul_tasks(fn, a, a_step, trans_a, b, b_step, trans_b, c, m, n, k, n_stack, n_blocks,
                  split_rows, beta):
    """``c[s] = op(a[s]) @ op(b[s]) + beta * c[s]`` for ``n_stack`` GEMMs, each cut into
    ``n_blocks`` row (``split_rows``) or column blocks, one BLAS call per block.

    ``a_step``/``b_step``: elements between consecutive matrices of the flat
    ``a``/``b`` (0: one matrix shared by the whole stack).
    """
    lda = m if trans_a else k
    ldb = k if trans_b else n
    length = m if split_rows else n
    for task in prange(n_stack * n_blocks):
        s = task // n_blocks
        block = task % n_blocks
        lo = _block_edge(block, n_blocks, length)
        hi = _block_edge(block + 1, n_blocks, length)
        if hi <= lo:
            continue
        a_off, b_off, c_off = s * a_step, s * b_step, s * m * n
        if split_rows:
            a_off += lo if trans_a else lo * lda
            c_off += lo * n
            gemm(fn, hi - lo, n, k, a, a_off, lda, b, b_off, ldb, c, c_off, n, beta,
                 trans_a, trans_b)
        else:
            b_off += lo * ldb if trans_b else lo
            c_off += lo
            gemm(fn, m, hi - lo, k, a, a_off, lda, b, b_off, ldb, c, c_off, n, beta,
                 trans_a, trans_b)


@njit(inline="always", **KERNEL)
def _block_edge(block, n_blocks, length):
    """Start of ``block`` of ``n_blocks`` near-equal blocks of ``length``, rounded to
    :data:`BLOCK_ALIGN` (the last block ends at ``length``)."""
    if block >= n_blocks:
        return length
    edge = block * length // n_blocks
    return min(length, (edge + BLOCK_ALIGN // 2) // BLOCK_ALIGN * BLOCK_ALIGN)


def _operand(x):
    """``(data, transposed)``: a C-contiguous array holding the stacked matrices ``x``,
    itself (``transposed`` False) or its last two axes swapped (True); a copy only
    when ``x`` is neither."""
    if x.flags.c_contiguous:
        return x, False
    swapped = np.swapaxes(x, -1, -2)
    if swapped.flags.c_contiguous:
        return swapped, True
    return np.ascontiguousarray(x), False


def _split(n_stack, m, n):
    """``(n_blocks, split_rows)``: cut each of ``n_stack`` GEMMs along the longer side of
    its output into enough blocks for :data:`MIN_TASKS` tasks, none narrower than
    :data:`MIN_BLOCK`.

    The cut depends on the shapes only, never on the thread count: a BLAS
    kernel's rounding can depend on the size of the block it is given, and the
    same input must give the same bits on any machine and thread count.
    """
    split_rows = m > n
    length = m if split_rows else n
    n_blocks = max(1, min(-(-MIN_TASKS // n_stack), length // MIN_BLOCK))
    return n_blocks, split_rows


def _common_leading_shape(a, b):
    """The stack shape of ``a`` and ``b`` when one has more than one stack axis and the
    other has the same stack axes or none (``None`` otherwise)."""
    if max(a.ndim, b.ndim) <= 3 or min(a.ndim, b.ndim) < 2:
        return None
    if a.ndim == 2:
        return b.shape[:-2]
    if b.ndim == 2 or a.shape[:-2] == b.shape[:-2]:
        return a.shape[:-2]
    return None


def matmul(a, b, out=None, beta=0.0):
    """``a @ b`` (NumPy's ``matmul`` semantics) as single-threaded BLAS GEMMs on Numba's
    threads.

    Parameters
    ----------
    a : ndarray (M, K) or (S, M, K)
    b : ndarray (K, N) or (S, K, N)
        A 2-D operand is shared by every matrix of a 3-D one. Transposed views of
        C-contiguous arrays are passed to BLAS as such (no copy). Without ``out``
        and ``beta``, stacks of more axes (``(..., M, K)``, both the same or one
        2-D) are flattened to one.
    out : ndarray (M, N) or (S, M, N), optional
        C-contiguous destination of ``a``'s dtype.
    beta : float
        ``out = a @ b + beta * out`` (0: ``out``'s contents are ignored).

    Returns
    -------
    ndarray

    Other shapes, dtypes other than float32/float64, and mixed dtypes fall back
    to ``np.matmul`` (``beta`` 0 only).
    """
    a, b = np.asarray(a), np.asarray(b)
    dtype = a.dtype
    lead = _common_leading_shape(a, b)
    if lead is not None and out is None and not beta:   # stacks of more than one axis
        flat = matmul(a.reshape((-1,) + a.shape[-2:]) if a.ndim > 2 else a,
                      b.reshape((-1,) + b.shape[-2:]) if b.ndim > 2 else b)
        return flat.reshape(lead + flat.shape[-2:])
    if (dtype != b.dtype or dtype.char not in "fd" or not 2 <= a.ndim <= 3
            or not 2 <= b.ndim <= 3 or a.shape[-1] != b.shape[-2]
            or (a.ndim == b.ndim == 3 and a.shape[0] != b.shape[0])):
        if beta:
            raise ValueError("matmul: beta needs float32/float64 stacks of equal length")
        return np.matmul(a, b, out=out)
    m, k = a.shape[-2:]
    n = b.shape[-1]
    n_stack = max(a.shape[0] if a.ndim == 3 else 1, b.shape[0] if b.ndim == 3 else 1)
    shape = (m, n) if a.ndim == b.ndim == 2 else (n_stack, m, n)
    if a.ndim == 3 and b.ndim == 2 and a.flags.c_contiguous:
        a, m, n_stack = a.reshape(n_stack * m, k), n_stack * m, 1   # one tall GEMM
    if out is None:
        if beta:
            raise ValueError("matmul: beta needs out")
        out = np.empty(shape, dtype)
    elif out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"matmul: out must be C-contiguous {dtype} of shape {shape}, got "
                         f"{out.dtype} {out.shape}")
    if out.size == 0:
        return out
    if k == 0:
        if not beta:
            out[...] = 0
        return out
    a_data, trans_a = _operand(a)
    b_data, trans_b = _operand(b)
    a_step = m * k if a.ndim == 3 else 0
    b_step = k * n if b.ndim == 3 else 0
    n_blocks, split_rows = _split(n_stack, m, n)
    _matmul_tasks(gemm_function(dtype), a_data.reshape(-1), a_step, trans_a, b_data.reshape(-1),
                  b_step, trans_b, out.reshape(-1), m, n, k, n_stack, n_blocks, split_rows,
                  dtype.type(beta))
    return out
