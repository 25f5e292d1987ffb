"""The base of every layer spec, and the argument normalisers specs share.

A spec holds a layer's hyper-parameters only (weights live in the model). It
knows its output shape and the shapes of its parameters and, for conv and
pool layers, its per-axis geometry; everything else about the layer type
(region rule, MACs, kernels, ONNX mapping) is its registry record
(:mod:`.registry`). Shapes exclude the batch axis: ``(C, H, W)`` for feature
maps, ``(F,)`` for vectors.

Spatial hyper-parameters accept an int (both axes) or a pair ``(h, w)``; padding
also accepts ``((top, bottom), (left, right))`` for asymmetric padding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Tuple, Union

from ..geometry import effective_kernel, output_size

#: A size per axis as given (one int for both, or (h, w)); specs store (h, w).
Pair = Union[int, Tuple[int, int]]
#: Padding as given: one int, (h, w), or ((top, bottom), (left, right)), which specs store.
Padding = Union[int, Tuple[int, int], Tuple[Tuple[int, int], Tuple[int, int]]]

__all__ = ["Layer", "Spatial", "Pair", "Padding", "as_int", "as_pair", "as_padding",
           "check_rank", "broadcasts"]


def as_int(value, what):
    """``value`` as an int; TypeError for booleans, floats and other non-integers."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not hasattr(value, "__index__"):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    return int(value)


def as_pair(value, what, minimum):
    """An int or a pair as ``(h, w)``, each at least ``minimum``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{what} must be an int or a pair (h, w), got {value!r}")
        pair = (as_int(value[0], what), as_int(value[1], what))
    else:
        pair = (as_int(value, what),) * 2
    if min(pair) < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value!r}")
    return pair


def as_padding(value):
    """``p``, ``(ph, pw)`` or ``((top, bottom), (left, right))`` as the last form."""
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, (tuple, list)) for v in value):
        return tuple(as_pair(v, "padding", 0) for v in value)
    ph, pw = as_pair(value, "padding", 0)
    return ((ph, ph), (pw, pw))


def broadcasts(input_shape, output_shape):
    """Whether a merge input of ``input_shape`` is a per-channel gate ``(C, 1, 1)``
    broadcast over a larger ``(C, H, W)`` output."""
    return len(input_shape) == 3 and tuple(input_shape[1:]) == (1, 1) \
        and len(output_shape) == 3 and tuple(output_shape[1:]) != (1, 1)


def check_rank(shape, rank, layer):
    """ValueError unless ``shape`` is a feature map (rank 3) or a vector (rank 1) as asked."""
    if len(shape) != rank:
        kind = "a feature map (C, H, W)" if rank == 3 else "a vector (F,)"
        raise ValueError(f"{layer} expects {kind}, got input shape {tuple(shape)}")


class Layer:
    """Base of all layer specs.

    Class attributes
    ----------------
    n_inputs : int or None
        Number of inputs, ``None`` for any number >= 2.
    """

    n_inputs: ClassVar[Optional[int]] = 1

    def output_shape(self, input_shapes):
        """Output shape for the given input shapes (batch axis excluded)."""
        check_rank(input_shapes[0], 3, type(self).__name__)
        return tuple(input_shapes[0])

    def param_shapes(self, input_shapes):
        """Mapping ``parameter name -> shape``; empty for parameter-free layers."""
        return {}


@dataclass(frozen=True)
class Spatial(Layer):
    """Shared geometry of conv and pool layers (the ``WINDOW`` rule).

    ``pad_value`` is the value of the padding a window reads.
    """

    pad_value: ClassVar[float] = 0.0

    def axis(self, dim):
        """Geometry on axis ``dim`` (0 height, 1 width).

        Returns ``(kernel, stride, pad_before, pad_after, dilation, ceil_mode)``.
        """
        return (self.kernel_size[dim], self.stride[dim], self.padding[dim][0],
                self.padding[dim][1], self.dilation[dim], getattr(self, "ceil_mode", False))

    def _init_pool(self):
        """Normalise a pooling spec's fields; the stride defaults to the kernel."""
        set_ = object.__setattr__
        set_(self, "kernel_size", as_pair(self.kernel_size, "kernel_size", 1))
        set_(self, "stride", self.kernel_size if self.stride is None
             else as_pair(self.stride, "stride", 1))
        set_(self, "padding", as_padding(self.padding))
        set_(self, "ceil_mode", bool(self.ceil_mode))
        for dim in (0, 1):
            span = effective_kernel(self.kernel_size[dim], self.dilation[dim])
            if max(self.padding[dim]) * 2 > span:
                raise ValueError(f"{type(self).__name__}: padding must be at most half the "
                                 f"kernel, got padding {self.padding} for kernel "
                                 f"{self.kernel_size}")

    def _spatial_out(self, shape):
        check_rank(shape, 3, type(self).__name__)
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


def dense_param_shapes(layer):
    """A dense layer's parameters as torch stores them: ``weight`` ``(out, in)`` and, with
    ``layer.bias``, ``bias`` ``(out,)`` (Linear, and ChannelLinear over the channels)."""
    shapes = {"weight": (layer.out_features, layer.in_features)}
    if layer.bias:
        shapes["bias"] = (layer.out_features,)
    return shapes
