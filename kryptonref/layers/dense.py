"""Whole-tensor layers of a classifier's head: ``Flatten``, ``Linear`` and ``Softmax``,
and their CPU kernels (CUDA twin: :mod:`.dense_cuda`).

Every output of these layers reads every input, so a change anywhere changes
them all (the ``WHOLE`` rule): the paper recomputes them in full for every
position (Algorithm 1), and so does the engine.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Layer, as_int, check_rank, dense_param_shapes
from .blas import matmul
from .channels import ChannelLinear
from .registry import Kernels, Rule, register

__all__ = ["Flatten", "Linear", "Softmax", "softmax"]


def softmax(x):
    """Softmax over axis 1 of ``(N, F)`` scores, shifted by the row maximum."""
    shifted = x - x.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


# -- Flatten -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Flatten(Layer):
    """``(C, H, W) -> (C*H*W,)`` in C order; every output changes."""

    def output_shape(self, input_shapes):
        size = 1
        for d in input_shapes[0]:
            size *= d
        return (size,)


def _flatten_full(layer, params, inputs, out_shape):
    x = inputs[0]
    return np.ascontiguousarray(x).reshape(x.shape[0], -1)


def _flatten_to_onnx(ctx, name, layer, params, inputs):
    ctx.node("Flatten", inputs, name, axis=1)


def _flatten_from_onnx(ctx, node, attrs):
    src = ctx.act(node, node.input[0])
    rank = ctx.rank(src)
    axis = int(attrs.get("axis", 1))
    axis = axis + rank if axis < 0 else axis
    if axis != 1:
        ctx.fail(node, f"only Flatten with axis 1 is supported, got axis {axis}")
    if rank == 2:
        ctx.alias(node, src)
    else:
        ctx.emit(node, Flatten(), [src])


def _reshape_from_onnx(ctx, node, attrs):
    """Reshape to ``(N, -1)`` (shapes from initializers, Constant nodes or
    Shape/Gather/Unsqueeze/Concat chains on the batch size) is a Flatten."""
    shape_name = node.input[1]
    src = None if node.input[0] in ctx.pending else ctx.act(node, node.input[0])
    if shape_name in ctx.symbolic:
        target = list(ctx.symbolic[shape_name])
    else:
        target = [int(v) for v in np.asarray(
            ctx.const(node, shape_name, "the target shape")).reshape(-1)]
    if ctx.reshape_pattern(node, node.input[0], target):
        return
    features = int(np.prod(ctx.shapes[src]))
    dims = [ctx.batch if ctx.batch is not None else ctx.BATCH] + list(ctx.shapes[src])
    if not int(attrs.get("allowzero", 0)):
        target = [dims[i] if (not isinstance(v, str) and v == 0 and i < len(dims)) else v
                  for i, v in enumerate(target)]
    ok = False
    if len(target) == 2:
        first, second = target
        batch_ok = first == ctx.BATCH or (ctx.batch is not None and first == ctx.batch)
        if batch_ok and second in (-1, features):
            ok = True
        elif first == -1 and second == features:
            ok = True
    if not ok:
        shown = ["N" if v == ctx.BATCH else int(v) for v in target]
        ctx.fail(node, f"Reshape of (N, {', '.join(map(str, ctx.shapes[src]))}) to {shown} is "
                       "not supported; only flattening to (N, -1) is")
    if ctx.rank(src) == 2:
        ctx.alias(node, src)
    else:
        ctx.emit(node, Flatten(), [src])


# -- Linear --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Linear(Layer):
    """Fully-connected layer ``y = W x + b``; ``weight`` is ``(out, in)``."""

    in_features: int
    out_features: int
    bias: bool = True

    def __post_init__(self):
        object.__setattr__(self, "in_features", as_int(self.in_features, "in_features"))
        object.__setattr__(self, "out_features", as_int(self.out_features, "out_features"))

    def output_shape(self, input_shapes):
        shape = input_shapes[0]
        if len(shape) != 1:
            raise ValueError(f"Linear expects a vector input (add a Flatten), got {tuple(shape)}")
        if shape[0] != self.in_features:
            raise ValueError(f"Linear expects {self.in_features} input features, got {shape[0]}")
        return (self.out_features,)

    def param_shapes(self, input_shapes):
        return dense_param_shapes(self)


def _linear_macs(layer, input_shapes, output_shape):
    return layer.in_features * layer.out_features


def _linear_full(layer, params, inputs, out_shape):
    y = matmul(inputs[0], params["weight"].T)
    if "bias" in params:
        y += params["bias"]
    return y


def _linear_to_onnx(ctx, name, layer, params, inputs):
    inputs = list(inputs) + [ctx.init(f"{name}.weight", params["weight"])]
    if layer.bias:
        inputs.append(ctx.init(f"{name}.bias", params["bias"]))
    ctx.node("Gemm", inputs, name, transB=1)


def _emit_linear(ctx, node, src, weight, bias):
    if ctx.rank(src) != 2:
        ctx.fail(node, f"expects a 2-D (N, features) input, got shape "
                       f"(N, {', '.join(map(str, ctx.shapes[src]))}); flatten first")
    out_f, in_f = weight.shape
    params = {"weight": weight}
    if bias is not None:
        bias = np.asarray(bias)
        if bias.size == 1:
            bias = np.full(out_f, bias.reshape(-1)[0], dtype=bias.dtype)
        elif bias.shape not in ((out_f,), (1, out_f)):
            ctx.fail(node, f"bias of shape {bias.shape} does not broadcast as a per-output "
                           f"bias of {out_f} features")
        params["bias"] = bias.reshape(-1)
    ctx.emit(node, Linear(int(in_f), int(out_f), bias=bias is not None), [src], params)


def _gemm_from_onnx(ctx, node, attrs):
    """Gemm (transA 0, transB 0/1); alpha and beta folded into the weights."""
    src = ctx.act(node, node.input[0])
    if int(attrs.get("transA", 0)):
        ctx.fail(node, "transA=1 is not supported")
    b = np.asarray(ctx.const(node, node.input[1], "B (the weight)"))
    if b.ndim != 2:
        ctx.fail(node, f"B must be 2-D, got shape {b.shape}")
    weight = b if int(attrs.get("transB", 0)) else b.T
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    if alpha != 1.0:
        weight = weight.astype(np.float64) * alpha
    c_name = ctx.optional(node, 2)
    bias = None
    if c_name:
        bias = np.asarray(ctx.const(node, c_name, "C (the bias)"))
        if beta != 1.0:
            bias = bias.astype(np.float64) * beta
    _emit_linear(ctx, node, src, weight, bias)


def _matmul_from_onnx(ctx, node, attrs):
    """MatMul by a constant matrix; a constant Add after it becomes its bias."""
    src = ctx.act(node, node.input[0])
    b = np.asarray(ctx.const(node, node.input[1], "the right-hand matrix"))
    if b.ndim != 2:
        ctx.fail(node, f"only a 2-D constant right-hand matrix is supported, got shape {b.shape}")
    _emit_linear(ctx, node, src, b.T, None)


def why_no_bias_fold(ctx, node, src, value):
    """Why ``activation + constant`` cannot become the bias of the Linear (or channels-last
    Linear) computing ``src``, or None when it can."""
    entry = ctx.nodes.get(src)
    if entry is None or not isinstance(entry[0], (Linear, ChannelLinear)):
        return "it does not follow a MatMul or Gemm"
    if entry[0].bias:
        return "the preceding Gemm already has a bias"
    aliases = {t for t, n in ctx.acts.items() if n == src}
    for t in aliases:
        if t in ctx.outputs:
            return f"the value before the addition ({t!r}) is a graph output"
        for user in ctx.consumers.get(t, []):
            if user is not node and not (user.output and user.output[0] in aliases):
                return f"the value before the addition ({t!r}) is also read by " \
                       f"{user.name or user.op_type!r}"
    out_f = entry[0].out_features
    if not (value.size == 1 or value.size == out_f and value.shape[-1] == out_f):
        return f"the constant of shape {value.shape} is not a per-feature bias"
    return None


def fold_bias(ctx, node, src, value):
    """Make ``activation + constant`` the bias of the Linear computing ``src``
    (:func:`why_no_bias_fold` must have returned None)."""
    layer = ctx.nodes[src][0]
    out_f = layer.out_features
    bias = np.full(out_f, value.reshape(-1)[0]) if value.size == 1 else value.reshape(-1)
    ctx.nodes[src][0] = type(layer)(layer.in_features, out_f, bias=True)
    ctx.params[src]["bias"] = bias
    ctx.alias(node, src)


# -- Softmax -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Softmax(Layer):
    """Softmax over the features of a vector."""

    def output_shape(self, input_shapes):
        check_rank(input_shapes[0], 1, "Softmax")
        return tuple(input_shapes[0])


def _softmax_full(layer, params, inputs, out_shape):
    return softmax(inputs[0])


def _softmax_to_onnx(ctx, name, layer, params, inputs):
    ctx.node("Softmax", inputs, name, axis=1)


def _softmax_from_onnx(ctx, node, attrs):
    src = ctx.act(node, node.input[0])
    axis = int(attrs.get("axis", 1 if ctx.opset < 13 else -1))
    if ctx.rank(src) != 2 or axis not in (1, -1):
        ctx.fail(node, f"only Softmax over the features of a 2-D (N, features) tensor is "
                       f"supported, got axis {axis} of a rank-{ctx.rank(src)} tensor")
    ctx.emit(node, Softmax(), [src])


register(Flatten, Rule.WHOLE, cpu=Kernels(full=_flatten_full),
         cuda="kryptonref.layers.dense_cuda:FLATTEN", onnx_export=_flatten_to_onnx,
         onnx_import={"Flatten": _flatten_from_onnx, "Reshape": _reshape_from_onnx})
register(Linear, Rule.WHOLE, cpu=Kernels(full=_linear_full),
         cuda="kryptonref.layers.dense_cuda:LINEAR", onnx_export=_linear_to_onnx,
         onnx_import={"Gemm": _gemm_from_onnx, "MatMul": _matmul_from_onnx},
         macs=_linear_macs)
register(Softmax, Rule.WHOLE, cpu=Kernels(full=_softmax_full),
         cuda="kryptonref.layers.dense_cuda:SOFTMAX", onnx_export=_softmax_to_onnx,
         onnx_import={"Softmax": _softmax_from_onnx})
