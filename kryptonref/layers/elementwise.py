"""Position-wise layers: ``ReLU``, ``ReLU6``, ``LeakyReLU``, ``BatchNorm2d`` (eval) and
``Dropout`` (inference), and their CPU kernels (CUDA twin: :mod:`.elementwise_cuda`).

Each output element reads only the input element at its position, so a changed
region passes through unchanged (the ``POSITIONWISE`` rule, ``docs/design.md``, Geometry)
and the layer applies to any slice of a tensor, a region's compact data included.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .activations import Clip
from .base import Layer, as_int, check_rank
from .registry import Kernels, Rule, register

__all__ = ["ReLU", "ReLU6", "LeakyReLU", "BatchNorm2d", "Dropout"]


def _channel_shape(x):
    """Broadcast shape of a per-channel vector against ``x`` ``(B, C, ...)``."""
    return (1, -1) + (1,) * (x.ndim - 2)


# -- ReLU, ReLU6 ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ReLU(Layer):
    """``max(x, 0)``, element-wise on feature maps or vectors."""

    def output_shape(self, input_shapes):
        return tuple(input_shapes[0])


@dataclass(frozen=True)
class ReLU6(Layer):
    """``min(max(x, 0), 6)``, element-wise."""

    def output_shape(self, input_shapes):
        return tuple(input_shapes[0])


def _relu(layer, params, x, out=None):
    return np.maximum(x, 0, out=out)


def _relu6(layer, params, x, out=None):
    return np.clip(x, 0, 6, out=out)


def _relu_to_onnx(ctx, name, layer, params, inputs):
    ctx.node("Relu", inputs, name)


def _relu6_to_onnx(ctx, name, layer, params, inputs):
    bounds = [ctx.init(f"{name}.min", np.array(0.0)), ctx.init(f"{name}.max", np.array(6.0))]
    ctx.node("Clip", list(inputs) + bounds, name)


def _relu_from_onnx(ctx, node, attrs):
    ctx.emit(node, ReLU(), [ctx.act(node, node.input[0])])


def _clip_from_onnx(ctx, node, attrs):
    """Clip(0, 6) is ReLU6, Clip(0, inf) ReLU, other bounds :class:`.activations.Clip`."""
    src = ctx.act(node, node.input[0])
    if ctx.opset < 11:
        lo, hi = attrs.get("min", -math.inf), attrs.get("max", math.inf)
    else:
        lo, hi = ctx.optional(node, 1), ctx.optional(node, 2)
        lo = -math.inf if lo is None else ctx.const(node, lo, "the min bound")
        hi = math.inf if hi is None else ctx.const(node, hi, "the max bound")
    lo, hi = (float(np.asarray(v).reshape(-1)[0]) if np.size(v) == 1 else None
              for v in (lo, hi))
    if lo is None or hi is None:
        ctx.fail(node, "Clip bounds must be scalars")
    if lo == 0.0 and hi == 6.0:
        ctx.emit(node, ReLU6(), [src])
    elif lo == 0.0 and hi == math.inf:
        ctx.emit(node, ReLU(), [src])
    else:
        ctx.emit(node, ctx.build(node, Clip, lo, hi), [src])


# -- LeakyReLU -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LeakyReLU(Layer):
    """``x`` where ``x >= 0``, ``negative_slope * x`` elsewhere, element-wise (PyTorch's
    default slope 0.01)."""

    negative_slope: float = 0.01

    def __post_init__(self):
        slope = self.negative_slope
        if isinstance(slope, bool) or not isinstance(slope, (int, float, np.floating)) \
                or not math.isfinite(slope):
            raise ValueError(f"LeakyReLU: negative_slope must be a finite number, got {slope!r}")
        object.__setattr__(self, "negative_slope", float(slope))

    def output_shape(self, input_shapes):
        return tuple(input_shapes[0])


def _leaky_relu(layer, params, x, out=None):
    """``x * slope`` where ``x < 0``, ``x`` elsewhere (NaN stays NaN, as in PyTorch)."""
    if out is None:
        out = x.copy()
    elif out is not x:
        out[...] = x
    np.multiply(out, out.dtype.type(layer.negative_slope), out=out, where=out < 0)
    return out


def _leaky_relu_to_onnx(ctx, name, layer, params, inputs):
    ctx.node("LeakyRelu", inputs, name, alpha=layer.negative_slope)


def _leaky_relu_from_onnx(ctx, node, attrs):
    slope = ctx.float32_attr(attrs.get("alpha", 0.01))
    ctx.emit(node, ctx.build(node, LeakyReLU, slope), [ctx.act(node, node.input[0])])


# -- Dropout -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dropout(Layer):
    """Identity at inference time."""

    p: float = 0.5

    def output_shape(self, input_shapes):
        return tuple(input_shapes[0])


def _identity(layer, params, x, out=None):
    return x


def _dropout_to_onnx(ctx, name, layer, params, inputs):
    # Inference-mode Dropout is the identity (opset >= 12 without training_mode).
    attrs = {"ratio": float(layer.p)} if ctx.opset < 12 else {}
    ctx.node("Dropout", inputs, name, **attrs)


def _dropout_from_onnx(ctx, node, attrs):
    """Inference-mode Dropout is removed (its input passes through)."""
    src = ctx.act(node, node.input[0])
    mode = ctx.optional(node, 2)
    if mode is not None and bool(np.asarray(ctx.const(node, mode, "training_mode"))):
        ctx.fail(node, "training_mode=True is not supported (inference only)")
    if ctx.opset < 7 and not int(attrs.get("is_test", 0)):
        ctx.fail(node, "Dropout in training mode (is_test=0) is not supported")
    ctx.unused(node)
    ctx.alias(node, src)


# -- BatchNorm2d ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchNorm2d(Layer):
    """Batch normalisation in eval mode: ``(x - mean) / sqrt(var + eps) * weight + bias``.

    Parameters ``weight``, ``bias``, ``running_mean``, ``running_var``, each ``(C,)``.
    """

    num_features: int
    eps: float = 1e-5

    def __post_init__(self):
        object.__setattr__(self, "num_features", as_int(self.num_features, "num_features"))
        if self.eps <= 0:
            raise ValueError(f"BatchNorm2d: eps must be positive, got {self.eps}")

    def output_shape(self, input_shapes):
        shape = input_shapes[0]
        check_rank(shape, 3, "BatchNorm2d")
        if shape[0] != self.num_features:
            raise ValueError(f"BatchNorm2d expects {self.num_features} channels, got {shape[0]}")
        return tuple(shape)

    def param_shapes(self, input_shapes):
        c = (self.num_features,)
        return {"weight": c, "bias": c, "running_mean": c, "running_var": c}


def _batchnorm_init(layer, shapes, rng):
    """Non-trivial statistics, so that a test notices a forgotten parameter."""
    c = shapes["weight"]
    return {"weight": rng.uniform(0.5, 1.5, c), "bias": rng.normal(0, 0.1, c),
            "running_mean": rng.normal(0, 0.1, c), "running_var": rng.uniform(0.5, 1.5, c)}


def _batchnorm_prepare(layer, params, dtype):
    """Folded, in float64, into a per-channel ``scale`` and ``shift``."""
    inv = 1.0 / np.sqrt(params["running_var"].astype(np.float64) + layer.eps)
    scale = params["weight"].astype(np.float64) * inv
    shift = params["bias"].astype(np.float64) - params["running_mean"].astype(np.float64) * scale
    return {"scale": scale.astype(dtype), "shift": shift.astype(dtype)}


def _affine(layer, params, x, out=None):
    """``x * scale + shift`` per channel."""
    shape = _channel_shape(x)
    result = np.multiply(x, params["scale"].reshape(shape), out=out)
    result += params["shift"].reshape(shape)
    return result


def _batchnorm_to_onnx(ctx, name, layer, params, inputs):
    inputs = list(inputs) + [ctx.init(f"{name}.{k}", params[k])
                             for k in ("weight", "bias", "running_mean", "running_var")]
    ctx.node("BatchNormalization", inputs, name, epsilon=float(layer.eps))


def _batchnorm_from_onnx(ctx, node, attrs):
    src = ctx.spatial_input(node)
    if int(attrs.get("training_mode", 0)):
        ctx.fail(node, "training_mode=1 is not supported (inference only)")
    if int(attrs.get("spatial", 1)) != 1:
        ctx.fail(node, "spatial=0 is not supported")
    ctx.unused(node)
    names = ("weight", "bias", "running_mean", "running_var")
    params = {p: ctx.const(node, node.input[1 + i], p).reshape(-1) for i, p in enumerate(names)}
    layer = ctx.build(node, BatchNorm2d, int(params["weight"].shape[0]),
                      eps=ctx.float32_attr(attrs.get("epsilon", 1e-5)))
    ctx.emit(node, layer, [src], params)


register(ReLU, Rule.POSITIONWISE, cpu=Kernels(apply=_relu),
         cuda="kryptonref.layers.elementwise_cuda:RELU", onnx_export=_relu_to_onnx,
         onnx_import={"Relu": _relu_from_onnx})
register(ReLU6, Rule.POSITIONWISE, cpu=Kernels(apply=_relu6),
         cuda="kryptonref.layers.elementwise_cuda:RELU6", onnx_export=_relu6_to_onnx,
         onnx_import={"Clip": _clip_from_onnx})
register(LeakyReLU, Rule.POSITIONWISE, cpu=Kernels(apply=_leaky_relu),
         cuda="kryptonref.layers.elementwise_cuda:LEAKY_RELU", onnx_export=_leaky_relu_to_onnx,
         onnx_import={"LeakyRelu": _leaky_relu_from_onnx})
register(Dropout, Rule.POSITIONWISE, cpu=Kernels(apply=_identity),
         cuda="kryptonref.layers.elementwise_cuda:IDENTITY", onnx_export=_dropout_to_onnx,
         onnx_import={"Dropout": _dropout_from_onnx}, aliases_input=True)
register(BatchNorm2d, Rule.POSITIONWISE, cpu=Kernels(apply=_affine),
         cuda="kryptonref.layers.elementwise_cuda:AFFINE", onnx_export=_batchnorm_to_onnx,
         onnx_import={"BatchNormalization": _batchnorm_from_onnx}, init=_batchnorm_init,
         prepare=_batchnorm_prepare)
