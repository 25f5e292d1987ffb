"""Whole-tensor operators: ``TensorOp``, one ONNX operator on tensors of any rank.

Transformers (ViT, Swin, MaxViT) mix every position with every other (attention,
token reshapes, class tokens, layer norms over whole tensors): once a changed
region reaches such an operator it is the whole tensor, and from there on each
position's network is computed in full, exactly (the ``WHOLE`` rule,
``docs/design.md``, Region rules for modern operators). Rather than one layer
type per ONNX operator, ``TensorOp`` holds the operator's name, attributes and
constants, and :func:`evaluate` computes it with NumPy/BLAS.

**Per-sample semantics.** A ``TensorOp``'s tensors keep ONNX's full shape with the
batch size fixed at 1 (wherever the batch axis is: torch's attention moves it);
kryptonref stacks the positions of a batch on a new leading axis. An input from
an ordinary kryptonref node (``(C, H, W)``, no batch axis) reads as ``(1, C, H, W)``
(``batched`` False for that input). The model's output drops the unit batch axis
again (operator ``"Unbatch"``).

Float constants are parameters (random initialisation, weight files); integer and
boolean constants (indices, shapes) are part of the spec. ``TensorOp`` runs on the
CPU; ``device="cuda"`` refuses models holding one, naming the operator.
"""
from __future__ import annotations

import math
import string
from dataclasses import dataclass
from typing import Any, Tuple

import numpy as np
from scipy.special import erf as _erf
from scipy.special import expit as _expit

from .base import Layer
from .blas import matmul
from .registry import Kernels, Rule, register

__all__ = ["TensorOp", "evaluate", "TENSOR_OPS", "freeze_value", "thaw_value"]


