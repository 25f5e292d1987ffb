"""The layer registry's conformance: every registered layer type has every part.

For each type registered in :mod:`kryptonref.layers.registry` the test walks the
parts ``docs/design.md`` lists and fails, naming the type and the part, when one
is missing: its rule's CPU and CUDA kernels, an ONNX export that imports back,
a MAC rule, an oracle in ``tests/naive.py`` (whose own reading of how a change
propagates must agree with the registered rule) and a hypothesis strategy in
``tests/strategies.py``. Then each type's kernels are checked against the oracle
on random small graphs, on the CPU and on CUDA (simulated without a GPU).
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import kryptonref as kr
from kryptonref.layers.registry import Kernels, LayerType, Rule, cuda_kernels, registered

from . import naive, strategies
from .conftest import require

TYPES = {record.name: record for record in registered()}
SETTINGS = dict(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: How the oracle names each rule.
ORACLE_RULE = {Rule.WINDOW: naive.WINDOW, Rule.POSITIONWISE: naive.POSITIONWISE,
               Rule.MERGE: naive.MERGE, Rule.WHOLE: naive.WHOLE}


def test_every_layer_type_is_registered_and_exported():
    assert set(TYPES) >= {"Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d",
                          "AdaptiveAvgPool2d", "ReLU", "ReLU6", "BatchNorm2d", "Dropout",
                          "Flatten", "Linear", "Softmax", "Add", "Concat"}
    for name, record in TYPES.items():
        assert getattr(kr, name) is record.spec, f"kryptonref.{name} is not exported"
        assert getattr(kr.layers, name) is record.spec


@pytest.mark.parametrize("name", sorted(TYPES))
def test_every_part_is_there(name):
    record = TYPES[name]
    assert isinstance(record, LayerType) and isinstance(record.rule, Rule)
    assert isinstance(record.cpu, Kernels)
    assert record.cpu.missing(record.rule) is None, f"{name}: no CPU {record.cpu.NEEDS[record.rule]}"
    if record.cuda is None:   # a type the CUDA backend refuses, saying why
        assert record.cuda_unsupported, f"{name}: neither CUDA kernels nor a reason"
        with pytest.raises(NotImplementedError, match=f"device='cuda' does not run {name}"):
            cuda_kernels(record.spec)
    else:
        cuda = cuda_kernels(record.spec)
        assert isinstance(cuda, Kernels), f"{name}: {record.cuda} is not a Kernels record"
        assert cuda.missing(record.rule) is None, f"{name}: no CUDA {cuda.NEEDS[record.rule]}"
        if record.rule is Rule.MERGE:
            assert record.cpu.gather == cuda.gather, f"{name}: the backends gather differently"
    assert callable(record.onnx_export), f"{name}: no ONNX export"
    assert all(callable(h) for h in record.onnx_import.values())
    assert callable(record.macs) and callable(record.init) and callable(record.prepare)
    assert record.spec in naive.ORACLE, f"{name}: no oracle in tests/naive.py"
    assert naive.propagation_of(record.spec) == ORACLE_RULE[record.rule], \
        f"{name}: the oracle and the registry disagree on how a change propagates"
    assert record.spec in strategies.COVERED, f"{name}: no hypothesis strategy"
    if record.rule is Rule.WINDOW:
        assert hasattr(record.spec, "axis") and hasattr(record.spec, "pad_value")


def test_onnx_operators_are_claimed_once():
    claimed = {}
    for record in registered():
        for op_type in record.onnx_import:
            assert op_type not in claimed, f"{op_type} claimed by {claimed.get(op_type)} and " \
                                           f"{record.name}"
            claimed[op_type] = record.name


def test_an_unregistered_layer_type_is_refused():
    class Mystery(kr.layers.Layer):
        pass

    with pytest.raises(TypeError, match="Mystery is not a registered kryptonref layer type"):
        kr.Graph((1, 4, 4)).add(Mystery())


#: Layer types that normalise (divide by a standard deviation): rounding differences of
#: rows with a small spread are amplified, so their float64 tolerance is wider.
NORMALISING = {"TensorOp": 1e-8, "LayerNorm2d": 1e-8}


def _model(graph, seed):
    return kr.Model(graph, seed=seed, dtype=np.float64)


@pytest.mark.parametrize("name", sorted(TYPES))
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_kernels_equal_the_oracle(name, device):
    """Full inference of a random graph holding the type equals the oracle; window layers'
    MAC rule is linear in the region's area."""
    record = TYPES[name]

    @settings(max_examples=8 if device == "cpu" else 3, **SETTINGS)
    @given(st.data())
    def run(data):
        graph = data.draw(strategies.graphs_with(record.spec))
        model = _model(graph, data.draw(st.integers(0, 99)))
        x = np.random.default_rng(0).normal(size=(2,) + graph.input_shape) * 2
        want = naive.naive_forward(graph, model.params, x)["layer"]
        if device == "cuda" and record.cuda is None:
            with pytest.raises(NotImplementedError, match="use device='cpu'"):
                model.forward(x, device=device)
            return
        got = model.forward(x, device=device)
        tol = NORMALISING.get(name, 1e-10)
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=name)
        node = graph.nodes["layer"]
        in_shapes = [graph.shapes[i] for i in node.inputs]
        shape = graph.shapes["layer"]
        macs = record.macs(node.layer, in_shapes, shape)
        assert isinstance(macs, (int, np.integer)) and macs >= 0
        if record.rule is Rule.WINDOW:
            one = record.macs(node.layer, in_shapes, (shape[0], 1, 1))
            assert macs == one * shape[1] * shape[2]

    run()


@pytest.mark.parametrize("name", sorted(TYPES))
def test_onnx_export_imports_back(name):
    """Each type's ONNX export, read back by from_onnx, computes the same output."""
    require("onnx", "onnx")
    record = TYPES[name]

    @settings(max_examples=3, **SETTINGS)
    @given(st.data())
    def run(data):
        graph = data.draw(strategies.graphs_with(record.spec))
        model = _model(graph, 1)
        try:
            proto = kr.to_onnx(model)
        except ValueError as err:  # uneven adaptive pooling: ONNX has no equivalent
            assert "no exact ONNX equivalent" in str(err)
            assume(False)
        back = kr.from_onnx(proto, dtype=np.float64)
        x = np.random.default_rng(1).normal(size=(2,) + graph.input_shape)
        want = model.forward(x)   # (a TensorOp output comes back without its unit batch axis)
        # ONNX stores float attributes (HardSigmoid's alpha 1/6, ELU's alpha...) as float32:
        # a relative error of 2**-24 in alpha moves alpha * x + beta by up to about
        # 6e-8 * |x|, which near the clipping point is a large *relative* error; so the
        # absolute tolerance follows the output's scale (1e-7 of it, still far below any
        # wrong-formula error).
        scale = max(1.0, float(np.max(np.abs(want))))
        np.testing.assert_allclose(back.forward(x).reshape(want.shape), want, rtol=1e-6,
                                   atol=1e-7 * scale)

    run()
