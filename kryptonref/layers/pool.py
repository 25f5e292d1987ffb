"""Pooling: the ``MaxPool2d``, ``AvgPool2d``, ``GlobalAvgPool2d`` and
``AdaptiveAvgPool2d`` layer types and their CPU kernels (CUDA twin: :mod:`.pool_cuda`).

Max and average pooling are window layers: they run over padded windows.

As for convolution, full and region computations share one *valid* kernel over
windows that already hold their padding (``-inf`` for max pooling, 0 for
average pooling). Average pooling divides by PyTorch's divisor, which depends
on the absolute output index, so region calls pass each position's output
offset.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Optional

import numpy as np

from .._numba import KERNEL, njit, prange
from .base import Layer, Padding, Pair, Spatial, as_pair, check_rank
from .registry import Kernels, Rule, register

__all__ = ["MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "AdaptiveAvgPool2d", "max_pool_valid",
           "avg_pool_valid", "avg_pool_divisors", "adaptive_avg_pool"]


@njit(inline="always", **KERNEL)
def _nan_max(v, keep):
    """``max(v, keep)``, NaN in ``v`` propagating; a select, not a branch."""
    return v if (v > keep) | (v != v) else keep


@njit(inline="always", **KERNEL)
def _max_into(best, row, x0, sw):
    """``best[ox] = max(best[ox], row[x0 + ox*sw])``, NaN propagating (as PyTorch).

    Branch-free, so it vectorises; a unit stride reads a contiguous slice,
    which vectorises far better than the run-time stride (``docs/design.md``).
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


def adaptive_avg_pool(x, out_hw):
    """PyTorch's adaptive average pooling of a batch ``(N, C, H, W)`` to ``out_hw``.

    Bin ``i`` of ``o`` covers ``[floor(i H / o), ceil((i + 1) H / o))``.
    """
    n, c, h, w = x.shape
    oh, ow = out_hw
    out = np.empty((n, c, oh, ow), x.dtype)
    for i in range(oh):
        y0, y1 = (i * h) // oh, -((-(i + 1) * h) // oh)
        for j in range(ow):
            x0, x1 = (j * w) // ow, -((-(j + 1) * w) // ow)
            out[:, :, i, j] = x[:, :, y0:y1, x0:x1].mean(axis=(2, 3))
    return out


# -- the layer types ------------------------------------------------------------------------
@dataclass(frozen=True)
class MaxPool2d(Spatial):
    """Max pooling; the padding reads as ``-inf``. ``stride`` defaults to the kernel."""

    kernel_size: Pair
    stride: Optional[Pair] = None
    padding: Padding = 0
    dilation: Pair = 1
    ceil_mode: bool = False
    pad_value: ClassVar[float] = float("-inf")

    def __post_init__(self):
        object.__setattr__(self, "dilation", as_pair(self.dilation, "dilation", 1))
        self._init_pool()

    def output_shape(self, input_shapes):
        return (input_shapes[0][0],) + self._spatial_out(input_shapes[0])


@dataclass(frozen=True)
class AvgPool2d(Spatial):
    """Average pooling with PyTorch's divisor rule.

    With ``count_include_pad`` the divisor counts the padding (but not the part of
    a ceil-mode window past the right padding); without it, only input elements.
    """

    kernel_size: Pair
    stride: Optional[Pair] = None
    padding: Padding = 0
    ceil_mode: bool = False
    count_include_pad: bool = True

    def __post_init__(self):
        object.__setattr__(self, "count_include_pad", bool(self.count_include_pad))
        self._init_pool()

    @property
    def dilation(self):
        return (1, 1)

    def output_shape(self, input_shapes):
        return (input_shapes[0][0],) + self._spatial_out(input_shapes[0])


@dataclass(frozen=True)
class GlobalAvgPool2d(Layer):
    """Mean over the spatial axes, ``(C, H, W) -> (C, 1, 1)``; every output changes."""

    def output_shape(self, input_shapes):
        check_rank(input_shapes[0], 3, "GlobalAvgPool2d")
        return (input_shapes[0][0], 1, 1)


