"""Naive NumPy oracle: the test suite's reference for every layer.

Every function here computes a *whole* layer on a batch, straight from the
layer's definition, with explicit Python loops over output positions and plain
NumPy over the batch and channel axes. Nothing here is fast, clever or shared
with :mod:`kryptonref`: no Numba, no im2col, no padded-window tricks, no
incremental regions. The only thing taken from kryptonref is the layer spec
classes, read for their hyper-parameters: :data:`ORACLE` maps each layer type
to its oracle function and to how a change propagates through it (this file's
own reading of the definitions, used by :func:`naive_approximate`). The
registry's conformance test (``tests/test_registry.py``) fails when a
registered layer type has no entry here.

All computation is in float64, whatever the input dtype, so that the oracle is
the "true" value both float64 and float32 kernels are compared against.

Conventions (the PyTorch / ONNX ones)
------------------------------------
* Feature maps are ``(N, C, H, W)``; vectors are ``(N, F)``.
* Padding is ``((top, bottom), (left, right))``. A window position reads the
  input at unpadded coordinates; a coordinate outside ``[0, H)`` (or
  ``[0, W)``) reads the padding value: 0 for convolution and average pooling,
  ``-inf`` for max pooling.
* Output ``o`` of a conv/pool layer reads taps ``o*S - P_before + k*D`` for
  ``k = 0 .. K-1`` (stride ``S``, dilation ``D``).
* Output size: ``floor((W + P0 + P1 - Ke) / S) + 1`` with ``Ke = D*(K-1) + 1``;
  with ``ceil_mode`` the ceiling, minus a last window that would start at or
  beyond ``W + P0`` (i.e. entirely in the right padding).
"""
from __future__ import annotations

import math

import numpy as np

import kryptonref.layers as S

__all__ = [
    "output_size", "conv2d", "max_pool2d", "avg_pool2d", "avg_pool_divisor_map",
    "global_avg_pool", "adaptive_avg_pool", "relu", "relu6", "batchnorm", "flatten",
    "linear", "softmax", "add", "concat", "dropout", "leaky_relu", "naive_layer", "naive_forward",
    "naive_occlude", "naive_approximate", "ORACLE",
]


# --- helpers ------------------------------------------------------------------------

def _pair(value):
    """``3 -> (3, 3)``; a pair stays a pair."""
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _padding(value):
    """``p``, ``(ph, pw)`` or ``((top, bottom), (left, right))`` -> the last form."""
    if isinstance(value, (tuple, list)) and isinstance(value[0], (tuple, list)):
        return tuple(_pair(v) for v in value)
    ph, pw = _pair(value)
    return (ph, ph), (pw, pw)


def output_size(n, kernel, stride, pad_before, pad_after, dilation=1, ceil_mode=False):
    """Output length on one axis (PyTorch's rule, including ceil mode)."""
    span = dilation * (kernel - 1) + 1
    room = n + pad_before + pad_after - span
    if ceil_mode:
        size = math.ceil(room / stride) + 1
        # PyTorch: the last window must start inside the input or the left padding.
        if (size - 1) * stride >= n + pad_before:
            size -= 1
    else:
        size = room // stride + 1
    return size


def _taps(o, kernel, stride, pad_before, dilation=1):
    """Input coordinates read by output ``o`` on one axis."""
    return o * stride - pad_before + dilation * np.arange(kernel)


def _read(x, ys, xs, pad_value):
    """``x[:, :, ys, xs]`` (outer product of the index lists), ``pad_value`` outside ``x``."""
    n, c, h, w = x.shape
    window = np.full((n, c, len(ys), len(xs)), pad_value, dtype=np.float64)
    iy = np.flatnonzero((ys >= 0) & (ys < h))
    ix = np.flatnonzero((xs >= 0) & (xs < w))
    window[:, :, iy[:, None], ix[None, :]] = x[:, :, ys[iy][:, None], xs[ix][None, :]]
    return window


def _f64(x):
    return np.asarray(x, dtype=np.float64)


# --- spatial layers -----------------------------------------------------------------

