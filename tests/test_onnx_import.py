"""ONNX import (kryptonref.from_onnx): hand-built graphs run by onnxruntime, and errors.

(a) Hand-built ONNX graphs (``onnx.helper``) for every supported operator and
    pattern (Clip variants, Gemm transB 0/1, MatMul + Add, Reshape patterns,
    Identity/Dropout removal, asymmetric and automatic padding, ...), each run by
    onnxruntime and by the imported model.
(b) Errors: unsupported operators (op and node named), missing and corrupt files,
    dynamic image sizes, shapes and patterns kryptonref cannot represent.

Tolerances (float32): rtol 1e-4 and atol 1e-5 times the largest output magnitude.
"""
from __future__ import annotations

import numpy as np
import pytest

from .onnx_helpers import (RNG, TensorProto, check_import, helper, layer_types, make_model,
                           numpy_helper, rand, tensor)

import kryptonref as kr  # noqa: E402
from .processes import run_python  # noqa: E402


def test_conv_pool_chain_with_asymmetric_pads():
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1",
                         kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 0, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 0, 1], ceil_mode=1),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], name="conv2", group=2, dilations=[2, 1],
                         pads=[2, 1, 2, 1]),
        helper.make_node("AveragePool", ["c2"], ["a1"], name="avg1", kernel_shape=[2, 3],
                         strides=[1, 2], pads=[0, 1, 1, 1], count_include_pad=1),
        helper.make_node("AveragePool", ["a1"], ["a2"], name="avg2", kernel_shape=[2, 2],
                         ceil_mode=1, strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["a2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat", axis=1),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    inits = [tensor("w1", rand(4, 3, 3, 2)), tensor("b1", rand(4)),
             tensor("w2", rand(6, 2, 3, 3)), tensor("wf", rand(5, 6)), tensor("bf", rand(5))]
    model = check_import(make_model(nodes, inits, ["N", 3, 17, 14]), (3, 17, 14))
    assert model.graph.order == ["conv1", "relu1", "pool1", "conv2", "avg1", "avg2", "gap",
                                 "flat", "fc"]
    conv1 = model.graph.nodes["conv1"].layer
    assert conv1.padding == ((1, 0), (0, 1)) and conv1.stride == (2, 1)
    assert model.graph.nodes["conv2"].layer.groups == 2
    assert model.graph.nodes["avg1"].layer.count_include_pad
    assert not model.graph.nodes["avg2"].layer.count_include_pad  # ONNX's default
    np.testing.assert_array_equal(model.params["conv1"]["weight"],
                                  numpy_helper.to_array(inits[0]))
    np.testing.assert_array_equal(model.params["fc"]["bias"], numpy_helper.to_array(inits[4]))


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("size", [21, 24])
def test_auto_pad(auto_pad, size):
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", auto_pad=auto_pad,
                         strides=[2, 2]),
        helper.make_node("MaxPool", ["c"], ["m"], name="mp", auto_pad=auto_pad,
                         kernel_shape=[2, 3], strides=[2, 1]),
        helper.make_node("AveragePool", ["m"], ["y"], name="ap", auto_pad=auto_pad,
                         kernel_shape=[3, 2], strides=[1, 2]),
    ]
    model = check_import(make_model(nodes, [tensor("w", rand(3, 2, 4, 3))],
                                    ["N", 2, size, size + 3]), (2, size, size + 3))
    pads = model.graph.nodes["conv"].layer.padding
    if auto_pad == "VALID":
        assert pads == ((0, 0), (0, 0))
    elif size == 21:  # total height padding 3: split unevenly, the larger part as named
        assert pads[0] == ((1, 2) if auto_pad == "SAME_UPPER" else (2, 1))


@pytest.mark.parametrize("variant", ["attrs_opset6", "inputs", "constant_nodes", "max_only",
                                     "min_only_relu"])
