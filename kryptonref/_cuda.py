"""numba-cuda, imported lazily, and what every CUDA kernel module shares.

Importing this module imports ``numba.cuda``; only the CUDA backend
(``device="cuda"``) and its kernel modules do, so the CPU path never needs
numba-cuda. Under Numba's simulator (``NUMBA_ENABLE_CUDASIM=1`` set before
``numba.cuda`` is imported) the same kernels run on the CPU, and launches use
few threads to keep simulated runs fast (``docs/design.md``, Performance facts).
"""
from __future__ import annotations

try:
    from numba import cuda
    from numba.core import config as _config
except ImportError as exc:  # pragma: no cover - numba always ships numba.cuda today
    raise ImportError("device='cuda' needs numba-cuda: pip install 'kryptonref[cuda]'") from exc

import os

__all__ = ["cuda", "SIMULATOR", "launch", "launch_rows", "blocks_for", "cuda_error",
           "cupy_or_none", "unravel3", "unravel4"]

#: True when Numba's CUDA simulator runs the kernels on the CPU.
SIMULATOR = bool(getattr(_config, "ENABLE_CUDASIM", 0))

if "NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS" not in os.environ:
    # Region kernels of small patches legitimately launch few blocks.
    try:
        from numba.cuda.core import config as _cuda_config
        _cuda_config.CUDA_LOW_OCCUPANCY_WARNINGS = 0
    except ImportError:  # numba's built-in CUDA target
        setattr(_config, "CUDA_LOW_OCCUPANCY_WARNINGS", 0)

#: Threads per block of the grid-stride kernels.
THREADS = 32 if SIMULATOR else 256
#: Upper bound on blocks of a grid-stride launch (each thread then loops).
MAX_BLOCKS = 2 if SIMULATOR else 16384


def blocks_for(total):
    """Blocks of :data:`THREADS` threads for a grid-stride loop over ``total`` items."""
    return max(1, min(MAX_BLOCKS, -(-int(total) // THREADS)))


def launch(kernel, total, *args):
    """Launch a 1-D grid-stride ``kernel`` over ``total`` items (nothing when 0)."""
    if total > 0:
        kernel[blocks_for(total), THREADS](*args)


@cuda.jit(device=True, inline=True)
def unravel3(index, size1, size2):
    """``(i0, i1, i2)`` of a flat index into a C-ordered ``(n0, size1, size2)`` array."""
    i2 = index % size2
    rest = index // size2
    return rest // size1, rest % size1, i2


@cuda.jit(device=True, inline=True)
def unravel4(index, size1, size2, size3):
    """``(i0, i1, i2, i3)`` of a flat index into a C-ordered ``(n0, size1, size2, size3)`` array."""
    i3 = index % size3
    i0, i1, i2 = unravel3(index // size3, size1, size2)
    return i0, i1, i2, i3


def launch_rows(kernel, n_rows, row_size, *args):
    """Launch a 2-D ``kernel`` over ``n_rows`` rows of ``row_size`` items each.

    The kernel loops over rows from ``cuda.grid(2)[1]`` with stride
    ``cuda.gridsize(2)[1]`` and over a row's items from ``cuda.grid(2)[0]`` with
    stride ``cuda.gridsize(2)[0]``, so per-row index arithmetic (a channel, an
    item) is done once per row, not per element.
    Short rows (small regions) share a block, and a warp: ``blockDim.x`` is the
    row size rounded up to a power of two, ``blockDim.y`` the rest.
    """
    if n_rows <= 0 or row_size <= 0:
        return
    threads_x = min(THREADS, 1 << (int(row_size) - 1).bit_length())
    threads_y = max(1, THREADS // threads_x)
    blocks_x = max(1, min(-(-int(row_size) // threads_x), MAX_BLOCKS))
    blocks_y = max(1, min(-(-int(n_rows) // threads_y), 65535, MAX_BLOCKS // blocks_x))
    kernel[(blocks_x, blocks_y), (threads_x, threads_y)](*args)


def cuda_error():
    """Why CUDA cannot be used here, as a message for a RuntimeError, or None."""
    if SIMULATOR:
        return None
    try:
        if cuda.is_available():
            return None
    except Exception as exc:  # the driver itself failed to load
        return f"the CUDA driver could not be loaded ({exc})"
    return ("no CUDA GPU is available (numba.cuda.is_available() is False); "
            "use device='cpu', or set NUMBA_ENABLE_CUDASIM=1 to run the CUDA kernels "
            "in Numba's (slow) simulator")


_CUPY: list = []


def cupy_or_none():
    """CuPy if it is installed and sees a GPU (never under the simulator), else None.

    CuPy is optional (extra ``kryptonref[cupy]``): it gives the CUDA backend
    cuBLAS GEMMs and a caching memory pool. TF32 stays off (``CUPY_TF32=0``
    unless the user set it) so float32 results stay float32-exact.
    """
    if not _CUPY:
        module = None
        if not SIMULATOR:
            os.environ.setdefault("CUPY_TF32", "0")
            try:
                import cupy
                cupy.cuda.runtime.getDeviceCount()
                module = cupy
            except Exception:
                module = None
        _CUPY.append(module)
    return _CUPY[0]
