"""What ``occlude`` and ``demo`` tell the user (issue 19, class 7): a warning for random
weights, matplotlib checked before computing, ``--mean/--std``, ``--labels``, a notice
while kernels compile, and the demo's speedup against onnxruntime."""
import importlib
import sys

import numpy as np
import pytest

import kryptonref as kr
from kryptonref import _numba
from kryptonref.cli import main
from kryptonref.images import load_image, sample_image_path

from .conftest import require

QUICK = ("--patch", "56", "--stride", "56")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_random_weights_are_announced_and_shipped_ones_are_not(capsys):
    code, out, err = run(capsys, "occlude", sample_image_path(), "--model", "demo_vgg", *QUICK)
    assert code == 0 and "random weights" in err and "meaningless" in err, err
    code, out, err = run(capsys, "occlude", sample_image_path(), "--model", "demo_vgg",
                         "--weights", "pretrained", *QUICK)
    assert code == 0 and "random weights" not in err, err


def test_missing_matplotlib_is_reported_before_computing(capsys, monkeypatch, tmp_path):
    import kryptonref.explain

    def computed(*args, **kwargs):
        raise AssertionError("occlusion ran before matplotlib was checked")
    monkeypatch.setattr(kryptonref.explain, "occlusion", computed)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, out, err = run(capsys, "occlude", sample_image_path(), "--model", "demo_vgg",
                         "--out", str(tmp_path / "o.png"), *QUICK)
    assert code == 1 and "matplotlib" in err and "kryptonref[plot]" in err, err
    assert "AssertionError" not in err and not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("mean,std,values", [
    ("0,0,0", "1,1,1", dict(mean=(0, 0, 0), std=(1, 1, 1))),
    ("none", "none", dict(mean=None, std=None)),
    ("0.5", "0.25", dict(mean=0.5, std=0.25)),
])
def test_mean_and_std_normalise_the_image_as_given(capsys, tmp_path, mean, std, values):
    saved = tmp_path / "h.npy"
    code, out, err = run(capsys, "occlude", sample_image_path(), "--model", "demo_vgg",
                         "--weights", "pretrained", "--mean", mean, "--std", std,
                         "--save", str(saved), *QUICK)
    assert code == 0, err
    model = kr.zoo("demo_vgg", weights="pretrained")
    image = load_image(sample_image_path(), size=model.graph.input_shape[1:], **values)
    expected = kr.occlusion(model, image, patch=56, stride=56).heatmap
    np.testing.assert_allclose(np.load(saved), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("flag,value,match", [
    ("--mean", "0.1,0.2", "one value or three"),
    ("--std", "1,0,1", "std must be positive"),
    ("--mean", "abc", "one value or three"),
])
def test_bad_mean_or_std_is_one_line(capsys, flag, value, match):
    with pytest.raises(SystemExit) as done:
        main(["occlude", sample_image_path(), "--model", "demo_vgg", flag, value, *QUICK])
    err = capsys.readouterr().err
    assert done.value.code == 2 and match in err and "Traceback" not in err, err


def test_labels_name_the_class(capsys, tmp_path):
    labels = tmp_path / "labels.txt"
    names = ["circle", "cross", "square", "triangle", "star"]
    labels.write_text("\n".join(names) + "\n")
    code, out, err = run(capsys, "occlude", sample_image_path(), "--model", "demo_vgg",
                         "--weights", "pretrained", "--labels", str(labels), "--json", *QUICK)
    assert code == 0, err
    import json
    summary = json.loads(out)
    assert summary["class_name"] == names[summary["label"]]


def test_a_labels_file_of_the_wrong_length_is_refused_before_computing(capsys, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    code, out, err = run(capsys, "occlude", sample_image_path(), "--model", "demo_vgg",
                         "--labels", str(labels), *QUICK)
    assert code == 1 and "2 names" in err and "5 classes" in err, err


def test_a_cold_kernel_cache_is_announced(capsys, monkeypatch):
    monkeypatch.setattr(_numba, "kernels_cold", lambda dispatchers: True)
    code, out, err = run(capsys, "occlude", sample_image_path(), "--model", "demo_vgg",
                         "--weights", "pretrained", *QUICK)
    assert code == 0 and "compiling kernels" in err, err
    monkeypatch.setattr(_numba, "kernels_cold", lambda dispatchers: False)
    code, out, err = run(capsys, "occlude", sample_image_path(), "--model", "demo_vgg",
                         "--weights", "pretrained", *QUICK)
    assert code == 0 and "compiling kernels" not in err, err


def test_kernels_cold_until_the_cache_holds_them(tmp_path, monkeypatch):
    source = tmp_path / "cold_kernel_module.py"
    source.write_text("import numba\n\n@numba.njit(cache=True)\ndef twice(x):\n"
                      "    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("cold_kernel_module")
    assert _numba.kernels_cold([module.twice])
    assert module.twice(21) == 42          # compiles and writes the cache
    assert not _numba.kernels_cold([module.twice])
    assert _numba.kernels_cold([_numba.njit(lambda x: x)])   # no disk cache: always cold


def test_demo_speedup_is_also_given_against_onnxruntime(capsys):
    require("onnxruntime", "test")
    code, out, err = run(capsys, "demo", "--stride", "104", "--out", "")
    assert code == 0, err
    assert "onnxruntime full re-inference:" in out and "x vs onnxruntime" in out, out


@pytest.mark.parametrize("extra,tuner", [((), "tune_tau"), (("--drilldown",), "tune_drilldown")])
def test_tune_passes_freeze_context_to_the_tuner(capsys, monkeypatch, tmp_path, extra, tuner):
    """The tuners had freeze_context; `kryptonref tune` had no way to ask for it."""
    import kryptonref.tuning

    seen = {}

    def tune(model, images, **kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt          # stop here: only the arguments matter
    monkeypatch.setattr(kryptonref.tuning, tuner, tune)
    from PIL import Image
    Image.new("RGB", (64, 64), (120, 30, 200)).save(tmp_path / "a.png")
    code, out, err = run(capsys, "tune", "demo_effnet", "--images", str(tmp_path),
                         "--count", "1", "--freeze-context", *extra)
    assert code == 130 and seen.get("freeze_context") is True, (err, seen)
