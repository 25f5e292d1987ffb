"""Convolution on the GPU (CUDA twin of :mod:`kryptonref.layers.conv`).

Like the CPU kernels, every convolution is *valid* over read windows that
already hold their padding, so full and incremental inference share it. Two
methods:

* ``"direct"``: one thread per output value, summing over input channels and
  taps; handles groups and depthwise convolutions;
* ``"gemm"``: im2col of the windows into a ``(C_in k_h k_w, B h w)`` matrix
  (in chunks of bounded size), one GEMM with the ``(C_out, C_in k_h k_w)``
  weights, and a pass adding the bias while writing NCHW. The GEMM goes
  through :func:`gemm`: cuBLAS via CuPy when CuPy is installed (the ``cupy``
  extra), else a shared-memory tiled Numba kernel (see :func:`gemm_backend`).

Dense (``groups == 1``) convolutions use ``"gemm"``, grouped ones ``"direct"``.
"""
from __future__ import annotations

import math

import numpy as np

from .._cuda import (MAX_BLOCKS, SIMULATOR, cuda, cupy_or_none, launch, launch_rows, unravel3,
                     unravel4)
from ..backends.cuda_memory import empty, upload
from .registry import Kernels

__all__ = ["conv2d_valid", "gemm", "gemm_backend", "CONV2D", "KERNELS"]

#: Bytes of im2col matrix built at once; larger batches are processed in chunks.
IM2COL_BYTES = 1 << 28
#: Default method of dense convolutions. The simulator runs the direct kernel by
#: default (its block barriers make the tiled GEMM slow to simulate); tests call
#: the GEMM path explicitly.
DEFAULT_METHOD = "direct" if SIMULATOR else "gemm"
#: Tile edge of the shared-memory GEMM (smaller under the simulator: fewer threads).
TILE = 4 if SIMULATOR else 16