def freeze_value(value):
    """An attribute or integer constant as a hashable value (arrays as (dtype, shape, data))."""
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, tuple(value.shape), tuple(value.reshape(-1).tolist()))
    if isinstance(value, (list, tuple)):
        return tuple(freeze_value(v) for v in value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


def thaw_value(value):
    """The inverse of :func:`freeze_value`."""
    if isinstance(value, tuple) and len(value) == 4 and value[0] == "array":
        return np.array(value[3], dtype=np.dtype(value[1])).reshape(value[2])
    if isinstance(value, tuple):
        return [thaw_value(v) for v in value]
    return value


@dataclass(frozen=True)
class TensorOp(Layer):
    """One ONNX operator ``op_type`` on whole tensors (per-sample semantics, module doc).

    Parameters
    ----------
    op_type : str
        The ONNX operator (:data:`TENSOR_OPS`), or ``"Unbatch"``.
    attributes : tuple of (name, value)
        Its ONNX attributes (hashable, :func:`freeze_value`).
    slots : tuple of str
        One per ONNX input: ``"x<k>"`` the node's k-th input, ``"p:<name>"`` the float
        parameter ``name``, ``"i:<k>"`` the k-th entry of ``constants``, ``""`` absent.
    batched : tuple of bool
        Per node input: whether it already has the ONNX shape (the output of another
        ``TensorOp``) or is an ordinary ``(C, H, W)`` / ``(F,)`` value read as ``(1, ...)``.
    parameters : tuple of (name, shape)
        The float constants, stored as the node's parameters.
    constants : tuple
        Integer and boolean constants (frozen arrays).
    """

    op_type: str
    attributes: Tuple[Any, ...] = ()
    slots: Tuple[str, ...] = ("x0",)
    batched: Tuple[bool, ...] = (False,)
    parameters: Tuple[Any, ...] = ()
    constants: Tuple[Any, ...] = ()

    def __post_init__(self):
        if self.op_type not in TENSOR_OPS:
            raise ValueError(f"TensorOp: operator {self.op_type!r} is not supported; supported "
                             f"are {', '.join(sorted(TENSOR_OPS))}")
        if len(self.batched) != sum(s.startswith("x") for s in self.slots):
            raise ValueError("TensorOp: one batched flag per node input")

    @property
    def n_inputs(self):
        return len(self.batched)

    def attribute_dict(self):
        return {name: thaw_value(value) for name, value in self.attributes}

    def output_shape(self, input_shapes):
        inputs = [np.zeros((1,) + (tuple(s) if batched else (1,) + tuple(s)))
                  for s, batched in zip(input_shapes, self.batched)]
        params = {name: np.ones(shape) for name, shape in self.parameters}
        with np.errstate(all="ignore"):   # (the values do not matter, the shape does)
            return tuple(int(d) for d in run(self, params, inputs).shape[1:])

    def param_shapes(self, input_shapes):
        return {name: tuple(shape) for name, shape in self.parameters}


# -- evaluation -----------------------------------------------------------------------------
def _axis(a):
    """An ONNX axis of a per-sample tensor as the axis of the stacked array."""
    return a + 1 if a >= 0 else a


def _align(arrays, is_act):
    """Per-sample broadcasting: activations ``(B, *s)``, constants ``(*c)``, to one rank."""
    rank = max((a.ndim - 1) if act else a.ndim for a, act in zip(arrays, is_act))
    out = []
    for a, act in zip(arrays, is_act):
        if act:
            out.append(a.reshape((a.shape[0],) + (1,) * (rank - a.ndim + 1) + a.shape[1:]))
        else:
            out.append(a.reshape((1,) * (rank - a.ndim + 1) + a.shape))
    return out


def _reshape_target(shape, target, allowzero=False):
    target = [int(v) for v in target]
    if not allowzero:
        target = [shape[i] if v == 0 and i < len(shape) else v for i, v in enumerate(target)]
    if -1 in target:
        known = int(np.prod([v for v in target if v != -1]))
        target[target.index(-1)] = int(np.prod(shape)) // max(known, 1)
    return tuple(target)


def _einsum(equation, arrays, is_act):
    inputs, _, output = equation.replace(" ", "").partition("->")
    terms = inputs.split(",")
    free = next(c for c in string.ascii_letters if c not in equation)
    terms = [free + t if act else t for t, act in zip(terms, is_act)]
    if not output:
        raise ValueError("Einsum needs an explicit output ('->')")
    return np.einsum(",".join(terms) + "->" + free + output, *arrays, optimize=True)


def _layer_norm(x, scale, bias, axis, eps):
    axes = tuple(range(_axis(axis) if axis >= 0 else x.ndim + axis, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=axes, keepdims=True)
    out = centred / np.sqrt(var + x.dtype.type(eps)) * scale
    return out + bias if bias is not None else out


def _reduce_axes(attrs, extra, ndim):
    axes = attrs.get("axes")
    if axes is None and extra is not None:
        axes = [int(v) for v in np.asarray(extra).reshape(-1)]
    if axes is None or len(axes) == 0:
        if attrs.get("noop_with_empty_axes", 0):
            return None
        return tuple(range(1, ndim))
    return tuple(_axis(int(a)) for a in axes)


def _slice(x, starts, ends, axes, steps):
    index = [slice(None)] * x.ndim
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    for s, e, a, st in zip(starts, ends, axes, steps):
        size = x.shape[_axis(int(a))]
        s, e = (max(-(2 ** 62), min(2 ** 62, int(v))) for v in (s, e))
        index[_axis(int(a))] = slice(*slice(s, e, int(st)).indices(size))
    return x[tuple(index)]


def run(layer, params, inputs):
    """The operator on stacked inputs (``(B, ...)`` each, already expanded to ONNX ranks)."""
    op, attrs = layer.op_type, layer.attribute_dict()
    values, is_act = [], []
    for slot in layer.slots:
        if slot == "":
            values.append(None)
            is_act.append(False)
        elif slot.startswith("x"):
            values.append(inputs[int(slot[1:])])
            is_act.append(True)
        elif slot.startswith("p:"):
            values.append(params[slot[2:]])
            is_act.append(False)
        else:
            values.append(thaw_value(layer.constants[int(slot[2:])]))
            is_act.append(False)
    x = values[0]
    dtype = next(v.dtype for v, act in zip(values, is_act) if act)
    n_items = next(v.shape[0] for v, act in zip(values, is_act) if act)
    result = _OPS[op](x, values, is_act, attrs, n_items)
    return np.ascontiguousarray(result, dtype=dtype)


def _binary(function):
    def op(x, values, is_act, attrs, n_items):
        a, b = _align(values[:2], is_act[:2])
        return function(a, b)
    return op


def _unary(function):
    return lambda x, values, is_act, attrs, n_items: function(x)


def _matmul(x, values, is_act, attrs, n_items):
    a, b = values[:2]
    if a.ndim - is_act[0] < 2 or b.ndim - is_act[1] < 2:
        raise ValueError("MatMul of vectors is not supported")
    a, b = _align([a, b], is_act[:2])
    return matmul(a, b)


def _gemm(x, values, is_act, attrs, n_items):
    a, b = values[0], values[1]
    if attrs.get("transA", 0):
        a = np.swapaxes(a, -1, -2)
    if attrs.get("transB", 0):
        b = np.swapaxes(b, -1, -2)
    out = matmul(a, b) * a.dtype.type(attrs.get("alpha", 1.0))
    c = values[2] if len(values) > 2 else None
    if c is not None:
        out = out + a.dtype.type(attrs.get("beta", 1.0)) * c
    return out


def _softmax(x, values, is_act, attrs, n_items):
    axis = _axis(int(attrs.get("axis", -1)))
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def _transpose(x, values, is_act, attrs, n_items):
    perm = attrs.get("perm") or list(reversed(range(x.ndim - 1)))
    return x.transpose([0] + [int(p) + 1 for p in perm])


def _reshape(x, values, is_act, attrs, n_items):
    target = _reshape_target(x.shape[1:], np.asarray(values[1]).reshape(-1),
                             attrs.get("allowzero", 0))
    return x.reshape((x.shape[0],) + target)


def _flatten(x, values, is_act, attrs, n_items):
    axis = int(attrs.get("axis", 1))
    s = x.shape[1:]
    axis = axis + len(s) if axis < 0 else axis
    return x.reshape(x.shape[0], int(np.prod(s[:axis])), int(np.prod(s[axis:])))


def _gather(x, values, is_act, attrs, n_items):
    indices = np.asarray(values[1])
    axis = _axis(int(attrs.get("axis", 0)))
    size = x.shape[axis]
    return np.take(x, np.where(indices < 0, indices + size, indices), axis=axis)


def _slice_op(x, values, is_act, attrs, n_items):
    def vec(v):
        return None if v is None else [int(a) for a in np.asarray(v).reshape(-1)]
    more = values + [None] * (5 - len(values))
    return _slice(x, vec(more[1]), vec(more[2]), vec(more[3]), vec(more[4]))


def _concat(x, values, is_act, attrs, n_items):
    parts = [v if act else np.broadcast_to(v, (n_items,) + v.shape)
             for v, act in zip(values, is_act)]
    return np.concatenate(parts, axis=_axis(int(attrs["axis"])))


def _unsqueeze(x, values, is_act, attrs, n_items):
    axes = attrs.get("axes")
    if axes is None:
        axes = [int(v) for v in np.asarray(values[1]).reshape(-1)]
    rank = x.ndim - 1 + len(axes)
    for axis in sorted(a + rank if a < 0 else a for a in axes):
        x = np.expand_dims(x, axis + 1)
    return x


def _squeeze(x, values, is_act, attrs, n_items):
    axes = attrs.get("axes")
    if axes is None and len(values) > 1 and values[1] is not None:
        axes = [int(v) for v in np.asarray(values[1]).reshape(-1)]
    if axes is None:
        axes = [i for i, d in enumerate(x.shape[1:]) if d == 1]
    rank = x.ndim - 1
    return np.squeeze(x, axis=tuple(_axis(a + rank if a < 0 else a) for a in axes))


def _reduce(function):
    def op(x, values, is_act, attrs, n_items):
        axes = _reduce_axes(attrs, values[1] if len(values) > 1 else None, x.ndim)
        if axes is None:
            return x
        return function(x, axes, bool(attrs.get("keepdims", 1)))
    return op


def _layernorm(x, values, is_act, attrs, n_items):
    scale = values[1]
    bias = values[2] if len(values) > 2 else None
    return _layer_norm(x, scale, bias, int(attrs.get("axis", -1)), attrs.get("epsilon", 1e-5))


def _expand(x, values, is_act, attrs, n_items):
    target = tuple(int(v) for v in np.asarray(values[1]).reshape(-1))
    shape = np.broadcast_shapes(x.shape[1:], target)
    return np.broadcast_to(x, (x.shape[0],) + shape)


def _where(x, values, is_act, attrs, n_items):
    cond, a, b = _align(values[:3], is_act[:3])
    return np.where(cond, a, b)


def _pad(x, values, is_act, attrs, n_items):
    pads = [int(v) for v in np.asarray(values[1]).reshape(-1)]
    if attrs.get("mode", "constant") != "constant":
        raise ValueError(f"Pad mode {attrs['mode']!r} is not supported (constant is)")
    value = 0.0 if len(values) < 3 or values[2] is None else \
        float(np.asarray(values[2]).reshape(-1)[0])
    half = len(pads) // 2
    widths = [(0, 0)] + [(pads[i], pads[i + half]) for i in range(half)]
    if any(p < 0 for pair in widths for p in pair):
        raise ValueError("Pad with negative pads is not supported")
    return np.pad(x, widths, constant_values=value)


def _split_part(x, values, is_act, attrs, n_items):
    """One output of a Split: attributes ``axis``, ``start``, ``stop``."""
    axis = _axis(int(attrs.get("axis", 0)))
    index = [slice(None)] * x.ndim
    index[axis] = slice(int(attrs["start"]), int(attrs["stop"]))
    return x[tuple(index)]


def _clip(x, values, is_act, attrs, n_items):
    low = -np.inf if len(values) < 2 or values[1] is None else \
        float(np.asarray(values[1]).reshape(-1)[0])
    high = np.inf if len(values) < 3 or values[2] is None else \
        float(np.asarray(values[2]).reshape(-1)[0])
    return np.clip(x, low, high)


def _global_pool(x, values, is_act, attrs, n_items):
    return x.mean(axis=tuple(range(3, x.ndim)), keepdims=True)


#: ONNX operator -> NumPy implementation ``f(x, values, is_act, attrs, n_items)``.
_OPS = {
    "Add": _binary(np.add), "Sub": _binary(np.subtract), "Mul": _binary(np.multiply),
    "Div": _binary(np.divide), "Pow": _binary(np.power),
    "MatMul": _matmul, "Gemm": _gemm, "Einsum": lambda x, v, a, attrs, n: _einsum(
        attrs["equation"], v, a),
    "Softmax": _softmax, "Transpose": _transpose, "Reshape": _reshape, "Flatten": _flatten,
    "Gather": _gather, "Slice": _slice_op, "Concat": _concat, "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze, "Expand": _expand, "Where": _where, "Pad": _pad,
    "SplitPart": _split_part,
    "ReduceMean": _reduce(lambda x, axes, keep: x.mean(axis=axes, keepdims=keep)),
    "ReduceSum": _reduce(lambda x, axes, keep: x.sum(axis=axes, keepdims=keep)),
    "ReduceL2": _reduce(lambda x, axes, keep: np.sqrt((x * x).sum(axis=axes, keepdims=keep))),
    "LayerNormalization": _layernorm, "GlobalAveragePool": _global_pool,
    "Sqrt": _unary(np.sqrt), "Exp": _unary(np.exp), "Neg": _unary(np.negative),
    "Erf": _unary(_erf), "Tanh": _unary(np.tanh), "Sigmoid": _unary(_expit),
    "Relu": _unary(lambda x: np.maximum(x, 0)), "Clip": _clip,
    "Identity": _unary(lambda x: x), "Unbatch": _unary(lambda x: x.reshape(
        (x.shape[0],) + x.shape[2:])),
}
#: The operators a :class:`TensorOp` evaluates.
TENSOR_OPS = tuple(_OPS)


def evaluate(layer, params, inputs):
    """A :class:`TensorOp` on a batch: ordinary inputs get their unit batch axis first."""
    expanded = [x if batched else x.reshape((x.shape[0], 1) + x.shape[1:])
                for x, batched in zip(inputs, layer.batched)]
    return run(layer, params, expanded)


def _full(layer, params, inputs, out_shape):
    return evaluate(layer, params, inputs)


def _macs(layer, input_shapes, output_shape):
    """MatMul, Gemm and Einsum: multiply-accumulates of the per-sample product."""
    if layer.op_type not in ("MatMul", "Gemm", "Einsum"):
        return 0
    shapes = [tuple(s) if b else (1,) + tuple(s) for s, b in zip(input_shapes, layer.batched)]
    params = dict(layer.parameters)
    first = layer.slots[0]
    a_shape = shapes[int(first[1:])] if first.startswith("x") else params[first[2:]]
    if layer.op_type == "Einsum":
        equation = layer.attribute_dict()["equation"].replace(" ", "")
        sizes = {}
        operand_shapes = [shapes[int(s[1:])] if s.startswith("x") else params[s[2:]]
                          for s in layer.slots]
        for term, shape in zip(equation.split("->")[0].split(","), operand_shapes):
            sizes.update(zip(term, shape))
        return int(np.prod(list(sizes.values())))
    depth = a_shape[-2] if layer.op_type == "Gemm" and layer.attribute_dict().get("transA") \
        else a_shape[-1]
    return int(np.prod(output_shape)) * int(depth)


def _init(layer, shapes, rng):
    """Random constants around what they usually are (weights small, scales near 1)."""
    out = {}
    for name, shape in shapes.items():
        if len(shape) >= 2:
            fan_in = shape[-2] if len(shape) >= 2 else 1
            out[name] = rng.normal(0, 1.0 / math.sqrt(max(fan_in, 1)), shape)
        else:
            out[name] = rng.uniform(0.5, 1.5, shape)
    return out


def _to_onnx(ctx, name, layer, params, inputs):
    """The operator as written, at batch size 1 (module doc): a model holding a TensorOp
    exports with a fixed batch of one."""
    ctx.fixed_batch = True
    attrs = {k: v for k, v in layer.attribute_dict().items()
             if layer.op_type not in ("SplitPart",)}
    args = []
    for slot in layer.slots:
        if slot == "":
            args.append("")
        elif slot.startswith("x"):
            args.append(inputs[int(slot[1:])])
        elif slot.startswith("p:"):
            args.append(ctx.init(f"{name}.{slot[2:]}", params[slot[2:]]))
        else:
            value = thaw_value(layer.constants[int(slot[2:])])
            # (a float constant, e.g. attention's scale, in the model's dtype as ONNX's
            # operators need their inputs of one type; integers keep theirs)
            args.append(ctx.init(f"{name}.const{slot[2:]}", value,
                                 None if value.dtype.kind == "f" else value.dtype))
    op = layer.op_type
    if op == "Unbatch" or op == "Identity":
        ctx.node("Identity", args[:1], name)
    elif op == "SplitPart":
        a = layer.attribute_dict()
        ctx.node("Slice", [args[0], ctx.init(f"{name}.starts", np.array([a["start"]]), np.int64),
                           ctx.init(f"{name}.ends", np.array([a["stop"]]), np.int64),
                           ctx.init(f"{name}.axes", np.array([a.get("axis", 0)]), np.int64)],
                 name)
    else:
        ctx.node(op, args, name, **{k: (list(v) if isinstance(v, list) else v)
                                    for k, v in attrs.items()})


register(TensorOp, Rule.WHOLE, cpu=Kernels(full=_full), cuda=None,
         cuda_unsupported="a transformer operator (TensorOp) runs on the CPU only",
         onnx_export=_to_onnx, macs=_macs, init=_init)
