"""Where the engine's arrays live and which kernels compute on them.

The incremental engine plans every batch on the host (regions and offsets are
small integer arrays, :mod:`kryptonref.schedule`) and hands the arithmetic to
a backend:

* ``"cpu"``: NumPy arrays, Numba CPU kernels and BLAS (:mod:`kryptonref.layers`);
* ``"cuda"``: numba-cuda device arrays and kernels
  (:mod:`kryptonref.layers.ops_cuda`); materialised activations and weights stay
  on the device, and a batch moves one packed integer array to the device and
  its outputs back.

Both expose the same small interface, so the engine, full inference and the
occlusion API are written once.
"""
from __future__ import annotations

import contextlib

import numpy as np

from .layers import ops
from .layers.window import gather_windows, stitch

__all__ = ["DEVICES", "get_backend"]

#: Devices accepted by ``device=`` arguments.
DEVICES = ("cpu", "cuda")


class CPUBackend:
    """NumPy arrays and Numba CPU kernels (the reference backend)."""

    name = "cpu"
    gather_windows = staticmethod(gather_windows)
    stitch = staticmethod(stitch)
    region = staticmethod(ops.region)
    full = staticmethod(ops.full)
    elementwise = staticmethod(ops.elementwise)

    def to_device(self, array):
        """The array itself: host memory is the CPU's device memory."""
        return array

    def to_host(self, array):
        return array

    def pack_ints(self, rows):
        """Per-batch integer offsets, as the kernels read them (no copy on the CPU)."""
        return [np.asarray(r, np.int64) for r in rows]

    def params(self, model):
        return model.prepared

    def batch_scope(self):
        """Context around one batch's arithmetic (nothing to do on the CPU)."""
        return contextlib.nullcontext()

    def empty(self, shape, dtype):
        """An uninitialised array."""
        return np.empty(shape, dtype)

    def repeat(self, array, n_items):
        """``(n_items,) + array.shape``: ``array`` repeated along a new batch axis."""
        return np.ascontiguousarray(np.broadcast_to(array, (n_items,) + array.shape))


_BACKENDS = {}


def get_backend(device):
    """The backend object for ``device`` (``"cpu"`` or ``"cuda"``).

    Raises
    ------
    ValueError
        For an unknown device name.
    ImportError
        For ``"cuda"`` without numba-cuda installed (extra ``kryptonref[cuda]``).
    RuntimeError
        For ``"cuda"`` when no usable GPU (or CUDA driver) is found.
    """
    if not isinstance(device, str) or device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device not in _BACKENDS:
        if device == "cpu":
            _BACKENDS[device] = CPUBackend()
        else:
            from .layers.ops_cuda import CUDABackend
            _BACKENDS[device] = CUDABackend()
    return _BACKENDS[device]
