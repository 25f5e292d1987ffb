"""Activation functions of modern networks: ``Sigmoid``, ``HardSigmoid``, ``HardSwish``,
``SiLU``, ``GELU``, ``ELU``, ``Tanh``, ``Softplus``, ``Mish``, ``Erf``, ``Clip``, ``Power``
and ``PReLU``, with their CPU kernels (CUDA twin: :mod:`.activations_cuda`).

Each reads only the input element at its position, so a changed region passes
through unchanged (the ``POSITIONWISE`` rule, ``docs/design.md``, The layer
registry); they apply to feature maps, vectors and token tensors alike. The
definitions are PyTorch's (``torch.nn`` modules of the same names), which are
ONNX's where ONNX has the operator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import erf as _erf
from scipy.special import expit as _expit

from .._pool import map_elementwise
from .base import Layer, as_int
from .registry import Kernels, Rule, register

__all__ = ["Sigmoid", "HardSigmoid", "HardSwish", "SiLU", "GELU", "ELU", "Tanh", "Softplus",
           "Mish", "Erf", "Clip", "Power", "PReLU", "UNARY"]


def _real(value, what, layer):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{layer}: {what} must be a number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class _Unary(Layer):
    """A function applied element by element: the output has the input's shape (any rank)."""

    def output_shape(self, input_shapes):
        return tuple(input_shapes[0])


@dataclass(frozen=True)
class Sigmoid(_Unary):
    """``1 / (1 + exp(-x))``."""


@dataclass(frozen=True)
class HardSigmoid(_Unary):
    """``clip(alpha x + beta, 0, 1)``; PyTorch's ``Hardsigmoid`` is alpha 1/6, beta 1/2
    (ONNX's default alpha is 0.2)."""

    alpha: float = 1.0 / 6.0
    beta: float = 0.5

    def __post_init__(self):
        object.__setattr__(self, "alpha", _real(self.alpha, "alpha", "HardSigmoid"))
        object.__setattr__(self, "beta", _real(self.beta, "beta", "HardSigmoid"))


@dataclass(frozen=True)
class HardSwish(_Unary):
    """``x relu6(x + 3) / 6`` (MobileNet v3)."""


@dataclass(frozen=True)
class SiLU(_Unary):
    """``x sigmoid(x)``, also called Swish (EfficientNet)."""


@dataclass(frozen=True)
class GELU(_Unary):
    """``x Phi(x)``: ``0.5 x (1 + erf(x / sqrt 2))``, or with ``approximate="tanh"``
    ``0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))``."""

    approximate: str = "none"

    def __post_init__(self):
        if self.approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got "
                             f"{self.approximate!r}")


@dataclass(frozen=True)
class ELU(_Unary):
    """``x`` for ``x > 0``, ``alpha (exp(x) - 1)`` elsewhere."""

    alpha: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "alpha", _real(self.alpha, "alpha", "ELU"))


@dataclass(frozen=True)
class Tanh(_Unary):
    """``tanh(x)``."""


@dataclass(frozen=True)
class Softplus(_Unary):
    """``log(1 + exp(x))`` (ONNX's; PyTorch's ``Softplus`` with its defaults agrees to
    float rounding)."""


@dataclass(frozen=True)
class Mish(_Unary):
    """``x tanh(softplus(x))``."""


@dataclass(frozen=True)
class Erf(_Unary):
    """The error function (exporters write GELU with it)."""


@dataclass(frozen=True)
class Clip(_Unary):
    """``min(max(x, low), high)``; either bound may be infinite."""

    low: float = -math.inf
    high: float = math.inf

    def __post_init__(self):
        low, high = _real(self.low, "low", "Clip"), _real(self.high, "high", "Clip")
        if math.isnan(low) or math.isnan(high) or low > high:
            raise ValueError(f"Clip: needs low <= high, got [{self.low}, {self.high}]")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)


