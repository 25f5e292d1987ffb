"""numba-cuda, imported lazily, and what every CUDA kernel module shares.

Importing this module imports ``numba.cuda``; only the CUDA backend
(``device="cuda"``) and its kernel modules do, so the CPU path never needs
numba-cuda. Under Numba's simulator (``NUMBA_ENABLE_CUDASIM=1`` set before
``numba.cuda`` is imported) the same kernels run on the CPU, and launches use
few threads to keep simulated runs fast (DESIGN.md section 8).
"""
from __future__ import annotations

try:
    from numba import cuda
    from numba.core import config as _config
except ImportError as exc:  # pragma: no cover - numba always ships numba.cuda today
    raise ImportError("device='cuda' needs numba-cuda: pip install 'kryptonref[cuda]'") from exc

__all__ = ["cuda", "SIMULATOR", "launch", "blocks_for", "cuda_error"]

#: True when Numba's CUDA simulator runs the kernels on the CPU.
SIMULATOR = bool(_config.ENABLE_CUDASIM)

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
