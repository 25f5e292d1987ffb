"""Convolution kernels (CPU): im2col + BLAS GEMM, and a direct kernel for groups.

Both the full-tensor and the region computation reduce to one operation: a
*valid* (unpadded) convolution over windows that already hold their padding.
For the full tensor the window is the zero-padded input; for a region it is the
window assembled by :func:`kryptonref.layers.window.gather_windows`. The paper's
FMA count (section 4) is what :func:`conv_macs` returns.

Dense convolutions use im2col followed by one GEMM for the whole batch of
windows (direct loops are 20-40x slower, DESIGN.md section 8); grouped and
depthwise convolutions, whose GEMMs are too thin for BLAS, use a direct kernel.
"""
from __future__ import annotations

import numpy as np

from .._numba import KERNEL, njit, prange

__all__ = ["conv2d_valid", "conv_macs"]

#: Upper bound on im2col buffer elements; larger batches are processed in chunks.
IM2COL_BUDGET = 1 << 25


@njit(parallel=True, **KERNEL)
def _im2col(win, kh, kw, sh, sw, dh, dw, oh, ow, cols):
    n_items, n_channels = win.shape[0], win.shape[1]
    per_item = oh * ow
    for row in prange(n_channels * kh * kw):
        c = row // (kh * kw)
        ky = (row // kw) % kh
        kx = row % kw
        for b in range(n_items):
            col0 = b * per_item
            for oy in range(oh):
                src = win[b, c, oy * sh + ky * dh]
                dst0 = col0 + oy * ow
                x0 = kx * dw
                for ox in range(ow):
                    cols[row, dst0 + ox] = src[x0 + ox * sw]


@njit(parallel=True, **KERNEL)
def _unpack_gemm(result, bias, out):
    """``out[b, o, :, :] = result[o, b*P:(b+1)*P] + bias[o]``."""
    n_items, n_out, oh, ow = out.shape
    per_item = oh * ow
    for item_out in prange(n_items * n_out):
        b = item_out // n_out
        o = item_out % n_out
        col0 = b * per_item
        for oy in range(oh):
            for ox in range(ow):
                out[b, o, oy, ox] = result[o, col0 + oy * ow + ox] + bias[o]


@njit(parallel=True, **KERNEL)
def _conv_direct(win, weight, bias, sh, sw, dh, dw, groups, out):
    n_items, n_out, oh, ow = out.shape
    cin_group = weight.shape[1]
    kh, kw = weight.shape[2], weight.shape[3]
    cout_group = n_out // groups
    for item_out in prange(n_items * n_out):
        b = item_out // n_out
        o = item_out % n_out
        g = o // cout_group
        acc = out[b, o]
        acc[:, :] = bias[o]
        for ci in range(cin_group):
            c = g * cin_group + ci
            for ky in range(kh):
                for kx in range(kw):
                    w = weight[o, ci, ky, kx]
                    for oy in range(oh):
                        src = win[b, c, oy * sh + ky * dh]
                        x0 = kx * dw
                        for ox in range(ow):
                            acc[oy, ox] += w * src[x0 + ox * sw]


def conv2d_valid(win, weight, bias, stride, dilation, groups, out_hw):
    """Valid convolution of padded windows.

    Parameters
    ----------
    win : ndarray (B, C_in, Hw, Ww)
        Windows that already contain their padding.
    weight : ndarray (C_out, C_in/groups, kh, kw)
    bias : ndarray (C_out,) or None
    stride, dilation : (int, int)
    groups : int
    out_hw : (int, int)
        Output size; the window must be at least ``(o-1)*S + D*(K-1) + 1`` long.

    Returns
    -------
    ndarray (B, C_out, oh, ow)
    """
    n_items = win.shape[0]
    n_out, cin_group, kh, kw = weight.shape
    oh, ow = out_hw
    (sh, sw), (dh, dw) = stride, dilation
    if bias is None:
        bias = np.zeros(n_out, win.dtype)
    out = np.empty((n_items, n_out, oh, ow), win.dtype)
    if groups != 1:
        _conv_direct(win, weight, bias, sh, sw, dh, dw, groups, out)
        return out
    weight_matrix = weight.reshape(n_out, -1)
    rows = cin_group * kh * kw
    chunk = max(1, IM2COL_BUDGET // max(rows * oh * ow, 1))
    for first in range(0, n_items, chunk):
        part = win[first:first + chunk]
        cols = np.empty((rows, part.shape[0] * oh * ow), win.dtype)
        _im2col(part, kh, kw, sh, sw, dh, dw, oh, ow, cols)
        result = weight_matrix @ cols
        _unpack_gemm(result, bias, out[first:first + chunk])
    return out


def conv_macs(layer, n_positions, out_h, out_w):
    """Multiply-accumulates of computing ``out_h x out_w`` outputs for each position."""
    kh, kw = layer.kernel_size
    return int(n_positions) * out_h * out_w * layer.out_channels * (
        layer.in_channels // layer.groups) * kh * kw