def test_clip_variants(variant):
    opset, inits = 17, []
    if variant == "attrs_opset6":
        opset = 6
        nodes = [helper.make_node("Clip", ["x"], ["y"], name="clip", min=0.0, max=6.0)]
    elif variant == "inputs":
        inits = [tensor("lo", 0.0), tensor("hi", 6.0)]
        nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip")]
    elif variant == "constant_nodes":
        nodes = [helper.make_node("Constant", [], ["lo"], value=tensor("v0", 0.0)),
                 helper.make_node("Constant", [], ["hi"], value_float=6.0),
                 helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip")]
    elif variant == "max_only":   # min given as an empty input: no lower bound
        inits = [tensor("hi", 6.0)]
        nodes = [helper.make_node("Clip", ["x", "", "hi"], ["y"], name="clip")]
    else:
        inits = [tensor("lo", 0.0)]
        nodes = [helper.make_node("Clip", ["x", "lo"], ["y"], name="clip")]
    proto = make_model(nodes, inits, ["N", 3, 4, 5], opset=opset)
    model = check_import(proto, (3, 4, 5), scale=5.0)
    want = {"min_only_relu": "ReLU", "max_only": "Clip"}.get(variant, "ReLU6")
    assert layer_types(model) == [want]


def test_clip_other_bounds_are_a_clip_layer():
    proto = make_model([helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clamp")],
                       [tensor("lo", -1.0), tensor("hi", 1.0)], ["N", 3, 4, 5])
    model = check_import(proto, (3, 4, 5), scale=3.0)
    layer = model.graph.nodes["clamp"].layer
    assert isinstance(layer, kr.Clip) and (layer.low, layer.high) == (-1.0, 1.0)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("bias_shape", [None, (7,), (1, 7)])
def test_gemm(trans_b, bias_shape):
    w = rand(7, 12) if trans_b else rand(12, 7)
    inits = [tensor("w", w)]
    ins = ["x2", "w"]
    if bias_shape:
        inits.append(tensor("b", rand(*bias_shape)))
        ins.append("b")
    nodes = [helper.make_node("Flatten", ["x"], ["x2"], name="flat"),
             helper.make_node("Gemm", ins, ["y"], name="fc", transB=trans_b)]
    model = check_import(make_model(nodes, inits, ["N", 3, 2, 2]), (3, 2, 2))
    fc = model.graph.nodes["fc"].layer
    assert (fc.in_features, fc.out_features, fc.bias) == (12, 7, bias_shape is not None)
    np.testing.assert_array_equal(model.params["fc"]["weight"], w if trans_b else w.T)


def test_gemm_alpha_beta_folded():
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w", "b"], ["y"], name="fc", alpha=0.5, beta=2.0)]
    check_import(make_model(nodes, [tensor("w", rand(12, 4)), tensor("b", rand(4))],
                            ["N", 3, 2, 2]), (3, 2, 2))


@pytest.mark.parametrize("order", ["act_first", "const_first"])
def test_matmul_add_becomes_linear(order):
    add_in = ["m", "b"] if order == "act_first" else ["b", "m"]
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "w"], ["m"], name="fc"),
             helper.make_node("Add", add_in, ["a"], name="fc_bias"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")]
    w, b, w2 = rand(20, 6), rand(6), rand(6, 3)
    model = check_import(make_model(nodes, [tensor("w", w), tensor("b", b), tensor("w2", w2)],
                                    ["N", 5, 2, 2]), (5, 2, 2))
    assert layer_types(model) == ["Flatten", "Linear", "ReLU", "Linear"]
    np.testing.assert_array_equal(model.params["fc"]["weight"], w.T)
    np.testing.assert_array_equal(model.params["fc"]["bias"], b)
    assert not model.graph.nodes["fc2"].layer.bias


def test_matmul_add_not_folded_when_the_product_is_reused():
    """The product is read twice: the addend is a per-feature Arithmetic, not a bias."""
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "w"], ["m"], name="fc"),
             helper.make_node("Add", ["m", "b"], ["a"], name="bias"),
             helper.make_node("Add", ["a", "m"], ["y"], name="sum")]
    proto = make_model(nodes, [tensor("w", rand(20, 6)), tensor("b", rand(6))], ["N", 5, 2, 2])
    model = check_import(proto, (5, 2, 2))
    assert layer_types(model) == ["Flatten", "Linear", "Arithmetic", "Add"]
    assert not model.graph.nodes["fc"].layer.bias