@dataclass(frozen=True)
class Power(_Unary):
    """``x ** exponent`` for a constant exponent (exporters write ``x^3`` of tanh-GELU so)."""

    exponent: float = 2.0

    def __post_init__(self):
        object.__setattr__(self, "exponent", _real(self.exponent, "exponent", "Power"))


@dataclass(frozen=True)
class PReLU(_Unary):
    """``x`` for ``x >= 0``, ``weight[c] x`` elsewhere; ``weight`` has ``num_parameters``
    slopes: 1 (shared) or one per channel (axis 0 of a sample)."""

    num_parameters: int = 1

    def __post_init__(self):
        object.__setattr__(self, "num_parameters", as_int(self.num_parameters, "num_parameters"))
        if self.num_parameters < 1:
            raise ValueError(f"PReLU: num_parameters must be positive, got {self.num_parameters}")

    def output_shape(self, input_shapes):
        shape = tuple(input_shapes[0])
        if self.num_parameters not in (1, shape[0]):
            raise ValueError(f"PReLU: {self.num_parameters} slopes for {shape[0]} channels")
        return shape

    def param_shapes(self, input_shapes):
        return {"weight": (self.num_parameters,)}


# -- CPU kernels ----------------------------------------------------------------------------
def _softplus(x):
    return np.logaddexp(x.dtype.type(0), x)


def _gelu(layer, x):
    half, one = x.dtype.type(0.5), x.dtype.type(1)
    if layer.approximate == "tanh":
        inner = x.dtype.type(math.sqrt(2.0 / math.pi)) * (x + x.dtype.type(0.044715) * x * x * x)
        return half * x * (one + np.tanh(inner))
    return half * x * (one + _erf(x * x.dtype.type(1.0 / math.sqrt(2.0))))


def _hard_sigmoid(layer, x):
    t = x * x.dtype.type(layer.alpha) + x.dtype.type(layer.beta)
    return np.clip(t, 0, 1)


#: Layer type -> ``f(layer, x)``, the CPU definition (NumPy, in ``x``'s dtype).
UNARY = {
    Sigmoid: lambda layer, x: _expit(x),
    HardSigmoid: _hard_sigmoid,
    HardSwish: lambda layer, x: x * (np.clip(x + x.dtype.type(3), 0, 6) / x.dtype.type(6)),
    SiLU: lambda layer, x: x * _expit(x),
    GELU: _gelu,
    ELU: lambda layer, x: np.where(x > 0, x, x.dtype.type(layer.alpha) * np.expm1(
        np.minimum(x, 0))),
    Tanh: lambda layer, x: np.tanh(x),
    Softplus: lambda layer, x: _softplus(x),
    Mish: lambda layer, x: x * np.tanh(_softplus(x)),
    Erf: lambda layer, x: _erf(x),
    Clip: lambda layer, x: np.clip(x, layer.low, layer.high),
    Power: lambda layer, x: np.power(x, x.dtype.type(layer.exponent)),
}


def _apply_unary(layer, params, x, out=None):
    """The layer's NumPy definition, on several threads for large arrays
    (:func:`kryptonref._pool.map_elementwise`)."""
    function = UNARY[type(layer)]
    return map_elementwise(lambda chunk: function(layer, chunk), x, out)


def _prelu(layer, params, x, out=None):
    weight = params["weight"]
    slope = weight.reshape((1, -1) + (1,) * (x.ndim - 2)) if weight.size > 1 else weight[0]
    if out is None:
        out = x.copy()
    elif out is not x:
        out[...] = x
    np.multiply(out, slope, out=out, where=out < 0)
    return out


def _prelu_init(layer, shapes, rng):
    return {"weight": rng.uniform(0.05, 0.4, shapes["weight"])}


