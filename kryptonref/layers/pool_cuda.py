"""Pooling on the GPU (CUDA twin of :mod:`kryptonref.layers.pool`).

Valid max and average pooling over windows that hold their padding (``-inf``
or 0); average pooling divides by PyTorch's divisor of the absolute output
index, so region calls pass each position's output offset. Global and
adaptive average pooling run on whole tensors.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .._cuda import cuda, launch, unravel4
from ..backends.cuda_memory import empty, upload
from .pool import avg_pool_divisors
from .registry import Kernels

__all__ = ["max_pool_valid", "avg_pool_valid", "MAX_POOL", "AVG_POOL", "GLOBAL_AVG_POOL",
           "ADAPTIVE_AVG_POOL", "KERNELS"]


@cuda.jit(cache=True)
def _max_pool(win, kh, kw, sh, sw, dh, dw, out):
    n_channels, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    total = out.shape[0] * n_channels * oh * ow
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        b, c, oy, ox = unravel4(idx, n_channels, oh, ow)
        best = win[b, c, oy * sh, ox * sw]
        for ky in range(kh):
            for kx in range(kw):
                value = win[b, c, oy * sh + ky * dh, ox * sw + kx * dw]
                if value > best or value != value:  # NaN propagates, as in PyTorch
                    best = value
        out[b, c, oy, ox] = best


@cuda.jit(cache=True)
def _avg_pool(win, kh, kw, sh, sw, div_y, div_x, out_y0, out_x0, out):
    n_channels, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    total = out.shape[0] * n_channels * oh * ow
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        b, c, oy, ox = unravel4(idx, n_channels, oh, ow)
        acc = 0.0  # (not x * 0: inf * 0 is NaN)
        for ky in range(kh):
            for kx in range(kw):
                acc += win[b, c, oy * sh + ky, ox * sw + kx]
        out[b, c, oy, ox] = acc / (div_y[out_y0[b] + oy] * div_x[out_x0[b] + ox])


@cuda.jit(cache=True)
def _adaptive_avg(x, out):
    height, width = x.shape[2], x.shape[3]
    n_channels, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    total = out.shape[0] * n_channels * oh * ow
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        b, c, i, j = unravel4(idx, n_channels, oh, ow)
        y0, y1 = (i * height) // oh, -((-(i + 1) * height) // oh)
        x0, x1 = (j * width) // ow, -((-(j + 1) * width) // ow)
        acc = 0.0
        for y in range(y0, y1):
            for xx in range(x0, x1):
                acc += x[b, c, y, xx]
        out[b, c, i, j] = acc / ((y1 - y0) * (x1 - x0))


def _out(win, out_hw):
    return empty(tuple(win.shape[:2]) + tuple(out_hw), win.dtype)


def max_pool_valid(win, kernel, stride, dilation, out_hw):
    """Max pooling of ``-inf``-padded device windows ``(B, C, Hw, Ww) -> (B, C, oh, ow)``."""
    out = _out(win, out_hw)
    launch(_max_pool, out.size, win, kernel[0], kernel[1], stride[0], stride[1], dilation[0],
           dilation[1], out)
    return out


def avg_pool_valid(win, kernel, stride, divisors, out_y0, out_x0, out_hw):
    """Average pooling of zero-padded device windows.

    ``divisors`` are the per-axis device vectors of
    :func:`kryptonref.layers.pool.avg_pool_divisors` in the window's dtype;
    ``out_y0``, ``out_x0`` the int64 output offsets of each window's region.
    """
    out = _out(win, out_hw)
    launch(_avg_pool, out.size, win, kernel[0], kernel[1], stride[0], stride[1], divisors[0],
           divisors[1], out_y0, out_x0, out)
    return out


def adaptive_avg_pool(x, out_hw):
    """Adaptive average pooling of a device batch ``(N, C, H, W)`` to ``out_hw``."""
    out = empty((x.shape[0], x.shape[1]) + tuple(out_hw), x.dtype)
    launch(_adaptive_avg, out.size, x, out)
    return out


@lru_cache(maxsize=512)
def _divisors(layer, in_hw, out_hw, dtype):
    host = [avg_pool_divisors(in_hw[d], out_hw[d], layer.kernel_size[d], layer.stride[d],
                              layer.padding[d][0], layer.padding[d][1],
                              layer.count_include_pad).astype(dtype) for d in (0, 1)]
    return tuple(upload(h) for h in host)


def _max_region(layer, params, win, in_hw, out_hw, out_y0, out_x0, region_hw):
    return max_pool_valid(win, layer.kernel_size, layer.stride, layer.dilation, region_hw)


def _avg_region(layer, params, win, in_hw, out_hw, out_y0, out_x0, region_hw):
    divisors = _divisors(layer, tuple(in_hw), tuple(out_hw), np.dtype(win.dtype).str)
    return avg_pool_valid(win, layer.kernel_size, layer.stride, divisors, out_y0, out_x0,
                          region_hw)


def _global_full(layer, params, inputs, out_shape):
    return adaptive_avg_pool(inputs[0], (1, 1))


def _adaptive_full(layer, params, inputs, out_shape):
    return adaptive_avg_pool(inputs[0], layer.output_size)


#: The CUDA kernels of the layer types of :mod:`kryptonref.layers.pool`.
MAX_POOL = Kernels(region=_max_region)
AVG_POOL = Kernels(region=_avg_region)
GLOBAL_AVG_POOL = Kernels(full=_global_full)
ADAPTIVE_AVG_POOL = Kernels(full=_adaptive_full)

#: Kernels and their signatures (``{T}``: the float type) for the PTX compile test.
KERNELS = [
    (_adaptive_avg, "void({T}[:,:,:,::1], {T}[:,:,:,::1])"),
    (_max_pool, "void({T}[:,:,:,::1], int64, int64, int64, int64, int64, int64, "
                "{T}[:,:,:,::1])"),
    (_avg_pool, "void({T}[:,:,:,::1], int64, int64, int64, int64, {T}[::1], {T}[::1], "
                "int64[::1], int64[::1], {T}[:,:,:,::1])"),
]
