"""ONNX export (kryptonref.to_onnx), run by onnxruntime, and the round trip through import.

(a) Every zoo model, at the smallest size its architecture allows, with random
    weights: ``to_onnx`` run by onnxruntime equals kryptonref's full inference, and
    ``from_onnx(to_onnx(model))`` computes the same outputs with the same weights.
(b) Export details: opsets, file round trips, dead nodes, float64, what ONNX cannot
    express.

Tolerances (float32): rtol 1e-4 and atol 1e-5 times the largest output magnitude.
VGG's classifier (about 120 M parameters) dominates the runtime, so its random
weights are drawn once in float32 and shared by the eight VGG variants, and
onnxruntime gets the largest weights as inputs rather than through a 500 MB
protobuf (``run_ort_exported``); the import checks the serialised weights exactly.
"""
from __future__ import annotations

import numpy as np
import pytest

from .onnx_helpers import TensorProto, assert_close, onnx, run_ort, run_ort_exported

import kryptonref as kr  # noqa: E402
from kryptonref.models.zoo import build_graph  # noqa: E402

#: Smallest input size per zoo model (32 px otherwise).
ZOO_SIZES = {"alexnet": 63, "inception_v3": 75}


# --------------------------------------------------------------------------------------
# (a) the zoo, round trip
# --------------------------------------------------------------------------------------

_SHARED = {}


def fast_weights(graph, seed=0):
    """Random float32 weights (He-normal, non-trivial batch norm), drawn quickly.

    Scales (batch norm's, layer norm's, layer scales) are drawn in [0.25, 0.75]: with
    [0.5, 1.5] the deepest networks (EfficientNet B5-B7, V2) are chaotic, their float32
    outputs 60-100 % away from their own float64 ones, so no float32 implementation
    could be compared with another.

    Arrays of more than a million elements are cached by (node, shape), so the VGG
    variants share one classifier instead of drawing 120 M numbers each.
    """
    rng = np.random.default_rng(seed)
    weights = {}
    for name in graph.order:
        node = graph.nodes[name]
        shapes = node.layer.param_shapes([graph.shapes[i] for i in node.inputs])
        for pname, shape in shapes.items():
            key = (name, pname, shape)
            if key in _SHARED:
                weights[f"{name}.{pname}"] = _SHARED[key]
                continue
            if isinstance(node.layer, kr.BatchNorm2d):
                value = {"weight": rng.uniform(0.25, 0.75, shape),
                         "bias": rng.normal(0, 0.1, shape),
                         "running_mean": rng.normal(0, 0.1, shape),
                         "running_var": rng.uniform(0.5, 1.5, shape)}[pname]
                value = value.astype(np.float32)
            elif pname == "bias":
                value = rng.normal(0, 0.05, shape).astype(np.float32)
            elif int(np.prod(shape)) == max(shape, default=1):   # a vector of scales
                value = rng.uniform(0.25, 0.75, shape).astype(np.float32)
            else:
                value = rng.standard_normal(shape, dtype=np.float32)
                value *= np.float32(np.sqrt(2.0 / np.prod(shape[1:])))
            if np.prod(shape) > 1_000_000:
                _SHARED[key] = value
            weights[f"{name}.{pname}"] = value
    return weights


@pytest.mark.slow
@pytest.mark.parametrize("name", kr.zoo_names())
def test_zoo_round_trip(name):
    size = ZOO_SIZES.get(name, 32)
    graph = build_graph(name, size, num_classes=10)
    model = kr.Model(graph, weights=fast_weights(graph), dtype=np.float32)
    # (a whole-tensor operator, ViT's, exports at a fixed batch of one)
    fixed_batch = any(isinstance(n.layer, kr.TensorOp) for n in graph.nodes.values())
    batch = 1 if fixed_batch or name.startswith(("vgg", "alexnet")) else 2   # big classifiers
    x = np.random.default_rng(1).normal(size=(batch, 3, size, size)).astype(np.float32)
    want = model.forward(x)

    proto = kr.to_onnx(model, None)
    assert [i.name for i in proto.graph.input] == [graph.input_name]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert (dims[0].dim_value == 1) if fixed_batch else (dims[0].dim_param == "N")
    assert [d.dim_value for d in dims[1:]] == [3, size, size]
    assert_close(run_ort_exported(proto, x, model), want, f"{name}: onnxruntime vs kryptonref")

    back = kr.from_onnx(proto)
    assert back.graph.input_shape == graph.input_shape
    assert back.graph.shapes[back.graph.output] == graph.shapes[graph.output]
    # Every parameterised node keeps its name and its exact weights.
    for node, params in model.params.items():
        for pname, value in params.items():
            # (np.array_equal: assert_array_equal's temporaries cost seconds for VGG)
            # (a channels-last Linear, ConvNeXt's, comes back as the 1x1 convolution it
            # is exported as: the same values in a 4-D weight)
            assert np.array_equal(back.params[node][pname].reshape(value.shape), value), \
                f"{name}: {node}.{pname}"
    # Dropout is removed on import; nothing else is added or lost (except that a
    # 1x1 AdaptiveAvgPool2d comes back as GlobalAvgPool2d).
    dropouts = sum(isinstance(n.layer, kr.Dropout) for n in graph.nodes.values())
    # (after a whole-tensor operator, ViT's GELU comes back as the five TensorOps of its
    # opset-17 decomposition: exact, but more nodes)
    if not fixed_batch:
        assert len(back.graph) == len(graph) - dropouts
    assert_close(back.forward(x), want, f"{name}: from_onnx(to_onnx(model)) vs model")


