"""Pooling on the GPU (CUDA twin of :mod:`kryptonref.layers.pool`).

Valid max and average pooling over windows that hold their padding (``-inf``
or 0); average pooling divides by PyTorch's divisor of the absolute output
index, so region calls pass each position's output offset.
"""
from __future__ import annotations

from .._cuda import cuda, launch, unravel4

__all__ = ["max_pool_valid", "avg_pool_valid", "KERNELS"]


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


def _out(win, out_hw):
    from .ops_cuda import empty
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


#: Kernels and their signatures (``{T}``: the float type) for the PTX compile test.
KERNELS = [
    (_max_pool, "void({T}[:,:,:,::1], int64, int64, int64, int64, int64, int64, "
                "{T}[:,:,:,::1])"),
    (_avg_pool, "void({T}[:,:,:,::1], int64, int64, int64, int64, {T}[::1], {T}[::1], "
                "int64[::1], int64[::1], {T}[:,:,:,::1])"),
]
