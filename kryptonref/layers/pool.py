"""Pooling kernels (CPU): max and average pooling over padded windows.

As for convolution, full and region computations share one *valid* kernel over
windows that already hold their padding (``-inf`` for max pooling, 0 for
average pooling). Average pooling divides by PyTorch's divisor, which depends
on the absolute output index, so region calls pass each position's output
offset.
"""
from __future__ import annotations

import numpy as np

from .._numba import KERNEL, njit, prange

__all__ = ["max_pool_valid", "avg_pool_valid", "avg_pool_divisors"]


@njit(inline="always", **KERNEL)
def _nan_max(v, keep):
    """``max(v, keep)``, NaN in ``v`` propagating; a select, not a branch."""
    return v if (v > keep) | (v != v) else keep


@njit(inline="always", **KERNEL)
def _max_into(best, row, x0, sw):
    """``best[ox] = max(best[ox], row[x0 + ox*sw])``, NaN propagating (as PyTorch).

    Branch-free, so it vectorises; a unit stride reads a contiguous slice,
    which vectorises far better than the run-time stride (2x on 17 x 17 maps).
    """
    if sw == 1:
        taps = row[x0:x0 + best.shape[0]]
        for ox in range(best.shape[0]):
            best[ox] = _nan_max(taps[ox], best[ox])
    else:
        for ox in range(best.shape[0]):
            best[ox] = _nan_max(row[x0 + ox * sw], best[ox])


@njit(inline="always", **KERNEL)
def _add_into(total, row, x0, sw):
    """``total[ox] += row[x0 + ox*sw]`` (a contiguous slice for a unit stride, as above)."""
    if sw == 1:
        taps = row[x0:x0 + total.shape[0]]
        for ox in range(total.shape[0]):
            total[ox] += taps[ox]
    else:
        for ox in range(total.shape[0]):
            total[ox] += row[x0 + ox * sw]


@njit(parallel=True, **KERNEL)
def _max_pool(win, kh, kw, sh, sw, dh, dw, out):
    # Row by row: each kernel tap updates a whole output row (vectorisable),
    # in the same tap order as a per-output loop, so the result is identical.
    # (``best`` is a buffer of its own, which lets the compiler vectorise.)
    n_items, n_channels, oh, ow = out.shape
    for item_channel in prange(n_items * n_channels):
        b = item_channel // n_channels
        c = item_channel % n_channels
        plane = win[b, c]
        best = np.empty(ow, win.dtype)
        for oy in range(oh):
            first = plane[oy * sh]
            for ox in range(ow):
                best[ox] = first[ox * sw]
            for ky in range(kh):
                row = plane[oy * sh + ky * dh]
                for kx in range(kw):
                    _max_into(best, row, kx * dw, sw)
            out[b, c, oy, :] = best


@njit(parallel=True, **KERNEL)
def _avg_pool(win, kh, kw, sh, sw, div_y, div_x, out_y0, out_x0, out):
    # Row by row, summing the taps in float64 (as PyTorch's CPU kernel does) in a
    # per-output loop's order, so the result is that loop's.
    n_items, n_channels, oh, ow = out.shape
    for item_channel in prange(n_items * n_channels):
        b = item_channel // n_channels
        c = item_channel % n_channels
        plane = win[b, c]
        dx = div_x[out_x0[b]:out_x0[b] + ow]
        total = np.empty(ow, np.float64)
        for oy in range(oh):
            total[:] = 0.0
            for ky in range(kh):
                row = plane[oy * sh + ky]
                for kx in range(kw):
                    _add_into(total, row, kx, sw)
            dy = div_y[out_y0[b] + oy]
            dst = out[b, c, oy]
            for ox in range(ow):
                dst[ox] = total[ox] / (dy * dx[ox])


def max_pool_valid(win, kernel, stride, dilation, out_hw):
    """Max pooling of ``-inf``-padded windows ``(B, C, Hw, Ww) -> (B, C, oh, ow)``."""
    out = np.empty(win.shape[:2] + tuple(out_hw), win.dtype)
    _max_pool(win, kernel[0], kernel[1], stride[0], stride[1], dilation[0], dilation[1], out)
    return out


def avg_pool_valid(win, kernel, stride, divisors, out_y0, out_x0, out_hw):
    """Average pooling of zero-padded windows.

    Parameters
    ----------
    divisors : (ndarray, ndarray)
        Per-axis divisors of the whole output, from :func:`avg_pool_divisors`.
    out_y0, out_x0 : ndarray of int64 (B,)
        Output offset of each window's region.
    """
    out = np.empty(win.shape[:2] + tuple(out_hw), win.dtype)
    div_y, div_x = (d.astype(win.dtype) for d in divisors)
    _avg_pool(win, kernel[0], kernel[1], stride[0], stride[1], div_y, div_x,
              np.asarray(out_y0, np.int64), np.asarray(out_x0, np.int64), out)
    return out


def avg_pool_divisors(in_size, out_size, kernel, stride, pad_before, pad_after,
                      count_include_pad):
    """Divisor of each output index on one axis (PyTorch's rule).

    The window of output ``o`` starts at ``o*S - P``. With ``count_include_pad``
    it counts the padding but is cut at ``W_in + P_after``; otherwise it counts
    only the input elements it covers. The 2-D divisor is the product of the
    two axes' divisors.
    """
    start = np.arange(out_size) * stride - pad_before
    stop = np.minimum(start + kernel, in_size + pad_after)
    if count_include_pad:
        return (stop - start).astype(np.float64)
    return (np.minimum(stop, in_size) - np.maximum(start, 0)).astype(np.float64)
