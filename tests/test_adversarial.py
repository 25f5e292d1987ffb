"""The adversarial pass (tools/adversarial.py): every bad input, fault and misuse in its
table is handled well (one clear error, one CLI line, no silent wrong result)."""
import importlib.util
import os

import pytest

from .conftest import require

TOOL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools",
                    "adversarial.py")


@pytest.mark.slow
def test_every_adversarial_case_is_handled_well(capsys):
    require("onnx", "onnx")
    require("matplotlib", "plot")
    spec = importlib.util.spec_from_file_location("adversarial", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    code = tool.main([])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "of 191 cases handled well" in out or "cases handled well" in out
