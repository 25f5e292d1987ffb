"""Hypothesis strategies: random architectures (chains and DAGs) and occlusion batches.

:data:`LAYERS` holds one strategy per registered layer type (the registry's
conformance test, ``tests/test_registry.py``, fails when a type is missing);
:func:`architectures` draws from it, so every layer type appears in the
random networks of the engine's property tests.
"""
import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

import kryptonref as kr
from kryptonref.geometry import effective_kernel


def _conv(draw, channels, allow_groups=True):
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    pads = tuple(tuple(draw(st.integers(0, 3)) for _ in range(2)) for _ in range(2))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    out = draw(st.integers(1, 6))
    groups = 1
    if allow_groups and draw(st.booleans()):
        groups = draw(st.sampled_from([g for g in range(1, channels + 1) if channels % g == 0]))
        out = groups * draw(st.integers(1, 2))
    return kr.Conv2d(channels, out, (kh, kw), stride=stride, padding=pads, dilation=(dh, dw),
                     groups=groups, bias=draw(st.booleans()))


def _pool(draw, max_pool=None):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pads = ((draw(st.integers(0, kh // 2)), draw(st.integers(0, kh // 2))),
            (draw(st.integers(0, kw // 2)), draw(st.integers(0, kw // 2))))
    ceil = draw(st.booleans())
    if max_pool is None:
        max_pool = draw(st.booleans())
    if max_pool:
        dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        pads = tuple((min(p0, effective_kernel(k, d) // 2), min(p1, effective_kernel(k, d) // 2))
                     for (p0, p1), k, d in zip(pads, (kh, kw), dil))
        return kr.MaxPool2d((kh, kw), stride, pads, dilation=dil, ceil_mode=ceil)
    return kr.AvgPool2d((kh, kw), stride, pads, ceil_mode=ceil,
                        count_include_pad=draw(st.booleans()))


#: Single-input layer types on a feature map: type -> ``draw_layer(draw, shape)``.
SINGLE = {
    kr.Conv2d: lambda draw, shape: _conv(draw, shape[0]),
    kr.MaxPool2d: lambda draw, shape: _pool(draw, max_pool=True),
    kr.AvgPool2d: lambda draw, shape: _pool(draw, max_pool=False),
    kr.ReLU: lambda draw, shape: kr.ReLU(),
    kr.ReLU6: lambda draw, shape: kr.ReLU6(),
    kr.LeakyReLU: lambda draw, shape: kr.LeakyReLU(draw(st.sampled_from([0.01, 0.2, -0.5, 1.5]))),
    kr.Dropout: lambda draw, shape: kr.Dropout(),
    kr.BatchNorm2d: lambda draw, shape: kr.BatchNorm2d(shape[0]),
    kr.Sigmoid: lambda draw, shape: kr.Sigmoid(),
    kr.HardSigmoid: lambda draw, shape: kr.HardSigmoid(*draw(st.sampled_from(
        [(1 / 6, 0.5), (0.2, 0.5), (0.3, 0.1)]))),
    kr.HardSwish: lambda draw, shape: kr.HardSwish(),
    kr.SiLU: lambda draw, shape: kr.SiLU(),
    kr.GELU: lambda draw, shape: kr.GELU(draw(st.sampled_from(["none", "tanh"]))),
    kr.ELU: lambda draw, shape: kr.ELU(draw(st.sampled_from([1.0, 0.5]))),
    kr.Tanh: lambda draw, shape: kr.Tanh(),
    kr.Softplus: lambda draw, shape: kr.Softplus(),
    kr.Mish: lambda draw, shape: kr.Mish(),
    kr.Erf: lambda draw, shape: kr.Erf(),
    kr.Clip: lambda draw, shape: kr.Clip(*draw(st.sampled_from(
        [(-1.0, 1.0), (0.0, float("inf")), (float("-inf"), 0.5), (-0.25, 0.25)]))),
    kr.Power: lambda draw, shape: kr.Power(draw(st.sampled_from([1.0, 2.0, 3.0]))),
    kr.PReLU: lambda draw, shape: kr.PReLU(draw(st.sampled_from([1, shape[0]]))),
    # (no "rdiv": 1 / x near 0 is ill-conditioned for float32 comparisons; tests/test_layers.py)
    kr.Arithmetic: lambda draw, shape: kr.Arithmetic(draw(st.sampled_from(
        ["add", "sub", "mul", "div", "rsub"]))),
    kr.LayerNorm2d: lambda draw, shape: kr.LayerNorm2d(shape[0], eps=1e-5),
    kr.ChannelLinear: lambda draw, shape: kr.ChannelLinear(shape[0], draw(st.integers(1, 5)),
                                                           bias=draw(st.booleans())),
    kr.ChannelSlice: lambda draw, shape: _channel_slice(draw, shape[0]),
    kr.ChannelShuffle: lambda draw, shape: kr.ChannelShuffle(draw(st.sampled_from(
        [g for g in range(1, shape[0] + 1) if shape[0] % g == 0]))),
}
#: Of those, the position-wise ones keeping the shape (a "fork" block reads one map with two).
POSITIONWISE = [kr.ReLU, kr.ReLU6, kr.LeakyReLU, kr.Dropout, kr.BatchNorm2d, kr.Sigmoid,
                kr.HardSigmoid, kr.HardSwish, kr.SiLU, kr.GELU, kr.ELU, kr.Tanh, kr.Softplus,
                kr.Mish, kr.Erf, kr.Clip, kr.Power, kr.PReLU, kr.Arithmetic, kr.LayerNorm2d,
                kr.ChannelShuffle]
#: Gates of squeeze-excitation blocks.
GATES = [kr.Sigmoid, kr.HardSigmoid]
#: Merges of two maps of one shape: type -> ``draw_layer(draw, shape)``.
MERGES = {
    kr.Add: lambda draw, shape: kr.Add(),
    kr.Concat: lambda draw, shape: kr.Concat(),
    kr.Mul: lambda draw, shape: kr.Mul(),
}
#: Whole-tensor layers on a feature map (a "global" block): type -> ``draw_layer(draw, shape)``.
WHOLE_MAPS = {
    kr.GlobalAvgPool2d: lambda draw, shape: kr.GlobalAvgPool2d(),
    kr.AdaptiveAvgPool2d: lambda draw, shape: kr.AdaptiveAvgPool2d(
        (draw(st.integers(1, min(shape[1], 4))), draw(st.integers(1, min(shape[2], 4))))),
}
#: The classifier head's layer types (drawn by :func:`architectures` in that order).
HEAD = [kr.GlobalAvgPool2d, kr.Flatten, kr.Linear, kr.Softmax]
#: Every layer type the random architectures can hold.
COVERED = set(SINGLE) | set(MERGES) | set(WHOLE_MAPS) | set(HEAD) | {kr.TensorOp}


def _frozen(value):
    from kryptonref.layers.tensor import freeze_value
    return freeze_value(np.asarray(value, np.int64))


def token_tail(draw, graph, current):
    """A transformer's tail on a feature map: tokens (Reshape, Transpose), LayerNorm,
    a projection, attention-like softmax and mixing, mean over tokens, the unit batch axis
    dropped: whole-tensor :class:`kr.TensorOp` layers; returns the last node (a vector)."""
    c, h, w = graph.shapes[current]
    d = draw(st.integers(1, 4))
    op = kr.TensorOp
    x = graph.add(op("Reshape", (), ("x0", "i:0"), (False,), (), (_frozen([1, c, h * w]),)),
                  current)
    x = graph.add(op("Transpose", (("perm", (0, 2, 1)),), ("x0",), (True,)), x)
    x = graph.add(op("LayerNormalization", (("axis", -1), ("epsilon", 1e-5)),
                     ("x0", "p:scale", "p:bias"), (True,), (("scale", (c,)), ("bias", (c,)))),
                  x)
    x = graph.add(op("MatMul", (), ("x0", "p:weight"), (True,), (("weight", (c, d)),)), x)
    if draw(st.booleans()):   # attention-like: softmax(x x^T) x
        scores = graph.add(op("Transpose", (("perm", (0, 2, 1)),), ("x0",), (True,)), x)
        scores = graph.add(op("MatMul", (), ("x0", "x1"), (True, True)), [x, scores])
        scores = graph.add(op("Softmax", (("axis", -1),), ("x0",), (True,)), scores)
        mixed = graph.add(op("MatMul", (), ("x0", "x1"), (True, True)), [scores, x])
        x = graph.add(op("Add", (), ("x0", "x1"), (True, True)), [mixed, x])
    x = graph.add(op("ReduceMean", (("axes", (1,)), ("keepdims", 0)), ("x0",), (True,)), x)
    return graph.add(op("Unbatch", (), ("x0",), (True,)), x)


def _channel_slice(draw, channels):
    start = draw(st.integers(0, channels - 1))
    return kr.ChannelSlice(start, draw(st.integers(start + 1, channels)))


def _draw_from(draw, table, shape, types=None):
    kind = draw(st.sampled_from(sorted(types or table, key=lambda t: t.__name__)))
    return table[kind](draw, shape)


def _elementwise(draw, channels):
    return _draw_from(draw, SINGLE, (channels, 1, 1), POSITIONWISE)


def _same_conv(draw, c_in, c_out, stride=1):
    """A conv whose output size is ceil(W / stride) (odd kernel, 'same' padding)."""
    k = draw(st.sampled_from([1, 3, 5]))
    d = draw(st.integers(1, 2)) if k > 1 else 1
    p = d * (k - 1) // 2
    return kr.Conv2d(c_in, c_out, k, stride=stride, padding=p, dilation=d)


@st.composite
def architectures(draw, dag=True, head=True, max_blocks=5, max_size=64, tensor_ops=True):
    """A random Graph: chains of conv/pool/elementwise layers, residual and concat blocks.

    Input images are 8..``max_size`` pixels per side (small for the CUDA simulator);
    ``tensor_ops=False`` leaves out the transformer tail (TensorOp runs on the CPU only).
    """
    channels = draw(st.integers(1, 4))
    height, width = draw(st.integers(8, max_size)), draw(st.integers(8, max_size))
    graph = kr.Graph((channels, height, width))
    current = graph.input_name
    n_blocks = draw(st.integers(1, max_blocks))
    kinds = ["layer"] * 6 + (["res", "proj", "cat", "fork", "global", "se"] if dag else [])
    for _ in range(n_blocks):
        kind = draw(st.sampled_from(kinds))
        c, h, w = graph.shapes[current]
        try:
            if kind == "layer":  # any single-input layer type
                current = graph.add(_draw_from(draw, SINGLE, (c, h, w)), current)
            elif kind == "res":   # x + relu(conv(x)) with 'same' padding
                branch = graph.add(_same_conv(draw, c, c), current)
                branch = graph.add(kr.ReLU(), branch)
                current = graph.add(kr.Add(), [current, branch])
            elif kind == "proj":  # strided residual with a 1x1 projection shortcut
                s = draw(st.integers(1, 3))
                c_out = draw(st.integers(1, 6))
                branch = graph.add(_same_conv(draw, c, c_out, s), current)
                branch = graph.add(kr.BatchNorm2d(c_out), branch)
                short = graph.add(kr.Conv2d(c, c_out, 1, stride=s, bias=False), current)
                current = graph.add(kr.Add(), [branch, short])
            elif kind == "cat":   # inception-style: 1x1 conv, 'same' conv, 3x3/s1 max pool
                a = graph.add(kr.Conv2d(c, draw(st.integers(1, 3)), 1), current)
                b = graph.add(_same_conv(draw, c, draw(st.integers(1, 3))), current)
                p = graph.add(kr.MaxPool2d(3, 1, 1), current)
                current = graph.add(kr.Concat(), [a, b, p])
            elif kind == "fork":  # two position-wise readers (maybe an alias: Dropout), merged
                first, second = (graph.add(_elementwise(draw, c), current) for _ in range(2))
                current = graph.add(_draw_from(draw, MERGES, (c, h, w)), [first, second])
            elif kind == "se":  # squeeze-excitation: x * gate(pool(x)), the gate broadcast
                squeezed = graph.add(kr.GlobalAvgPool2d(), current)
                hidden = draw(st.integers(1, 4))
                squeezed = graph.add(kr.Conv2d(c, hidden, 1), squeezed)
                squeezed = graph.add(_elementwise(draw, hidden), squeezed)
                squeezed = graph.add(kr.Conv2d(hidden, c, 1), squeezed)
                gate = graph.add(_draw_from(draw, SINGLE, (c, 1, 1), GATES), squeezed)
                current = graph.add(kr.Mul(), [current, gate] if draw(st.booleans())
                                    else [gate, current])
            elif kind == "global":  # a whole-tensor layer, then a merge after it
                pooled = graph.add(_draw_from(draw, WHOLE_MAPS, (c, h, w)), current)
                current = graph.add(_draw_from(draw, MERGES, graph.shapes[pooled]),
                                    [pooled, graph.add(_elementwise(draw, c), pooled)])
        except ValueError:
            continue  # the feature map became too small for this layer: skip it
    if current == graph.input_name:
        current = graph.add(kr.ReLU(), current)
    if dag and tensor_ops and draw(st.integers(0, 9)) == 0:   # a transformer's tail
        current = token_tail(draw, graph, current)
        if head and draw(st.booleans()):
            current = graph.add(kr.Linear(graph.shapes[current][0], 3), current)
        return graph
    if head and draw(st.booleans()):
        c = graph.shapes[current][0]
        if draw(st.booleans()):
            current = graph.add(kr.GlobalAvgPool2d(), current)
        current = graph.add(kr.Flatten(), current)
        features = graph.shapes[current][0]
        current = graph.add(kr.Linear(features, 3), current)
        current = graph.add(kr.Softmax(), current)
    return graph


@st.composite
def occlusions(draw, graph):
    """Patch size, a batch of positions (borders and corners likely), fill and batch size."""
    c, height, width = graph.input_shape
    ph, pw = draw(st.integers(1, height)), draw(st.integers(1, width))
    ys = st.one_of(st.just(0), st.just(height - ph), st.integers(0, height - ph))
    xs = st.one_of(st.just(0), st.just(width - pw), st.integers(0, width - pw))
    positions = draw(st.lists(st.tuples(ys, xs), min_size=1, max_size=6))
    fill_kind = draw(st.sampled_from(["scalar", "channels", "array"]))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    if fill_kind == "scalar":
        fill = float(draw(st.sampled_from([0.0, 0.5, -1.25])))
    elif fill_kind == "channels":
        fill = rng.normal(size=c)
    else:
        fill = rng.normal(size=(c, ph, pw))
    batch_size = draw(st.integers(1, len(positions)))
    return (ph, pw), np.array(positions, np.int64), fill, batch_size, seed


@st.composite
def graphs_with(draw, layer_type):
    """A small graph with one node of ``layer_type`` (named ``"layer"``) where a layer of
    that type can sit: after a conv for feature-map layers, in a classifier head for
    the head's layer types. The graph's output is ``"layer"``."""
    channels = draw(st.integers(1, 3))
    height, width = draw(st.integers(6, 14)), draw(st.integers(6, 14))
    graph = kr.Graph((channels, height, width))
    source = graph.add(kr.Conv2d(channels, draw(st.integers(1, 3)), 3, padding=1), name="conv")
    shape = graph.shapes[source]
    if layer_type in SINGLE:
        try:
            graph.add(SINGLE[layer_type](draw, shape), source, name="layer")
        except ValueError:  # the map is too small for the layer drawn
            assume(False)
    elif layer_type in MERGES:
        other = graph.add(kr.Conv2d(channels, shape[0], 1), graph.input_name, name="other")
        graph.add(MERGES[layer_type](draw, shape), [source, other], name="layer")
    elif layer_type in WHOLE_MAPS:
        graph.add(WHOLE_MAPS[layer_type](draw, shape), source, name="layer")
    elif layer_type is kr.TensorOp:
        token_tail(draw, graph, source)
        mixing = [n for n in graph.order if isinstance(graph.nodes[n].layer, kr.TensorOp)
                  and graph.nodes[n].layer.op_type == "MatMul"][-1]
        renamed = [(("layer" if n == mixing else n), graph.nodes[n].layer,
                    tuple("layer" if i == mixing else i for i in graph.nodes[n].inputs))
                   for n in graph.order]
        graph = kr.Graph.from_nodes(graph.input_shape, renamed, output=None)
    else:
        layers = {kr.GlobalAvgPool2d: kr.GlobalAvgPool2d(), kr.Flatten: kr.Flatten(),
                  kr.Linear: kr.Linear(shape[0], draw(st.integers(1, 4))),
                  kr.Softmax: kr.Softmax()}
        assert layer_type in layers, f"no strategy for {layer_type.__name__}"
        current = graph.add(kr.GlobalAvgPool2d(), source, name="gap")
        for kind in HEAD[1:]:
            current = graph.add(layers[kind], current,
                                name="layer" if kind is layer_type else kind.__name__.lower())
            if kind is layer_type:
                break
    graph.output = "layer"
    return graph
