"""Layers that mix or pick channels at each position: ``Arithmetic`` (a scalar or
per-channel constant), ``LayerNorm2d`` (over the channels), ``ChannelLinear`` (a
dense layer over the channels, a 1x1 convolution), ``ChannelSlice`` and
``ChannelShuffle``, with their CPU kernels (CUDA twin: :mod:`.channels_cuda`).

Each output element reads the input at its own position only (all channels
there), so a changed region passes through unchanged: the ``POSITIONWISE`` rule
(``docs/design.md``, Region rules for modern operators). They are how
channels-last blocks (ConvNeXt: ``Transpose`` to NHWC, LayerNorm and Linear on
the last axis, ``Transpose`` back) import on NCHW.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._pool import map_items
from .base import Layer, as_int, check_rank, dense_param_shapes
from .blas import matmul
from .registry import Kernels, Rule, register

__all__ = ["Arithmetic", "LayerNorm2d", "ChannelLinear", "ChannelSlice", "ChannelShuffle",
           "ARITHMETIC_OPS"]

#: ``op`` of :class:`Arithmetic` -> the ONNX operator and whether the constant comes first.
ARITHMETIC_OPS = {"add": ("Add", False), "sub": ("Sub", False), "mul": ("Mul", False),
                  "div": ("Div", False), "rsub": ("Sub", True), "rdiv": ("Div", True)}


def _channel_view(vector, ndim):
    """A per-channel vector ``(C,)`` shaped to broadcast along axis 1 of an ``ndim`` array."""
    return vector.reshape((1, -1) + (1,) * (ndim - 2))


# -- Arithmetic ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Arithmetic(Layer):
    """``x op value`` with a constant per channel (axis 0 of a sample; a scalar constant
    is the same value for every channel).

    ``op`` is ``"add"``, ``"sub"``, ``"mul"``, ``"div"`` (``x op value``) or ``"rsub"``,
    ``"rdiv"`` (``value op x``). The constant is the parameter ``param`` (``"value"``;
    ConvNeXt's layer scale is ``"layer_scale"``) of shape ``(C,)`` followed by
    ``value_rank - 1`` axes of length 1 (``(C, 1, 1)`` for ``value_rank=3``, as torchvision
    stores layer scales).
    """

    op: str = "mul"
    param: str = "value"
    value_rank: int = 1

    def __post_init__(self):
        if self.op not in ARITHMETIC_OPS:
            raise ValueError(f"Arithmetic: op must be one of {tuple(ARITHMETIC_OPS)}, got "
                             f"{self.op!r}")
        object.__setattr__(self, "value_rank", as_int(self.value_rank, "value_rank"))
        if self.value_rank < 1 or not isinstance(self.param, str) or not self.param:
            raise ValueError("Arithmetic: value_rank must be >= 1 and param a name")

    def output_shape(self, input_shapes):
        return tuple(input_shapes[0])

    def param_shapes(self, input_shapes):
        return {self.param: (input_shapes[0][0],) + (1,) * (self.value_rank - 1)}


def _arithmetic_init(layer, shapes, rng):
    shape = shapes[layer.param]
    if layer.op in ("mul", "div", "rdiv"):
        return {layer.param: rng.uniform(0.5, 1.5, shape)}   # away from 0 for divisions
    return {layer.param: rng.normal(0, 0.5, shape)}


def _arithmetic_prepare(layer, params, dtype):
    return {"value": np.ascontiguousarray(params[layer.param], dtype=dtype).reshape(-1)}


def arithmetic(op, x, value, out=None):
    """``x op value`` (``value op x`` for the reversed ops), NumPy."""
    if op == "add":
        return np.add(x, value, out=out)
    if op == "sub":
        return np.subtract(x, value, out=out)
    if op == "mul":
        return np.multiply(x, value, out=out)
    if op == "div":
        return np.divide(x, value, out=out)
    if op == "rsub":
        return np.subtract(value, x, out=out)
    return np.divide(value, x, out=out)


def _arithmetic_apply(layer, params, x, out=None):
    return arithmetic(layer.op, x, _channel_view(params["value"], x.ndim), out=out)


def _arithmetic_to_onnx(ctx, name, layer, params, inputs):
    op_type, constant_first = ARITHMETIC_OPS[layer.op]
    rank = len(ctx.shape(inputs[0]))
    value = params[layer.param].reshape((-1,) + (1,) * (rank - 1))
    constant = ctx.init(f"{name}.{layer.param}", value)
    ctx.node(op_type, [constant, inputs[0]] if constant_first else [inputs[0], constant], name)


def arithmetic_from_onnx(ctx, node, op, src, constant, constant_first, tensor,
                         const_name=None):
    """Emit ``src op constant`` as :class:`Arithmetic` when the constant is a scalar or one
    value per channel of ``tensor`` (its channel axis: 1, or -1 in a channels-last island);
    returns False (emitting nothing) for any other constant.

    An initializer named ``<node name>.<param>`` of shape ``(C, 1, ..., 1)`` (as
    :func:`to_onnx <kryptonref.to_onnx>` writes ConvNeXt's ``layer_scale``) keeps its
    parameter name and shape, so a round trip keeps the weight file's keys.
    """
    value = np.asarray(constant)
    channels = ctx.shapes[src][0]
    per_channel = ctx.channel_vector(value, tensor, channels)
    if per_channel is None:
        return False
    name = {("Add", False): "add", ("Add", True): "add", ("Mul", False): "mul",
            ("Mul", True): "mul", ("Sub", False): "sub", ("Sub", True): "rsub",
            ("Div", False): "div", ("Div", True): "rdiv"}[(op, constant_first)]
    prefix, _, param = (const_name or "").rpartition(".")
    if prefix and param.isidentifier() and prefix == node.name \
            and value.shape[:1] == (channels,) and all(d == 1 for d in value.shape[1:]):
        layer = Arithmetic(name, param=param, value_rank=value.ndim)
        ctx.emit(node, layer, [src], {param: per_channel.reshape(value.shape)})
    else:
        ctx.emit(node, Arithmetic(name), [src], {"value": per_channel})
    return True


def _sub_div_from_onnx(op):
    def handler(ctx, node, attrs):
        a, b = node.input[0], node.input[1]
        if a in ctx.acts and b in ctx.acts:
            ctx.fail(node, f"{op} of two activations is not supported (only with a constant)")
        constant_first = a not in ctx.acts
        tensor, const_name = (b, a) if constant_first else (a, b)
        src = ctx.act(node, tensor)
        value = ctx.const(node, const_name, "the constant")
        if not arithmetic_from_onnx(ctx, node, op, src, value, constant_first, tensor,
                                    const_name):
            ctx.fail(node, f"{op} by a constant of shape {np.shape(value)} is supported only "
                           "for a scalar or one value per channel")
    return handler


# -- LayerNorm2d ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerNorm2d(Layer):
    """Layer normalisation over the channels at each position (ConvNeXt's ``LayerNorm2d``):
    ``(x - mean_c) / sqrt(var_c + eps) * weight + bias``; ``weight``, ``bias`` ``(C,)``."""

    num_channels: int
    eps: float = 1e-6

    def __post_init__(self):
        object.__setattr__(self, "num_channels", as_int(self.num_channels, "num_channels"))
        if not self.eps > 0:
            raise ValueError(f"LayerNorm2d: eps must be positive, got {self.eps}")

    def output_shape(self, input_shapes):
        shape = input_shapes[0]
        check_rank(shape, 3, "LayerNorm2d")
        if shape[0] != self.num_channels:
            raise ValueError(f"LayerNorm2d expects {self.num_channels} channels, got {shape[0]}")
        return tuple(shape)

    def param_shapes(self, input_shapes):
        return {"weight": (self.num_channels,), "bias": (self.num_channels,)}


def _layernorm_init(layer, shapes, rng):
    c = shapes["weight"]
    return {"weight": rng.uniform(0.5, 1.5, c), "bias": rng.normal(0, 0.1, c)}


def _layernorm(layer, params, x):
    mean = x.mean(axis=1, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=1, keepdims=True)
    scale = _channel_view(params["weight"], x.ndim)
    result = centred / np.sqrt(var + x.dtype.type(layer.eps)) * scale
    result += _channel_view(params["bias"], x.ndim)
    return result


def _layernorm_apply(layer, params, x, out=None):
    """Items of the batch on several threads (:func:`kryptonref._pool.map_items`)."""
    return map_items(lambda items: _layernorm(layer, params, items), x, out)


def _layernorm_to_onnx(ctx, name, layer, params, inputs):
    """Channels-last, as torchvision's ``LayerNorm2d`` exports: Transpose, LayerNormalization
    over the last axis, Transpose back (opset >= 17)."""
    if ctx.opset < 17:
        raise ValueError(f"to_onnx: node {name!r}: LayerNorm2d needs opset 17 or newer "
                         "(LayerNormalization)")
    nhwc, normed = ctx.fresh(f"{name}.nhwc"), ctx.fresh(f"{name}.normed")
    ctx.node("Transpose", inputs, nhwc, perm=[0, 2, 3, 1])
    # (the LayerNormalization node carries the kryptonref node's name: the importer names
    # a channels-last island's operator after it, so a round trip keeps the name)
    ctx.node("LayerNormalization", [nhwc, ctx.init(f"{name}.weight", params["weight"]),
                                    ctx.init(f"{name}.bias", params["bias"])], normed,
             name=name, axis=-1, epsilon=float(layer.eps))
    ctx.node("Transpose", [normed], name, name=ctx.fresh(f"{name}.nchw"), perm=[0, 3, 1, 2])


# -- ChannelLinear -------------------------------------------------------------------------
@dataclass(frozen=True)
class ChannelLinear(Layer):
    """A dense layer over the channels at each position: a 1x1 convolution whose weight is
    stored as a Linear's, ``(out_features, in_features)`` (ConvNeXt's channels-last Linear)."""

    in_features: int
    out_features: int
    bias: bool = True

    def __post_init__(self):
        object.__setattr__(self, "in_features", as_int(self.in_features, "in_features"))
        object.__setattr__(self, "out_features", as_int(self.out_features, "out_features"))
        object.__setattr__(self, "bias", bool(self.bias))

    def output_shape(self, input_shapes):
        shape = input_shapes[0]
        check_rank(shape, 3, "ChannelLinear")
        if shape[0] != self.in_features:
            raise ValueError(f"ChannelLinear expects {self.in_features} channels, got "
                             f"{shape[0]}")
        return (self.out_features,) + tuple(shape[1:])

    def param_shapes(self, input_shapes):
        return dense_param_shapes(self)


def _channel_linear_macs(layer, input_shapes, output_shape):
    c_out, h, w = output_shape
    return c_out * h * w * layer.in_features


def _channel_linear_apply(layer, params, x, out=None):
    n, c, h, w = x.shape
    result = matmul(params["weight"], np.ascontiguousarray(x).reshape(n, c, h * w))
    if "bias" in params:
        result += params["bias"][None, :, None]
    return result.reshape(n, -1, h, w)


def _channel_linear_to_onnx(ctx, name, layer, params, inputs):
    weight = params["weight"].reshape(layer.out_features, layer.in_features, 1, 1)
    args = list(inputs) + [ctx.init(f"{name}.weight", weight)]
    if layer.bias:
        args.append(ctx.init(f"{name}.bias", params["bias"]))
    ctx.node("Conv", args, name, kernel_shape=[1, 1])


# -- ChannelSlice, ChannelShuffle ----------------------------------------------------------
@dataclass(frozen=True)
class ChannelSlice(Layer):
    """Channels ``start:stop`` of a feature map (ONNX Split and Slice on the channels)."""

    start: int
    stop: int

    def __post_init__(self):
        object.__setattr__(self, "start", as_int(self.start, "start"))
        object.__setattr__(self, "stop", as_int(self.stop, "stop"))

    def output_shape(self, input_shapes):
        shape = input_shapes[0]
        check_rank(shape, 3, "ChannelSlice")
        if not 0 <= self.start < self.stop <= shape[0]:
            raise ValueError(f"ChannelSlice: channels {self.start}:{self.stop} of {shape[0]}")
        return (self.stop - self.start,) + tuple(shape[1:])


def _slice_apply(layer, params, x, out=None):
    """A new array (never a view: later layers may work on it in place)."""
    return x[:, layer.start:layer.stop].copy()


def _channel_slices_from_onnx(ctx, node, src, bounds):
    for out, (start, stop) in zip(node.output, bounds):
        if out:
            ctx.emit(node, ctx.build(node, ChannelSlice, start, stop), [src], out=out,
                     suffix=f"_{start}")


def _split_from_onnx(ctx, node, attrs):
    """Split along the channels of a feature map: one ChannelSlice per output. Along any
    other axis (MaxViT's window partition, as the dynamo exporter writes it), each output
    is a whole-tensor operator: exact, and the region after it is the whole map."""
    src = ctx.spatial_input(node)
    channels = ctx.shapes[src][0]
    if int(attrs.get("axis", 0)) % 4 != 1:
        ctx.split_tensor(node, attrs)
        return
    sizes = attrs.get("split")
    if sizes is None and ctx.optional(node, 1):
        sizes = ctx.const(node, node.input[1], "the split sizes").tolist()
    outputs = len(node.output)
    if sizes is None:
        if channels % outputs:
            ctx.fail(node, f"{channels} channels do not split evenly into {outputs} outputs")
        sizes = [channels // outputs] * outputs
    edges = np.cumsum([0] + [int(v) for v in sizes])
    if len(sizes) != outputs or edges[-1] != channels:
        ctx.fail(node, f"split sizes {list(sizes)} do not cover the {channels} channels")
    _channel_slices_from_onnx(ctx, node, src, list(zip(edges[:-1], edges[1:])))


def _slice_from_onnx(ctx, node, attrs):
    """Slice of the channels of a feature map (unit steps): a ChannelSlice."""
    src = ctx.spatial_input(node)
    channels = ctx.shapes[src][0]
    if ctx.opset < 10:
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        starts = ctx.const(node, node.input[1], "starts").tolist()
        ends = ctx.const(node, node.input[2], "ends").tolist()
        axes = ctx.const(node, node.input[3], "axes").tolist() if ctx.optional(node, 3) \
            else None
        steps = ctx.const(node, node.input[4], "steps").tolist() if ctx.optional(node, 4) \
            else None
    axes = list(range(len(starts))) if axes is None else [a % 4 for a in axes]
    if axes != [1] or (steps is not None and list(steps) != [1]):
        ctx.fail(node, f"only a unit-step Slice of the channels (axis 1) is supported, got "
                       f"axes {axes}, steps {steps}")
    start, stop, _ = slice(int(starts[0]), int(ends[0])).indices(channels)
    _channel_slices_from_onnx(ctx, node, src, [(start, stop)])


def _slice_to_onnx(ctx, name, layer, params, inputs):
    starts = ctx.init(f"{name}.starts", np.array([layer.start]), np.int64)
    ends = ctx.init(f"{name}.ends", np.array([layer.stop]), np.int64)
    axes = ctx.init(f"{name}.axes", np.array([1]), np.int64)
    ctx.node("Slice", [inputs[0], starts, ends, axes], name)


@dataclass(frozen=True)
class ChannelShuffle(Layer):
    """ShuffleNet's channel shuffle: channel ``g * (C / G) + i`` moves to ``i * G + g``."""

    groups: int

    def __post_init__(self):
        object.__setattr__(self, "groups", as_int(self.groups, "groups"))
        if self.groups < 1:
            raise ValueError(f"ChannelShuffle: groups must be positive, got {self.groups}")

    def output_shape(self, input_shapes):
        shape = input_shapes[0]
        check_rank(shape, 3, "ChannelShuffle")
        if shape[0] % self.groups:
            raise ValueError(f"ChannelShuffle: {shape[0]} channels in {self.groups} groups")
        return tuple(shape)


def _shuffle_apply(layer, params, x, out=None):
    n, c = x.shape[:2]
    g = layer.groups
    shuffled = x.reshape((n, g, c // g) + x.shape[2:]).swapaxes(1, 2)
    return shuffled.copy().reshape(x.shape)   # a new array, never a view


def _shuffle_to_onnx(ctx, name, layer, params, inputs):
    """Reshape (N, G, C/G, H, W), Transpose, Reshape back: torch's pattern."""
    c, h, w = ctx.shape(inputs[0])
    g = layer.groups
    split, swapped = ctx.fresh(f"{name}.split"), ctx.fresh(f"{name}.swapped")
    ctx.node("Reshape", [inputs[0], ctx.init(f"{name}.shape5", np.array([-1, g, c // g, h, w]),
                                             np.int64)], split)
    ctx.node("Transpose", [split], swapped, perm=[0, 2, 1, 3, 4])
    ctx.node("Reshape", [swapped, ctx.init(f"{name}.shape4", np.array([-1, c, h, w]),
                                           np.int64)], name)


def _register(spec, kernels, cuda, export, imports=None, **extra):
    register(spec, Rule.POSITIONWISE, cpu=kernels,
             cuda=f"kryptonref.layers.channels_cuda:{cuda}", onnx_export=export,
             onnx_import=imports or {}, **extra)


_register(Arithmetic, Kernels(apply=_arithmetic_apply), "ARITHMETIC", _arithmetic_to_onnx,
          {"Sub": _sub_div_from_onnx("Sub"), "Div": _sub_div_from_onnx("Div")},
          init=_arithmetic_init, prepare=_arithmetic_prepare)
_register(LayerNorm2d, Kernels(apply=_layernorm_apply), "LAYER_NORM_2D", _layernorm_to_onnx,
          init=_layernorm_init)
_register(ChannelLinear, Kernels(apply=_channel_linear_apply), "CHANNEL_LINEAR",
          _channel_linear_to_onnx, macs=_channel_linear_macs)
_register(ChannelSlice, Kernels(apply=_slice_apply), "CHANNEL_SLICE", _slice_to_onnx,
          {"Split": _split_from_onnx, "Slice": _slice_from_onnx})
_register(ChannelShuffle, Kernels(apply=_shuffle_apply), "CHANNEL_SHUFFLE", _shuffle_to_onnx)