# -- ONNX ---------------------------------------------------------------------------------
def _gelu_to_onnx(ctx, name, layer, params, inputs):
    """``Gelu`` from opset 20; before, the decomposition torch's exporter writes."""
    x = inputs[0]
    if ctx.opset >= 20:
        ctx.node("Gelu", [x], name, approximate=layer.approximate)
        return

    def const(tag, value):
        return ctx.init(f"{name}.{tag}", np.array(value))

    def step(tag, op, args):
        out = ctx.fresh(f"{name}.{tag}")
        ctx.node(op, args, out)
        return out

    if layer.approximate == "tanh":
        cube = step("cube", "Pow", [x, const("three", 3.0)])
        inner = step("inner", "Add", [x, step("scaled", "Mul", [cube, const("c", 0.044715)])])
        tanh = step("tanh", "Tanh", [step("arg", "Mul", [inner, const("k", math.sqrt(2 / math.pi))])])
        total = step("sum", "Add", [tanh, const("one", 1.0)])
    else:
        total = step("sum", "Add", [step("erf", "Erf", [step("div", "Div", [
            x, const("sqrt2", math.sqrt(2.0))])]), const("one", 1.0)])
    ctx.node("Mul", [step("prod", "Mul", [x, total]), const("half", 0.5)], name)


def _silu_to_onnx(ctx, name, layer, params, inputs):
    gate = ctx.fresh(f"{name}.sigmoid")
    ctx.node("Sigmoid", inputs, gate)
    ctx.node("Mul", [inputs[0], gate], name)


def _mish_to_onnx(ctx, name, layer, params, inputs):
    if ctx.opset >= 18:
        ctx.node("Mish", inputs, name)
        return
    soft, tanh = ctx.fresh(f"{name}.softplus"), ctx.fresh(f"{name}.tanh")
    ctx.node("Softplus", inputs, soft)
    ctx.node("Tanh", [soft], tanh)
    ctx.node("Mul", [inputs[0], tanh], name)


def _hardswish_to_onnx(ctx, name, layer, params, inputs):
    if ctx.opset >= 14:
        ctx.node("HardSwish", inputs, name)
        return
    gate = ctx.fresh(f"{name}.gate")
    ctx.node("HardSigmoid", inputs, gate, alpha=1.0 / 6.0, beta=0.5)
    ctx.node("Mul", [inputs[0], gate], name)


def _plain_to_onnx(op_type, **attributes):
    def export(ctx, name, layer, params, inputs):
        values = {key: getattr(layer, attr) for key, attr in attributes.items()}
        ctx.node(op_type, inputs, name, **values)
    return export


def _clip_to_onnx(ctx, name, layer, params, inputs):
    low = "" if layer.low == -math.inf else ctx.init(f"{name}.min", np.array(layer.low))
    high = "" if layer.high == math.inf else ctx.init(f"{name}.max", np.array(layer.high))
    ctx.node("Clip", [inputs[0], low, high], name)


def _power_to_onnx(ctx, name, layer, params, inputs):
    ctx.node("Pow", [inputs[0], ctx.init(f"{name}.exponent", np.array(layer.exponent))], name)


def _prelu_to_onnx(ctx, name, layer, params, inputs):
    weight = params["weight"]
    rank = len(ctx.shape(inputs[0]))
    slope = weight.reshape((-1,) + (1,) * (rank - 1)) if weight.size > 1 else weight
    ctx.node("PRelu", [inputs[0], ctx.init(f"{name}.weight", slope)], name)


def _plain_from_onnx(factory):
    def handler(ctx, node, attrs):
        layer = ctx.build(node, factory, attrs)
        ctx.emit(node, layer, [ctx.act(node, node.input[0])])
    return handler


def _pow_from_onnx(ctx, node, attrs):
    exponent = np.asarray(ctx.const(node, node.input[1], "the exponent"))
    if exponent.size != 1:
        ctx.fail(node, f"only a scalar exponent is supported, got shape {exponent.shape}")
    ctx.emit(node, ctx.build(node, Power, float(exponent.reshape(-1)[0])),
             [ctx.act(node, node.input[0])])


