"""Position-wise NumPy work in chunks on several threads.

NumPy's and SciPy's ufuncs release the GIL, so an element-wise function applied
chunk by chunk from a few threads runs on every core, and each chunk's
temporaries stay in the cache. Element-wise means the same result, bit for bit,
as one call on the whole array. Used by the position-wise activations, whose
NumPy definitions (``scipy.special.erf`` in GELU, ``expit`` in SiLU) would
otherwise run on one core between parallel kernels: GELU took 40 % of a
ConvNeXt-style model's occlusion run, and runs 1.7x faster so on 2 cores
(``docs/design.md``, Performance facts).

:func:`map_items` does the same along the first axis, for functions that treat each
item on its own (LayerNorm over the channels of each position).

The pool's threads start at the first call (never at import) and run only NumPy,
never Numba kernels, so Numba's ``workqueue`` layer is not entered from them.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["map_elementwise", "map_items", "PARALLEL_ELEMENTS", "CHUNK_ELEMENTS"]

#: Arrays from this many elements are split; smaller ones run in one call.
PARALLEL_ELEMENTS = 1 << 17
#: Elements per chunk (256 KiB of float32: the temporaries stay in L2; smaller chunks
#: cost more in the pool's overhead than they save, measured on 2 cores).
CHUNK_ELEMENTS = 1 << 16

_STATE: dict = {"pool": None}
_LOCK = threading.Lock()


def _pool():
    """The pool, as many threads as Numba may use (started at the first call)."""
    import numba
    with _LOCK:
        if _STATE["pool"] is None:
            _STATE["pool"] = ThreadPoolExecutor(max_workers=numba.config.NUMBA_NUM_THREADS,
                                                thread_name_prefix="kryptonref-elementwise")
        return _STATE["pool"]


def _workers():
    """Threads to use now: Numba's current thread count (``numba.set_num_threads``)."""
    import numba
    return numba.get_num_threads()


def _one_call(function, x, out):
    """``function(x)`` in ``x``'s dtype, written into ``out`` when given."""
    if out is None:
        return np.asarray(function(x), dtype=x.dtype)
    out[...] = function(x)
    return out


def _in_parallel(function, parts, workers):
    """``dst[...] = function(src)`` for every ``(src, dst)`` of ``parts``, shared among
    ``workers`` threads of the pool, under the caller's ``np.errstate`` (which the
    pool's threads do not share). Errors reach the caller."""
    errors = np.geterr()

    def run(first):
        with np.errstate(**errors):
            for src, dst in parts[first::workers]:
                dst[...] = function(src)
    list(_pool().map(run, range(workers)))   # waits for all; re-raises the first error


def map_elementwise(function, x, out=None):
    """``function(x)`` (into ``out`` when given) for an element-wise ``function``, in
    chunks of :data:`CHUNK_ELEMENTS` over Numba's thread count when ``x`` is large and
    C-contiguous (and ``out`` too)."""
    workers = _workers()
    if (workers < 2 or x.size < PARALLEL_ELEMENTS or not x.flags.c_contiguous
            or (out is not None and (out.shape != x.shape or not out.flags.c_contiguous))):
        return _one_call(function, x, out)
    if out is None:
        out = np.empty(x.shape, x.dtype)
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    parts = [(flat_x[i:i + CHUNK_ELEMENTS], flat_out[i:i + CHUNK_ELEMENTS])
             for i in range(0, x.size, CHUNK_ELEMENTS)]
    _in_parallel(function, parts, workers)
    return out


def map_items(function, x, out=None):
    """``function(x)`` (into ``out`` when given) for a ``function`` that treats each item
    of axis 0 on its own (a normalisation over channels), in one group of items per
    thread when ``x`` is large."""
    workers = min(_workers(), x.shape[0]) if x.ndim else 1
    if workers < 2 or x.size < PARALLEL_ELEMENTS or (out is not None and out.shape != x.shape):
        return _one_call(function, x, out)
    if out is None:
        out = np.empty(x.shape, x.dtype)
    edges = [x.shape[0] * i // workers for i in range(workers + 1)]
    parts = [(x[lo:hi], out[lo:hi]) for lo, hi in zip(edges, edges[1:])]
    _in_parallel(function, parts, workers)
    return out