# --------------------------------------------------------------------------------------
# export details
# --------------------------------------------------------------------------------------

def _export_graph():
    g = kr.Graph((3, 9, 8))
    g.add(kr.Conv2d(3, 6, (3, 2), padding=((1, 0), (0, 1)), groups=3), name="conv")
    g.add(kr.BatchNorm2d(6), name="bn")
    g.add(kr.ReLU6(), name="r6")
    g.add(kr.MaxPool2d(3, 2, 1, ceil_mode=True), name="mp")
    g.add(kr.AvgPool2d(2, 1, count_include_pad=False), inputs="r6", name="ap")
    # AdaptiveAvgPool2d: replication (Resize), pooling (AveragePool) and both mixed.
    g.add(kr.AdaptiveAvgPool2d((5, 10)), inputs="mp", name="up")         # 5x5 -> 5x10
    g.add(kr.AdaptiveAvgPool2d((1, 14)), inputs="ap", name="mixed")      # 7x7 -> 1x14
    g.add(kr.AdaptiveAvgPool2d((2, 7)), inputs="mixed", name="mixed2")   # 1x14 -> 2x7
    g.add(kr.AdaptiveAvgPool2d((1, 7)), inputs="mixed2", name="pooled")  # 2x7 -> 1x7
    g.add(kr.Flatten(), inputs="up", name="f1")
    g.add(kr.Flatten(), inputs="pooled", name="f2")
    g.add(kr.Linear(300, 7), inputs="f1", name="fc1")
    g.add(kr.Linear(42, 7, bias=False), inputs="f2", name="fc2")
    g.add(kr.Add(), inputs=["fc1", "fc2", "fc1"], name="sum")
    g.add(kr.Dropout(0.2), name="drop")
    g.add(kr.ReLU(), name="relu")
    g.add(kr.Softmax(), name="prob")
    return g


@pytest.mark.parametrize("opset", [11, 13, 17, 19])
def test_export_opsets_file_round_trip(tmp_path, opset):
    model = kr.Model(_export_graph(), seed=3)
    path = tmp_path / "m.onnx"
    proto = kr.to_onnx(model, path, opset=opset)
    assert path.is_file() and proto.opset_import[0].version == opset
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    x = np.random.default_rng(0).normal(0, 3, (3, 3, 9, 8)).astype(np.float32)
    want = model.forward(x)
    assert_close(run_ort(str(path), x), want, f"opset {opset}: onnxruntime")
    back = kr.from_onnx(path)
    assert_close(back.forward(x), want, f"opset {opset}: from_onnx")
    assert back.graph.output == "prob"


def test_export_prunes_dead_nodes_and_uses_the_graph_output():
    g = kr.Graph((2, 6, 6))
    g.add(kr.Conv2d(2, 3, 3), name="conv")
    g.add(kr.ReLU(), name="relu")
    g.add(kr.MaxPool2d(2), inputs="conv", name="dead")
    g.output = "relu"
    proto = kr.to_onnx(kr.Model(g), None)
    assert [n.name for n in proto.graph.node] == ["conv", "relu"]
    assert [o.name for o in proto.graph.output] == ["relu"]


def test_export_float64():
    g = kr.Graph((2, 5, 5))
    g.add(kr.BatchNorm2d(2, eps=2.0 ** -17), name="bn")
    g.add(kr.MaxPool2d(2, 1), name="mp")
    g.add(kr.Flatten(), name="flat")
    g.add(kr.Linear(32, 4), name="fc")
    model = kr.Model(g, seed=1, dtype=np.float64)
    proto = kr.to_onnx(model, None)
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.DOUBLE
    x = np.random.default_rng(0).normal(size=(2, 2, 5, 5))
    np.testing.assert_allclose(run_ort(proto, x), model.forward(x), rtol=1e-10, atol=1e-12)
    back = kr.from_onnx(proto, dtype=np.float64)
    np.testing.assert_array_equal(back.forward(x), model.forward(x))


def test_export_uneven_adaptive_pool_rejected():
    g = kr.Graph((2, 5, 5))
    g.add(kr.AdaptiveAvgPool2d((3, 3)), name="adapt")
    with pytest.raises(ValueError, match="'adapt'.*uneven"):
        kr.to_onnx(kr.Model(g), None)


def test_export_bad_opset():
    g = kr.Graph((2, 5, 5))
    g.add(kr.ReLU(), name="relu")
    with pytest.raises(ValueError, match="opset"):
        kr.to_onnx(kr.Model(g), None, opset=9)
    with pytest.raises(TypeError, match="Model"):
        kr.to_onnx(g, None)
