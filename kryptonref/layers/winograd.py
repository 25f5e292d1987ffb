"""Winograd convolution F(2x2, 3x3) for dense 3x3, stride-1 convolutions (CPU).

Lavin & Gray (2016), "Fast Algorithms for Convolutional Neural Networks": each
2x2 block of outputs of a 3x3 convolution is ``A^T [(G g G^T) * (B^T d B)] A``
for the 4x4 input tile ``d`` that block reads, with the fixed matrices below.
Summed over input channels, the elementwise product becomes 16 independent
GEMMs, one per element ``xi`` of the 4x4 transformed tile (split over Numba's
threads by :func:`.blas.matmul`)::

    M[xi] = U[xi] @ V[xi]      U: (C_out, C_in)   V: (C_in, tiles)   M: (C_out, tiles)

16 multiplications per tile and channel pair instead of the direct 36: 2.25x
fewer multiply-accumulates, paid for by the input and output transforms
(additions only, linear in the data). The transforms are exact in exact
arithmetic; in floating point the result differs from the direct sum by a few
rounding errors (the entries of G are 0, 1 and 1/2). Measured in float32 on
VGG-sized layers against a float64 oracle: at most 3.6e-7 to 5.7e-7 of the
largest output, against 3.1e-7 to 3.6e-7 for im2col + GEMM;
and a non-finite input can spread to the other outputs of its tile.
The ``winograd`` setting (:mod:`kryptonref.runtime`; ``KRYPTONREF_WINOGRAD=0``)
turns it off.

F(4x4, 3x3) (36 multiplications per 16 outputs) was tried and dropped: on
the region sizes occlusion produces, rounding up to whole 4x4 tiles eats most
of its advantage, its transforms cost more, and its float32 error was 20x
larger (1e-5).

An odd output size is rounded up to whole tiles; the missing input rows and
columns of the last tiles read as zero and the extra outputs are dropped.
"""
from __future__ import annotations

import numpy as np

from .._numba import KERNEL, njit, prange
from ..runtime import settings
from .blas import matmul

__all__ = ["winograd_filters", "winograd_conv", "suits_winograd", "winograd_pays_off"]

#: Filter transform G (4 x 3).
G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
#: Input transform B^T (4 x 4); the kernels below apply it with additions.
B_T = np.array([[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 1.0, 0.0],
                [0.0, -1.0, 1.0, 0.0], [0.0, 1.0, 0.0, -1.0]])
#: Output transform A^T (2 x 4).
A_T = np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]])

#: Fewest input channels for which the transforms pay off (below: im2col + GEMM).
MIN_CHANNELS = 64
#: Input channels from which Winograd pays off on regions of any size (below:
#: only on regions of at least :data:`SMALL_AREA` outputs).
WIDE_CHANNELS = 128
#: Outputs per window from which Winograd pays off with fewer than :data:`WIDE_CHANNELS`.
SMALL_AREA = 256
#: Upper bound on the bytes of the transformed input (and output) of one chunk
#: (as :data:`.conv.IM2COL_BYTES`).
CHUNK_BYTES = 16 << 20


def suits_winograd(weight, stride, dilation, groups):
    """Whether F(2x2, 3x3) computes a convolution, and is worth it.

    Dense, 3x3, stride 1, dilation 1, at least :data:`MIN_CHANNELS` input
    channels, and the ``winograd`` setting on (:func:`kryptonref.runtime.settings`).
    """
    n_out, cin_group, kh, kw = weight.shape
    return (settings().winograd and groups == 1 and (kh, kw) == (3, 3) and tuple(stride) == (1, 1)
            and tuple(dilation) == (1, 1) and cin_group >= MIN_CHANNELS)