@dataclass(frozen=True)
class AdaptiveAvgPool2d(Layer):
    """PyTorch's adaptive average pooling to ``output_size``; every output changes."""

    output_size: Pair

    def __post_init__(self):
        object.__setattr__(self, "output_size", as_pair(self.output_size, "output_size", 1))

    def output_shape(self, input_shapes):
        check_rank(input_shapes[0], 3, "AdaptiveAvgPool2d")
        return (input_shapes[0][0],) + self.output_size


def _max_region(layer, params, win, in_hw, out_hw, out_y0, out_x0, region_hw):
    return max_pool_valid(win, layer.kernel_size, layer.stride, layer.dilation, region_hw)


@lru_cache(maxsize=512)
def divisors(layer, in_hw, out_hw):
    """Per-axis divisors of the whole output of an ``AvgPool2d`` (cached)."""
    return tuple(avg_pool_divisors(in_hw[d], out_hw[d], layer.kernel_size[d], layer.stride[d],
                                   layer.padding[d][0], layer.padding[d][1],
                                   layer.count_include_pad) for d in (0, 1))


def _avg_region(layer, params, win, in_hw, out_hw, out_y0, out_x0, region_hw):
    return avg_pool_valid(win, layer.kernel_size, layer.stride,
                          divisors(layer, tuple(in_hw), tuple(out_hw)), out_y0, out_x0,
                          region_hw)


def _global_full(layer, params, inputs, out_shape):
    x = inputs[0]
    return x.mean(axis=(2, 3), keepdims=True, dtype=x.dtype)


def _adaptive_full(layer, params, inputs, out_shape):
    return adaptive_avg_pool(inputs[0], layer.output_size)


# -- ONNX ---------------------------------------------------------------------------------
def _pool_to_onnx(ctx, name, layer, params, inputs):
    if isinstance(layer, MaxPool2d):
        ctx.node("MaxPool", inputs, name, kernel_shape=list(layer.kernel_size),
                 strides=list(layer.stride), pads=ctx.pads(layer.padding),
                 dilations=list(layer.dilation), ceil_mode=int(layer.ceil_mode))
    else:
        ctx.node("AveragePool", inputs, name, kernel_shape=list(layer.kernel_size),
                 strides=list(layer.stride), pads=ctx.pads(layer.padding),
                 ceil_mode=int(layer.ceil_mode), count_include_pad=int(layer.count_include_pad))


def _pool_from_onnx(cls):
    def handler(ctx, node, attrs):
        src = ctx.spatial_input(node)
        kernel = list(attrs.get("kernel_shape", []))
        strides, dilations, padding = ctx.window_geometry(node, attrs, src, kernel)
        ceil = bool(attrs.get("ceil_mode", 0))
        if cls is MaxPool2d:
            if int(attrs.get("storage_order", 0)) not in (0, 1):
                ctx.fail(node, "unknown storage_order")
            layer = ctx.build(node, MaxPool2d, tuple(kernel), tuple(strides), padding,
                              dilation=tuple(dilations), ceil_mode=ceil)
        else:
            if any(d != 1 for d in dilations):
                ctx.fail(node, f"AveragePool with dilations {dilations} is not supported")
            layer = ctx.build(node, AvgPool2d, tuple(kernel), tuple(strides), padding,
                              ceil_mode=ceil,
                              count_include_pad=bool(attrs.get("count_include_pad", 0)))
        ctx.unused(node)
        ctx.emit(node, layer, [src])
    return handler


def _global_to_onnx(ctx, name, layer, params, inputs):
    ctx.node("GlobalAveragePool", inputs, name)


def _global_from_onnx(ctx, node, attrs):
    ctx.emit(node, GlobalAvgPool2d(), [ctx.spatial_input(node)])