def _prelu_from_onnx(ctx, node, attrs):
    src = ctx.act(node, node.input[0])
    slope = np.asarray(ctx.const(node, node.input[1], "the slope"))
    channels = ctx.shapes[src][0]
    if slope.size == 1:
        weight = slope.reshape(1)
    elif slope.size == channels and slope.shape[0] == channels:
        weight = slope.reshape(channels)
    else:
        ctx.fail(node, f"only a shared or per-channel slope is supported, got shape "
                       f"{slope.shape} for {channels} channels")
    layer = ctx.build(node, PReLU, int(weight.size))
    ctx.emit(node, layer, [src], {"weight": weight})


def _gelu_from_onnx(ctx, node, attrs):
    ctx.emit(node, ctx.build(node, GELU, attrs.get("approximate", "none")),
             [ctx.act(node, node.input[0])])


def _attr(ctx, attrs, key, default):
    """An ONNX float attribute, read back as the float64 it most likely was."""
    return ctx.float32_attr(attrs[key]) if key in attrs else default


def _register(spec, kernels, cuda, export, imports=None, **extra):
    register(spec, Rule.POSITIONWISE, cpu=kernels,
             cuda=f"kryptonref.layers.activations_cuda:{cuda}", onnx_export=export,
             onnx_import=imports or {}, **extra)


_UNARY_KERNELS = Kernels(apply=_apply_unary)

_register(Sigmoid, _UNARY_KERNELS, "SIGMOID", _plain_to_onnx("Sigmoid"),
          {"Sigmoid": _plain_from_onnx(lambda attrs: Sigmoid())})
_register(HardSigmoid, _UNARY_KERNELS, "HARD_SIGMOID",
          _plain_to_onnx("HardSigmoid", alpha="alpha", beta="beta"),
          {"HardSigmoid": lambda ctx, node, attrs: ctx.emit(
              node, ctx.build(node, HardSigmoid, _attr(ctx, attrs, "alpha", 0.2),
                              _attr(ctx, attrs, "beta", 0.5)), [ctx.act(node, node.input[0])])})
_register(HardSwish, _UNARY_KERNELS, "HARD_SWISH", _hardswish_to_onnx,
          {"HardSwish": _plain_from_onnx(lambda attrs: HardSwish())})
_register(SiLU, _UNARY_KERNELS, "SILU", _silu_to_onnx)
_register(GELU, _UNARY_KERNELS, "GELU", _gelu_to_onnx, {"Gelu": _gelu_from_onnx})
_register(ELU, _UNARY_KERNELS, "ELU", _plain_to_onnx("Elu", alpha="alpha"),
          {"Elu": lambda ctx, node, attrs: ctx.emit(
              node, ctx.build(node, ELU, _attr(ctx, attrs, "alpha", 1.0)),
              [ctx.act(node, node.input[0])])})
_register(Tanh, _UNARY_KERNELS, "TANH", _plain_to_onnx("Tanh"),
          {"Tanh": _plain_from_onnx(lambda attrs: Tanh())})
_register(Softplus, _UNARY_KERNELS, "SOFTPLUS", _plain_to_onnx("Softplus"),
          {"Softplus": _plain_from_onnx(lambda attrs: Softplus())})
_register(Mish, _UNARY_KERNELS, "MISH", _mish_to_onnx,
          {"Mish": _plain_from_onnx(lambda attrs: Mish())})
_register(Erf, _UNARY_KERNELS, "ERF", _plain_to_onnx("Erf"),
          {"Erf": _plain_from_onnx(lambda attrs: Erf())})
_register(Clip, _UNARY_KERNELS, "CLIP", _clip_to_onnx)
_register(Power, _UNARY_KERNELS, "POWER", _power_to_onnx, {"Pow": _pow_from_onnx})
_register(PReLU, Kernels(apply=_prelu), "PRELU", _prelu_to_onnx, {"PRelu": _prelu_from_onnx},
          init=_prelu_init)
