"""BLAS GEMM callable from Numba kernels, with leading dimensions and beta.

``np.dot`` inside ``@njit`` needs contiguous operands and cannot accumulate;
the convolution kernels need both (a GEMM whose operand is a column window of
a larger buffer, accumulated over kernel rows, written straight into an NCHW
output). SciPy exports the Fortran BLAS through ``scipy.linalg.cython_blas``;
its ``sgemm``/``dgemm`` function pointers are passed to the kernels as
arguments, which keeps the kernels cacheable.
"""
from __future__ import annotations

import ctypes

import numpy as np
from numba.core.extending import get_cython_function_address

from .._numba import KERNEL, njit

__all__ = ["gemm", "gemm_function"]

_GEMM_TYPE = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * 13))
_FUNCTIONS: dict = {}


def gemm_function(dtype):
    """The BLAS ``sgemm`` (float32) or ``dgemm`` (float64) as a ctypes function."""
    key = np.dtype(dtype).char
    if key not in _FUNCTIONS:
        name = {"f": "sgemm", "d": "dgemm"}[key]
        address = get_cython_function_address("scipy.linalg.cython_blas", name)
        _FUNCTIONS[key] = _GEMM_TYPE(address)
    return _FUNCTIONS[key]


@njit(**KERNEL)
def gemm(fn, m, n, k, a, a_off, lda, b, b_off, ldb, c, c_off, ldc, beta):
    """Row-major ``C[m, n] = A[m, k] @ B[k, n] + beta * C`` on flat arrays.

    ``A`` starts at ``a[a_off]`` with rows ``lda`` apart, likewise ``B`` and ``C``.
    Column-major BLAS computes ``C^T = B^T A^T``, which is the same memory.
    """
    no_transpose = np.empty(1, np.uint8)
    no_transpose[0] = 78  # 'N'
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
    fn(no_transpose.ctypes, no_transpose.ctypes, dims[0:].ctypes, dims[1:].ctypes,
       dims[2:].ctypes, scalars[0:].ctypes, b[b_off:].ctypes, dims[3:].ctypes,
       a[a_off:].ctypes, dims[4:].ctypes, scalars[1:].ctypes, c[c_off:].ctypes,
       dims[5:].ctypes)