def winograd_pays_off(oh, ow, n_channels):
    """Whether F(2x2, 3x3) is worth it for ``oh x ow`` outputs from ``n_channels`` inputs.

    Whole 2x2 tiles cost 16 each, so thin outputs (one row or column, or 1x2)
    cost as much as or more than the direct sum, before the transforms. And
    with fewer than :data:`WIDE_CHANNELS` input channels, the transforms of a
    region smaller than :data:`SMALL_AREA` outputs cost more than the GEMMs save.
    """
    if 16 * ((oh + 1) // 2) * ((ow + 1) // 2) >= 0.8 * 9 * oh * ow:
        return False
    return n_channels >= WIDE_CHANNELS or oh * ow >= SMALL_AREA


def winograd_filters(weight):
    """``U = G g G^T`` for every filter, as 16 GEMM operands ``(16, C_out, C_in)``.

    Computed in float64 and cast to the weight's dtype.
    """
    n_out, n_in = weight.shape[:2]
    u = np.einsum("ik,ockl,jl->ijoc", G, weight.astype(np.float64), G)
    return np.ascontiguousarray(u.reshape(16, n_out, n_in).astype(weight.dtype))


@njit(**KERNEL)
def _transform_plane(plane, tiles_h, tiles_w, rows, v, c, t_first):
    """Input transform of one channel of one window; tiles go to ``v[:, c, t_first:]``.

    ``B^T`` has entries 0 and +-1, so the transform is additions: first
    combining each tile row's four input rows (``rows = B^T d`` for all the
    row's tiles at once), then along those rows, tile by tile; both loops run
    over contiguous memory. Input rows past the window read as zero, and so do
    columns (``rows`` is zero past the window's width).
    """
    win_h = plane.shape[0]
    width = min(plane.shape[1], rows.shape[1])
    for ty in range(tiles_h):
        y = 2 * ty
        in0, in1, in2 = plane[y], plane[y + 1], plane[y + 2]
        if y + 3 < win_h:
            in3 = plane[y + 3]
            for x in range(width):
                rows[3, x] = in1[x] - in3[x]
        else:
            for x in range(width):
                rows[3, x] = in1[x]
        for x in range(width):
            rows[0, x] = in0[x] - in2[x]
            rows[1, x] = in1[x] + in2[x]
            rows[2, x] = in2[x] - in1[x]
        t0 = t_first + ty * tiles_w
        for i in range(4):
            row = rows[i]
            out0, out1 = v[4 * i, c, t0:t0 + tiles_w], v[4 * i + 1, c, t0:t0 + tiles_w]
            out2, out3 = v[4 * i + 2, c, t0:t0 + tiles_w], v[4 * i + 3, c, t0:t0 + tiles_w]
            for tx in range(tiles_w):
                x = 2 * tx
                out0[tx] = row[x] - row[x + 2]
                out1[tx] = row[x + 1] + row[x + 2]
                out2[tx] = row[x + 2] - row[x + 1]
                out3[tx] = row[x + 1] - row[x + 3]


@njit(parallel=True, **KERNEL)
def _input_transform(win, tiles_h, tiles_w, v):
    """``v[xi, c, t] = (B^T d B)[xi]`` for tile ``t = (b, ty, tx)``, ``d = win[b, c, 2ty:, 2tx:][:4, :4]``.

    Reads past the window's last row or column are zero.
    """
    n_items, n_channels = win.shape[0], win.shape[1]
    for c in prange(n_channels):
        rows = np.zeros((4, 2 * tiles_w + 2), win.dtype)
        for b in range(n_items):
            _transform_plane(win[b, c], tiles_h, tiles_w, rows, v, c, b * tiles_h * tiles_w)


@njit(parallel=True, **KERNEL)
def _output_transform(m, bias, tiles_h, tiles_w, out):
    """``out[b, o, 2ty:2ty+2, 2tx:2tx+2] = A^T m[:, o, t] A + bias[o]``, cut at the output's edge.

    One task per (output channel, window); tile by tile, first across the
    transformed tile's rows (``s = A^T m``), then along them. Each of the 16
    reads runs along one contiguous row of ``m``.
    """
    n_items, n_out, oh, ow = out.shape
    per_item = tiles_h * tiles_w
    for task in prange(n_out * n_items):
        o = task // n_items
        b = task % n_items
        bias_o = bias[o]
        for ty in range(tiles_h):
            y = 2 * ty
            t_row = b * per_item + ty * tiles_w
            for tx in range(tiles_w):
                t = t_row + tx
                s00 = m[0, o, t] + m[4, o, t] + m[8, o, t]
                s01 = m[1, o, t] + m[5, o, t] + m[9, o, t]
                s02 = m[2, o, t] + m[6, o, t] + m[10, o, t]
                s03 = m[3, o, t] + m[7, o, t] + m[11, o, t]
                s10 = m[4, o, t] - m[8, o, t] - m[12, o, t]
                s11 = m[5, o, t] - m[9, o, t] - m[13, o, t]
                s12 = m[6, o, t] - m[10, o, t] - m[14, o, t]
                s13 = m[7, o, t] - m[11, o, t] - m[15, o, t]
                x = 2 * tx
                out[b, o, y, x] = s00 + s01 + s02 + bias_o
                if x + 1 < ow:
                    out[b, o, y, x + 1] = s01 - s02 - s03 + bias_o
                if y + 1 < oh:
                    out[b, o, y + 1, x] = s10 + s11 + s12 + bias_o
                    if x + 1 < ow:
                        out[b, o, y + 1, x + 1] = s11 - s12 - s13 + bias_o


def winograd_conv(win, filters, bias, out):
    """3x3, stride-1 valid convolution of ``win`` into ``out`` by F(2x2, 3x3).

    Parameters
    ----------
    win : ndarray (B, C_in, Hw, Ww)
        Windows with their padding; ``Hw >= oh + 2`` and ``Ww >= ow + 2``.
    filters : ndarray (16, C_out, C_in)
        :func:`winograd_filters` of the weight.
    bias : ndarray (C_out,)
    out : ndarray (B, C_out, oh, ow)
        Written in place and returned.
    """
    n_items, n_channels = win.shape[:2]
    n_out, oh, ow = out.shape[1:]
    tiles_h, tiles_w = (oh + 1) // 2, (ow + 1) // 2
    per_item = 16 * max(n_channels, n_out) * tiles_h * tiles_w
    step = max(1, CHUNK_BYTES // (per_item * win.itemsize))
    for first in range(0, n_items, step):
        last = min(first + step, n_items)
        n_tiles = (last - first) * tiles_h * tiles_w
        v = np.empty((16, n_channels, n_tiles), win.dtype)
        _input_transform(win[first:last], tiles_h, tiles_w, v)
        m = matmul(filters, v)
        _output_transform(m, bias, tiles_h, tiles_w, out[first:last])
    return out
