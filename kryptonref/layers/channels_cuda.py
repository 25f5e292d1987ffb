"""Channel-mixing position-wise layers on the GPU (CUDA twin of
:mod:`kryptonref.layers.channels`).

Arrays are read as ``(B, C, plane)``: every kernel decodes an element's item,
channel and position from its flat index.
"""
from __future__ import annotations

import math

import numpy as np

from .._cuda import cuda, launch, launch_rows, unravel3
from ..backends.cuda_memory import const_ints, empty
from .registry import Kernels

__all__ = ["ARITHMETIC", "LAYER_NORM_2D", "CHANNEL_LINEAR", "CHANNEL_SLICE", "CHANNEL_SHUFFLE",
           "KERNELS"]

_OPS = {"add": 0, "sub": 1, "mul": 2, "div": 3, "rsub": 4, "rdiv": 5}


@cuda.jit(cache=True)
def _arithmetic(x, value, op, out):
    # x, out: (rows = B*C, plane); the channel decoded once per row
    n_channels, plane = value.shape[0], x.shape[1]
    first, first_row = cuda.grid(2)
    step, row_step = cuda.gridsize(2)
    for row in range(first_row, x.shape[0], row_step):
        v = value[row % n_channels]
        for p in range(first, plane, step):
            a = x[row, p]
            if op == 0:
                out[row, p] = a + v
            elif op == 1:
                out[row, p] = a - v
            elif op == 2:
                out[row, p] = a * v
            elif op == 3:
                out[row, p] = a / v
            elif op == 4:
                out[row, p] = v - a
            else:
                out[row, p] = v / a


@cuda.jit(cache=True)
def _layer_norm(x, weight, bias, eps, out):
    # x, out: (B, C, plane); one thread per (item, position)
    n_channels, plane = x.shape[1], x.shape[2]
    for idx in range(cuda.grid(1), x.shape[0] * plane, cuda.gridsize(1)):
        b = idx // plane
        p = idx % plane
        mean = 0.0
        for c in range(n_channels):
            mean += x[b, c, p]
        mean /= n_channels
        var = 0.0
        for c in range(n_channels):
            d = x[b, c, p] - mean
            var += d * d
        inv = 1.0 / math.sqrt(var / n_channels + eps)
        for c in range(n_channels):
            out[b, c, p] = (x[b, c, p] - mean) * inv * weight[c] + bias[c]


@cuda.jit(cache=True)
def _channel_linear(x, weight, bias, has_bias, out):
    # out[b, o, p] = sum_c weight[o, c] x[b, c, p] (+ bias[o])
    n_out, plane = out.shape[1], out.shape[2]
    n_in = x.shape[1]
    for idx in range(cuda.grid(1), out.shape[0] * n_out * plane, cuda.gridsize(1)):
        b, o, p = unravel3(idx, n_out, plane)
        acc = bias[o] if has_bias else 0.0
        for c in range(n_in):
            acc += weight[o, c] * x[b, c, p]
        out[b, o, p] = acc


@cuda.jit(cache=True)
def _pick_channels(x, source, out):
    # out[b, c, p] = x[b, source[c], p]
    n_channels, plane = out.shape[1], out.shape[2]
    for idx in range(cuda.grid(1), out.shape[0] * n_channels * plane, cuda.gridsize(1)):
        b, c, p = unravel3(idx, n_channels, plane)
        out[b, c, p] = x[b, source[c], p]


def _planes(x):
    plane = int(np.prod(x.shape[2:], dtype=np.int64)) if len(x.shape) > 2 else 1
    return x.reshape((x.shape[0], x.shape[1], plane)), plane


def _arithmetic_apply(layer, params, x, out=None):
    if out is None:
        out = empty(x.shape, x.dtype)
    flat, plane = _planes(x)
    rows = x.shape[0] * x.shape[1]
    launch_rows(_arithmetic, rows, plane, flat.reshape((rows, plane)), params["value"],
                _OPS[layer.op], out.reshape((rows, plane)))
    return out


def _layer_norm_apply(layer, params, x, out=None):
    if out is None:
        out = empty(x.shape, x.dtype)
    flat, plane = _planes(x)
    launch(_layer_norm, x.shape[0] * plane, flat, params["weight"], params["bias"],
           np.dtype(x.dtype).type(layer.eps), _planes(out)[0])
    return out


def _channel_linear_apply(layer, params, x, out=None):
    result = empty((x.shape[0], layer.out_features) + tuple(x.shape[2:]), x.dtype)
    flat, _ = _planes(x)
    weight = params["weight"]
    has_bias = "bias" in params
    bias = params["bias"] if has_bias else weight.reshape((weight.size,))
    launch(_channel_linear, result.size, flat, weight, bias, has_bias, _planes(result)[0])
    return result


def _pick(x, sources):
    out = empty((x.shape[0], len(sources)) + tuple(x.shape[2:]), x.dtype)
    launch(_pick_channels, out.size, _planes(x)[0], const_ints(sources), _planes(out)[0])
    return out


def _slice_apply(layer, params, x, out=None):
    return _pick(x, tuple(range(layer.start, layer.stop)))


def _shuffle_apply(layer, params, x, out=None):
    c, g = x.shape[1], layer.groups
    # output channel i * G + j reads input channel j * (C / G) + i
    sources = tuple(j * (c // g) + i for i in range(c // g) for j in range(g))
    return _pick(x, sources)


#: The CUDA kernels of the layer types of :mod:`kryptonref.layers.channels`.
ARITHMETIC = Kernels(apply=_arithmetic_apply)
LAYER_NORM_2D = Kernels(apply=_layer_norm_apply)
CHANNEL_LINEAR = Kernels(apply=_channel_linear_apply)
CHANNEL_SLICE = Kernels(apply=_slice_apply)
CHANNEL_SHUFFLE = Kernels(apply=_shuffle_apply)

#: Kernels and their signatures (``{T}``: the float type) for the PTX compile test.
KERNELS = [
    (_arithmetic, "void({T}[:,::1], {T}[::1], int64, {T}[:,::1])"),
    (_layer_norm, "void({T}[:,:,::1], {T}[::1], {T}[::1], {T}, {T}[:,:,::1])"),
    (_channel_linear, "void({T}[:,:,::1], {T}[:,::1], {T}[::1], boolean, {T}[:,:,::1])"),
    (_pick_channels, "void({T}[:,:,::1], int64[::1], {T}[:,:,::1])"),
]
