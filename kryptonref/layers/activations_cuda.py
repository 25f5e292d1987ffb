"""Activation functions on the GPU (CUDA twin of :mod:`kryptonref.layers.activations`).

One element-wise kernel per function, each the same grid-stride loop around a
device function ``f(x, a, b)`` of the element and two scalar parameters.
"""
from __future__ import annotations

import math

import numpy as np

from .._cuda import cuda, launch
from ..backends.cuda_memory import empty
from .registry import Kernels

__all__ = ["SIGMOID", "HARD_SIGMOID", "HARD_SWISH", "SILU", "GELU", "ELU", "TANH", "SOFTPLUS",
           "MISH", "ERF", "CLIP", "POWER", "PRELU", "KERNELS"]


@cuda.jit(device=True, inline=True)
def _sigmoid(x, a, b):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@cuda.jit(device=True, inline=True)
def _hard_sigmoid(x, a, b):
    return min(max(a * x + b, 0.0), 1.0)


@cuda.jit(device=True, inline=True)
def _hard_swish(x, a, b):
    return x * (min(max(x + 3.0, 0.0), 6.0) / 6.0)


@cuda.jit(device=True, inline=True)
def _silu(x, a, b):
    return x * _sigmoid(x, a, b)


@cuda.jit(device=True, inline=True)
def _gelu(x, a, b):
    # a: 1 for the tanh approximation, 0 for the exact (erf) form
    if a != 0:
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1.0 + math.tanh(inner))
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


@cuda.jit(device=True, inline=True)
def _elu(x, a, b):
    return x if x > 0 else a * math.expm1(min(x, 0.0))


@cuda.jit(device=True, inline=True)
def _tanh(x, a, b):
    return math.tanh(x)


@cuda.jit(device=True, inline=True)
def _softplus(x, a, b):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@cuda.jit(device=True, inline=True)
def _mish(x, a, b):
    return x * math.tanh(_softplus(x, a, b))


@cuda.jit(device=True, inline=True)
def _erf(x, a, b):
    return math.erf(x)


@cuda.jit(device=True, inline=True)
def _clip(x, a, b):
    return x if x != x else min(max(x, a), b)


@cuda.jit(device=True, inline=True)
def _power(x, a, b):
    return x ** a


def _kernel_for(function):
    """The grid-stride kernel applying ``function(x, a, b)`` to every element."""
    @cuda.jit
    def kernel(x, a, b, out):
        for idx in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            out[idx] = function(x[idx], a, b)
    return kernel


@cuda.jit(cache=True)
def _prelu(x, weight, plane, out):
    # x, out: flat (B * C * plane); weight: one slope, or one per channel
    n_weights = weight.shape[0]
    for idx in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        value = x[idx]
        slope = weight[(idx // plane) % n_weights] if n_weights > 1 else weight[0]
        out[idx] = value * slope if value < 0 else value


def _flat(x):
    return x.reshape((x.size,))


def _unary(function, parameters):
    """Kernels of an activation: ``parameters(layer) -> (a, b)``."""
    kernel = _kernel_for(function)

    def apply(layer, params, x, out=None):
        if out is None:
            out = empty(x.shape, x.dtype)
        a, b = (np.dtype(x.dtype).type(v) for v in parameters(layer))
        launch(kernel, x.size, _flat(x), a, b, _flat(out))
        return out

    apply.kernel = kernel
    return Kernels(apply=apply)


def _prelu_apply(layer, params, x, out=None):
    if out is None:
        out = empty(x.shape, x.dtype)
    plane = int(np.prod(x.shape[2:], dtype=np.int64)) if len(x.shape) > 2 else 1
    launch(_prelu, x.size, _flat(x), params["weight"], plane, _flat(out))
    return out


def _none(layer):
    return 0.0, 0.0


#: The CUDA kernels of the layer types of :mod:`kryptonref.layers.activations`.
SIGMOID = _unary(_sigmoid, _none)
HARD_SIGMOID = _unary(_hard_sigmoid, lambda layer: (layer.alpha, layer.beta))
HARD_SWISH = _unary(_hard_swish, _none)
SILU = _unary(_silu, _none)
GELU = _unary(_gelu, lambda layer: (1.0 if layer.approximate == "tanh" else 0.0, 0.0))
ELU = _unary(_elu, lambda layer: (layer.alpha, 0.0))
TANH = _unary(_tanh, _none)
SOFTPLUS = _unary(_softplus, _none)
MISH = _unary(_mish, _none)
ERF = _unary(_erf, _none)
CLIP = _unary(_clip, lambda layer: (layer.low, layer.high))
POWER = _unary(_power, lambda layer: (layer.exponent, 0.0))
PRELU = Kernels(apply=_prelu_apply)

#: Kernels and their signatures (``{T}``: the float type) for the PTX compile test.
KERNELS = [(record.apply.kernel, "void({T}[::1], {T}, {T}, {T}[::1])")
           for record in (SIGMOID, HARD_SIGMOID, HARD_SWISH, SILU, GELU, ELU, TANH, SOFTPLUS,
                          MISH, ERF, CLIP, POWER)]
KERNELS.append((_prelu, "void({T}[::1], {T}[::1], int64, {T}[::1])"))
