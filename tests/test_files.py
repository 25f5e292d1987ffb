"""Output files (kryptonref.files): whole or not at all, through symlinks, usual mode."""
import os
import stat

import numpy as np
import pytest

import kryptonref as kr
from kryptonref.files import atomic_write, check_writable, figure_format

from .conftest import require


def _write_text(text):
    def write(tmp):
        with open(tmp, "w") as handle:
            handle.write(text)
    return write


def test_a_failed_write_keeps_the_previous_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write(path, _write_text("good"))

    def fails(tmp):
        _write_text("partial")(tmp)
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, fails)
    assert path.read_text() == "good"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_a_symlink_is_written_through_not_replaced(tmp_path):
    """The old helper renamed its temp file over the link."""
    target = tmp_path / "real.txt"
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    atomic_write(link, _write_text("new"))
    assert link.is_symlink() and target.read_text() == "new"


def test_new_files_follow_the_umask_and_replaced_ones_keep_their_mode(tmp_path):
    """Outputs came out 0600 (mkstemp's mode)."""
    old = os.umask(0o027)
    try:
        path = tmp_path / "new.txt"
        atomic_write(path, _write_text("x"))
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        kept = tmp_path / "kept.txt"
        kept.write_text("x")
        kept.chmod(0o604)
        atomic_write(kept, _write_text("y"))
        assert stat.S_IMODE(kept.stat().st_mode) == 0o604
    finally:
        os.umask(old)


def test_devices_and_fifos_are_written_directly_never_replaced(tmp_path):
    """The old helper would have renamed its temp file over /dev/null."""
    atomic_write("/dev/null", _write_text("x"))
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    import threading
    received = []
    reader = threading.Thread(target=lambda: received.append(open(fifo).read()))
    reader.start()
    atomic_write(fifo, _write_text("through the pipe"))
    reader.join(10)
    assert received == ["through the pipe"] and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_directories_sockets_and_missing_folders_are_refused(tmp_path):
    import socket
    with pytest.raises(IsADirectoryError):
        atomic_write(tmp_path, _write_text("x"))
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock"))
    try:
        with pytest.raises(ValueError, match="not a regular file, a device or a FIFO"):
            atomic_write(tmp_path / "sock", _write_text("x"))
    finally:
        server.close()
    missing = tmp_path / "nowhere" / "out.png"
    with pytest.raises(FileNotFoundError) as err:
        check_writable(missing)
    assert err.value.filename == str(missing)       # the user's path, not a temp file


@pytest.mark.parametrize("name,fmt", [("a.png", "png"), ("a.JPG", "jpeg"), ("a.jpeg", "jpeg"),
                                      ("a.pdf", "pdf"), ("a.svg", "svg")])
def test_the_figure_format_follows_the_extension(name, fmt):
    assert figure_format(name) == fmt


def test_an_unknown_figure_extension_names_the_supported_ones():
    with pytest.raises(ValueError, match=r"\.jpeg, \.jpg, \.pdf, \.png, \.svg"):
        figure_format("overlay.tiff")


def test_save_weights_writes_exactly_the_path_given(tmp_path):
    """save_weights("w") wrote w.npz, and loading "w" then failed."""
    model = kr.Model(_graph(), seed=0)
    path = tmp_path / "w"
    model.save_weights(path)
    assert os.listdir(tmp_path) == ["w"]
    again = kr.Model(_graph(), weights=path)
    np.testing.assert_array_equal(again.params["conv"]["weight"], model.params["conv"]["weight"])


def test_to_onnx_keeps_the_previous_file_when_it_fails(tmp_path, monkeypatch):
    onnx = require("onnx", "onnx")
    model = kr.Model(_graph(), seed=0)
    path = tmp_path / "m.onnx"
    kr.to_onnx(model, path)
    before = path.read_bytes()

    def full_disk(proto, target, *args, **kwargs):
        with open(target, "wb") as handle:
            handle.write(b"\x08partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(onnx, "save_model", full_disk)
    with pytest.raises(OSError):
        kr.to_onnx(kr.Model(_graph(), seed=1), path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.onnx"]


def _big_graph():
    """Weights above onnx's 1 KiB threshold for external data (16 x 8 x 3 x 3 floats)."""
    g = kr.Graph((8, 6, 6))
    g.add(kr.Conv2d(8, 16, 3, padding=1), name="conv")
    return g


def _data_files(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".data"))


def test_to_onnx_with_external_weights_is_whole_or_not_at_all(tmp_path, monkeypatch):
    """Models above protobuf's 2 GB keep their weights in a file beside the .onnx, which
    was written in place: an interrupt destroyed the previous good pair. (The threshold is
    lowered here so that a tiny model takes that path.)"""
    onnx = require("onnx", "onnx")
    from kryptonref.models import onnx_export
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    x = np.random.default_rng(0).normal(size=(2,) + _big_graph().input_shape).astype(np.float32)
    first, second = kr.Model(_big_graph(), seed=0), kr.Model(_big_graph(), seed=1)
    path = tmp_path / "m.onnx"
    kr.to_onnx(first, path)
    assert len(_data_files(tmp_path)) == 1
    np.testing.assert_allclose(kr.from_onnx(path).forward(x), first.forward(x), rtol=1e-6)
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}

    real_save = onnx.save_model

    def interrupted(proto, target, *args, **kwargs):
        real_save(proto, target, *args, **kwargs)   # the weights file and the .onnx written
        raise KeyboardInterrupt                     # ... then Ctrl-C before the rename
    monkeypatch.setattr(onnx, "save_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        kr.to_onnx(second, path)
    after = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    assert after == before                          # the previous pair, nothing else
    np.testing.assert_allclose(kr.from_onnx(path).forward(x), first.forward(x), rtol=1e-6)

    monkeypatch.setattr(onnx, "save_model", real_save)
    kr.to_onnx(second, path)                        # replaces the pair: one weights file
    assert len(_data_files(tmp_path)) == 1 and sorted(os.listdir(tmp_path)) == sorted(
        ["m.onnx"] + _data_files(tmp_path))
    np.testing.assert_allclose(kr.from_onnx(path).forward(x), second.forward(x), rtol=1e-6)


@pytest.mark.parametrize("extension,magic", [(".pdf", b"%PDF"), (".jpg", b"\xff\xd8"),
                                             (".svg", b"<?xml"), (".png", b"\x89PNG")])
def test_overlays_are_written_in_the_format_of_their_extension(tmp_path, extension, magic):
    """--out x.jpg and x.pdf wrote PNG bytes."""
    require("matplotlib", "plot")
    path = tmp_path / f"overlay{extension}"
    image = np.random.default_rng(0).uniform(size=(16, 16, 3))
    from kryptonref.analysis.plots import save_overlay
    save_overlay(image, np.random.default_rng(1).uniform(size=(3, 3)), path,
                                   8, 4)
    assert path.read_bytes().startswith(magic)


def _graph():
    g = kr.Graph((2, 6, 6))
    g.add(kr.Conv2d(2, 3, 3, padding=1), name="conv")
    return g