def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation.

    ``out[n, o, i, j] = bias[o] + sum_{c in group(o), ky, kx}
    weight[o, c - g*Cin_g, ky, kx] * x[n, c, i*Sh - Pt + ky*Dh, j*Sw - Pl + kx*Dw]``
    with zero padding; ``weight`` is ``(C_out, C_in/groups, kh, kw)``.
    """
    x, weight = _f64(x), _f64(weight)
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    (pt, pb), (pl, pr) = _padding(padding)
    n, c_in, h, w = x.shape
    c_out, cin_group, kh, kw = weight.shape
    assert c_in == cin_group * groups and c_out % groups == 0
    cout_group = c_out // groups
    oh = output_size(h, kh, sh, pt, pb, dh)
    ow = output_size(w, kw, sw, pl, pr, dw)
    out = np.zeros((n, c_out, oh, ow))
    for i in range(oh):
        ys = _taps(i, kh, sh, pt, dh)
        for j in range(ow):
            xs = _taps(j, kw, sw, pl, dw)
            window = _read(x, ys, xs, 0.0)                     # (N, C_in, kh, kw)
            for g in range(groups):
                x_g = window[:, g * cin_group:(g + 1) * cin_group]
                w_g = weight[g * cout_group:(g + 1) * cout_group]
                out[:, g * cout_group:(g + 1) * cout_group, i, j] = np.einsum(
                    "nckl,ockl->no", x_g, w_g)
    if bias is not None:
        out += _f64(bias)[None, :, None, None]
    return out


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Max over each (dilated) window; the padding reads as ``-inf``."""
    x = _f64(x)
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    (pt, pb), (pl, pr) = _padding(padding)
    dh, dw = _pair(dilation)
    n, c, h, w = x.shape
    oh = output_size(h, kh, sh, pt, pb, dh, ceil_mode)
    ow = output_size(w, kw, sw, pl, pr, dw, ceil_mode)
    out = np.empty((n, c, oh, ow))
    for i in range(oh):
        ys = _taps(i, kh, sh, pt, dh)
        for j in range(ow):
            xs = _taps(j, kw, sw, pl, dw)
            out[:, :, i, j] = _read(x, ys, xs, -np.inf).max(axis=(2, 3))
    return out


def _avg_divisor(i, j, in_hw, kernel_size, stride, padding, count_include_pad):
    """Divisor of average-pooling output ``(i, j)`` (PyTorch's rule, computed in 2-D)."""
    (h, w), (kh, kw), (sh, sw) = in_hw, kernel_size, stride
    (pt, pb), (pl, pr) = padding
    y0, x0 = i * sh - pt, j * sw - pl
    # The window is cut at the end of the declared padding (ceil mode can go past it).
    y1, x1 = min(y0 + kh, h + pb), min(x0 + kw, w + pr)
    if count_include_pad:
        return (y1 - y0) * (x1 - x0)
    ys, xs = np.arange(y0, y1), np.arange(x0, x1)
    real = ((ys >= 0) & (ys < h))[:, None] & ((xs >= 0) & (xs < w))[None, :]
    return int(np.count_nonzero(real))


