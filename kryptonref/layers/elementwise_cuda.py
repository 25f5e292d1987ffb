"""Position-wise layers on the GPU (CUDA twin of :mod:`kryptonref.layers.elementwise`)."""
from __future__ import annotations

import numpy as np

from .._cuda import cuda, launch, launch_rows
from ..backends.cuda_memory import empty
from .registry import Kernels

__all__ = ["RELU", "RELU6", "LEAKY_RELU", "IDENTITY", "AFFINE", "KERNELS"]


@cuda.jit(cache=True)
def _relu(x, out):
    for idx in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        value = x[idx]
        out[idx] = value if value > 0 or value != value else 0.0


@cuda.jit(cache=True)
def _relu6(x, out):
    for idx in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        value = x[idx]
        if value < 0:
            value = 0.0
        elif value > 6:
            value = 6.0
        out[idx] = value


@cuda.jit(cache=True)
def _leaky_relu(x, slope, out):
    for idx in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        value = x[idx]
        out[idx] = value * slope if value < 0 else value


@cuda.jit(cache=True)
def _affine(x, scale, shift, out):
    # x, out: (rows = B*C, plane); channel decoded once per row
    n_channels, plane = scale.shape[0], x.shape[1]
    first, first_row = cuda.grid(2)
    step, row_step = cuda.gridsize(2)
    for row in range(first_row, x.shape[0], row_step):
        c = row % n_channels
        a, s = scale[c], shift[c]
        for p in range(first, plane, step):
            out[row, p] = x[row, p] * a + s


def _flat(x):
    return x.reshape((x.size,))


def map_elements(kernel, x, *args, out=None):
    """Launch a 1-D element kernel ``kernel(x_flat, *args, out_flat)``; ``out`` new by default."""
    if out is None:
        out = empty(x.shape, x.dtype)
    launch(kernel, x.size, _flat(x), *args, _flat(out))
    return out


def _apply_relu(layer, params, x, out=None):
    return map_elements(_relu, x, out=out)


def _apply_relu6(layer, params, x, out=None):
    return map_elements(_relu6, x, out=out)


def _apply_leaky_relu(layer, params, x, out=None):
    return map_elements(_leaky_relu, x, np.dtype(x.dtype).type(layer.negative_slope), out=out)


def _identity(layer, params, x, out=None):
    return x


def _apply_affine(layer, params, x, out=None):
    """``x * scale + shift`` per channel (batch norm, folded)."""
    plane = int(np.prod(x.shape[2:], dtype=np.int64))
    rows = x.size // max(plane, 1)
    if out is None:
        out = empty(x.shape, x.dtype)
    launch_rows(_affine, rows, plane, x.reshape((rows, plane)), params["scale"],
                params["shift"], out.reshape((rows, plane)))
    return out


#: The CUDA kernels of the layer types of :mod:`kryptonref.layers.elementwise`.
RELU = Kernels(apply=_apply_relu)
RELU6 = Kernels(apply=_apply_relu6)
LEAKY_RELU = Kernels(apply=_apply_leaky_relu)
IDENTITY = Kernels(apply=_identity)
AFFINE = Kernels(apply=_apply_affine)

#: Kernels and their signatures (``{T}``: the float type) for the PTX compile test.
KERNELS = [
    (_relu, "void({T}[::1], {T}[::1])"),
    (_relu6, "void({T}[::1], {T}[::1])"),
    (_leaky_relu, "void({T}[::1], {T}, {T}[::1])"),
    (_affine, "void({T}[:,::1], {T}[::1], {T}[::1], {T}[:,::1])"),
]