def _reduce_mean_from_onnx(ctx, node, attrs):
    """ReduceMean over axes (2, 3): GlobalAvgPool2d (then Flatten when keepdims=0)."""
    from .dense import Flatten
    src = ctx.spatial_input(node)
    axes = attrs.get("axes")
    if axes is None and ctx.optional(node, 1):
        axes = ctx.const(node, node.input[1], "axes").tolist()
    if axes is None or sorted(a % 4 for a in axes) != [2, 3]:
        ctx.fail(node, f"only a mean over the spatial axes (2, 3) is supported, got axes {axes}")
    if int(attrs.get("keepdims", 1)):
        ctx.emit(node, GlobalAvgPool2d(), [src])
    else:
        pooled = ctx.emit(node, GlobalAvgPool2d(), [src], out=node.output[0] + "#pool")
        ctx.emit(node, Flatten(), [pooled], suffix="_flatten")


def _adaptive_plan(name, in_hw, out_hw):
    """Per-axis (pool factor, replication factor) of an exact AdaptiveAvgPool2d export."""
    pool, rep = [], []
    for size, out in zip(in_hw, out_hw):
        if size % out == 0:
            pool.append(size // out)
            rep.append(1)
        elif out % size == 0:
            pool.append(1)
            rep.append(out // size)
        else:
            raise ValueError(
                f"to_onnx: node {name!r}: AdaptiveAvgPool2d from {tuple(in_hw)} to "
                f"{tuple(out_hw)} has uneven, overlapping windows and no exact ONNX "
                "equivalent (ONNX has no adaptive pooling; exportable are output sizes "
                "that divide the input size, or that the input size divides)")
    return pool, rep


def _adaptive_to_onnx(ctx, name, layer, params, inputs):
    """GlobalAveragePool (output 1x1), AveragePool with kernel = stride = in // out (the
    output size divides the input size), Resize nearest with an integer factor (the input
    size divides the output size), or AveragePool then Resize when the cases mix."""
    in_hw = ctx.shape(inputs[0])[1:]
    out_hw = layer.output_size
    if tuple(out_hw) == (1, 1):
        ctx.node("GlobalAveragePool", inputs, name)
        return
    pool, rep = _adaptive_plan(name, in_hw, out_hw)
    if rep == [1, 1]:   # AveragePool with kernel = stride (kernel 1: the identity)
        ctx.node("AveragePool", inputs, name, kernel_shape=pool, strides=pool)
        return
    src = inputs[0]
    if pool != [1, 1]:
        src = ctx.fresh(f"{name}.pool")
        ctx.node("AveragePool", inputs, src, kernel_shape=pool, strides=pool)
    # Nearest-neighbour replication: output i reads input floor(i / factor).
    scales = ctx.init(f"{name}.scales", [1.0, 1.0] + rep, np.float32)
    roi = "" if ctx.opset >= 13 else ctx.init(f"{name}.roi", np.zeros(0), np.float32)
    ctx.node("Resize", [src, roi, scales], name, mode="nearest",
             coordinate_transformation_mode="asymmetric", nearest_mode="floor")


def _nearest_replicates(size, out, scale, ctm, rounding):
    """Does ONNX nearest Resize map output index ``i`` to input ``i // (out // size)``?"""
    factor = out // size
    for i in range(out):
        if ctm == "asymmetric":
            x = i / scale
        elif ctm == "half_pixel":
            x = (i + 0.5) / scale - 0.5
        elif ctm == "pytorch_half_pixel":
            x = (i + 0.5) / scale - 0.5 if out > 1 else 0.0
        elif ctm == "align_corners":
            x = 0.0 if out == 1 else i * (size - 1) / (out - 1)
        elif ctm == "tf_half_pixel_for_nn":
            x = (i + 0.5) / scale
        else:
            return False
        if rounding == "floor":
            j = math.floor(x)
        elif rounding == "ceil":
            j = math.ceil(x)
        elif rounding == "round_prefer_floor":
            j = math.ceil(x - 0.5)
        elif rounding == "round_prefer_ceil":
            j = math.floor(x + 0.5)
        else:
            return False
        if min(max(j, 0), size - 1) != i // factor:
            return False
    return True


def _resize_from_onnx(ctx, node, attrs):
    """Nearest-neighbour upsampling by integer factors: exactly AdaptiveAvgPool2d."""
    src = ctx.spatial_input(node)
    c, h, w = ctx.shapes[src]
    if ctx.opset < 11:
        scales, sizes = ctx.const(node, node.input[1], "scales"), None
    else:
        s_name, z_name = ctx.optional(node, 2), ctx.optional(node, 3)
        scales = ctx.const(node, s_name, "scales") if s_name else None
        sizes = None
        if z_name in ctx.symbolic:     # sizes built from Shape(x): (N, C, oh, ow)
            sizes = ctx.symbolic[z_name]
        elif z_name:
            sizes = ctx.const(node, z_name, "sizes")
        if scales is not None and scales.size == 0:
            scales = None
    if attrs.get("mode", "nearest") != "nearest":
        ctx.fail(node, f"only mode='nearest' is supported, got {attrs['mode']!r}")
    if int(attrs.get("antialias", 0)):
        ctx.fail(node, "antialias is not supported")
    axes = attrs.get("axes")
    if (scales is None) == (sizes is None):
        ctx.fail(node, "needs exactly one of scales and sizes")
    if scales is not None:
        vec = list(np.asarray(scales, np.float64).reshape(-1))
    else:
        vec = [v if isinstance(v, str) else int(v) for v in np.asarray(sizes).reshape(-1)]
    if axes is not None:
        full = [1.0, 1.0, 1.0, 1.0] if scales is not None else [ctx.BATCH, c, h, w]
        for a, v in zip(axes, vec):
            full[a % 4] = v
        vec = full
    if len(vec) != 4:
        ctx.fail(node, f"scales/sizes must have 4 values, got {list(vec)}")
    if scales is not None:
        if vec[0] != 1.0 or vec[1] != 1.0:
            ctx.fail(node, "only spatial resizing is supported")
        out_hw = [int(math.floor(size * f)) for size, f in zip((h, w), vec[2:])]
        factors = list(vec[2:])
    else:
        if vec[1] != c or not (vec[0] == ctx.BATCH or vec[0] == ctx.batch):
            ctx.fail(node, f"only spatial resizing is supported (sizes {vec} must keep the "
                           "batch size and the channels; a constant batch size needs an "
                           "input with that fixed batch size)")
        if attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
            ctx.fail(node, "keep_aspect_ratio_policy other than 'stretch' is not supported")
        out_hw = [int(v) for v in vec[2:]]
        factors = [o / i for o, i in zip(out_hw, (h, w))]
    ctm = attrs.get("coordinate_transformation_mode", "half_pixel")
    rounding = attrs.get("nearest_mode", "round_prefer_floor")
    for size, out, f in zip((h, w), out_hw, factors):
        if out % size or not _nearest_replicates(size, out, f, ctm, rounding):
            ctx.fail(node, f"only nearest-neighbour upsampling by an integer factor is "
                           f"supported, got {(h, w)} -> {tuple(out_hw)} with "
                           f"coordinate_transformation_mode={ctm!r}, nearest_mode={rounding!r}")
    ctx.emit(node, AdaptiveAvgPool2d(tuple(out_hw)), [src])


register(MaxPool2d, Rule.WINDOW, cpu=Kernels(region=_max_region),
         cuda="kryptonref.layers.pool_cuda:MAX_POOL", onnx_export=_pool_to_onnx,
         onnx_import={"MaxPool": _pool_from_onnx(MaxPool2d)})
register(AvgPool2d, Rule.WINDOW, cpu=Kernels(region=_avg_region),
         cuda="kryptonref.layers.pool_cuda:AVG_POOL", onnx_export=_pool_to_onnx,
         onnx_import={"AveragePool": _pool_from_onnx(AvgPool2d)})
register(GlobalAvgPool2d, Rule.WHOLE, cpu=Kernels(full=_global_full),
         cuda="kryptonref.layers.pool_cuda:GLOBAL_AVG_POOL", onnx_export=_global_to_onnx,
         onnx_import={"GlobalAveragePool": _global_from_onnx,
                      "ReduceMean": _reduce_mean_from_onnx})
register(AdaptiveAvgPool2d, Rule.WHOLE, cpu=Kernels(full=_adaptive_full),
         cuda="kryptonref.layers.pool_cuda:ADAPTIVE_AVG_POOL", onnx_export=_adaptive_to_onnx,
         onnx_import={"Resize": _resize_from_onnx})