def avg_pool_divisor_map(in_hw, kernel_size, stride=None, padding=0, ceil_mode=False,
                         count_include_pad=True):
    """``(oh, ow)`` array of the divisor of every average-pooling output."""
    kernel = _pair(kernel_size)
    stride = _pair(kernel_size if stride is None else stride)
    padding = _padding(padding)
    oh = output_size(in_hw[0], kernel[0], stride[0], *padding[0], 1, ceil_mode)
    ow = output_size(in_hw[1], kernel[1], stride[1], *padding[1], 1, ceil_mode)
    div = np.empty((oh, ow))
    for i in range(oh):
        for j in range(ow):
            div[i, j] = _avg_divisor(i, j, in_hw, kernel, stride, padding, count_include_pad)
    return div


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Sum over each window (padding reads 0) divided by PyTorch's divisor.

    The window of output ``o`` starts at ``start = o*S - P0`` and, for the
    divisor, stops at ``stop = min(start + K, W + P1)``. With
    ``count_include_pad`` the divisor is ``(stop - start)`` per axis (product of
    the axes); otherwise it is the number of real input elements in the window.
    """
    x = _f64(x)
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    (pt, pb), (pl, pr) = _padding(padding)
    n, c, h, w = x.shape
    div = avg_pool_divisor_map((h, w), (kh, kw), (sh, sw), ((pt, pb), (pl, pr)), ceil_mode,
                               count_include_pad)
    oh, ow = div.shape
    out = np.empty((n, c, oh, ow))
    for i in range(oh):
        ys = _taps(i, kh, sh, pt)
        for j in range(ow):
            xs = _taps(j, kw, sw, pl)
            out[:, :, i, j] = _read(x, ys, xs, 0.0).sum(axis=(2, 3)) / div[i, j]
    return out


def global_avg_pool(x):
    """Mean over H and W: ``(N, C, H, W) -> (N, C, 1, 1)``."""
    x = _f64(x)
    n, c, h, w = x.shape
    return x.sum(axis=(2, 3)).reshape(n, c, 1, 1) / (h * w)


def adaptive_avg_pool(x, output_size):
    """PyTorch's adaptive average pooling: bin ``i`` of ``o`` covers
    ``[floor(i*H/o), ceil((i+1)*H/o))``."""
    x = _f64(x)
    oh, ow = _pair(output_size)
    n, c, h, w = x.shape
    out = np.empty((n, c, oh, ow))
    for i in range(oh):
        y0, y1 = math.floor(i * h / oh), math.ceil((i + 1) * h / oh)
        for j in range(ow):
            x0, x1 = math.floor(j * w / ow), math.ceil((j + 1) * w / ow)
            out[:, :, i, j] = x[:, :, y0:y1, x0:x1].mean(axis=(2, 3))
    return out


# --- element-wise and dense layers --------------------------------------------------

def relu(x):
    """``max(x, 0)``."""
    return np.maximum(_f64(x), 0.0)


def relu6(x):
    """``min(max(x, 0), 6)``."""
    return np.minimum(np.maximum(_f64(x), 0.0), 6.0)


def leaky_relu(x, negative_slope):
    """``x`` for ``x >= 0``, ``negative_slope * x`` for ``x < 0``."""
    x = _f64(x)
    return np.where(x < 0, negative_slope * x, x)


def _vectorised(function, x):
    return np.vectorize(function, otypes=[np.float64])(_f64(x))


def sigmoid(x):
    """``1 / (1 + exp(-x))``."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-_f64(x)))


def hard_sigmoid(x, alpha, beta):
    """``clip(alpha x + beta, 0, 1)``."""
    return np.minimum(np.maximum(alpha * _f64(x) + beta, 0.0), 1.0)


def hard_swish(x):
    """``x relu6(x + 3) / 6``."""
    x = _f64(x)
    return x * np.minimum(np.maximum(x + 3.0, 0.0), 6.0) / 6.0


def gelu(x, approximate):
    """``x Phi(x)`` with the exact normal CDF, or its tanh approximation."""
    x = _f64(x)
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + _vectorised(math.erf, x / math.sqrt(2.0)))


def elu(x, alpha):
    """``x`` for ``x > 0``, ``alpha (exp(x) - 1)`` elsewhere."""
    x = _f64(x)
    return np.where(x > 0, x, alpha * (np.exp(np.minimum(x, 0.0)) - 1.0))


def softplus(x):
    """``log(1 + exp(x))``, written out per element."""
    return _vectorised(lambda v: v + math.log1p(math.exp(-v)) if v > 0
                       else math.log1p(math.exp(v)), x)


def mish(x):
    """``x tanh(softplus(x))``."""
    return _f64(x) * np.tanh(softplus(x))


def prelu(x, weight):
    """``x`` for ``x >= 0``, the channel's slope times ``x`` elsewhere."""
    x = _f64(x)
    slope = _f64(weight)
    slope = slope.reshape((1, -1) + (1,) * (x.ndim - 2)) if slope.size > 1 else slope[0]
    return np.where(x < 0, slope * x, x)


def arithmetic(x, op, value):
    """``x op value`` (``value op x`` for rsub, rdiv), ``value`` one per channel (axis 1)."""
    x = _f64(x)
    v = _f64(value).reshape((1, -1) + (1,) * (x.ndim - 2))
    return {"add": lambda: x + v, "sub": lambda: x - v, "mul": lambda: x * v,
            "div": lambda: x / v, "rsub": lambda: v - x, "rdiv": lambda: v / x}[op]()


