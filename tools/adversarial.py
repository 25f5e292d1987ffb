#!/usr/bin/env python
"""Dev-only: an adversarial pass over kryptonref's API and CLI (issue 19).

Each case is a misuse, a bad input or a fault a careful user might produce. A case is
*handled well* when:

- an API call that should fail raises ``ValueError``, ``TypeError``, ``OSError`` (missing
  file, directory, permissions) or ``ImportError`` (a missing extra) whose message is
  one readable sentence; a call that should succeed returns; any other exception type
  (``AttributeError``, ``KeyError``, ``IndexError``, ``BadZipFile``, Numba's errors...)
  or a silent success where an error was due is handled badly;
- a CLI run that should fail exits non-zero with exactly one line on stderr and no
  traceback; one that should succeed exits 0.

Run it against any checkout (only API present since the first releases is used)::

    PYTHONPATH=. python tools/adversarial.py            # summary
    PYTHONPATH=. python tools/adversarial.py -v         # every case
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import traceback

import numpy as np

import kryptonref as kr
from kryptonref.cli import main as cli_main

WELL = (ValueError, TypeError, OSError, ImportError)


def _graph():
    g = kr.Graph((3, 16, 16))
    g.add(kr.Conv2d(3, 4, 3, padding=1), name="conv")
    g.add(kr.ReLU(), name="relu")
    g.add(kr.MaxPool2d(2), name="pool")
    g.add(kr.GlobalAvgPool2d(), name="gap")
    g.add(kr.Flatten(), name="flat")
    g.add(kr.Linear(4, 5), name="fc")
    return g


MODEL = kr.Model(_graph(), seed=0)
IMAGE = np.random.default_rng(0).normal(size=(3, 16, 16)).astype(np.float32)
TMP = tempfile.mkdtemp(prefix="kr-adversarial-")


def _path(name, content=None):
    path = os.path.join(TMP, name)
    if content is not None:
        with open(path, "wb") as handle:
            handle.write(content)
    return path


def api_cases():
    """``(name, thunk, should_fail)``."""
    cases = []
    bad_values = [("None", None), ("negative", -1), ("zero", 0), ("float", 1.5),
                  ("string", "x"), ("nan", float("nan")), ("inf", float("inf")),
                  ("bool", True), ("complex", 1 + 2j), ("list", [1, 2, 3])]
    # occlusion's numeric arguments
    for arg in ("patch", "stride", "batch_size"):
        for label, value in bad_values:
            kwargs = dict(patch=4, stride=4)
            kwargs[arg] = value
            # (batch_size=None is documented: the default)
            cases.append((f"occlusion {arg}={label}",
                          lambda kw=kwargs: kr.occlusion(MODEL, IMAGE, **kw),
                          not (arg == "batch_size" and value is None)))
    for label, value in bad_values:
        if label in ("bool",):
            continue
        cases.append((f"occlusion tau={label}",
                      lambda v=value: kr.occlusion(MODEL, IMAGE, 4, 4, tau=v,
                                                   mode="approximate"), True))
        cases.append((f"speedup tau={label}",
                      lambda v=value: kr.speedup(MODEL, 4, 4, tau=v), True))
    # fills
    for label, value in [("complex", 1 + 2j), ("string", "grey"), ("nan", float("nan")),
                         ("wrong channels", [0.0, 0.0]), ("object", object()),
                         ("wrong patch shape", np.zeros((3, 5, 5)))]:
        cases.append((f"occlusion fill={label}",
                      lambda v=value: kr.occlusion(MODEL, IMAGE, 4, 4, fill=v), True))
    # images
    for label, value in [("None", None), ("list", IMAGE.tolist()), ("2-D", IMAGE[0]),
                         ("wrong size", np.zeros((3, 8, 8), np.float32)),
                         ("wrong channels", np.zeros((1, 16, 16), np.float32)),
                         ("uint8", (IMAGE * 0).astype(np.uint8)),
                         ("complex", IMAGE.astype(np.complex64)),
                         ("nan", np.full((3, 16, 16), np.nan, np.float32)),
                         ("string", "image.png"), ("object", np.array(IMAGE, dtype=object))]:
        cases.append((f"occlusion image={label}",
                      lambda v=value: kr.occlusion(MODEL, v, 4, 4), True))
        cases.append((f"forward x={label}",
                      lambda v=value: MODEL.forward(v if not isinstance(v, np.ndarray)
                                                    else v[None]), True))
    # models
    for label, value in [("None", None), ("string", "vgg16"), ("graph", _graph()),
                         ("dict", {})]:
        cases.append((f"occlusion model={label}",
                      lambda v=value: kr.occlusion(v, IMAGE, 4, 4), True))
        cases.append((f"tune_tau model={label}",
                      lambda v=value: kr.tune_tau(v, [IMAGE], patch=4, stride=1), True))
    # incremental_inference
    positions = kr.patch_positions((16, 16), 4, 4)
    for label, value in [("string", "conv"), ("unknown", ["nope"]), ("int", 3)]:
        cases.append((f"incremental nodes={label}",
                      lambda v=value: kr.incremental_inference(MODEL, IMAGE, positions, 4,
                                                               nodes=v), True))
    for label, value in [("outside", [(20, 20)]), ("negative", [(-1, 0)]),
                         ("float", [(0.5, 0)]), ("3 columns", [(0, 0, 0)]), ("empty", []),
                         ("None", None)]:
        cases.append((f"incremental positions={label}",
                      lambda v=value: kr.incremental_inference(MODEL, IMAGE, v, 4), True))
    other = np.random.default_rng(1).normal(size=(3, 16, 16)).astype(np.float32)
    cases.append(("incremental base of another image",
                  lambda: kr.incremental_inference(MODEL, IMAGE, positions, 4,
                                                   base=MODEL.forward_all(other[None])), True))
    cases.append(("incremental device=gpu",
                  lambda: kr.incremental_inference(MODEL, IMAGE, positions, 4, device="gpu"),
                  True))
    # weights
    np.save(_path("one.npy"), np.zeros(3))
    _path("garbage.npz", b"garbage")
    MODEL.save_weights(_path("good.npz"))
    with open(_path("good.npz"), "rb") as handle:
        good = handle.read()
    _path("cut.npz", good[: len(good) // 2])
    for label, value in [("npy", _path("one.npy")), ("garbage", _path("garbage.npz")),
                         ("truncated", _path("cut.npz")), ("missing", _path("none.npz")),
                         ("directory", TMP), ("number", 42), ("list", [1, 2]),
                         ("strings", {k: np.array(["a"] * v.size).reshape(v.shape)
                                      for k, v in MODEL.weights().items()}),
                         ("complex", {k: v.astype(np.complex128)
                                      for k, v in MODEL.weights().items()}),
                         ("nan", {k: np.full_like(v, np.nan)
                                  for k, v in MODEL.weights().items()}),
                         ("wrong shape", {**MODEL.weights(), "conv.weight": np.zeros(3)}),
                         ("missing key", {k: v for k, v in MODEL.weights().items()
                                          if k != "fc.bias"}),
                         ("extra key", {**MODEL.weights(), "ghost.weight": np.zeros(1)})]:
        cases.append((f"Model weights={label}",
                      lambda v=value: kr.Model(_graph(), weights=v), True))
    for label, value in [("negative", -1), ("float", 1.5), ("string", "0")]:
        cases.append((f"Model seed={label}", lambda v=value: kr.Model(_graph(), seed=v), True))
    for label, value in [("int8", np.int8), ("float16", np.float16), ("string", "double!")]:
        cases.append((f"Model dtype={label}",
                      lambda v=value: kr.Model(_graph(), dtype=v), True))
    # weights edited after a first forward must not be silently ignored
    def edit_in_place():
        model = kr.Model(_graph(), seed=0)
        before = model.forward(IMAGE[None])
        model.params["conv"]["weight"][...] = 0.0      # raises (read-only) or must apply
        if np.array_equal(model.forward(IMAGE[None]), before):
            raise AssertionError("silently ignored")
    cases.append(("in-place weight edit after forward", edit_in_place, True))
    def replace_one():
        model = kr.Model(_graph(), seed=0)
        before = model.forward(IMAGE[None])
        model.params["conv"]["weight"] = np.zeros_like(model.params["conv"]["weight"])
        if np.array_equal(model.forward(IMAGE[None]), before):
            raise AssertionError("silently ignored")
    cases.append(("one weight replaced after forward", replace_one, False))
    # graphs
    for label, thunk in [
            ("conv channels mismatch", lambda: _graph().add(kr.Conv2d(5, 4, 3), inputs="conv")),
            ("unknown input", lambda: _graph().add(kr.ReLU(), inputs="nope")),
            ("duplicate name", lambda: _graph().add(kr.ReLU(), name="conv")),
            ("not a layer", lambda: _graph().add("relu")),
            ("kernel larger than map", lambda: kr.Graph((3, 4, 4)).add(kr.Conv2d(3, 4, 7))),
            ("negative kernel", lambda: kr.Conv2d(3, 4, -3)),
            ("zero channels", lambda: kr.Conv2d(0, 4, 3)),
            ("groups not dividing", lambda: kr.Conv2d(3, 4, 3, groups=2)),
            ("pool stride 0", lambda: kr.MaxPool2d(2, stride=0)),
            ("linear string", lambda: kr.Linear("4", 5)),
            ("graph shape 2-D", lambda: kr.Graph((16, 16))),
            ("graph shape negative", lambda: kr.Graph((3, -1, 16)))]:
        cases.append((f"graph {label}", thunk, True))
    # zoo
    for label, thunk in [("unknown", lambda: kr.zoo("vgg17")),
                         ("too small", lambda: kr.zoo("vgg16", image_size=8)),
                         ("classes 0", lambda: kr.zoo("resnet18", num_classes=0)),
                         ("size string", lambda: kr.zoo("resnet18", image_size="224"))]:
        cases.append((f"zoo {label}", thunk, True))
    # tuners
    for label, value in [("one image", IMAGE), ("None", None), ("empty", []),
                         ("nan in second", [IMAGE, np.full_like(IMAGE, np.nan), IMAGE]),
                         ("wrong size", [np.zeros((3, 8, 8), np.float32)])]:
        cases.append((f"tune_tau images={label}",
                      lambda v=value: kr.tune_tau(MODEL, v, patch=4, stride=1), True))
    for label, value in [("0", 0.0), ("1.5", 1.5), ("nan", float("nan")), ("string", "high")]:
        cases.append((f"tune_tau target={label}",
                      lambda v=value: kr.tune_tau(MODEL, [IMAGE], target_ssim=v, patch=4,
                                                  stride=1), True))
    # ONNX
    for label, value in [("missing", _path("none.onnx")), ("garbage", _path("g.onnx", b"xx")),
                         ("directory", TMP), ("number", 3)]:
        cases.append((f"from_onnx {label}", lambda v=value: kr.from_onnx(v), True))
    cases.append(("to_onnx into a missing folder",
                  lambda: kr.to_onnx(MODEL, os.path.join(TMP, "no", "m.onnx")), True))
    cases.append(("to_onnx onto a directory", lambda: kr.to_onnx(MODEL, TMP), True))
    cases.append(("to_onnx opset 5", lambda: kr.to_onnx(MODEL, None, opset=5), True))
    cases.append(("save_weights into a missing folder",
                  lambda: MODEL.save_weights(os.path.join(TMP, "no", "w.npz")), True))
    cases.append(("save_weights onto a directory", lambda: MODEL.save_weights(TMP), True))
    def save_without_extension():
        MODEL.save_weights(_path("plain"))
        kr.Model(_graph(), weights=_path("plain"))
    cases.append(("save_weights('w') then load 'w'", save_without_extension, False))
    # patch positions
    for label, args in [("patch 0", ((16, 16), 0, 4)), ("stride -1", ((16, 16), 4, -1)),
                        ("patch too big", ((16, 16), 32, 4)), ("hw 1-D", ((16,), 4, 4))]:
        cases.append((f"patch_positions {label}", lambda a=args: kr.patch_positions(*a), True))
    # good calls must still work
    cases.append(("occlusion, good", lambda: kr.occlusion(MODEL, IMAGE, 4, 4), False))
    cases.append(("speedup, good", lambda: kr.speedup(MODEL, 4, 4), False))
    cases.append(("fill mean, good", lambda: kr.occlusion(MODEL, IMAGE, 4, 4, fill="mean"),
                  False))
    return cases


def cli_cases():
    """``(name, argv, should_fail)``."""
    png = _path("not-really.png", b"not a png")
    weights_cut = _path("cut.npz")
    cases = [
        ("analyze unknown model", ["analyze", "vgg17"], True),
        ("analyze stride 0", ["analyze", "vgg16", "--stride", "0"], True),
        ("analyze stride text", ["analyze", "vgg16", "--stride", "big"], True),
        ("analyze patch too big", ["analyze", "vgg16", "--patch", "300"], True),
        ("analyze tau 0", ["analyze", "vgg16", "--tau", "0"], True),
        ("analyze tau nan", ["analyze", "vgg16", "--tau", "nan"], True),
        ("analyze image size 8", ["analyze", "vgg16", "--image-size", "8"], True),
        ("analyze no model", ["analyze"], True),
        ("analyze plot in missing folder",
         ["analyze", "vgg16", "--plot", os.path.join(TMP, "no", "p.png")], True),
        ("analyze plot onto a directory", ["analyze", "vgg16", "--plot", TMP], True),
        ("analyze plot .tiff", ["analyze", "vgg16", "--plot", _path("p.tiff")], True),
        ("analyze missing onnx", ["analyze", _path("none.onnx")], True),
        ("analyze garbage onnx", ["analyze", _path("g.onnx", b"xx")], True),
        ("analyze batch 0", ["analyze", "vgg16", "--batch-size", "0", "--mode", "executed"],
         True),
        ("occlude missing image", ["occlude", _path("none.png"), "--model", "demo_vgg"], True),
        ("occlude image is a directory", ["occlude", TMP, "--model", "demo_vgg"], True),
        ("occlude not an image", ["occlude", png, "--model", "demo_vgg"], True),
        ("occlude truncated weights", ["occlude", "x.png", "--model", "demo_vgg",
                                       "--weights", weights_cut], True),
        ("occlude unknown model", ["occlude", png, "--model", "nope"], True),
        ("occlude patch 0", ["occlude", png, "--model", "demo_vgg", "--patch", "0"], True),
        ("occlude device gpu", ["occlude", png, "--model", "demo_vgg", "--device", "gpu"], True),
        ("occlude out missing folder", ["occlude", png, "--model", "demo_vgg", "--out",
                                        os.path.join(TMP, "no", "o.png")], True),
        ("occlude save onto a directory", ["occlude", png, "--model", "demo_vgg", "--save",
                                           TMP], True),
        ("occlude both model and onnx", ["occlude", png, "--model", "demo_vgg", "--onnx",
                                         _path("g.onnx")], True),
        ("tune unknown model", ["tune", "nope", "--images", "demo"], True),
        ("tune missing folder", ["tune", "demo_vgg", "--images", _path("nowhere")], True),
        ("tune count 0", ["tune", "demo_vgg", "--images", "demo", "--count", "0"], True),
        ("tune target 2", ["tune", "demo_vgg", "--images", "demo", "--target", "2"], True),
        ("demo unknown model", ["demo", "--model", "nope"], True),
        ("demo out onto a directory", ["demo", "--out", TMP], True),
        ("no command", [], True),
        ("unknown command", ["explain"], True),
        ("models, good", ["models"], False),
        ("analyze, good", ["analyze", "alexnet", "--stride", "32"], False),
        ("help", ["--help"], False),
    ]
    return cases


def run_api(name, thunk, should_fail):
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            thunk()
    except WELL as err:
        message = str(err).strip()
        return should_fail and bool(message) and "\n" not in message.split("\n")[0] or False, \
            f"{type(err).__name__}: {message[:120]}"
    except Exception as err:   # noqa: BLE001 - the point is to classify
        return False, f"{type(err).__name__}: {str(err)[:120]}"
    return not should_fail, "returned"


def run_cli(name, argv, should_fail):
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(argv)
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except BaseException:   # noqa: BLE001 - a traceback reached the user
        return False, "traceback: " + traceback.format_exc().strip().splitlines()[-1][:120]
    text = err.getvalue().strip()
    if not should_fail:
        return code == 0, f"exit {code}"
    lines = [line for line in text.splitlines() if line.strip()]
    usage = [line for line in lines if not line.startswith("usage:") and not
             line.startswith(" ")]   # argparse prints its usage, then one error line
    ok = code not in (0, None) and "Traceback" not in text and len(usage) == 1
    return ok, f"exit {code}: {usage[-1][:120] if usage else '(nothing on stderr)'}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-v", action="store_true", help="print every case")
    args = parser.parse_args(argv)
    results = []
    for name, thunk, should_fail in api_cases():
        results.append(("api", name) + run_api(name, thunk, should_fail))
    for name, cli_argv, should_fail in cli_cases():
        results.append(("cli", name) + run_cli(name, cli_argv, should_fail))
    bad = [r for r in results if not r[2]]
    for kind, name, ok, detail in results:
        if args.v or not ok:
            print(f"{'ok ' if ok else 'BAD'} {kind} {name}: {detail}")
    print(f"{len(results) - len(bad)} of {len(results)} cases handled well "
          f"({sum(r[0] == 'api' for r in results)} API, {sum(r[0] == 'cli' for r in results)} "
          f"CLI)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