@cuda.jit(cache=True)
def _conv_direct(win, weight, bias, has_bias, sh, sw, dh, dw, out):
    n_out, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    cin_group, kh, kw = weight.shape[1], weight.shape[2], weight.shape[3]
    n_groups = win.shape[1] // cin_group
    cout_group = n_out // n_groups
    total = out.shape[0] * n_out * oh * ow
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        b, co, oy, ox = unravel4(idx, n_out, oh, ow)
        c0 = (co // cout_group) * cin_group
        acc = bias[co] if has_bias else 0.0
        for ci in range(cin_group):
            for ky in range(kh):
                y = oy * sh + ky * dh
                for kx in range(kw):
                    acc += win[b, c0 + ci, y, ox * sw + kx * dw] * weight[co, ci, ky, kx]
        out[b, co, oy, ox] = acc


@cuda.jit(cache=True)
def _im2col(win, kh, kw, sh, sw, dh, dw, oh, ow, cols):
    # cols[(c*kh + ky)*kw + kx, (b*oh + oy)*ow + ox] = win[b, c, oy*sh + ky*dh, ox*sw + kx*dw]
    # one row per (tap k, item b, output row oy): decoded once per row, no division per element
    n_items = win.shape[0]
    first, first_row = cuda.grid(2)
    step, row_step = cuda.gridsize(2)
    for row in range(first_row, cols.shape[0] * n_items * oh, row_step):
        k, b, oy = unravel3(row, n_items, oh)
        kx = k % kw
        rest = k // kw
        ky = rest % kh
        c = rest // kh
        y = oy * sh + ky * dh
        x0 = kx * dw
        m0 = (b * oh + oy) * ow
        for ox in range(first, ow, step):
            cols[k, m0 + ox] = win[b, c, y, ox * sw + x0]


@cuda.jit(cache=True)
def _scatter_bias(product, bias, has_bias, first_item, out):
    # out[first_item + b, co, p] = product[co, b*plane + p] + bias[co]; one row per (co, b)
    n_out, plane = product.shape[0], out.shape[2]
    n_items = product.shape[1] // plane
    first, first_row = cuda.grid(2)
    step, row_step = cuda.gridsize(2)
    for row in range(first_row, n_out * n_items, row_step):
        co = row // n_items
        b = row - co * n_items
        shift = bias[co] if has_bias else 0.0
        for p in range(first, plane, step):
            out[first_item + b, co, p] = product[co, b * plane + p] + shift


@cuda.jit(cache=True)
def _simple_gemm(a, b, out):
    # out (M, N) = a (M, K) @ b (K, N), one thread per output value.
    n_cols, depth = out.shape[1], a.shape[1]
    for idx in range(cuda.grid(1), out.shape[0] * n_cols, cuda.gridsize(1)):
        row = idx // n_cols
        col = idx % n_cols
        acc = 0.0
        for k in range(depth):
            acc += a[row, k] * b[k, col]
        out[row, col] = acc


def _make_tiled_gemm(dtype):
    tile = TILE

    def tiled_gemm(a, b, out):
        # out (M, N) = a (M, K) @ b (K, N). Each block computes tile x tile blocks of
        # out, looping over them (block-stride) so that any grid size works.
        a_tile = cuda.shared.array((tile, tile), dtype)
        b_tile = cuda.shared.array((tile, tile), dtype)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        n_rows, depth, n_cols = a.shape[0], a.shape[1], b.shape[1]
        tiles_x = (n_cols + tile - 1) // tile
        n_tiles = tiles_x * ((n_rows + tile - 1) // tile)
        for t in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
            row = (t // tiles_x) * tile + ty
            col = (t % tiles_x) * tile + tx
            acc = dtype(0)
            for k0 in range(0, depth, tile):
                a_tile[ty, tx] = a[row, k0 + tx] if row < n_rows and k0 + tx < depth else 0
                b_tile[ty, tx] = b[k0 + ty, col] if col < n_cols and k0 + ty < depth else 0
                cuda.syncthreads()
                for k in range(tile):
                    acc += a_tile[ty, k] * b_tile[k, tx]
                cuda.syncthreads()
            if row < n_rows and col < n_cols:
                out[row, col] = acc

    tiled_gemm.__name__ = tiled_gemm.__qualname__ = f"tiled_gemm_{dtype}"
    return cuda.jit(cache=True)(tiled_gemm)


from numba import float32 as _f32, float64 as _f64  # noqa: E402

_TILED = {np.dtype(np.float32): _make_tiled_gemm(_f32), np.dtype(np.float64): _make_tiled_gemm(_f64)}

_FORCED = [None]


GEMM_BACKENDS = ("cublas", "tiled", "simple")


def gemm_backend(name=None):
    """Which GEMM :func:`gemm` uses.

    ``"cublas"``: cuBLAS through CuPy; ``"tiled"``: a shared-memory tiled Numba
    kernel; ``"simple"``: one Numba thread per output value. The default is
    cuBLAS when CuPy is installed, else the tiled kernel (the simple one under
    the simulator, where block barriers are slow). With ``name``, force one
    (``"auto"`` restores the default). Returns the one in use.
    """
    if name is not None:
        if name != "auto" and name not in GEMM_BACKENDS:
            raise ValueError(f"GEMM backend must be 'auto' or one of {GEMM_BACKENDS}, got {name!r}")
        if name == "cublas" and not cupy_or_none():
            raise ImportError("the cuBLAS GEMM needs CuPy on a GPU: pip install 'kryptonref[cupy]'")
        _FORCED[0] = None if name == "auto" else name
    if _FORCED[0] is not None:
        return _FORCED[0]
    if cupy_or_none():
        return "cublas"
    return "simple" if SIMULATOR else "tiled"


def gemm(a, b, out):
    """``out = a @ b`` for row-major device matrices (the seam to cuBLAS).

    numba-cuda cannot call cuBLAS itself (``docs/design.md``, Performance facts); CuPy's ``matmul``
    reads and writes the Numba arrays in place through the CUDA array interface.
    """
    which = gemm_backend()
    if which == "cublas":
        cp = cupy_or_none()
        cp.matmul(cp.asarray(a), cp.asarray(b), out=cp.asarray(out))
    elif which == "tiled":
        kernel = _TILED[np.dtype(out.dtype)]
        n_tiles = -(-b.shape[1] // TILE) * -(-a.shape[0] // TILE)
        kernel[min(n_tiles, MAX_BLOCKS), (TILE, TILE)](a, b, out)
    else:
        launch(_simple_gemm, out.size, a, b, out)
    return out


def conv2d_valid(win, weight, bias, stride, dilation, groups, out_hw, method=None,
                 weight_matrix=None):
    """Valid convolution of padded windows ``(B, C, Hw, Ww) -> (B, C_out, oh, ow)``.

    Parameters
    ----------
    win : device array (B, C, Hw, Ww)
    weight : device array (C_out, C / groups, k_h, k_w)
    bias : device array (C_out,) or None
    method : {"gemm", "direct"}, optional
        :data:`DEFAULT_METHOD` for ``groups == 1``; grouped convolutions are direct.
    weight_matrix : device array (C_out, C k_h k_w), optional
        ``weight`` reshaped, as the GEMM reads it.
    """
    n_items = win.shape[0]
    n_out, _, kh, kw = weight.shape
    oh, ow = out_hw
    out = empty((n_items, n_out, oh, ow), win.dtype)
    has_bias = bias is not None
    bias_arg = bias if has_bias else weight.reshape(weight.size)
    if method is None:
        method = DEFAULT_METHOD if groups == 1 else "direct"
    if method == "direct" or groups != 1:
        launch(_conv_direct, out.size, win, weight, bias_arg, has_bias, stride[0], stride[1],
               dilation[0], dilation[1], out)
        return out
    if method != "gemm":
        raise ValueError(f"method must be 'gemm' or 'direct', got {method!r}")
    if weight_matrix is None:
        weight_matrix = weight.reshape((n_out, weight.size // n_out))
    depth = weight_matrix.shape[1]
    plane = oh * ow
    itemsize = np.dtype(win.dtype).itemsize
    chunk = max(1, min(n_items, IM2COL_BYTES // max(1, depth * plane * itemsize)))
    cols = empty((depth, chunk * plane), win.dtype)
    product = empty((n_out, chunk * plane), win.dtype)
    flat_out = out.reshape((n_items, n_out, plane))
    for first in range(0, n_items, chunk):
        count = min(chunk, n_items - first)
        width = count * plane
        cols_view, product_view = cols, product
        if count < chunk:
            cols_view = empty((depth, width), win.dtype)
            product_view = empty((n_out, width), win.dtype)
        launch_rows(_im2col, depth * count * oh, ow, win[first:first + count], kh, kw,
                    stride[0], stride[1], dilation[0], dilation[1], oh, ow, cols_view)
        gemm(weight_matrix, cols_view, product_view)
        launch_rows(_scatter_bias, n_out * count, plane, product_view, bias_arg, has_bias,
                    first, flat_out)
    return out


def conv_flops(weight_shape, n_items, out_hw):
    """Floating-point operations (2 per MAC) of a convolution, for throughput reports."""
    n_out, cin_group, kh, kw = weight_shape
    return 2 * n_items * n_out * cin_group * kh * kw * math.prod(out_hw)


def _region(layer, params, win, in_hw, out_hw, out_y0, out_x0, region_hw):
    return conv2d_valid(win, params["weight"], params.get("bias"), layer.stride, layer.dilation,
                        layer.groups, region_hw, weight_matrix=params.get("weight_matrix"))


def _prepare(layer, params):
    """The weights on the device; dense convolutions also as the GEMM's matrix."""
    out = {k: upload(v) for k, v in params.items()}
    if layer.groups == 1:
        weight = out["weight"]
        out["weight_matrix"] = weight.reshape((weight.shape[0], weight.size // weight.shape[0]))
    return out


#: The CUDA kernels of :class:`kryptonref.layers.conv.Conv2d`.
CONV2D = Kernels(region=_region, prepare=_prepare)

#: Kernels and their signatures (``{T}``: the float type) for the PTX compile test.
KERNELS = [
    (_conv_direct, "void({T}[:,:,:,::1], {T}[:,:,:,::1], {T}[::1], boolean, int64, int64, "
                   "int64, int64, {T}[:,:,:,::1])"),
    (_im2col, "void({T}[:,:,:,::1], int64, int64, int64, int64, int64, int64, int64, int64, "
              "{T}[:,::1])"),
    (_scatter_bias, "void({T}[:,::1], {T}[::1], boolean, int64, {T}[:,:,::1])"),
    (_simple_gemm, "void({T}[:,::1], {T}[:,::1], {T}[:,::1])"),
    (_TILED[np.dtype(np.float32)], "void(float32[:,::1], float32[:,::1], float32[:,::1])"),
    (_TILED[np.dtype(np.float64)], "void(float64[:,::1], float64[:,::1], float64[:,::1])"),
]