def layer_norm_channels(x, weight, bias, eps):
    """At each position, ``(x - mean) / sqrt(var + eps) * weight + bias`` over the channels."""
    x = _f64(x)
    out = np.empty_like(x)
    n, c, h, w = x.shape
    for b in range(n):
        for i in range(h):
            for j in range(w):
                v = x[b, :, i, j]
                mean = v.sum() / c
                var = ((v - mean) ** 2).sum() / c
                out[b, :, i, j] = (v - mean) / math.sqrt(var + eps) * _f64(weight) + _f64(bias)
    return out


def channel_linear(x, weight, bias=None):
    """At each position, ``weight @ x[:, :, i, j] (+ bias)``."""
    out = np.einsum("oc,nchw->nohw", _f64(weight), _f64(x))
    if bias is not None:
        out = out + _f64(bias)[None, :, None, None]
    return out


def channel_shuffle(x, groups):
    """Output channel ``i * G + g`` is input channel ``g * (C / G) + i``."""
    x = _f64(x)
    c = x.shape[1]
    per_group = c // groups
    out = np.empty_like(x)
    for g in range(groups):
        for i in range(per_group):
            out[:, i * groups + g] = x[:, g * per_group + i]
    return out


def mul(a, b):
    """The product, a per-channel gate ``(N, C, 1, 1)`` broadcast over the map."""
    return _f64(a) * _f64(b)


