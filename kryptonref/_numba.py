"""Numba configuration shared by every kernel module.

Numba's OpenMP threads spin while they wait and fight OpenBLAS's threads for
the cores (DESIGN.md section 8: a 20x20 patch took 8 ms instead of 0.3 ms).
Unless the user chose a threading layer, kryptonref selects Numba's
``workqueue`` layer, whose idle threads sleep, before any parallel kernel
compiles. Kernels parallelise across positions and channels, never inside a
tiny patch, and leave GEMMs to BLAS.
"""
import functools
import os
import threading

import numba

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

#: Whether parallel kernels must be launched from one thread at a time: the
#: ``workqueue`` layer aborts the whole process on concurrent launches, the
#: ``tbb`` and ``omp`` layers do not.
SERIALISE = numba.config.THREADING_LAYER not in ("tbb", "omp", "threadsafe")
_LOCK = threading.RLock()


def exclusive(function):
    """Run ``function`` under a process-wide re-entrant lock (when :data:`SERIALISE`).

    kryptonref's entry points (``Model.run_on``, ``incremental_inference``,
    ``occlusion``) take it, so calls from several Python threads queue up
    instead of crashing the interpreter; each call still uses every core.
    """
    @functools.wraps(function)
    def locked(*args, **kwargs):
        if not SERIALISE:
            return function(*args, **kwargs)
        with _LOCK:
            return function(*args, **kwargs)
    return locked

#: Decorator options of every CPU kernel: compiled once, cached on disk.
KERNEL = dict(cache=True, nogil=True, fastmath=False)
njit = numba.njit
prange = numba.prange
