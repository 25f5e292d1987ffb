"""One computation per layer spec, for full tensors and for regions.

``full(...)`` runs a layer on a batch of whole tensors; ``region(...)`` runs a
conv or pool layer on a batch of read windows (padding included) and yields the
outputs of each window's region; ``elementwise(...)`` applies a
region-preserving layer to any slice of a tensor. The engine picks among them
by the spec's ``kind``.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import specs as L
from .conv import conv2d_valid, row_taps
from .winograd import suits_winograd, winograd_filters
from .pool import avg_pool_divisors, avg_pool_valid, max_pool_valid
from .window import pad_full

__all__ = ["full", "region", "elementwise", "prepare_params", "HOST_ONLY"]

#: Prepared parameters only the CPU kernels use (GEMM operands per kernel row,
#: Winograd filters); the CUDA backend neither uploads nor counts them.
HOST_ONLY = ("taps", "winograd")


def prepare_params(layer, params, dtype):
    """Parameters in the form the kernels use (contiguous, in ``dtype``).

    Batch normalisation is folded into a per-channel ``scale`` and ``shift``;
    dense convolutions also get their weights as per-row GEMM operands (``taps``),
    and those :func:`.winograd.suits_winograd` accepts (3x3, stride 1, dilation 1,
    at least ``MIN_CHANNELS`` input channels, Winograd enabled) their Winograd
    transforms (``winograd``). Both are CPU-only: :data:`HOST_ONLY`.
    """
    cast = {k: np.ascontiguousarray(v, dtype=dtype) for k, v in params.items()}
    if isinstance(layer, L.BatchNorm2d):
        inv = 1.0 / np.sqrt(params["running_var"].astype(np.float64) + layer.eps)
        scale = params["weight"].astype(np.float64) * inv
        shift = params["bias"].astype(np.float64) - params["running_mean"].astype(np.float64) * scale
        return {"scale": scale.astype(dtype), "shift": shift.astype(dtype)}
    if isinstance(layer, L.Conv2d) and layer.groups == 1:
        cast["taps"] = row_taps(cast["weight"])
        if suits_winograd(cast["weight"], layer.stride, layer.dilation, layer.groups):
            cast["winograd"] = winograd_filters(cast["weight"])
    return cast


def elementwise(layer, params, x, out=None):
    """Apply a region-preserving layer (ReLU, ReLU6, BatchNorm, Dropout) to ``x``.

    ``x`` has the channel axis at position 1 (``(B, C, ...)``). ``out``: where
    to write the result (``x`` itself computes in place); a new array by default.
    Dropout (inference) returns ``x``.
    """
    if isinstance(layer, L.ReLU):
        return np.maximum(x, 0, out=out)
    if isinstance(layer, L.ReLU6):
        return np.clip(x, 0, 6, out=out)
    if isinstance(layer, L.Dropout):
        return x
    if isinstance(layer, L.BatchNorm2d):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        result = np.multiply(x, params["scale"].reshape(shape), out=out)
        result += params["shift"].reshape(shape)
        return result
    raise TypeError(f"{type(layer).__name__} is not an element-wise layer")


@lru_cache(maxsize=512)
def _divisors(layer, in_hw, out_hw):
    return tuple(avg_pool_divisors(in_hw[d], out_hw[d], layer.kernel_size[d], layer.stride[d],
                                   layer.padding[d][0], layer.padding[d][1],
                                   layer.count_include_pad) for d in (0, 1))


def region(layer, params, win, in_hw, out_hw, out_y0, out_x0, region_hw):
    """Outputs ``region_hw`` of a conv/pool layer for each read window.

    Parameters
    ----------
    win : ndarray (B, C, Hw, Ww)
        Read windows with their padding (``layer.pad_value``).
    in_hw, out_hw : (int, int)
        Full input and output sizes of the layer.
    out_y0, out_x0 : ndarray of int64 (B,)
        Output offset of each region (used by average pooling's divisor).
    region_hw : (int, int)
        Region size, the same for every window.
    """
    if isinstance(layer, L.Conv2d):
        return conv2d_valid(win, params["weight"], params.get("bias"), layer.stride,
                            layer.dilation, layer.groups, region_hw, params.get("taps"),
                            params.get("winograd"))
    if isinstance(layer, L.MaxPool2d):
        return max_pool_valid(win, layer.kernel_size, layer.stride, layer.dilation, region_hw)
    if isinstance(layer, L.AvgPool2d):
        return avg_pool_valid(win, layer.kernel_size, layer.stride,
                              _divisors(layer, tuple(in_hw), tuple(out_hw)),
                              out_y0, out_x0, region_hw)
    raise TypeError(f"{type(layer).__name__} is not a conv or pool layer")


def _adaptive_avg_pool(x, out_hw):
    n, c, h, w = x.shape
    oh, ow = out_hw
    out = np.empty((n, c, oh, ow), x.dtype)
    for i in range(oh):
        y0, y1 = (i * h) // oh, -((-(i + 1) * h) // oh)
        for j in range(ow):
            x0, x1 = (j * w) // ow, -((-(j + 1) * w) // ow)
            out[:, :, i, j] = x[:, :, y0:y1, x0:x1].mean(axis=(2, 3))
    return out


def _softmax(x):
    shifted = x - x.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def full(layer, params, inputs, out_shape):
    """Run a layer on a batch of whole tensors.

    Parameters
    ----------
    inputs : list of ndarray
        One ``(N, ...)`` array per input of the node.
    out_shape : tuple
        The node's output shape without the batch axis.
    """
    x = inputs[0]
    if layer.kind == "spatial":
        out_hw = out_shape[1:]
        padded = pad_full(x, [layer.axis(0), layer.axis(1)], out_hw, layer.pad_value)
        zeros = np.zeros(x.shape[0], np.int64)
        return region(layer, params, padded, x.shape[2:], out_hw, zeros, zeros, out_hw)
    if layer.kind == "elementwise":
        return elementwise(layer, params, x)
    if isinstance(layer, L.Add):
        total = x.copy()
        for other in inputs[1:]:
            total += other
        return total
    if isinstance(layer, L.Concat):
        return np.concatenate(inputs, axis=1)
    if isinstance(layer, L.GlobalAvgPool2d):
        return x.mean(axis=(2, 3), keepdims=True, dtype=x.dtype)
    if isinstance(layer, L.AdaptiveAvgPool2d):
        return _adaptive_avg_pool(x, layer.output_size)
    if isinstance(layer, L.Flatten):
        return np.ascontiguousarray(x).reshape(x.shape[0], -1)
    if isinstance(layer, L.Linear):
        y = x @ params["weight"].T
        if "bias" in params:
            y += params["bias"]
        return y
    if isinstance(layer, L.Softmax):
        return _softmax(x)
    raise TypeError(f"no computation for layer type {type(layer).__name__}")
