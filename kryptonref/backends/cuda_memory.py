"""Device memory of the CUDA backend: allocation, upload and the memory counters.

Every device array kryptonref makes comes from :func:`empty` (or :func:`upload`,
which copies into one): from CuPy's caching pool when CuPy is installed (the
``cupy`` extra), else from Numba's allocator. The counters behind
:func:`memory` and :func:`reset_peak` (``CUDABackend.memory()``) see them all.
Importing this module imports numba-cuda; only the CUDA backend and the CUDA
kernel modules do.
"""
from __future__ import annotations

import warnings
import weakref

import numpy as np

from .._cuda import SIMULATOR, cuda, cupy_or_none, launch

__all__ = ["empty", "upload", "const_int", "zeros_int", "const_ints", "memory", "reset_peak", "free_bytes",
           "human_size", "KERNELS"]


class _Memory:
    """Bytes of live kryptonref device arrays, and their peak since the last reset.

    Arrays from Numba's allocator are counted one by one (a finalizer per
    array); arrays from CuPy's pool are read off the pool's ``used_bytes()``
    at each allocation, which costs nothing per array.
    """

    counted = 0   # live bytes of Numba-allocated arrays
    peak = 0

    @classmethod
    def live(cls):
        pool = cupy_or_none()
        return cls.counted + (pool.get_default_memory_pool().used_bytes() if pool else 0)

    @classmethod
    def observe(cls):
        cls.peak = max(cls.peak, cls.live())

    @classmethod
    def allocated(cls, nbytes):
        cls.counted += nbytes
        cls.observe()

    @classmethod
    def freed(cls, nbytes):
        cls.counted -= nbytes


def memory():
    """``(live, peak)`` bytes of kryptonref's device arrays (weights, activations).

    With CuPy, the pool's bytes in use (rounded up to its 512-byte blocks).
    """
    _Memory.observe()
    return _Memory.live(), _Memory.peak


def reset_peak():
    """Start a new peak-memory measurement from the bytes live now."""
    _Memory.peak = _Memory.live()


def human_size(nbytes):
    """``nbytes`` for people: KiB below a MiB, MiB below a GiB, else GiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 2**10:.1f} KiB"


def free_bytes():
    """Free bytes on the device (None under the simulator)."""
    if SIMULATOR:
        return None
    return int(cuda.current_context().get_memory_info()[0])


def _out_of_memory(nbytes, exc):
    free = free_bytes()
    where = "" if free is None else f"; {human_size(free)} are free"
    return MemoryError(f"the GPU cannot hold a {human_size(nbytes)} array ({exc}){where}. "
                       f"Use a smaller batch_size, or device='cpu'")


def _is_oom(exc):
    text = str(exc)
    return "OUT_OF_MEMORY" in text.upper() or "out of memory" in text.lower() \
        or type(exc).__name__ == "OutOfMemoryError"


#: Whether device arrays come from CuPy's pool (when CuPy is installed).
_POOL = [True]


def _pooled(shape, dtype, nbytes):
    """A Numba device array whose memory comes from CuPy's caching pool.

    Allocating and freeing through the driver (``cuMemAlloc``/``cuMemFree``) for
    every temporary of every batch stalls the GPU; the pool reuses blocks. The
    array keeps the pool's block alive, and frees it back when it dies.
    """
    block = cupy_or_none().cuda.alloc(max(nbytes, 1))
    desc = {"shape": shape, "strides": None, "typestr": np.dtype(dtype).str,
            "data": (block.ptr, False), "version": 3}
    return cuda.from_cuda_array_interface(desc, owner=block, sync=False)


def empty(shape, dtype):
    """An uninitialised device array, counted in the backend's memory statistics.

    From CuPy's memory pool when CuPy is installed, else from Numba's allocator.
    """
    shape = tuple(int(s) for s in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    try:
        array = None
        if _POOL[0] and cupy_or_none() is not None:
            try:
                array = _pooled(shape, dtype, nbytes)
            except Exception as exc:
                if _is_oom(exc):
                    raise
                _POOL[0] = False
                warnings.warn(f"CuPy's memory pool is not usable ({type(exc).__name__}: {exc}); "
                              f"kryptonref allocates through Numba instead", RuntimeWarning)
        if array is not None:
            _Memory.observe()
            return array
        array = cuda.device_array(shape, dtype)
    except Exception as exc:
        if _is_oom(exc):
            raise _out_of_memory(nbytes, exc) from None
        raise
    _Memory.allocated(nbytes)
    # the memory lives as long as Numba's pointer object, which every view shares
    weakref.finalize(getattr(array, "gpu_data", array), _Memory.freed, nbytes)
    return array


def _c_strides(shape, itemsize):
    strides, step = [], itemsize
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def upload(array):
    """Copy a host array to a new C-contiguous device array, counted like :func:`empty`.

    Device arrays pass through; anything else is a TypeError.
    """
    if not isinstance(array, np.ndarray):
        if hasattr(array, "__cuda_array_interface__") or hasattr(array, "copy_to_host"):
            return array
        raise TypeError(f"expected a NumPy or device array, got {type(array).__name__}")
    if array.strides != _c_strides(array.shape, array.itemsize):
        # also for "contiguous" arrays with odd strides on length-1 axes, which
        # Numba's device arrays cannot reshape without a copy
        array = np.array(array, order="C", copy=True)
    out = empty(array.shape, array.dtype)
    if array.size:
        out.copy_to_device(array)
    return out


@cuda.jit(cache=True)
def _fill_int(out, value):
    for idx in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[idx] = value


_CONSTS: dict = {}


def const_int(n_items, value):
    """A device int64 vector of ``n_items`` copies of ``value`` (cached, never written)."""
    key = (int(n_items), int(value))
    if key not in _CONSTS:
        if len(_CONSTS) > 256:
            _CONSTS.clear()
        out = empty((key[0],), np.int64)
        launch(_fill_int, key[0], out, key[1])
        _CONSTS[key] = out
    return _CONSTS[key]


def zeros_int(n_items):
    """A device int64 vector of zeros (cached)."""
    return const_int(n_items, 0)


_VECTORS: dict = {}


def const_ints(values):
    """A device int64 vector holding ``values`` (a tuple; cached, never written)."""
    key = tuple(int(v) for v in values)
    if key not in _VECTORS:
        if len(_VECTORS) > 256:
            _VECTORS.clear()
        _VECTORS[key] = upload(np.array(key, np.int64))
    return _VECTORS[key]


#: Kernels and their signatures (``{T}``: the float type) for the PTX compile test.
KERNELS = [(_fill_int, "void(int64[::1], int64)")]