@pytest.mark.parametrize("shape, op", [((1, 2, 1, 1), "Add"), ((2, 1, 1), "Sub"),
                                       ((), "Mul"), ((1, 2, 1, 1), "Div")])
def test_constants_per_channel_are_arithmetic(shape, op):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node(op, ["c", "b"], ["y"], name="shift")]
    value = RNG.uniform(0.5, 1.5, shape) if shape else 0.7
    proto = make_model(nodes, [tensor("w", rand(2, 3, 1, 1)), tensor("b", value)],
                       ["N", 3, 4, 4])
    model = check_import(proto, (3, 4, 4))
    assert layer_types(model) == ["Conv2d", "Arithmetic"]
    assert model.graph.nodes["shift"].layer.op == op.lower()


def test_a_constant_not_per_channel_is_a_whole_tensor_operator():
    """A constant per position mixes nothing but is no channel operator: a TensorOp."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Add", ["c", "b"], ["y"], name="shift")]
    proto = make_model(nodes, [tensor("w", rand(2, 3, 1, 1)), tensor("b", rand(1, 2, 4, 4))],
                       ["N", 3, 4, 4])
    model = check_import(proto, (3, 4, 4))
    assert layer_types(model) == ["Conv2d", "TensorOp", "TensorOp"]   # Add, then Unbatch


@pytest.mark.parametrize("shape", [[0, -1], [-1, 48], [0, 48]])
def test_reshape_constant_shapes(shape):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "s"], ["f"], name="reshape"),
             helper.make_node("Gemm", ["f", "w"], ["y"], name="fc", transB=1)]
    inits = [tensor("s", shape, np.int64), tensor("w", rand(3, 48))]
    model = check_import(make_model(nodes, inits, ["N", 3, 4, 4]), (3, 4, 4))
    assert layer_types(model) == ["ReLU", "Flatten", "Linear"]


def test_reshape_shape_from_constant_node_and_fixed_batch():
    nodes = [helper.make_node("Constant", [], ["s"], value_ints=[1, -1]),
             helper.make_node("Reshape", ["x", "s"], ["f"], name="reshape"),
             helper.make_node("Softmax", ["f"], ["y"], name="prob")]
    model = check_import(make_model(nodes, [], [1, 3, 4, 4]), (3, 4, 4), batch=1)
    assert layer_types(model) == ["Flatten", "Softmax"]
    # ... and the imported model is not tied to batch 1.
    assert model.forward(np.zeros((3, 3, 4, 4), np.float32)).shape == (3, 48)


def test_reshape_torch_view_pattern():
    """``x.view(x.size(0), -1)`` as torch.onnx exports it: Shape/Gather/Unsqueeze/Concat."""
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Shape", ["p"], ["shape"], name="shape"),
        helper.make_node("Constant", [], ["zero"], value=tensor("z", 0, np.int64)),
        helper.make_node("Gather", ["shape", "zero"], ["n"], name="gather", axis=0),
        helper.make_node("Constant", [], ["axes"], value=tensor("a", [0], np.int64)),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="unsqueeze"),
        helper.make_node("Constant", [], ["minus1"], value=tensor("m", [-1], np.int64)),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["p", "target"], ["f"], name="view"),
        helper.make_node("Gemm", ["f", "w", "b"], ["y"], name="fc", transB=1),
    ]
    inits = [tensor("w", rand(4, 12)), tensor("b", rand(4))]
    model = check_import(make_model(nodes, inits, ["batch", 3, 4, 4]), (3, 4, 4))
    assert layer_types(model) == ["MaxPool2d", "Flatten", "Linear"]
    assert model.graph.order == ["pool", "view", "fc"]


def test_reshape_to_tokens_is_a_whole_tensor_operator():
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"], name="to_map")]
    proto = make_model(nodes, [tensor("s", [0, 3, 16], np.int64)], ["N", 3, 4, 4])
    model = check_import(proto, (3, 4, 4))
    layer = model.graph.nodes["to_map"].layer
    assert isinstance(layer, kr.TensorOp) and layer.op_type == "Reshape"
    assert model.graph.shapes[model.graph.output] == (3, 16)


def test_identity_and_dropout_removed():
    nodes = [helper.make_node("Identity", ["x"], ["i"], name="id0"),
             helper.make_node("Relu", ["i"], ["r"], name="relu"),
             helper.make_node("Dropout", ["r"], ["d", "mask"], name="drop"),
             helper.make_node("Flatten", ["d"], ["f"], name="flat"),
             helper.make_node("Dropout", ["f", "ratio"], ["d2"], name="drop2"),
             helper.make_node("Gemm", ["d2", "w"], ["g"], name="fc", transB=1),
             helper.make_node("Identity", ["g"], ["y"], name="id_out")]
    inits = [tensor("w", rand(4, 24)), tensor("ratio", 0.3)]
    model = check_import(make_model(nodes, inits, ["N", 2, 3, 4]), (2, 3, 4))
    assert model.graph.order == ["relu", "flat", "fc"]
    assert model.graph.output == "fc"


def test_dropout_as_the_output():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Dropout", ["r"], ["y"], name="drop")]
    model = check_import(make_model(nodes, [], ["N", 2, 3, 4]), (2, 3, 4))
    assert model.graph.order == ["relu"]


def test_batchnorm_add_concat_sum():
    c = 3
    bn_inits = [tensor("s", RNG.uniform(0.5, 1.5, c)), tensor("bb", rand(c)),
                tensor("mu", rand(c)), tensor("var", RNG.uniform(0.5, 1.5, c))]
    nodes = [
        helper.make_node("BatchNormalization", ["x", "s", "bb", "mu", "var"], ["bn"],
                         name="bn", epsilon=1e-3),
        helper.make_node("Conv", ["bn", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["bn", "c"], ["a"], name="res"),
        helper.make_node("Sum", ["a", "bn", "c"], ["s3"], name="sum3"),
        helper.make_node("Concat", ["s3", "x", "a"], ["y"], name="cat", axis=1),
    ]
    model = check_import(make_model(nodes, bn_inits + [tensor("w", rand(c, c, 3, 3))],
                                    ["N", c, 5, 6]), (c, 5, 6))
    assert layer_types(model) == ["BatchNorm2d", "Conv2d", "Add", "Add", "Concat"]
    assert model.graph.nodes["bn"].layer.eps == 1e-3   # the float32 attribute read back
    assert len(model.graph.nodes["sum3"].inputs) == 3


@pytest.mark.parametrize("opset,axis", [(11, None), (13, None), (13, 1), (17, -1)])
def test_softmax(opset, axis):
    attrs = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
             helper.make_node("Softmax", ["f"], ["y"], name="prob", **attrs)]
    model = check_import(make_model(nodes, [], ["N", 2, 3, 3], opset=opset), (2, 3, 3))
    assert layer_types(model) == ["Flatten", "Softmax"]


def test_softmax_over_channels_is_a_whole_tensor_operator():
    proto = make_model([helper.make_node("Softmax", ["x"], ["y"], name="chsoft", axis=1)], [],
                       ["N", 2, 3, 3])
    model = check_import(proto, (2, 3, 3))
    assert model.graph.nodes["chsoft"].layer.op_type == "Softmax"


def test_an_operator_neither_a_layer_nor_a_tensor_operator_is_refused():
    proto = make_model([helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
                        helper.make_node("Softmax", ["c"], ["s"], name="soft", axis=1),
                        helper.make_node("LRN", ["s"], ["y"], name="norm", size=3)],
                       [tensor("w", rand(2, 3, 1, 1))], ["N", 3, 4, 4])
    with pytest.raises(ValueError, match=r"unsupported ONNX operator 'LRN' \(node 'norm'\)"):
        kr.from_onnx(proto)


@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_mean_is_global_pooling(keepdims):
    nodes = [helper.make_node("ReduceMean", ["x"], ["y"], name="mean", axes=[2, 3],
                             keepdims=keepdims)]
    model = check_import(make_model(nodes, [], ["N", 4, 3, 5], opset=13), (4, 3, 5))
    assert layer_types(model) == ["GlobalAvgPool2d"] + ["Flatten"] * (1 - keepdims)


@pytest.mark.parametrize("ctm,mode", [("asymmetric", "floor"),
                                      ("half_pixel", "round_prefer_floor"),
                                      ("pytorch_half_pixel", "round_prefer_ceil")])
def test_resize_nearest_integer_upsampling(ctm, mode):
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="nearest",
                              coordinate_transformation_mode=ctm, nearest_mode=mode)]
    proto = make_model(nodes, [tensor("scales", [1, 1, 3, 2])], ["N", 2, 2, 3])
    model = check_import(proto, (2, 2, 3))
    layer = model.graph.nodes["up"].layer
    assert isinstance(layer, kr.AdaptiveAvgPool2d) and layer.output_size == (6, 6)


def test_resize_with_sizes_and_rejections():
    nodes = [helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], name="up",
                              mode="nearest", coordinate_transformation_mode="asymmetric",
                              nearest_mode="floor")]
    inits = [tensor("sizes", [1, 2, 7, 7], np.int64)]
    proto = make_model(nodes, inits, [1, 2, 1, 1])
    assert layer_types(check_import(proto, (2, 1, 1), batch=1)) == ["AdaptiveAvgPool2d"]
    # A constant batch size of 1 with a dynamic batch would resize the batch axis.
    with pytest.raises(ValueError, match="'up'.*batch size"):
        kr.from_onnx(make_model(nodes, inits, ["N", 2, 1, 1]))
    bad = make_model([helper.make_node("Resize", ["x", "", "scales"], ["y"], name="lin",
                                       mode="linear")],
                     [tensor("scales", [1, 1, 2, 2])], ["N", 2, 2, 3])
    with pytest.raises(ValueError, match="'lin'.*nearest"):
        kr.from_onnx(bad)
    odd = make_model([helper.make_node("Resize", ["x", "", "scales"], ["y"], name="odd")],
                     [tensor("scales", [1, 1, 1.5, 1])], ["N", 2, 2, 3])
    with pytest.raises(ValueError, match="'odd'.*integer factor"):
        kr.from_onnx(odd)


def test_constant_subgraph_folded():
    """Weights computed from constants (a transposed initializer) are folded."""
    nodes = [helper.make_node("Transpose", ["wt"], ["w"], name="t", perm=[1, 0, 2, 3]),
             helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
    model = check_import(make_model(nodes, [tensor("wt", rand(3, 4, 1, 1))], ["N", 3, 4, 4]),
                         (3, 4, 4))
    assert model.graph.order == ["conv"]


def test_node_names_sanitised_unique_and_defaulted():
    nodes = [helper.make_node("Conv", ["input.1", "w"], ["c"],
                              name="/features/features.0/Conv"),
             helper.make_node("Relu", ["c"], ["r"], name="dup"),
             helper.make_node("Relu", ["r"], ["r2"], name="dup"),
             helper.make_node("Relu", ["r2"], ["y"])]
    w = rand(2, 3, 1, 1)
    # (onnxruntime refuses duplicate node names, which ONNX's checker lets pass.)
    model = kr.from_onnx(make_model(nodes, [tensor("w", w)], ["N", 3, 4, 4], in_name="input.1"))
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 4)).astype(np.float32)
    want = np.maximum(np.einsum("oc,nchw->nohw", w[:, :, 0, 0], x), 0)
    np.testing.assert_allclose(model.forward(x), want, rtol=1e-5, atol=1e-6)
    assert model.graph.input_name == "input.1"
    assert model.graph.order == ["features_features.0_Conv", "dup", "dup_2", "Relu_3"]
    assert list(model.params) == ["features_features.0_Conv"]


def test_dynamic_spatial_size_and_input_shape():
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    proto = make_model(nodes, [], ["N", 3, "H", "W"])
    with pytest.raises(ValueError, match="'x'.*\\(N, 3, H, W\\).*fixed C, H and W"):
        kr.from_onnx(proto)
    model = kr.from_onnx(proto, input_shape=(3, 8, 6))
    assert model.graph.input_shape == (3, 8, 6)
    with pytest.raises(ValueError, match="contradicts"):
        kr.from_onnx(proto, input_shape=(4, 8, 6))


def test_float64_import():
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], name="pool", kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w"], ["y"], name="fc", transB=1)]
    w = rand(3, 8)
    model = kr.from_onnx(make_model(nodes, [tensor("w", w)], ["N", 2, 4, 4]), dtype=np.float64)
    assert model.dtype == np.float64 and model.params["fc"]["weight"].dtype == np.float64
    np.testing.assert_array_equal(model.params["fc"]["weight"], w.astype(np.float64))


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------

def test_unsupported_op_names_op_and_node():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv1"),
             helper.make_node("LRN", ["c"], ["y"], name="norm1", size=3)]
    proto = make_model(nodes, [tensor("w", rand(2, 3, 1, 1))], ["N", 3, 4, 4])
    with pytest.raises(ValueError, match="unsupported ONNX operator 'LRN' \\(node 'norm1'\\)"):
        kr.from_onnx(proto)


def test_unsupported_domain():
    nodes = [helper.make_node("FusedConv", ["x"], ["y"], name="fused", domain="com.microsoft")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 3, 4, 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(ValueError, match="com.microsoft.FusedConv.*'fused'"):
        kr.from_onnx(proto)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.onnx"
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        kr.from_onnx(path)
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        kr.from_onnx(str(path))


@pytest.mark.parametrize("content", [b"\x00\xffnot an onnx model\x13\x37" * 10, b""])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="corrupt.onnx"):
        kr.from_onnx(path)


def test_bad_source_type():
    with pytest.raises(TypeError, match="path, bytes or an onnx.ModelProto"):
        kr.from_onnx(42)


def test_two_inputs_rejected():
    nodes = [helper.make_node("Add", ["x", "x2"], ["y"], name="add")]
    proto = make_model(nodes, [], ["N", 3, 4, 4], extra_inputs=[
        helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["N", 3, 4, 4])])
    with pytest.raises(ValueError, match="exactly one image input.*'x', 'x2'"):
        kr.from_onnx(proto)


def test_weight_from_the_image_rejected():
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "f"], ["y"], name="square")]
    proto = make_model(nodes, [], ["N", 2, 2, 1])
    with pytest.raises(ValueError, match="'square'.*must be a constant"):
        kr.from_onnx(proto)


def test_wrong_input_rank_rejected():
    proto = make_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [], ["N", 12])
    with pytest.raises(ValueError, match="rank 4"):
        kr.from_onnx(proto)


def test_import_without_onnx_installed():
    """``import kryptonref`` works without onnx; the functions name the extra."""
    code = (
        "import sys\n"
        "sys.modules['onnx'] = None\n"
        "import kryptonref as kr\n"
        "g = kr.Graph((1, 4, 4)); g.add(kr.ReLU())\n"
        "for call in (lambda: kr.to_onnx(kr.Model(g), None), lambda: kr.from_onnx('m.onnx')):\n"
        "    try:\n"
        "        call()\n"
        "    except ImportError as err:\n"
        "        assert \"pip install 'kryptonref[onnx]'\" in str(err), err\n"
        "    else:\n"
        "        raise SystemExit('no ImportError')\n"
        "print('ok')\n")
    assert run_python(code, timeout=120).strip() == "ok"


@pytest.mark.parametrize("alpha", [None, 0.2, -0.5])
def test_leaky_relu(alpha):
    attrs = {} if alpha is None else {"alpha": alpha}
    nodes = [helper.make_node("LeakyRelu", ["x"], ["y"], name="leaky", **attrs)]
    model = check_import(make_model(nodes, [], (2, 3, 5, 4)), (3, 5, 4), scale=3.0)
    assert layer_types(model) == ["LeakyReLU"]
    assert model.graph.nodes["leaky"].layer.negative_slope == (0.01 if alpha is None else alpha)


@pytest.mark.parametrize("scaling, half_first", [("Div", False), ("Mul", True)])
def test_erf_gelu_pattern_is_one_gelu(scaling, half_first):
    """``(x * (erf(x / sqrt 2) + 1)) * 0.5`` as exporters write GELU before opset 20 (or
    with ``x * (1 / sqrt 2)`` and the half first) imports as one GELU layer."""
    root = np.sqrt(2.0) if scaling == "Div" else np.sqrt(0.5)
    product = ["half", "t"] if half_first else ["t", "half"]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node(scaling, ["c", "root"], ["d"], name="g.div"),
             helper.make_node("Erf", ["d"], ["e"], name="g.erf"),
             helper.make_node("Add", ["e", "one"], ["s"], name="g.sum"),
             helper.make_node("Mul", ["c", "s"], ["t"], name="g.prod"),
             helper.make_node("Mul", product, ["y"], name="gelu")]
    inits = [tensor("w", rand(2, 3, 1, 1)), tensor("root", root), tensor("one", 1.0),
             tensor("half", 0.5)]
    model = check_import(make_model(nodes, inits, ["N", 3, 4, 4]), (3, 4, 4), scale=2.0)
    assert layer_types(model) == ["Conv2d", "GELU"]


def test_a_near_gelu_pattern_stays_as_written():
    """The same chain with another factor is not GELU: imported operator by operator."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Div", ["c", "root"], ["d"], name="g.div"),
             helper.make_node("Erf", ["d"], ["e"], name="g.erf"),
             helper.make_node("Add", ["e", "one"], ["s"], name="g.sum"),
             helper.make_node("Mul", ["c", "s"], ["t"], name="g.prod"),
             helper.make_node("Mul", ["t", "half"], ["y"], name="gelu")]
    inits = [tensor("w", rand(2, 3, 1, 1)), tensor("root", 1.5), tensor("one", 1.0),
             tensor("half", 0.5)]
    model = check_import(make_model(nodes, inits, ["N", 3, 4, 4]), (3, 4, 4), scale=2.0)
    assert "GELU" not in layer_types(model) and "Erf" in layer_types(model)


