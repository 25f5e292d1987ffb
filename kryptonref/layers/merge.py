"""Merges of several tensors: ``Add`` (residual connections), ``Concat`` (channels) and
``Mul`` (products, squeeze-excitation gates), and their CPU kernels (CUDA twin:
:mod:`.merge_cuda`).

A merge's output at a position reads its inputs at that position only, so its
changed region is the bounding box of its inputs' regions (the ``MERGE`` rule,
SIGMOD 2019 eq. 20); an input unchanged for a batch is read from its
materialised activations. The engine gathers each input's window straight
into one array: ``Add`` accumulates them, ``Concat`` stacks their channels.

``Mul`` may broadcast a gate ``(C, 1, 1)`` over a feature map ``(C, H, W)``
(squeeze-excitation): any change reaches the gate, which changes the product
everywhere, so a changed gate makes the product whole (``docs/design.md``,
Region rules for modern operators).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np

from .base import Layer, check_rank
from .activations import GELU, Erf, SiLU, Sigmoid
from .channels import Arithmetic, arithmetic_from_onnx
from .dense import fold_bias, why_no_bias_fold
from .registry import Kernels, Rule, register

__all__ = ["Add", "Concat", "Mul"]


@dataclass(frozen=True)
class Add(Layer):
    """Element-wise sum of two or more inputs of equal shape (residual connections)."""

    n_inputs: ClassVar[Optional[int]] = None

    def output_shape(self, input_shapes):
        first = tuple(input_shapes[0])
        for shape in input_shapes[1:]:
            if tuple(shape) != first:
                raise ValueError(f"Add expects equal input shapes, got {[tuple(s) for s in input_shapes]}")
        return first


@dataclass(frozen=True)
class Concat(Layer):
    """Concatenation of feature maps along the channel axis."""

    n_inputs: ClassVar[Optional[int]] = None

    def output_shape(self, input_shapes):
        for shape in input_shapes:
            check_rank(shape, 3, "Concat")
        spatial = {tuple(s[1:]) for s in input_shapes}
        if len(spatial) != 1:
            raise ValueError(f"Concat expects equal spatial sizes, got {[tuple(s) for s in input_shapes]}")
        return (sum(s[0] for s in input_shapes),) + tuple(input_shapes[0][1:])


@dataclass(frozen=True)
class Mul(Layer):
    """Element-wise product of two inputs of equal shape, or of a feature map ``(C, H, W)``
    and a per-channel gate ``(C, 1, 1)`` broadcast over it (either order)."""

    n_inputs: ClassVar[Optional[int]] = 2

    def output_shape(self, input_shapes):
        a, b = (tuple(s) for s in input_shapes)
        if a == b:
            return a
        if len(a) == len(b) == 3 and a[0] == b[0] and (a[1:] == (1, 1) or b[1:] == (1, 1)):
            return a if b[1:] == (1, 1) else b
        raise ValueError(f"Mul expects equal shapes, or a (C, H, W) map and a (C, 1, 1) gate, "
                         f"got {a} and {b}")


def _mul_full(layer, params, inputs, out_shape):
    return np.multiply(inputs[0], inputs[1])


def _add_full(layer, params, inputs, out_shape):
    """The sum in input order (the region path accumulates in the same order)."""
    total = inputs[0].copy()
    for other in inputs[1:]:
        total += other
    return total


def _concat_full(layer, params, inputs, out_shape):
    return np.concatenate(inputs, axis=1)


def _add_to_onnx(ctx, name, layer, params, inputs):
    ctx.node("Add" if len(inputs) == 2 else "Sum", inputs, name)


def _concat_to_onnx(ctx, name, layer, params, inputs):
    ctx.node("Concat", inputs, name, axis=1)


def _mul_to_onnx(ctx, name, layer, params, inputs):
    ctx.node("Mul", inputs, name)


def _add_from_onnx(ctx, node, attrs):
    """Two activations: Add. An activation and a constant: zeros pass through; the bias of
    a preceding MatMul/Gemm becomes its bias (:func:`.dense.fold_bias`); a scalar or
    per-channel constant is :class:`.channels.Arithmetic`."""
    a, b = node.input[0], node.input[1]
    if a in ctx.acts and b in ctx.acts:
        ctx.emit(node, Add(), [ctx.acts[a], ctx.acts[b]])
        return
    tensor, const_name = (a, b) if a in ctx.acts else (b, a)
    src = ctx.act(node, tensor)
    value = np.asarray(ctx.const(node, const_name, "the constant addend"))
    if not np.any(value):
        ctx.alias(node, src)       # adding zeros
        return
    why = why_no_bias_fold(ctx, node, src, value)
    if why is None:
        fold_bias(ctx, node, src, value)
    elif not arithmetic_from_onnx(ctx, node, "Add", src, value, a != tensor, tensor,
                                  const_name):
        ctx.fail(node, f"adding a constant of shape {value.shape} is supported as a scalar, a "
                       f"per-channel constant or the bias of a preceding MatMul/Gemm; here "
                       f"{why}")


def _mul_from_onnx(ctx, node, attrs):
    """Two activations: Mul (``x * sigmoid(x)``: SiLU); an activation and a scalar or
    per-channel constant: :class:`.channels.Arithmetic`."""
    a, b = node.input[0], node.input[1]
    if a in ctx.acts and b in ctx.acts:
        x, y = ctx.acts[a], ctx.acts[b]
        for source, other in ((x, y), (y, x)):   # x * sigmoid(x): SiLU, as exporters write it
            layer, inputs = ctx.nodes.get(other, (None, ()))
            if isinstance(layer, Sigmoid) and inputs == (source,):
                ctx.emit(node, SiLU(), [source])
                return
        ctx.emit(node, Mul(), [x, y])
        return
    tensor, const_name = (a, b) if a in ctx.acts else (b, a)
    src = ctx.act(node, tensor)
    value = np.asarray(ctx.const(node, const_name, "the constant factor"))
    source = _gelu_source(ctx, src, value)
    if source is not None:
        ctx.emit(node, GELU(), [source])
        return
    if not arithmetic_from_onnx(ctx, node, "Mul", src, value, a != tensor, tensor,
                                const_name):
        ctx.fail(node, f"multiplying by a constant of shape {value.shape} is supported only "
                       "for a scalar or one value per channel")


def _constant_step(ctx, name, ops_values):
    """The input of kryptonref node ``name`` if it is an :class:`Arithmetic` with one of
    ``ops_values`` (``{op: value}``) in every channel (float32 rounding allowed), else None."""
    layer, inputs = ctx.nodes.get(name, (None, ()))
    if not isinstance(layer, Arithmetic) or layer.op not in ops_values:
        return None
    value = np.asarray(ctx.params.get(name, {}).get(layer.param), dtype=np.float64)
    return inputs[0] if value.size and np.allclose(value, ops_values[layer.op], rtol=1e-6,
                                                   atol=0) else None


def _gelu_source(ctx, src, half):
    """``x`` if ``src * half`` is the exact GELU as exporters write it before opset 20,
    ``(x * (erf(x / sqrt(2)) + 1)) * 0.5`` (the first division may be a product with
    ``1 / sqrt(2)``), else None."""
    if half.size != 1 or not np.isclose(float(half.reshape(-1)[0]), 0.5, rtol=1e-7, atol=0):
        return None
    layer, inputs = ctx.nodes.get(src, (None, ()))
    if not isinstance(layer, Mul) or len(inputs) != 2:
        return None
    for x, total in (inputs, inputs[::-1]):
        erf = _constant_step(ctx, total, {"add": 1.0})
        erf_layer, erf_inputs = ctx.nodes.get(erf, (None, ()))
        if not isinstance(erf_layer, Erf):
            continue
        scaled = _constant_step(ctx, erf_inputs[0], {"div": np.sqrt(2.0),
                                                     "mul": np.sqrt(0.5)})
        if scaled == x:
            return x
    return None


def _sum_from_onnx(ctx, node, attrs):
    sources = [ctx.act(node, i) for i in node.input]
    if len(sources) == 1:
        ctx.alias(node, sources[0])
    else:
        ctx.emit(node, Add(), sources)


def _concat_from_onnx(ctx, node, attrs):
    sources = [ctx.act(node, i) for i in node.input]
    rank = ctx.rank(sources[0])
    axis = int(attrs.get("axis", 1))
    if rank != 4 or axis % 4 != 1:
        ctx.fail(node, f"only channel concatenation of 4-D tensors is supported (axis 1), got "
                       f"axis {axis} of rank-{rank} tensors")
    if len(sources) == 1:
        ctx.alias(node, sources[0])
    else:
        ctx.emit(node, Concat(), sources)


register(Add, Rule.MERGE, cpu=Kernels(full=_add_full, gather="sum"),
         cuda="kryptonref.layers.merge_cuda:ADD", onnx_export=_add_to_onnx,
         onnx_import={"Add": _add_from_onnx, "Sum": _sum_from_onnx})
register(Mul, Rule.MERGE, cpu=Kernels(full=_mul_full),
         cuda="kryptonref.layers.merge_cuda:MUL", onnx_export=_mul_to_onnx,
         onnx_import={"Mul": _mul_from_onnx})
register(Concat, Rule.MERGE, cpu=Kernels(full=_concat_full, gather="channels"),
         cuda="kryptonref.layers.merge_cuda:CONCAT", onnx_export=_concat_to_onnx,
         onnx_import={"Concat": _concat_from_onnx})