def tensor_op(layer, params, xs):
    """A TensorOp, sample by sample, by onnx's reference evaluator (per-sample semantics:
    ONNX shapes with the batch size 1; an ordinary input gets its unit batch axis)."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    from kryptonref.layers.tensor import thaw_value
    attrs = {k: thaw_value(v) for k, v in layer.attributes}
    samples = [np.asarray(_f64(x)) if batched else _f64(x)[:, None]
               for x, batched in zip(xs, layer.batched)]
    outputs = []
    for b in range(samples[0].shape[0]):
        if layer.op_type == "Unbatch":
            outputs.append(samples[0][b][0])
            continue
        if layer.op_type == "SplitPart":
            index = [slice(None)] * samples[0][b].ndim
            index[attrs["axis"]] = slice(attrs["start"], attrs["stop"])
            outputs.append(samples[0][b][tuple(index)])
            continue
        names, feeds, inits = [], {}, []
        for k, slot in enumerate(layer.slots):
            if slot == "":
                names.append("")
            elif slot.startswith("x"):
                names.append(f"x{slot[1:]}")
                feeds[names[-1]] = samples[int(slot[1:])][b]
            else:
                value = _f64(params[slot[2:]]) if slot.startswith("p:") else \
                    thaw_value(layer.constants[int(slot[2:])])
                names.append(f"c{k}")
                inits.append(numpy_helper.from_array(np.asarray(value), names[-1]))
        node = helper.make_node(layer.op_type, names, ["y"], **{
            k: v for k, v in attrs.items()})
        inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(
            feeds[n].dtype), feeds[n].shape) for n in dict.fromkeys(n for n in names if n in feeds)]
        graph = helper.make_graph([node], "oracle", inputs,
                                  [helper.make_tensor_value_info("y", 11, None)], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        outputs.append(np.asarray(ReferenceEvaluator(model).run(None, feeds)[0], np.float64))
    return np.stack(outputs)


def dropout(x):
    """Identity (inference)."""
    return _f64(x).copy()


def batchnorm(x, weight, bias, running_mean, running_var, eps=1e-5):
    """Eval-mode batch norm: ``(x - mean) / sqrt(var + eps) * weight + bias`` per channel."""
    x = _f64(x)

    def per_channel(v):
        return _f64(v)[None, :, None, None]

    return ((x - per_channel(running_mean)) / np.sqrt(per_channel(running_var) + eps)
            * per_channel(weight) + per_channel(bias))


def flatten(x):
    """``(N, C, H, W) -> (N, C*H*W)`` in C order."""
    x = _f64(x)
    return x.reshape(x.shape[0], -1)


def linear(x, weight, bias=None):
    """``y = x W^T + b`` with ``weight`` of shape ``(out, in)``."""
    y = _f64(x) @ _f64(weight).T
    if bias is not None:
        y = y + _f64(bias)
    return y


def softmax(x):
    """Softmax over axis 1: ``exp(x_i) / sum_j exp(x_j)`` (shifted by the max, which
    changes nothing mathematically but avoids overflow)."""
    e = np.exp(_f64(x) - _f64(x).max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def add(*xs):
    """Element-wise sum of equally shaped inputs."""
    total = _f64(xs[0]).copy()
    for x in xs[1:]:
        total = total + _f64(x)
    return total


def concat(*xs):
    """Concatenation along the channel axis (axis 1)."""
    return np.concatenate([_f64(x) for x in xs], axis=1)


# --- whole graphs ---------------------------------------------------------------------

#: How a change propagates through a layer, as this oracle reads the definitions:
#: "window" (conv, pool: each output reads a window), "positionwise" (each output
#: reads its own position), "merge" (several inputs, position by position),
#: "whole" (every output reads every input).
WINDOW, POSITIONWISE, MERGE, WHOLE = "window", "positionwise", "merge", "whole"

#: Layer type -> (oracle ``f(layer, params, inputs)``, propagation).
ORACLE = {
    S.Conv2d: (lambda layer, p, xs: conv2d(xs[0], p["weight"], p.get("bias"), layer.stride,
                                           layer.padding, layer.dilation, layer.groups), WINDOW),
    S.MaxPool2d: (lambda layer, p, xs: max_pool2d(xs[0], layer.kernel_size, layer.stride,
                                                  layer.padding, layer.dilation,
                                                  layer.ceil_mode), WINDOW),
    S.AvgPool2d: (lambda layer, p, xs: avg_pool2d(xs[0], layer.kernel_size, layer.stride,
                                                  layer.padding, layer.ceil_mode,
                                                  layer.count_include_pad), WINDOW),
    S.GlobalAvgPool2d: (lambda layer, p, xs: global_avg_pool(xs[0]), WHOLE),
    S.AdaptiveAvgPool2d: (lambda layer, p, xs: adaptive_avg_pool(xs[0], layer.output_size),
                          WHOLE),
    S.ReLU: (lambda layer, p, xs: relu(xs[0]), POSITIONWISE),
    S.ReLU6: (lambda layer, p, xs: relu6(xs[0]), POSITIONWISE),
    S.LeakyReLU: (lambda layer, p, xs: leaky_relu(xs[0], layer.negative_slope), POSITIONWISE),
    S.Dropout: (lambda layer, p, xs: dropout(xs[0]), POSITIONWISE),
    S.BatchNorm2d: (lambda layer, p, xs: batchnorm(xs[0], p["weight"], p["bias"],
                                                   p["running_mean"], p["running_var"],
                                                   layer.eps), POSITIONWISE),
    S.Flatten: (lambda layer, p, xs: flatten(xs[0]), WHOLE),
    S.Linear: (lambda layer, p, xs: linear(xs[0], p["weight"], p.get("bias")), WHOLE),
    S.Softmax: (lambda layer, p, xs: softmax(xs[0]), WHOLE),
    S.Add: (lambda layer, p, xs: add(*xs), MERGE),
    S.Mul: (lambda layer, p, xs: mul(*xs), MERGE),
    S.Sigmoid: (lambda layer, p, xs: sigmoid(xs[0]), POSITIONWISE),
    S.HardSigmoid: (lambda layer, p, xs: hard_sigmoid(xs[0], layer.alpha, layer.beta),
                    POSITIONWISE),
    S.HardSwish: (lambda layer, p, xs: hard_swish(xs[0]), POSITIONWISE),
    S.SiLU: (lambda layer, p, xs: _f64(xs[0]) * sigmoid(xs[0]), POSITIONWISE),
    S.GELU: (lambda layer, p, xs: gelu(xs[0], layer.approximate), POSITIONWISE),
    S.ELU: (lambda layer, p, xs: elu(xs[0], layer.alpha), POSITIONWISE),
    S.Tanh: (lambda layer, p, xs: np.tanh(_f64(xs[0])), POSITIONWISE),
    S.Softplus: (lambda layer, p, xs: softplus(xs[0]), POSITIONWISE),
    S.Mish: (lambda layer, p, xs: mish(xs[0]), POSITIONWISE),
    S.Erf: (lambda layer, p, xs: _vectorised(math.erf, xs[0]), POSITIONWISE),
    S.Clip: (lambda layer, p, xs: np.minimum(np.maximum(_f64(xs[0]), layer.low), layer.high),
             POSITIONWISE),
    S.Power: (lambda layer, p, xs: _f64(xs[0]) ** layer.exponent, POSITIONWISE),
    S.PReLU: (lambda layer, p, xs: prelu(xs[0], p["weight"]), POSITIONWISE),
    S.Arithmetic: (lambda layer, p, xs: arithmetic(xs[0], layer.op, p[layer.param]),
                   POSITIONWISE),
    S.LayerNorm2d: (lambda layer, p, xs: layer_norm_channels(xs[0], p["weight"], p["bias"],
                                                             layer.eps), POSITIONWISE),
    S.ChannelLinear: (lambda layer, p, xs: channel_linear(xs[0], p["weight"], p.get("bias")),
                      POSITIONWISE),
    S.ChannelSlice: (lambda layer, p, xs: _f64(xs[0])[:, layer.start:layer.stop].copy(),
                     POSITIONWISE),
    S.ChannelShuffle: (lambda layer, p, xs: channel_shuffle(xs[0], layer.groups), POSITIONWISE),
    S.TensorOp: (tensor_op, WHOLE),
    S.Concat: (lambda layer, p, xs: concat(*xs), MERGE),
}


def naive_layer(layer, params, inputs):
    """Apply one kryptonref layer spec with this module's functions.

    ``params`` is ``{param: array}`` as in ``Model.params[node]``; ``inputs`` is
    the list of the node's input batches.
    """
    if type(layer) not in ORACLE:
        raise TypeError(f"the oracle has no rule for {type(layer).__name__}")
    return ORACLE[type(layer)][0](layer, params, inputs)


def propagation(layer):
    """How a change propagates through ``layer`` (:data:`ORACLE`)."""
    return propagation_of(type(layer))


def propagation_of(layer_type):
    """How a change propagates through layers of ``layer_type`` (:data:`ORACLE`)."""
    return ORACLE[layer_type][1]


def naive_forward(graph, params, x):
    """Run every node of a kryptonref ``Graph`` on the batch ``x`` (N, C, H, W).

    ``params`` is in the ``Model.params`` format ``{node: {param: array}}``.
    Returns ``{name: float64 array}`` for the input and every node.
    """
    values = {graph.input_name: _f64(x)}
    for name in graph.order:
        node = graph.nodes[name]
        values[name] = naive_layer(node.layer, params.get(name, {}),
                                   [values[i] for i in node.inputs])
    return values


def naive_occlude(image, y, x, patch_hw, fill):
    """A copy of ``image`` (C, H, W) with rows ``y:y+h``, columns ``x:x+w`` set to ``fill``.

    ``fill`` is a scalar, per-channel values ``(C,)`` or a full patch ``(C, h, w)``.
    """
    h, w = _pair(patch_hw)
    out = np.array(image, copy=True)
    fill = np.asarray(fill, dtype=out.dtype)
    if fill.ndim == 1:
        fill = fill[:, None, None]
    out[:, y:y + h, x:x + w] = fill
    return out


def naive_captum_occlusion(forward, image, window, stride, baseline, target):
    """Captum's ``Occlusion.attribute`` written out plainly (``docs/design.md``, Occlusion output).

    Windows start at ``i*s`` for ``i = 0 .. ceil((W - w) / s)`` on each axis; the
    last is cut at the border. Each pixel's attribution is the mean, over the
    windows covering it, of ``f(x)[target] - f(x_occluded)[target]``;
    ``forward`` maps one image (C, H, W) to a vector of scores.
    """
    _, height, width = image.shape
    (wh, ww), (sh, sw) = window, stride
    base = forward(image)[target]
    total = np.zeros((height, width))
    count = np.zeros((height, width))
    for i in range(int(np.ceil((height - wh) / sh)) + 1):
        for j in range(int(np.ceil((width - ww) / sw)) + 1):
            y, x = i * sh, j * sw
            occluded = image.copy()
            occluded[:, y:y + wh, x:x + ww] = baseline
            total[y:y + wh, x:x + ww] += base - forward(occluded)[target]
            count[y:y + wh, x:x + ww] += 1
    with np.errstate(invalid="ignore"):
        return np.broadcast_to(total / count, image.shape)   # NaN where no window covers


# --- approximate inference ------------------------------------------------------------

def _naive_changed(layer, lo, hi, n_out, dim):
    """Outputs (half-open) on one axis whose window span meets input rows ``lo:hi``.

    By brute force over the outputs. The span of output ``o`` runs from its first
    tap ``o*S - P`` to its last ``o*S - P + (K-1)*D``: with dilation an output
    whose taps straddle the rows without touching them counts as changed, as in
    the engine's (and the paper's) contiguous regions.
    """
    kernel, stride = _pair(layer.kernel_size)[dim], _pair(layer.stride)[dim]
    dilation = _pair(getattr(layer, "dilation", 1))[dim]
    pad_before = _padding(layer.padding)[dim][0]
    hits = [o for o in range(n_out)
            if o * stride - pad_before < hi and o * stride - pad_before + (kernel - 1) * dilation >= lo]
    return (hits[0], hits[-1] + 1) if hits else None


def _naive_clamp(start, stop, n_out, tau):
    """Cut a region wider than round(tau * n_out) (at least 1) to that width, centred."""
    limit = max(1, int(round(tau * n_out)))
    if stop - start <= limit:
        return start, stop
    start += (stop - start - limit) // 2
    return start, start + limit


def _is_gate(graph, source, name):
    """A merge input ``(C, 1, 1)`` broadcast over a larger ``(C, H, W)`` output."""
    shape, out = graph.shapes[source], graph.shapes[name]
    return len(shape) == 3 and shape[1:] == (1, 1) and len(out) == 3 and out[1:] != (1, 1)


def naive_approximate(graph, params, image, y, x, patch_hw, fill, tau, freeze_context=False):
    """Approximate inference for one patch position, the obvious way (``docs/design.md``, Approximate inference).

    Every node holds a whole tensor. A conv or pool node is computed in full from
    its (approximate) input; then, outside its region, its values are the
    unoccluded image's. Its region is the brute-force changed region of its
    input's region, cut to ``round(tau * W_out)`` per axis, centred. An
    element-wise node keeps its input's region, a merge the bounding box of its
    inputs' regions; global pooling, flatten, dense and softmax change everything.
    With ``freeze_context`` a merge reads each gate it broadcasts over a map
    (squeeze-excitation) with its unoccluded value, and as unchanged.

    Returns ``{name: (1, ...) float64 array}``.
    """
    base = naive_forward(graph, params, image[None])
    h, w = _pair(patch_hw)
    values = {graph.input_name: naive_occlude(_f64(image), y, x, patch_hw, fill)[None]}
    regions = {graph.input_name: (y, y + h, x, x + w)}
    for name in graph.order:
        node = graph.nodes[name]
        layer = node.layer
        kind = propagation(layer)
        frozen = [freeze_context and kind == MERGE and _is_gate(graph, i, name)
                  for i in node.inputs]
        computed = naive_layer(layer, params.get(name, {}),
                               [base[i] if f else values[i] for i, f in zip(node.inputs, frozen)])
        ins = [None if f else regions[i] for i, f in zip(node.inputs, frozen)]
        if kind == WINDOW:
            region = None
            if ins[0] is not None:
                in_shape = graph.shapes[node.inputs[0]]
                r = ins[0] if ins[0] != "whole" else (0, in_shape[1], 0, in_shape[2])
                axes = [_naive_changed(layer, r[2 * d], r[2 * d + 1], graph.shapes[name][1 + d], d)
                        for d in (0, 1)]
                if axes[0] is not None and axes[1] is not None:
                    ys = _naive_clamp(*axes[0], graph.shapes[name][1], tau)
                    xs = _naive_clamp(*axes[1], graph.shapes[name][2], tau)
                    region = ys + xs
            out = base[name].copy()
            if region is not None:
                y0, y1, x0, x1 = region
                out[:, :, y0:y1, x0:x1] = computed[:, :, y0:y1, x0:x1]
            values[name], regions[name] = out, region
        elif kind == POSITIONWISE:
            values[name], regions[name] = computed, ins[0]
        elif kind == MERGE:
            live = [r for r in ins if r is not None]
            gate = any(r is not None and _is_gate(graph, i, name) for i, r in zip(node.inputs, ins))
            if gate or any(r == "whole" for r in live):  # a changed gate scales every output
                regions[name] = "whole"
            elif live:
                regions[name] = (min(r[0] for r in live), max(r[1] for r in live),
                                 min(r[2] for r in live), max(r[3] for r in live))
            else:
                regions[name] = None
            values[name] = computed
        else:
            values[name], regions[name] = computed, None if ins[0] is None else "whole"
    return values
