"""The CUDA backend: numba-cuda device arrays and kernels (``device="cuda"``).

Weights and materialised activations stay on the device; a batch moves its
packed integer offsets to the device and its outputs back. Each layer type's
CUDA kernels live in the ``_cuda`` twin of its family module and are found
through the layer registry (:func:`kryptonref.layers.registry.cuda_kernels`);
device memory comes from :mod:`.cuda_memory`. Importing this module imports
numba-cuda (extra ``kryptonref[cuda]``).
"""
from __future__ import annotations

import numpy as np

from .._cuda import cuda, cuda_error
from ..layers.registry import cuda_kernels
from ..layers.window_cuda import gather_windows, pad_full, repeat, stitch
from . import cuda_memory
from .base import KernelBackend

__all__ = ["CUDABackend"]


class CUDABackend(KernelBackend):
    """numba-cuda device arrays and kernels (``device="cuda"``).

    Raises RuntimeError at construction when no GPU is usable (the simulator,
    ``NUMBA_ENABLE_CUDASIM=1``, counts as usable).
    """

    name = "cuda"
    gather_windows = staticmethod(gather_windows)
    stitch = staticmethod(stitch)
    pad_full = staticmethod(pad_full)
    repeat = staticmethod(repeat)
    empty = staticmethod(cuda_memory.empty)
    zeros_int = staticmethod(cuda_memory.zeros_int)
    memory = staticmethod(cuda_memory.memory)
    reset_peak = staticmethod(cuda_memory.reset_peak)

    def __init__(self):
        problem = cuda_error()
        if problem is not None:
            raise RuntimeError(f"device='cuda' is not usable: {problem}")
        super().__init__()

    def kernels(self, layer):
        return cuda_kernels(layer)

    def to_device(self, array):
        """Copy a host array (made C-contiguous) to the device; device arrays pass through."""
        return cuda_memory.upload(array)

    def to_host(self, array):
        """Copy a device array back to a NumPy array."""
        if isinstance(array, np.ndarray):
            return array
        return array.copy_to_host()

    def pack_ints(self, rows):
        """Upload a batch's integer offsets in one transfer; one device row per input row."""
        packed = self.to_device(np.stack([np.asarray(r, np.int64) for r in rows]))
        return [packed[i] for i in range(len(rows))]

    def _prepare(self, model):
        """The parameters on the device; MemoryError naming the size when they do not fit."""
        needed = sum(np.asarray(v).nbytes for p in model.params.values() for v in p.values())
        free = cuda_memory.free_bytes()
        if free is not None and needed > free:
            raise MemoryError(f"the model's weights need {cuda_memory.human_size(needed)} of "
                              f"GPU memory; only {cuda_memory.human_size(free)} are free")
        return super()._prepare(model)

    def _store(self, params):
        return {k: cuda_memory.upload(v) for k, v in params.items()}

    @staticmethod
    def batch_scope():
        """Defer freeing device memory to the end of a batch.

        ``cuMemFree`` synchronises the device; freeing a batch's temporaries
        one by one would stall the kernel queue many times per batch.
        """
        return cuda.defer_cleanup()

    @staticmethod
    def synchronize():
        """Wait for every launched kernel (for timing)."""
        cuda.synchronize()
