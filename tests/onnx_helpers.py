"""Shared helpers of the ONNX tests: onnxruntime sessions, tolerances, hand-built graphs."""
from __future__ import annotations

import numpy as np

from .conftest import require

onnx = require("onnx", "onnx")
ort = require("onnxruntime", "onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402,F401

import kryptonref as kr  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5


def assert_close(got, want, what=""):
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    scale = max(float(np.abs(want).max()), 1e-30)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * scale, err_msg=what)


def session(proto):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # onnxruntime runs the graph as written (no fusions), and skips re-packing weights:
    # loading VGG's 120 M-parameter classifier is most of this file's runtime.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.add_session_config_entry("session.disable_prepacking", "1")
    data = proto if isinstance(proto, (bytes, str)) else proto.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def run_ort(proto, x):
    sess = session(proto)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


#: Initializers above this size are fed to onnxruntime as inputs (see run_ort_exported).
BIG_BYTES = 4 << 20


def run_ort_exported(proto, x, model):
    """onnxruntime on ``to_onnx``'s graph, with the model's large weights fed as inputs.

    Serialising VGG's classifier (500 MB) for onnxruntime and parsing it there costs
    seconds per model; the graph is run as exported, but initializers above
    ``BIG_BYTES`` become graph inputs fed with the model's own arrays. That the
    serialised values are these arrays is checked exactly by the import.
    """
    light = onnx.ModelProto()
    light.ir_version = proto.ir_version
    light.opset_import.extend(proto.opset_import)
    light.graph.name = proto.graph.name
    light.graph.node.extend(proto.graph.node)
    light.graph.input.extend(proto.graph.input)
    light.graph.output.extend(proto.graph.output)
    feeds = {proto.graph.input[0].name: x}
    for init in proto.graph.initializer:
        if len(init.raw_data) > BIG_BYTES:
            node, pname = init.name.rsplit(".", 1)
            # (as exported: a channel-wise Linear's matrix goes out as a 1x1 convolution's)
            feeds[init.name] = model.params[node][pname].reshape(tuple(init.dims))
            light.graph.input.append(helper.make_tensor_value_info(
                init.name, init.data_type, list(init.dims)))
        else:
            light.graph.initializer.append(init)
    return session(light).run(None, feeds)[0]


def tensor(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def make_model(nodes, inits, in_shape, out_name="y", opset=17, in_name="x", extra_inputs=()):
    inputs = [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, list(in_shape))]
    inputs += list(extra_inputs)
    outputs = [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "hand", inputs, outputs, inits)
    opset_id = helper.make_opsetid("", opset)
    proto = helper.make_model(graph, opset_imports=[opset_id])
    proto.ir_version = helper.find_min_ir_version_for([opset_id])
    # The checker wants an output shape: take the rank from onnx's shape inference and
    # leave every size symbolic (onnxruntime's shapes are the ones compared).
    inferred = onnx.shape_inference.infer_shapes(proto).graph.output[0].type.tensor_type
    if inferred.HasField("shape"):
        rank = len(inferred.shape.dim)
        proto.graph.output[0].CopyFrom(helper.make_tensor_value_info(
            out_name, TensorProto.FLOAT, [f"{out_name}_{i}" for i in range(rank)]))
        onnx.checker.check_model(proto)
    return proto


def check_import(proto, shape, seed=0, scale=1.0, batch=2):
    """Import ``proto``, run both, compare; return the imported model."""
    x = np.random.default_rng(seed).normal(0, scale, (batch,) + tuple(shape)).astype(np.float32)
    model = kr.from_onnx(proto)
    assert_close(model.forward(x), run_ort(proto, x), "from_onnx vs onnxruntime")
    return model


def layer_types(model):
    return [type(model.graph.nodes[n].layer).__name__ for n in model.graph.order]


RNG = np.random.default_rng(42)


def rand(*shape):
    return RNG.normal(0, 0.5, shape).astype(np.float32)
