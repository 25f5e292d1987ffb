"""torchvision's modern building blocks, exported by torch, imported and run exactly.

The fixtures in ``tests/fixtures/onnx`` were written by the dev-only tool
``tools/export_onnx_fixtures.py`` (torch's TorchScript exporter, opset 17, random
weights) with torch's own output for a fixed input: squeeze-excitation, MBConv and
Fused-MBConv (EfficientNet, SiLU), MobileNet v3's block (HardSwish, HardSigmoid gate),
ConvNeXt's block (channels-last LayerNorm and Linear, GELU as Div/Erf/Add/Mul (fused
back into one GELU on import), layer scale), two ShuffleNet v2 units (channel split and shuffle) and a chain of
activations. Torch is not needed here.
"""
import glob
import os

import numpy as np
import pytest

import kryptonref as kr

from .conftest import require

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "onnx")
NAMES = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(FIXTURES, "*.onnx")))


def load(name, dtype=np.float64):
    require("onnx", "onnx")
    data = np.load(os.path.join(FIXTURES, f"{name}.npz"))
    return kr.from_onnx(os.path.join(FIXTURES, f"{name}.onnx"), dtype=dtype), data


def test_the_fixtures_are_there():
    assert {"se_block", "mbconv", "fused_mbconv", "mobilenet_v3_block", "convnext_block",
            "shufflenet_unit", "activations"} <= set(NAMES)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", NAMES)
def test_imports_and_equals_torch(name, dtype):
    model, data = load(name, dtype)
    got = model.forward(data["x"].astype(dtype))
    scale = np.abs(data["y"]).max()
    np.testing.assert_allclose(got, data["y"], rtol=1e-4, atol=1e-4 * scale)


EXPECTED_TYPES = {
    "se_block": {"Mul", "Sigmoid", "GlobalAvgPool2d"},
    "mbconv": {"SiLU", "Mul", "Sigmoid"},
    "mobilenet_v3_block": {"HardSwish", "HardSigmoid", "Mul"},
    "convnext_block": {"LayerNorm2d", "ChannelLinear", "GELU", "Arithmetic"},
    "shufflenet_unit": {"ChannelShuffle", "ChannelSlice", "Concat"},
    "activations": {"ELU", "PReLU", "Clip", "Softplus", "Tanh", "SiLU", "GELU"},
}
#: Types that must not remain: exporters' decompositions the importer fuses.
FUSED_AWAY = {"Erf", "Sigmoid"}


@pytest.mark.parametrize("name", sorted(EXPECTED_TYPES))
def test_imported_as_the_layer_types_they_are(name):
    model, _ = load(name)
    types = {type(n.layer).__name__ for n in model.graph.nodes.values()}
    assert EXPECTED_TYPES[name] <= types, types
    assert not (FUSED_AWAY - EXPECTED_TYPES[name]) & types, types


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("name", NAMES)
def test_incremental_equals_full_at_every_node(name, device):
    model, data = load(name)
    image = data["x"][0]
    positions = kr.patch_positions(model.graph.input_shape[1:], 4, 3)
    if device == "cuda":
        positions = positions[::4]
    result = kr.incremental_inference(model, image, positions, 4, fill=0.5, batch_size=5,
                                      nodes=model.graph.order, device=device)
    occluded = np.repeat(image[None], len(positions), axis=0)
    for i, (y, x) in enumerate(positions):
        occluded[i, :, y:y + 4, x:x + 4] = 0.5
    expected = model.forward_all(occluded)
    for node in model.graph.order:
        np.testing.assert_allclose(result.nodes[node], expected[node], rtol=1e-10, atol=1e-10,
                                   err_msg=node)


def test_the_report_names_where_the_region_becomes_whole():
    model, _ = load("se_block")
    report = kr.speedup(model, 4, 2)
    assert isinstance(model.graph.nodes[report.first_whole].layer, kr.Mul)
    assert "squeeze-excitation" in report.why_whole
    model, _ = load("convnext_block")
    report = kr.speedup(model, 4, 2)
    assert isinstance(model.graph.nodes[report.first_whole].layer, kr.GlobalAvgPool2d)


def test_frozen_gates_keep_squeeze_excitation_local():
    model, data = load("mobilenet_v3_block")
    exact = kr.speedup(model, 4, 3, mode="executed")
    frozen = kr.speedup(model, 4, 3, mode="executed", freeze_context=True)
    assert frozen.speedup > exact.speedup
    image = data["x"][0]
    full = kr.occlusion(model, image, 4, 3)
    approx = kr.occlusion(model, image, 4, 3, mode="approximate", freeze_context=True)
    assert approx.macs < full.macs
    assert np.abs(approx.heatmap - full.heatmap).max() < 0.5   # close, not equal
