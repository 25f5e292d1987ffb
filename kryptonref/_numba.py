"""Numba options shared by every CPU kernel module.

Kernels parallelise across positions and channels, never inside a tiny
patch, and leave GEMMs to BLAS. Which threading layer runs them is chosen by
:mod:`kryptonref.runtime` when an entry point runs, never at import.
"""
import numba

#: Decorator options of every CPU kernel: compiled once, cached on disk.
KERNEL = dict(cache=True, nogil=True, fastmath=False)
njit = numba.njit
prange = numba.prange
