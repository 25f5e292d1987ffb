"""A classifier's head on the GPU (CUDA twin of :mod:`kryptonref.layers.dense`)."""
from __future__ import annotations

import math

import numpy as np

from .._cuda import cuda, launch
from ..backends.cuda_memory import empty, upload
from .conv_cuda import gemm
from .registry import Kernels

__all__ = ["FLATTEN", "LINEAR", "SOFTMAX", "KERNELS"]


@cuda.jit(cache=True)
def _add_bias_rows(out, bias):
    n_cols = out.shape[1]
    for idx in range(cuda.grid(1), out.shape[0] * n_cols, cuda.gridsize(1)):
        out[idx // n_cols, idx % n_cols] += bias[idx % n_cols]


@cuda.jit(cache=True)
def _softmax(x, out):
    n_cols = x.shape[1]
    for row in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        top = x[row, 0]
        for j in range(n_cols):
            if x[row, j] > top:
                top = x[row, j]
        total = 0.0
        for j in range(n_cols):
            value = math.exp(x[row, j] - top)
            out[row, j] = value
            total += value
        for j in range(n_cols):
            out[row, j] = out[row, j] / total


def _flatten_full(layer, params, inputs, out_shape):
    x = inputs[0]
    return x.reshape((x.shape[0], x.size // x.shape[0]))


def _linear_prepare(layer, params):
    """The weight transposed (``(in, out)``: the GEMM's right operand) on the device."""
    out = {"weight_t": upload(np.ascontiguousarray(params["weight"].T))}
    if "bias" in params:
        out["bias"] = upload(params["bias"])
    return out


def _linear_full(layer, params, inputs, out_shape):
    x, weight_t = inputs[0], params["weight_t"]
    out = empty((x.shape[0], weight_t.shape[1]), x.dtype)
    gemm(x, weight_t, out)
    if "bias" in params:
        launch(_add_bias_rows, out.size, out, params["bias"])
    return out


def _softmax_full(layer, params, inputs, out_shape):
    x = inputs[0]
    out = empty(x.shape, x.dtype)
    launch(_softmax, x.shape[0], x, out)
    return out


#: The CUDA kernels of the layer types of :mod:`kryptonref.layers.dense`.
FLATTEN = Kernels(full=_flatten_full)
LINEAR = Kernels(full=_linear_full, prepare=_linear_prepare)
SOFTMAX = Kernels(full=_softmax_full)

#: Kernels and their signatures (``{T}``: the float type) for the PTX compile test.
KERNELS = [
    (_add_bias_rows, "void({T}[:,::1], {T}[::1])"),
    (_softmax, "void({T}[:,::1], {T}[:,::1])"),
]
