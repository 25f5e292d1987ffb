"""Typed layer specifications of the model IR.

A spec holds a layer's hyper-parameters only (weights live in the model). Each
spec knows its output shape, the shapes of its parameters, its MAC count and,
for conv and pool layers, its per-axis geometry. Shapes exclude the batch axis:
``(C, H, W)`` for feature maps, ``(F,)`` for vectors.

Spatial hyper-parameters accept an int (both axes) or a pair ``(h, w)``; padding
also accepts ``((top, bottom), (left, right))`` for asymmetric padding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Tuple

from ..geometry import effective_kernel, output_size

Pair = Tuple[int, int]
Padding = Tuple[Tuple[int, int], Tuple[int, int]]

__all__ = [
    "Layer", "Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "AdaptiveAvgPool2d",
    "ReLU", "ReLU6", "BatchNorm2d", "Dropout", "Flatten", "Linear", "Softmax", "Add", "Concat",
]


def _int(value, what):
    if isinstance(value, bool) or not isinstance(value, (int,)) and not hasattr(value, "__index__"):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _pair(value, what, minimum):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{what} must be an int or a pair (h, w), got {value!r}")
        pair = (_int(value[0], what), _int(value[1], what))
    else:
        pair = (_int(value, what),) * 2
    if min(pair) < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value!r}")
    return pair


def _padding(value):
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, (tuple, list)) for v in value):
        pad = tuple(_pair(v, "padding", 0) for v in value)
    else:
        ph, pw = _pair(value, "padding", 0)
        pad = ((ph, ph), (pw, pw))
    return pad


def _check_rank(shape, rank, layer):
    if len(shape) != rank:
        kind = "a feature map (C, H, W)" if rank == 3 else "a vector (F,)"
        raise ValueError(f"{layer} expects {kind}, got input shape {tuple(shape)}")


class Layer:
    """Base of all layer specs.

    Class attributes
    ----------------
    kind : str
        ``"spatial"`` (conv/pool: a changed region maps to a computable region),
        ``"elementwise"`` (the region is kept), ``"merge"`` (bounding-box union of
        the inputs' regions) or ``"global"`` (every output changes).
    n_inputs : int or None
        Number of inputs, ``None`` for any number >= 2.
    pad_value : float
        Value of the padding read by a spatial layer.
    """

    kind: ClassVar[str] = "elementwise"
    n_inputs: ClassVar[int | None] = 1
    pad_value: ClassVar[float] = 0.0

    def output_shape(self, input_shapes):
        """Output shape for the given input shapes (batch axis excluded)."""
        _check_rank(input_shapes[0], 3, type(self).__name__)
        return tuple(input_shapes[0])

    def param_shapes(self, input_shapes):
        """Mapping ``parameter name -> shape``; empty for parameter-free layers."""
        return {}

    def macs(self, input_shapes, output_shape):
        """Multiply-accumulates of the full layer for one image (conv and dense only)."""
        return 0


@dataclass(frozen=True)
class _Spatial(Layer):
    """Shared geometry of conv and pool layers."""

    kind: ClassVar[str] = "spatial"

    def axis(self, dim):
        """Geometry on axis ``dim`` (0 height, 1 width).

        Returns ``(kernel, stride, pad_before, pad_after, dilation, ceil_mode)``.
        """
        return (self.kernel_size[dim], self.stride[dim], self.padding[dim][0],
                self.padding[dim][1], self.dilation[dim], getattr(self, "ceil_mode", False))

    def _init_pool(self):
        """Normalise a pooling spec's fields; the stride defaults to the kernel."""
        set_ = object.__setattr__
        set_(self, "kernel_size", _pair(self.kernel_size, "kernel_size", 1))
        set_(self, "stride", self.kernel_size if self.stride is None
             else _pair(self.stride, "stride", 1))
        set_(self, "padding", _padding(self.padding))
        set_(self, "ceil_mode", bool(self.ceil_mode))
        for dim in (0, 1):
            span = effective_kernel(self.kernel_size[dim], self.dilation[dim])
            if max(self.padding[dim]) * 2 > span:
                raise ValueError(f"{type(self).__name__}: padding must be at most half the "
                                 f"kernel, got padding {self.padding} for kernel "
                                 f"{self.kernel_size}")

    def _spatial_out(self, shape):
        _check_rank(shape, 3, type(self).__name__)
        sizes = []
        for dim in (0, 1):
            k, s, p0, p1, d, ceil = self.axis(dim)
            size = output_size(shape[1 + dim], k, s, p0, p1, d, ceil)
            if size <= 0:
                axis = "height" if dim == 0 else "width"
                raise ValueError(
                    f"{type(self).__name__}: input {axis} {shape[1 + dim]} is too small for "
                    f"kernel {effective_kernel(k, d)} with padding ({p0}, {p1})")
            sizes.append(size)
        return tuple(sizes)


@dataclass(frozen=True)
class Conv2d(_Spatial):
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
        set_(self, "in_channels", _int(self.in_channels, "in_channels"))
        set_(self, "out_channels", _int(self.out_channels, "out_channels"))
        set_(self, "kernel_size", _pair(self.kernel_size, "kernel_size", 1))
        set_(self, "stride", _pair(self.stride, "stride", 1))
        set_(self, "padding", _padding(self.padding))
        set_(self, "dilation", _pair(self.dilation, "dilation", 1))
        set_(self, "groups", _int(self.groups, "groups"))
        set_(self, "bias", bool(self.bias))
        if self.in_channels < 1 or self.out_channels < 1 or self.groups < 1:
            raise ValueError("Conv2d channels and groups must be positive")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"Conv2d: in_channels {self.in_channels} and out_channels {self.out_channels} "
                f"must both be divisible by groups {self.groups}")

    def output_shape(self, input_shapes):
        shape = input_shapes[0]
        _check_rank(shape, 3, "Conv2d")
        if shape[0] != self.in_channels:
            raise ValueError(f"Conv2d expects {self.in_channels} input channels, got {shape[0]}")
        return (self.out_channels,) + self._spatial_out(shape)

    def param_shapes(self, input_shapes):
        shapes = {"weight": (self.out_channels, self.in_channels // self.groups)
                  + self.kernel_size}
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    def macs(self, input_shapes, output_shape):
        c_out, h, w = output_shape
        kh, kw = self.kernel_size
        return c_out * h * w * (self.in_channels // self.groups) * kh * kw


@dataclass(frozen=True)
class MaxPool2d(_Spatial):
    """Max pooling; the padding reads as ``-inf``. ``stride`` defaults to the kernel."""

    kernel_size: Pair
    stride: Pair | None = None
    padding: Padding = 0
    dilation: Pair = 1
    ceil_mode: bool = False
    pad_value: ClassVar[float] = float("-inf")

    def __post_init__(self):
        object.__setattr__(self, "dilation", _pair(self.dilation, "dilation", 1))
        self._init_pool()

    def output_shape(self, input_shapes):
        return (input_shapes[0][0],) + self._spatial_out(input_shapes[0])


@dataclass(frozen=True)
class AvgPool2d(_Spatial):
    """Average pooling with PyTorch's divisor rule.

    With ``count_include_pad`` the divisor counts the padding (but not the part of
    a ceil-mode window past the right padding); without it, only input elements.
    """

    kernel_size: Pair
    stride: Pair | None = None
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

    kind: ClassVar[str] = "global"

    def output_shape(self, input_shapes):
        _check_rank(input_shapes[0], 3, "GlobalAvgPool2d")
        return (input_shapes[0][0], 1, 1)


@dataclass(frozen=True)
class AdaptiveAvgPool2d(Layer):
    """PyTorch's adaptive average pooling to ``output_size``; treated as global."""

    output_size: Pair
    kind: ClassVar[str] = "global"

    def __post_init__(self):
        object.__setattr__(self, "output_size", _pair(self.output_size, "output_size", 1))

    def output_shape(self, input_shapes):
        _check_rank(input_shapes[0], 3, "AdaptiveAvgPool2d")
        return (input_shapes[0][0],) + self.output_size


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


@dataclass(frozen=True)
class Dropout(Layer):
    """Identity at inference time."""

    p: float = 0.5

    def output_shape(self, input_shapes):
        return tuple(input_shapes[0])


@dataclass(frozen=True)
class BatchNorm2d(Layer):
    """Batch normalisation in eval mode: ``(x - mean) / sqrt(var + eps) * weight + bias``.

    Parameters ``weight``, ``bias``, ``running_mean``, ``running_var``, each ``(C,)``.
    """

    num_features: int
    eps: float = 1e-5

    def __post_init__(self):
        object.__setattr__(self, "num_features", _int(self.num_features, "num_features"))
        if self.eps <= 0:
            raise ValueError(f"BatchNorm2d: eps must be positive, got {self.eps}")

    def output_shape(self, input_shapes):
        shape = input_shapes[0]
        _check_rank(shape, 3, "BatchNorm2d")
        if shape[0] != self.num_features:
            raise ValueError(f"BatchNorm2d expects {self.num_features} channels, got {shape[0]}")
        return tuple(shape)

    def param_shapes(self, input_shapes):
        c = (self.num_features,)
        return {"weight": c, "bias": c, "running_mean": c, "running_var": c}


@dataclass(frozen=True)
class Flatten(Layer):
    """``(C, H, W) -> (C*H*W,)`` in C order; every output changes."""

    kind: ClassVar[str] = "global"

    def output_shape(self, input_shapes):
        size = 1
        for d in input_shapes[0]:
            size *= d
        return (size,)


@dataclass(frozen=True)
class Linear(Layer):
    """Fully-connected layer ``y = W x + b``; ``weight`` is ``(out, in)``."""

    in_features: int
    out_features: int
    bias: bool = True
    kind: ClassVar[str] = "global"

    def __post_init__(self):
        object.__setattr__(self, "in_features", _int(self.in_features, "in_features"))
        object.__setattr__(self, "out_features", _int(self.out_features, "out_features"))

    def output_shape(self, input_shapes):
        shape = input_shapes[0]
        if len(shape) != 1:
            raise ValueError(f"Linear expects a vector input (add a Flatten), got {tuple(shape)}")
        if shape[0] != self.in_features:
            raise ValueError(f"Linear expects {self.in_features} input features, got {shape[0]}")
        return (self.out_features,)

    def param_shapes(self, input_shapes):
        shapes = {"weight": (self.out_features, self.in_features)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    def macs(self, input_shapes, output_shape):
        return self.in_features * self.out_features


@dataclass(frozen=True)
class Softmax(Layer):
    """Softmax over the features of a vector."""

    kind: ClassVar[str] = "global"

    def output_shape(self, input_shapes):
        _check_rank(input_shapes[0], 1, "Softmax")
        return tuple(input_shapes[0])


@dataclass(frozen=True)
class Add(Layer):
    """Element-wise sum of two or more inputs of equal shape (residual connections)."""

    kind: ClassVar[str] = "merge"
    n_inputs: ClassVar[int | None] = None

    def output_shape(self, input_shapes):
        first = tuple(input_shapes[0])
        for shape in input_shapes[1:]:
            if tuple(shape) != first:
                raise ValueError(f"Add expects equal input shapes, got {[tuple(s) for s in input_shapes]}")
        return first


@dataclass(frozen=True)
class Concat(Layer):
    """Concatenation of feature maps along the channel axis."""

    kind: ClassVar[str] = "merge"
    n_inputs: ClassVar[int | None] = None

    def output_shape(self, input_shapes):
        for shape in input_shapes:
            _check_rank(shape, 3, "Concat")
        spatial = {tuple(s[1:]) for s in input_shapes}
        if len(spatial) != 1:
            raise ValueError(f"Concat expects equal spatial sizes, got {[tuple(s) for s in input_shapes]}")
        return (sum(s[0] for s in input_shapes),) + tuple(input_shapes[0][1:])
