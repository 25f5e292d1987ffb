"""Merges on the GPU (CUDA twin of :mod:`kryptonref.layers.merge`)."""
from __future__ import annotations

import numpy as np

from .._cuda import cuda, launch
from ..backends.cuda_memory import empty
from .registry import Kernels

__all__ = ["ADD", "CONCAT", "MUL", "KERNELS"]


@cuda.jit(cache=True)
def _add(a, b, out):
    for idx in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        out[idx] = a[idx] + b[idx]


@cuda.jit(cache=True)
def _copy_channels(src, c_offset, out):
    # out[b, c_offset + c, p] = src[b, c, p]
    n_channels, plane = src.shape[1], src.shape[2]
    total = src.shape[0] * n_channels * plane
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        p = idx % plane
        rest = idx // plane
        c = rest % n_channels
        b = rest // n_channels
        out[b, c_offset + c, p] = src[b, c, p]


@cuda.jit(cache=True)
def _mul(a, b, out):
    # a, out: (B, C, plane); b: (B or 1, C, plane or 1), broadcast
    n_channels, plane = out.shape[1], out.shape[2]
    b_items, b_plane = b.shape[0], b.shape[2]
    for idx in range(cuda.grid(1), out.shape[0] * n_channels * plane, cuda.gridsize(1)):
        p = idx % plane
        rest = idx // plane
        c = rest % n_channels
        i = rest // n_channels
        out[i, c, p] = a[i, c, p] * b[i if b_items > 1 else 0, c, p if b_plane > 1 else 0]


def _planes(x):
    plane = int(np.prod(x.shape[2:], dtype=np.int64)) if len(x.shape) > 2 else 1
    return x.reshape((x.shape[0], x.shape[1], plane))


def _mul_full(layer, params, inputs, out_shape):
    a, b = inputs
    if a.size < b.size or (a.size == b.size and a.shape[0] < b.shape[0]):
        a, b = b, a          # a: the full-size operand
    out = empty(a.shape, a.dtype)
    launch(_mul, out.size, _planes(a), _planes(b), _planes(out))
    return out


def _flat(x):
    return x.reshape((x.size,))


def _add_full(layer, params, inputs, out_shape):
    """The sum in input order, as on the CPU."""
    x = inputs[0]
    total = x
    for other in inputs[1:]:
        out = empty(x.shape, x.dtype)
        launch(_add, x.size, _flat(total), _flat(other), _flat(out))
        total = out
    return total


def _concat_full(layer, params, inputs, out_shape):
    n_items = inputs[0].shape[0]
    channels = sum(x.shape[1] for x in inputs)
    out = empty((n_items, channels) + tuple(inputs[0].shape[2:]), inputs[0].dtype)
    plane = int(np.prod(out.shape[2:], dtype=np.int64))
    flat_out = out.reshape((n_items, channels, plane))
    offset = 0
    for x in inputs:
        launch(_copy_channels, x.size, x.reshape((n_items, x.shape[1], plane)), offset, flat_out)
        offset += x.shape[1]
    return out


#: The CUDA kernels of the layer types of :mod:`kryptonref.layers.merge`.
ADD = Kernels(full=_add_full, gather="sum")
CONCAT = Kernels(full=_concat_full, gather="channels")
MUL = Kernels(full=_mul_full)

#: Kernels and their signatures (``{T}``: the float type) for the PTX compile test.
KERNELS = [
    (_add, "void({T}[::1], {T}[::1], {T}[::1])"),
    (_copy_channels, "void({T}[:,:,::1], int64, {T}[:,:,::1])"),
    (_mul, "void({T}[:,:,::1], {T}[:,:,::1], {T}[:,:,::1])"),
]
