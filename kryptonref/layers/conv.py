"""Convolution: the ``Conv2d`` layer type and its CPU kernels (im2col + BLAS GEMM,
Winograd, and a direct kernel for groups); the CUDA twin is :mod:`.conv_cuda`.

Both the full-tensor and the region computation reduce to one operation: a
*valid* (unpadded) convolution over windows that already hold their padding.
For the full tensor the window is the zero-padded input; for a region it is the
window assembled by :func:`kryptonref.layers.window.gather_windows`. The paper's
FMA count (section 4) is what :func:`conv_macs` returns.

Dense convolutions are GEMMs (direct loops are 20-40x slower, ``docs/design.md``,
Performance facts), in one of four layouts:

* *row taps* (vertical stride 1): im2col over channels and kernel columns only,
  one row of columns per window row; kernel row ``ky`` is then a GEMM over the
  column window shifted by ``ky*D`` rows, accumulated straight into the NCHW
  output (``beta = 1``). The buffer is ``kh`` times smaller than im2col's;
* *full im2col* (vertical stride > 1): one GEMM per window into the output;
* *batched* (many small regions, or kernels one row high, where row taps save
  nothing): one im2col and one GEMM for the whole batch, then a copy into NCHW
  order, since per-window GEMMs would be too thin;
* *1x1* (any stride): no im2col; the window's strided samples are the GEMM
  operand, one GEMM per window (:data:`POINTWISE_AREA` outputs or more), else
  one GEMM for the whole batch on the samples in channel-major order.

Every GEMM runs as single-threaded BLAS calls on Numba's threads (row-tap tasks
call BLAS themselves; the other layouts go through :func:`.blas.matmul`), cut into
tasks from the shapes alone, so results do not depend on the thread count.

Dense 3x3 stride-1 convolutions with enough input channels (VGG's and most
of ResNet's) instead use Winograd's F(2x2, 3x3) (:mod:`.winograd`): 16 GEMMs
with 2.25x fewer multiply-accumulates, where the region is large enough
(:func:`.winograd.winograd_pays_off`). Grouped and depthwise convolutions, whose
GEMMs are too thin for BLAS, use a direct kernel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._numba import KERNEL, njit, prange
from .base import Padding, Pair, Spatial, as_int, as_padding, as_pair, check_rank
from .blas import MIN_TASKS, gemm, gemm_function, matmul
from .registry import Kernels, Rule, register
from .winograd import suits_winograd, winograd_conv, winograd_filters, winograd_pays_off

__all__ = ["Conv2d", "conv2d_valid", "conv_macs", "row_taps"]

#: Upper bound on an im2col buffer's bytes; larger batches are processed in chunks
#: (a bounded buffer stays reusable and mostly in the cache; see also
#: :mod:`kryptonref._memory` on reusing freed memory).
IM2COL_BYTES = 16 << 20
#: Regions with fewer outputs than this per window use the batched layout when B > 1.
SMALL_REGION = 256
#: Size of the row-tap column buffer, sized to stay in the cache (bytes).
TILE_BYTES = 2 << 20
#: Outputs per window from which a 1x1 convolution runs one GEMM per window; below,
#: those GEMMs are too thin and one GEMM over the batch wins (measured:
#: ``docs/design.md``, Performance facts).
POINTWISE_AREA = 49


@njit(parallel=True, **KERNEL)
def _conv_row_taps(fn, win, taps, kw, sw, dw, dh, tile_rows, out):
    """Vertical-stride-1 convolution, tiled over output rows to stay in cache.

    One task per window and tile of ``tile_rows`` output rows, in parallel:
    im2col over (channel, kernel column) for the window rows the tile reads,
    then one GEMM per kernel row ``ky`` on the column buffer shifted by
    ``ky*dh`` rows, accumulated into the output rows (``beta = 1``; ``out``
    holds the bias).
    """
    n_items, n_channels = win.shape[0], win.shape[1]
    n_taps, n_out, depth = taps.shape
    oh, ow = out.shape[2], out.shape[3]
    n_tiles = (oh + tile_rows - 1) // tile_rows
    length = (tile_rows + dh * (n_taps - 1)) * ow
    out_flat = out.reshape(-1)
    taps_flat = taps.reshape(-1)
    for task in prange(n_items * n_tiles):
        b = task // n_tiles
        r0 = (task % n_tiles) * tile_rows
        n_rows = min(tile_rows, oh - r0)
        rows_used = n_rows + dh * (n_taps - 1)
        cols = np.empty((n_channels * kw, length), win.dtype)
        for c in range(n_channels):
            for kx in range(kw):
                dst = cols[c * kw + kx]
                x0 = kx * dw
                for y in range(rows_used):
                    src = win[b, c, r0 + y]
                    row0 = y * ow
                    for ox in range(ow):
                        dst[row0 + ox] = src[x0 + ox * sw]
        cols_flat = cols.reshape(-1)
        for t in range(n_taps):
            gemm(fn, n_out, n_rows * ow, depth, taps_flat, t * n_out * depth, depth,
                 cols_flat, t * dh * ow, length,
                 out_flat, (b * n_out) * oh * ow + r0 * ow, oh * ow, 1.0)


@njit(parallel=True, **KERNEL)
def _im2col(win, kh, kw, sh, sw, dh, dw, oh, ow, cols):
    """``cols[b, (c*kh + ky)*kw + kx, oy*ow + ox] = win[b, c, oy*sh + ky*dh, ox*sw + kx*dw]``."""
    n_items, n_channels = win.shape[0], win.shape[1]
    for item_row in prange(n_items * n_channels * kh * kw):
        b = item_row // (n_channels * kh * kw)
        row = item_row % (n_channels * kh * kw)
        c = row // (kh * kw)
        ky = (row // kw) % kh
        kx = row % kw
        dst = cols[b, row]
        for oy in range(oh):
            src = win[b, c, oy * sh + ky * dh]
            dst0 = oy * ow
            x0 = kx * dw
            for ox in range(ow):
                dst[dst0 + ox] = src[x0 + ox * sw]


@njit(parallel=True, **KERNEL)
def _im2col_batched(win, kh, kw, sh, sw, dh, dw, oh, ow, flat):
    """``flat[(c*kh + ky)*kw + kx, b*oh*ow + oy*ow + ox] = win[b, c, oy*sh + ky*dh, ox*sw + kx*dw]``.

    The batched GEMM's operand, written row by row into one C-contiguous matrix
    (contiguous copies when the horizontal stride is 1).
    """
    n_items, n_channels = win.shape[0], win.shape[1]
    plane = oh * ow
    for row_item in prange(n_channels * kh * kw * n_items):
        row = row_item // n_items
        b = row_item % n_items
        c = row // (kh * kw)
        ky = (row // kw) % kh
        kx = row % kw
        x0 = kx * dw
        base = b * plane
        for oy in range(oh):
            src = win[b, c, oy * sh + ky * dh]
            dst0 = base + oy * ow
            if sw == 1:
                flat[row, dst0:dst0 + ow] = src[x0:x0 + ow]
            else:
                for ox in range(ow):
                    flat[row, dst0 + ox] = src[x0 + ox * sw]


@njit(parallel=True, **KERNEL)
def _unpack_gemm(result, bias, out):
    """``out[b, o] = result[o, b*P:(b+1)*P] + bias[o]`` (batched layout to NCHW)."""
    n_items, n_out = out.shape[0], out.shape[1]
    per_item = out.shape[2] * out.shape[3]
    out_rows = out.reshape(n_items * n_out, per_item)
    for item_out in prange(n_items * n_out):
        b = item_out // n_out
        o = item_out % n_out
        out_rows[item_out, :] = result[o, b * per_item:(b + 1) * per_item] + bias[o]


@njit(parallel=True, **KERNEL)
def _conv_direct(win, weight, bias, sh, sw, dh, dw, groups, out):
    """Grouped and depthwise convolution, one task per (window, output channel).

    Output row by output row, each tap ``(ci, ky, kx)`` adds ``w * input row`` to
    the whole row; with a horizontal stride of 1 that loop reads contiguous
    memory and vectorises (2x faster than one stride for both, measured on
    ConvNeXt's 7x7 depthwise layers).
    """
    n_items, n_out, oh, ow = out.shape
    cin_group = weight.shape[1]
    kh, kw = weight.shape[2], weight.shape[3]
    cout_group = n_out // groups
    for item_out in prange(n_items * n_out):
        b = item_out // n_out
        o = item_out % n_out
        g = o // cout_group
        bias_o = bias[o]
        for oy in range(oh):
            for ox in range(ow):
                out[b, o, oy, ox] = bias_o
            for ci in range(cin_group):
                c = g * cin_group + ci
                for ky in range(kh):
                    y = oy * sh + ky * dh
                    for kx in range(kw):
                        w = weight[o, ci, ky, kx]
                        x0 = kx * dw
                        if sw == 1:
                            for ox in range(ow):
                                out[b, o, oy, ox] += w * win[b, c, y, x0 + ox]
                        else:
                            for ox in range(ow):
                                out[b, o, oy, ox] += w * win[b, c, y, x0 + ox * sw]


def row_taps(weight):
    """Weights as ``(kh, C_out, C_in*kw)``: one GEMM operand per kernel row."""
    n_out, cin, kh, kw = weight.shape
    return np.ascontiguousarray(weight.transpose(2, 0, 1, 3).reshape(kh, n_out, cin * kw))


def conv2d_valid(win, weight, bias, stride, dilation, groups, out_hw, taps=None,
                 winograd=None):
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
    taps : ndarray (kh, C_out, C_in*kw), optional
        ``row_taps(weight)``, precomputed by the model.
    winograd : ndarray (16, C_out, C_in), optional
        ``winograd_filters(weight)`` for a dense 3x3 stride-1 convolution
        (:func:`.winograd.suits_winograd`); when given, the convolution runs as
        Winograd F(2x2, 3x3).

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
    if winograd is not None and winograd_pays_off(oh, ow, cin_group):
        return winograd_conv(win, winograd, bias, out)
    if groups != 1:
        _conv_direct(win, weight, bias, sh, sw, dh, dw, groups, out)
        return out
    if (kh, kw) == (1, 1):
        return _conv_1x1(win, weight, bias, stride, out)
    if n_items > 1 and (oh * ow < SMALL_REGION or kh == 1):
        return _conv_batched(win, weight, bias, stride, dilation, out)
    out[...] = bias[None, :, None, None]
    fn = gemm_function(win.dtype)
    if sh == 1:
        if taps is None:
            taps = row_taps(weight)
        _conv_row_taps(fn, win, taps, kw, sw, dw, dh, _tile_rows(win, kh, kw, dh, oh, ow), out)
        return out
    matrix = weight.reshape(n_out, -1)
    for first, last in _chunks(n_items, cin_group * kh * kw * oh * ow * win.itemsize):
        cols = np.empty((last - first, cin_group * kh * kw, oh * ow), win.dtype)
        _im2col(win[first:last], kh, kw, sh, sw, dh, dw, oh, ow, cols)
        matmul(matrix, cols, out=out[first:last].reshape(last - first, n_out, oh * ow), beta=1.0)
    return out


def _tile_rows(win, kh, kw, dh, oh, ow):
    """Output rows per row-tap task: as many as keep its column buffer within
    :data:`TILE_BYTES`, and few enough for :data:`.blas.MIN_TASKS` tasks (from the
    shapes only, so the result does not depend on the thread count)."""
    row_bytes = win.shape[1] * kw * ow * win.itemsize
    tile_rows = int(min(oh, max(1, TILE_BYTES // row_bytes - dh * (kh - 1))))
    tiles_per_item = -(-MIN_TASKS // win.shape[0])
    return max(1, min(tile_rows, -(-oh // tiles_per_item)))


def _chunks(n_items, bytes_per_item):
    step = max(1, IM2COL_BYTES // max(bytes_per_item, 1))
    return [(first, min(first + step, n_items)) for first in range(0, n_items, step)]


def _conv_1x1(win, weight, bias, stride, out):
    """1x1 convolution: a GEMM on the window's samples ``win[:, :, ::sh, ::sw]``.

    One GEMM per window, ``out[b] = W @ x[b] + bias``, for windows of at least
    :data:`POINTWISE_AREA` outputs; for smaller ones, one GEMM on all the
    samples in channel-major order, then back to NCHW.
    """
    n_items, n_out, oh, ow = out.shape
    (sh, sw), n_in = stride, win.shape[1]
    samples = win[:, :, :(oh - 1) * sh + 1:sh, :(ow - 1) * sw + 1:sw]
    matrix = weight.reshape(n_out, n_in)
    per_window = n_items == 1 or oh * ow >= POINTWISE_AREA
    # chunks bound the copies of the samples (none when they are the window itself)
    for first, last in _chunks(n_items, n_in * oh * ow * win.itemsize):
        part = samples[first:last]
        if per_window:
            flat = out[first:last].reshape(last - first, n_out, oh * ow)
            matmul(matrix, np.ascontiguousarray(part).reshape(last - first, n_in, oh * ow),
                   out=flat)
            flat += bias[None, :, None]
        else:
            by_channel = np.ascontiguousarray(part.transpose(1, 0, 2, 3)).reshape(n_in, -1)
            _unpack_gemm(matmul(matrix, by_channel), bias, out[first:last])
    return out


def _conv_batched(win, weight, bias, stride, dilation, out):
    """Many small regions: one im2col and one GEMM for the whole batch."""
    n_items, n_out, oh, ow = out.shape
    _, cin_group, kh, kw = weight.shape
    (sh, sw), (dh, dw) = stride, dilation
    matrix = weight.reshape(n_out, -1)
    rows = cin_group * kh * kw
    for first, last in _chunks(n_items, rows * oh * ow * win.itemsize):
        flat = np.empty((rows, (last - first) * oh * ow), win.dtype)
        _im2col_batched(win[first:last], kh, kw, sh, sw, dh, dw, oh, ow, flat)
        _unpack_gemm(matmul(matrix, flat), bias, out[first:last])
    return out


def conv_macs(layer, input_shapes, output_shape):
    """Multiply-accumulates of computing ``output_shape`` (the paper's FMA count, section 4).

    ``C_out * h * w * (C_in / groups) * k_h * k_w``; a region of ``h x w``
    outputs costs ``conv_macs(layer, shapes, (C_out, h, w))``.
    """
    c_out, h, w = output_shape
    kh, kw = layer.kernel_size
    return c_out * h * w * (layer.in_channels // layer.groups) * kh * kw


# -- the layer type -----------------------------------------------------------------------
@dataclass(frozen=True)
class Conv2d(Spatial):
    """2-D convolution (cross-correlation, as PyTorch and ONNX define it).

    Parameters ``weight`` of shape ``(out_channels, in_channels // groups, kh, kw)``
    and, when ``bias``, ``bias`` of shape ``(out_channels,)``.
    """

    in_channels: int
    out_channels: int
    kernel_size: Pair
    stride: Pair = 1
    padding: Padding = 0
    dilation: Pair = 1
    groups: int = 1
    bias: bool = True

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "in_channels", as_int(self.in_channels, "in_channels"))
        set_(self, "out_channels", as_int(self.out_channels, "out_channels"))
        set_(self, "kernel_size", as_pair(self.kernel_size, "kernel_size", 1))
        set_(self, "stride", as_pair(self.stride, "stride", 1))
        set_(self, "padding", as_padding(self.padding))
        set_(self, "dilation", as_pair(self.dilation, "dilation", 1))
        set_(self, "groups", as_int(self.groups, "groups"))
        set_(self, "bias", bool(self.bias))
        if self.in_channels < 1 or self.out_channels < 1 or self.groups < 1:
            raise ValueError("Conv2d channels and groups must be positive")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"Conv2d: in_channels {self.in_channels} and out_channels {self.out_channels} "
                f"must both be divisible by groups {self.groups}")

    def output_shape(self, input_shapes):
        shape = input_shapes[0]
        check_rank(shape, 3, "Conv2d")
        if shape[0] != self.in_channels:
            raise ValueError(f"Conv2d expects {self.in_channels} input channels, got {shape[0]}")
        return (self.out_channels,) + self._spatial_out(shape)

    def param_shapes(self, input_shapes):
        shapes = {"weight": (self.out_channels, self.in_channels // self.groups)
                  + self.kernel_size}
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes


def _region(layer, params, win, in_hw, out_hw, out_y0, out_x0, region_hw):
    return conv2d_valid(win, params["weight"], params.get("bias"), layer.stride,
                        layer.dilation, layer.groups, region_hw, params.get("taps"),
                        params.get("winograd"))


def _prepare_cpu(layer, params):
    """Dense convolutions also get their weights as per-row GEMM operands (``taps``), and
    those :func:`.winograd.suits_winograd` accepts their Winograd transforms."""
    if layer.groups != 1:
        return params
    params = dict(params, taps=row_taps(params["weight"]))
    if suits_winograd(params["weight"], layer.stride, layer.dilation, layer.groups):
        params["winograd"] = winograd_filters(params["weight"])
    return params


def _to_onnx(ctx, name, layer, params, inputs):
    inputs = list(inputs) + [ctx.init(f"{name}.weight", params["weight"])]
    if layer.bias:
        inputs.append(ctx.init(f"{name}.bias", params["bias"]))
    ctx.node("Conv", inputs, name, kernel_shape=list(layer.kernel_size),
             strides=list(layer.stride), pads=ctx.pads(layer.padding),
             dilations=list(layer.dilation), group=layer.groups)


def _from_onnx(ctx, node, attrs):
    src = ctx.spatial_input(node)
    weight = ctx.const(node, node.input[1], "the weight")
    if weight.ndim != 4:
        ctx.fail(node, f"only 2-D convolutions are supported (weight of shape {weight.shape})")
    kernel = list(weight.shape[2:])
    if "kernel_shape" in attrs and list(attrs["kernel_shape"]) != kernel:
        ctx.fail(node, f"kernel_shape {attrs['kernel_shape']} contradicts the weight shape "
                       f"{weight.shape}")
    strides, dilations, padding = ctx.window_geometry(node, attrs, src, kernel)
    groups = int(attrs.get("group", 1))
    bias_name = ctx.optional(node, 2)
    params = {"weight": weight}
    if bias_name:
        params["bias"] = ctx.const(node, bias_name, "the bias").reshape(-1)
    layer = ctx.build(node, Conv2d, weight.shape[1] * groups, weight.shape[0], tuple(kernel),
                      stride=tuple(strides), padding=padding, dilation=tuple(dilations),
                      groups=groups, bias=bias_name is not None)
    ctx.emit(node, layer, [src], params)


register(Conv2d, Rule.WINDOW, cpu=Kernels(region=_region, prepare=_prepare_cpu),
         cuda="kryptonref.layers.conv_cuda:CONV2D", macs=conv_macs,
         onnx_export=_to_onnx, onnx_import={"Conv": _from_onnx})
