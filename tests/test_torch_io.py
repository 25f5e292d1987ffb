"""kr.from_torch: small modules round-trip, bad modules give one clear error each."""
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import kryptonref as kr  # noqa: E402

from . import torch_models  # noqa: E402

SHAPE = (3, 12, 14)


def _outputs(module, x):
    with torch.no_grad():
        return module(torch.as_tensor(x)).double().numpy()


@pytest.mark.parametrize("build", [torch_models.chain, torch_models.residual,
                                   torch_models.one_output])
def test_small_modules_round_trip_in_float64(build):
    module = build(dtype=torch.float64)
    model = kr.from_torch(module, SHAPE, dtype=np.float64)
    assert model.dtype == np.float64 and model.graph.input_shape == SHAPE
    x = np.random.default_rng(1).standard_normal((3,) + SHAPE)
    np.testing.assert_allclose(model.forward(x), _outputs(module, x), rtol=1e-10, atol=1e-12)


def test_float32_module_round_trips():
    module = torch_models.residual()
    model = kr.from_torch(module, SHAPE)
    x = np.random.default_rng(2).standard_normal((2,) + SHAPE).astype(np.float32)
    np.testing.assert_allclose(model.forward(x), _outputs(module, x), rtol=1e-4, atol=1e-5)


def test_no_warning_reaches_the_user(recwarn, capsys):
    kr.from_torch(torch_models.chain(), SHAPE)
    assert not recwarn.list, [str(w.message) for w in recwarn]
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_a_function_is_a_type_error():
    def forward(x):
        return x
    with pytest.raises(TypeError, match="expected a torch.nn.Module, got the function 'forward'"):
        kr.from_torch(forward, SHAPE)


def test_training_mode_names_the_submodule():
    module = torch_models.residual()
    module.bn1.train()
    with pytest.raises(ValueError, match=r"submodule 'bn1' \(BatchNorm2d\) is in training mode"):
        kr.from_torch(module, SHAPE)
    with pytest.raises(ValueError, match=r"the module \(Sequential\) is in training mode"):
        kr.from_torch(torch_models.chain().train(), SHAPE)


def test_several_inputs_or_outputs_are_refused():
    with pytest.raises(ValueError, match=r"TwoInputs.forward takes several inputs \(x, y\)"):
        kr.from_torch(torch_models.TwoInputs().eval(), SHAPE)
    with pytest.raises(ValueError, match="TwoOutputs returns tuple"):
        kr.from_torch(torch_models.TwoOutputs().eval(), SHAPE)


def test_an_unsupported_operator_names_module_operator_and_node():
    with pytest.raises(ValueError, match=r"cannot import Unsupported: .*CumSum.*node"):
        kr.from_torch(torch_models.Unsupported().eval(), SHAPE)


def test_an_export_failure_is_one_value_error(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")
    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ValueError, match="cannot export Sequential: TorchScript exporter: "
                                         "RuntimeError: exporter exploded"):
        kr.from_torch(torch_models.chain(), SHAPE)


def test_a_wrong_conversion_raises_rather_than_explaining_wrongly(monkeypatch):
    from kryptonref.model import Model
    real = Model.forward
    monkeypatch.setattr(Model, "forward", lambda self, x, device="cpu": real(self, x) + 1.0)
    with pytest.raises(ValueError, match="does not reproduce the module"):
        kr.from_torch(torch_models.chain(), SHAPE)


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"input_shape must be \(C, H, W\)"):
        kr.from_torch(torch_models.chain(), (12, 14))
    with pytest.raises(ValueError, match="fails on an input of shape"):
        kr.from_torch(torch_models.chain(), (4, 12, 14))


def test_importing_kryptonref_does_not_import_torch():
    code = ("import sys, kryptonref as kr, kryptonref.captum, kryptonref.models; "
            "kr.from_torch; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")   # the test's own jit calls
def test_scripted_and_traced_modules():
    x = np.random.default_rng(3).standard_normal((2,) + SHAPE).astype(np.float32)
    for module in (torch.jit.script(torch_models.residual()),
                   torch.jit.trace(torch_models.chain(), torch.zeros((1,) + SHAPE))):
        model = kr.from_torch(module, SHAPE)
        np.testing.assert_allclose(model.forward(x), _outputs(module, x), rtol=1e-4, atol=1e-5)


def test_without_torch_the_error_names_the_extra(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"from_torch needs PyTorch: pip install "
                                          r"'kryptonref\[torch\]'"):
        kr.from_torch(object(), (3, 8, 8))
