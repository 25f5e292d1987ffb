"""The CPU backend: NumPy arrays, Numba CPU kernels and BLAS (the reference backend)."""
from __future__ import annotations

import contextlib

import numpy as np

from ..layers.registry import entry
from ..layers.window import gather_windows, pad_full, stitch
from .base import KernelBackend

__all__ = ["CPUBackend"]


class CPUBackend(KernelBackend):
    """NumPy arrays and Numba CPU kernels (``device="cpu"``)."""

    name = "cpu"
    gather_windows = staticmethod(gather_windows)
    stitch = staticmethod(stitch)
    pad_full = staticmethod(pad_full)

    def kernels(self, layer):
        return entry(layer).cpu

    def to_device(self, array):
        """The array itself: host memory is the CPU's device memory."""
        return array

    def to_host(self, array):
        return array

    def pack_ints(self, rows):
        """Per-batch integer offsets, as the kernels read them (no copy on the CPU)."""
        return [np.asarray(r, np.int64) for r in rows]

    def batch_scope(self):
        """Context around one batch's arithmetic (nothing to do on the CPU)."""
        return contextlib.nullcontext()

    def empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def repeat(self, array, n_items):
        return np.ascontiguousarray(np.broadcast_to(array, (n_items,) + array.shape))

    def zeros_int(self, n_items):
        return np.zeros(n_items, np.int64)
