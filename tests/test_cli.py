"""The command line: models, analyze (table, JSON, --all), errors and exit codes."""
import json
import re

import pytest

from kryptonref.cli import main

from .conftest import require


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_analyze_json_has_the_documented_fields(capsys):
    code, out, _ = run(capsys, "analyze", "vgg16", "--image-size", "64", "--patch", "8",
                       "--stride", "8", "--json")
    assert code == 0
    report = json.loads(out)
    for key in ("model", "image_size", "patch", "stride", "tau", "mode", "positions",
                "full_macs", "incremental_macs", "speedup", "centre_speedup", "min_speedup",
                "max_speedup", "layers"):
        assert key in report
    assert report["positions"] == 8 * 8
    assert {"name", "type", "full_macs", "incremental_macs"} <= set(report["layers"][0])
    assert report["full_macs"] == sum(layer["full_macs"] for layer in report["layers"])
    assert report["incremental_macs"] == sum(layer["incremental_macs"] for layer in report["layers"])


def test_analyze_table_and_rectangular_patch(capsys):
    code, out, _ = run(capsys, "analyze", "resnet18", "--image-size", "64", "--patch", "8x4",
                       "--stride", "8", "--mode", "executed", "--tau", "0.5")
    assert code == 0
    assert "layer1.0.conv1" in out and "total" in out and "mode executed" in out


def test_models_lists_the_zoo(capsys):
    code, out, _ = run(capsys, "models", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["vgg16"]["parameters"] == 138357544          # torchvision's num_params
    assert rows["resnet18"]["parameters"] == 11689512        # (batch-norm buffers excluded)
    assert rows["vgg16"]["full_macs"] == 15470264320
    assert rows["inception_v3"]["image_size"] == 299


@pytest.mark.parametrize("argv,match", [
    (["analyze", "vgg17"], "unknown zoo model 'vgg17'; the zoo has: alexnet"),
    (["analyze", "vgg16", "--stride", "0"], "stride must be positive"),
    (["analyze", "vgg16", "--patch", "300"], "larger than the image"),
    (["analyze", "vgg16", "--tau", "0"], r"tau must lie in \(0, 1\]"),
    (["analyze", "vgg16", "--image-size", "16"], "vgg16 at 16 px: node 'features.*too small"),
    (["analyze"], "give a model name"),
])
def test_errors_exit_non_zero_with_a_message(capsys, argv, match, tmp_path):
    plot = tmp_path / "map.png"
    code, out, err = run(capsys, *argv, "--plot", str(plot))
    assert code == 1
    assert out == ""
    assert re.search(match, err)
    assert not plot.exists()


def test_plot_writes_a_png(capsys, tmp_path):
    require("matplotlib", "plot")
    plot = tmp_path / "map.png"
    code, _, _ = run(capsys, "analyze", "alexnet", "--image-size", "96", "--stride", "16",
                     "--plot", str(plot))
    assert code == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["map.png"]


def test_demo_runs_on_the_embedded_default(capsys, tmp_path):
    require("matplotlib", "plot")
    out = tmp_path / "demo.png"
    code, text, _ = run(capsys, "demo", "--stride", "104", "--out", str(out))
    assert code == 0
    assert "prediction: cross" in text and "speedup:" in text and "9 positions" in text
    assert "max |incremental - full|" in text
    assert out.read_bytes()[:4] == b"\x89PNG"


def _one_line(err):
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_truncated_weights_file_is_one_line_exit_1(capsys, tmp_path):
    """A truncated .npz reached the user as a BadZipFile traceback."""
    weights = tmp_path / "w.npz"
    weights.write_bytes(b"PK\x03\x04 truncated")
    code, out, err = run(capsys, "occlude", "demo", "--model", "demo_vgg", "--weights",
                         str(weights), "--patch", "56", "--stride", "56")
    assert code == 1 and _one_line(err) and "damaged or truncated .npz" in err, err


def test_an_image_path_that_is_a_directory_is_one_line(capsys, tmp_path):
    code, out, err = run(capsys, "occlude", str(tmp_path), "--model", "demo_vgg",
                         "--patch", "56", "--stride", "56")
    assert code == 1 and _one_line(err) and str(tmp_path) in err, err


def test_ctrl_c_is_one_line_exit_130(capsys, monkeypatch):
    import kryptonref.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "models", interrupted)
    code, out, err = run(capsys, "models")
    assert code == 130 and err.strip() == "kryptonref: interrupted"


def test_an_os_fault_names_the_file(capsys, monkeypatch):
    import errno

    import kryptonref.cli as cli

    def disk_full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out.png")
    monkeypatch.setattr(cli, "models", disk_full)
    code, out, err = run(capsys, "models")
    assert code == 1 and err.strip() == \
        "kryptonref: error: No space left on device: /data/out.png"


def test_version_and_a_help_that_lists_every_command(capsys):
    """--version did not exist; the help omitted tune and showed raw reST backticks."""
    import kryptonref
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == \
        f"kryptonref {kryptonref.__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("demo", "models", "analyze", "occlude", "show", "tune"):
        assert re.search(rf"^\s+{command}\s+\S", text, re.M), command
    assert "``" not in text


def _two_images(tmp_path):
    require("PIL", "image")
    from kryptonref.images import sample_image_path
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(open(sample_image_path(), "rb").read())
        paths.append(str(folder / name))
    return paths


def test_occlude_several_images_writes_one_overlay_each(capsys, tmp_path):
    require("matplotlib", "plot")
    paths = _two_images(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, err = run(capsys, "occlude", *paths, "--model", "demo_vgg", "--weights",
                            "pretrained", "--patch", "32", "--stride", "32", "--out", str(out),
                            "--save", str(out), "--json", "--no-progress", "--target", "1")
    assert code == 0, err
    summary = json.loads(stdout)
    assert [s["image"] for s in summary["images"]] == paths
    assert all(s["label"] == 1 for s in summary["images"])
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "a.png", "b.npy", "b.png"]
    import numpy as np
    single = tmp_path / "single.npy"
    code, _, _ = run(capsys, "occlude", paths[1], "--model", "demo_vgg", "--weights",
                     "pretrained", "--patch", "32", "--stride", "32", "--save", str(single),
                     "--no-progress", "--target", "1")
    assert code == 0
    np.testing.assert_allclose(np.load(out / "b.npy"), np.load(single), rtol=1e-6)


def test_occlude_several_images_refuses_bad_outputs_before_computing(capsys, tmp_path,
                                                                      monkeypatch):
    import kryptonref.explain as explain
    paths = _two_images(tmp_path)
    monkeypatch.setattr(explain, "occlusion", lambda *a, **k: pytest.fail("computed"))
    common = ["--model", "demo_vgg", "--weights", "pretrained", "--patch", "32", "--stride",
              "32"]
    code, _, err = run(capsys, "occlude", *paths, *common, "--out", str(tmp_path / "o.png"))
    assert code == 1 and _one_line(err) and "--out must be an existing folder" in err
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.png").write_bytes(open(paths[0], "rb").read())
    code, _, err = run(capsys, "occlude", paths[1], str(other / "a.png"), *common, "--out",
                       str(other))
    assert code == 1 and _one_line(err) and "refusing to overwrite the input image" in err
    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / "a.png").write_bytes(open(paths[0], "rb").read())
    code, _, err = run(capsys, "occlude", paths[0], str(twin / "a.png"), *common, "--out",
                       str(tmp_path))
    assert code == 1 and _one_line(err) and "would both be written to" in err
    code, _, err = run(capsys, "occlude", paths[0], *common, "--out", paths[0])
    assert code == 1 and "refusing to overwrite the input image" in err
