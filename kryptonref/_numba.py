"""Numba options shared by every CPU kernel module.

Kernels parallelise across positions and channels, never inside a tiny
patch, and leave GEMMs to BLAS. Which threading layer runs them is chosen by
:mod:`kryptonref.runtime` when an entry point runs, never at import.

Kernels are cached on disk when Numba has somewhere writable to put them (the
package's ``__pycache__``, ``NUMBA_CACHE_DIR`` or the user's cache folder). Where
there is none (a read-only install and a read-only ``$HOME``), Numba would refuse to
compile a ``cache=True`` function at import; kryptonref then compiles without the
disk cache and says so once.
"""
import os
import warnings

import numba

njit = numba.njit
prange = numba.prange


def disk_cache_available(source=__file__):
    """Whether Numba can cache a function defined in ``source`` (the same search Numba
    makes: its cache locators in order, each checked writable)."""
    try:
        from numba.core.caching import CacheImpl
        locators = CacheImpl._locator_classes
    except (ImportError, AttributeError):     # another Numba: let it decide
        return True

    def probe():
        pass
    for locator_class in locators:
        try:
            locator = locator_class.from_function(probe, os.path.abspath(source))
            if locator is None:
                continue
            locator.ensure_cache_path()
            return True
        except OSError:
            continue
        except Exception:                      # a locator Numba itself would skip
            continue
    return False


def kernel_options(cache=None):
    """Decorator options of every CPU kernel: compiled once, cached on disk if possible."""
    if cache is None:
        cache = disk_cache_available()
        if not cache:
            warnings.warn("kryptonref: no writable folder for Numba's kernel cache (set "
                          "NUMBA_CACHE_DIR to one); kernels are compiled in each process",
                          RuntimeWarning, stacklevel=2)
    return dict(cache=bool(cache), nogil=True, fastmath=False)


#: Decorator options of every CPU kernel.
KERNEL = kernel_options()


def kernels_cold(dispatchers):
    """Whether running ``dispatchers`` will compile: one of them has no on-disk cache
    index yet (the first run after installing), or no disk cache at all.

    A heuristic for the command line's "compiling kernels" notice, never for results.
    """
    for dispatcher in dispatchers:
        cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
        index = getattr(cache_file, "_index_path", None)
        if index is None or not os.path.exists(index):
            return True
    return False
