"""Numba configuration shared by every kernel module.

Numba's OpenMP threads spin while they wait and fight OpenBLAS's threads for
the cores (DESIGN.md section 8: a 20x20 patch took 8 ms instead of 0.3 ms).
Unless the user chose a threading layer, kryptonref selects Numba's
``workqueue`` layer, whose idle threads sleep, before any parallel kernel
compiles. Kernels parallelise across positions and channels, never inside a
tiny patch, and leave GEMMs to BLAS.
"""
import os

import numba

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

#: Decorator options of every CPU kernel: compiled once, cached on disk.
KERNEL = dict(cache=True, nogil=True, fastmath=False)
njit = numba.njit
prange = numba.prange