def test_split_along_a_spatial_axis_imports_as_a_whole_tensor_operator():
    """torch's dynamo exporter writes MaxViT's window partition as a Split along the
    height of a feature map; only channel splits were read ('only Split along the
    channels (axis 1) is supported'). Exact, as a whole-tensor operator."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Split", ["c", "sizes"], ["top", "bottom"], axis=2),
             helper.make_node("Relu", ["bottom"], ["r"]),
             helper.make_node("Concat", ["r", "top"], ["cat"], axis=2),
             helper.make_node("GlobalAveragePool", ["cat"], ["g"]),
             helper.make_node("Flatten", ["g"], ["y"])]
    inits = [tensor("w", rand(4, 3, 3, 3)), tensor("sizes", [3, 5], np.int64)]
    model = check_import(make_model(nodes, inits, ["N", 3, 8, 8]), (3, 8, 8))
    image = rand(3, 8, 8)
    positions = kr.patch_positions((8, 8), (2, 2), (2, 2))
    result = kr.incremental_inference(model, image, positions, (2, 2), fill=0.0)
    full = model.forward(np.stack([naive_fill(image, p, 2) for p in positions]))
    np.testing.assert_allclose(result.output, full, rtol=0, atol=1e-5)


def naive_fill(image, position, size):
    occluded = image.copy()
    y, x = position
    occluded[:, y:y + size, x:x + size] = 0.0
    return occluded


def test_unsqueeze_without_axes_is_a_clear_error():
    """A malformed Unsqueeze (no axes attribute nor input) in a shape computation raised a
    bare TypeError (len(None)); from_onnx names the node instead."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Constant", [], ["zero"], value=tensor("z", 0, np.int64)),
        helper.make_node("Gather", ["shape", "zero"], ["n"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["n"], ["n1"], name="bad_unsqueeze"),
        helper.make_node("Constant", [], ["minus1"], value=tensor("m", [-1], np.int64)),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"], name="view"),
    ]
    graph = helper.make_graph(
        nodes, "hand", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ValueError, match="bad_unsqueeze.*axes"):
        kr.from_onnx(proto)


def test_malformed_operator_on_activations_is_a_clear_error():
    """The same Unsqueeze on the image itself (a whole-tensor operator) raised a bare
    IndexError while computing its output shape."""
    graph = helper.make_graph(
        [helper.make_node("Unsqueeze", ["x"], ["y"], name="bad_unsqueeze")], "hand",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ValueError, match="bad_unsqueeze"):
        kr.from_onnx(proto)
