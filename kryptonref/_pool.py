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

_STATE: dict = {"pool": None, "workers": 0}
_LOCK = threading.Lock()


def _pool(workers):
    with _LOCK:
        if _STATE["pool"] is None or _STATE["workers"] != workers:
            if _STATE["pool"] is not None:
                _STATE["pool"].shutdown(wait=False)
            _STATE["pool"] = ThreadPoolExecutor(max_workers=workers,
                                                thread_name_prefix="kryptonref-elementwise")
            _STATE["workers"] = workers
        return _STATE["pool"]


def map_elementwise(function, x, out):
    """``out[...] = function(x)`` for an element-wise ``function``, in chunks over
    Numba's thread count when ``x`` is large and both arrays are C-contiguous.

    Returns ``out``.
    """
    import numba
    workers = numba.get_num_threads()
    if (workers < 2 or x.size < PARALLEL_ELEMENTS or x.shape != out.shape
            or not x.flags.c_contiguous or not out.flags.c_contiguous):
        out[...] = function(x)
        return out
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    errors = np.geterr()   # the caller's np.errstate, which the pool's threads do not share

    def run(start):
        stop = start + CHUNK_ELEMENTS
        with np.errstate(**errors):
            flat_out[start:stop] = function(flat_x[start:stop])

    # list() waits for every chunk and re-raises the first error
    list(_pool(workers).map(run, range(0, x.size, CHUNK_ELEMENTS)))
    return out


def map_items(function, x, out):
    """``out[...] = function(x)`` for a ``function`` that treats each item of axis 0 on its
    own (a normalisation over channels), in groups of items over Numba's thread count
    when ``x`` is large. Returns ``out``."""
    import numba
    workers = min(numba.get_num_threads(), x.shape[0]) if x.ndim else 1
    if workers < 2 or x.size < PARALLEL_ELEMENTS or x.shape != out.shape:
        out[...] = function(x)
        return out
    edges = [x.shape[0] * i // workers for i in range(workers + 1)]
    errors = np.geterr()

    def run(i):
        with np.errstate(**errors):
            out[edges[i]:edges[i + 1]] = function(x[edges[i]:edges[i + 1]])

    list(_pool(workers).map(run, range(workers)))
    return out
