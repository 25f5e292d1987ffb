"""Dev-only: every torchvision classification model through ONNX into kryptonref.

For each model: random weights with randomised batch-norm statistics, exported by
torch's TorchScript exporter at opset 17 (``dynamo=False``) at the given input size,
read with ``kryptonref.from_onnx``, its full inference compared with torch's (float32,
the largest difference relative to the largest output), and ``kryptonref.speedup``
at patch 16, stride 8 (exact, tau 0.5 and, where it applies, with frozen gates),
with the node where the region first becomes whole. Prints a Markdown table.

Needs torch and torchvision (a dev-only environment; not kryptonref dependencies):

    PYTHONPATH=. python tools/check_torchvision_onnx.py [--models a,b] [--size 224]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
import warnings

import numpy as np
import torch
import torchvision

import kryptonref as kr

#: Sizes the transformers need (their position embeddings fix the image size).
FIXED_SIZE = {"vit_b_16": 224, "vit_b_32": 224, "vit_l_16": 224, "vit_l_32": 224,
              "inception_v3": 299, "maxvit_t": 224}


def randomise(model, seed=0):
    """Random batch-norm statistics, and random values for the parameters torchvision
    initialises constant (ViT's zero head, layer scales), so that outputs differ."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.numel() > 1 and float(parameter.std()) == 0.0:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
        for name, buffer in model.named_buffers():
            if name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)
            elif name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.1)
    return model.eval()


def export(model, size, folder, dynamo=False):
    """The ONNX file (weights above 2 GB beside it, as external data), the input, torch's output.

    ``dynamo``: torch's dynamo exporter at opset 18 (needs onnxscript) instead of the
    TorchScript exporter at opset 17."""
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    path = os.path.join(folder, "model.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, x, path, dynamo=dynamo, opset_version=18 if dynamo else 17,
                          input_names=["x"], output_names=["y"])
    with torch.no_grad():
        y = model(x).numpy()
    return path, x.numpy(), y


def check(name, size, dynamo=False):
    model = randomise(torchvision.models.get_model(name, weights=None))
    size = FIXED_SIZE.get(name, size)
    with tempfile.TemporaryDirectory() as folder:
        path, x, want = export(model, size, folder, dynamo)
        del model
        imported = kr.from_onnx(path)
    got = imported.forward(x)
    error = float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-30))
    row = {"model": name, "size": size, "nodes": len(imported.graph), "error": error}
    for key, kwargs in (("exact", {}), ("tau", {"tau": 0.5}),
                        ("frozen", {"freeze_context": True})):
        report = kr.speedup(imported, 16, 8, **kwargs)
        row[key] = report.speedup
        if key == "exact":
            row["whole"] = (report.first_whole, report.why_whole)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default=None, help="comma-separated (default: all)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("-v", action="store_true", help="print tracebacks")
    parser.add_argument("--dynamo", action="store_true",
                        help="torch's dynamo exporter (opset 18; needs onnxscript)")
    args = parser.parse_args(argv)
    names = args.models.split(",") if args.models else \
        torchvision.models.list_models(module=torchvision.models)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"kryptonref {kr.__version__}, "
          f"{'dynamo exporter, opset 18' if args.dynamo else 'TorchScript exporter, opset 17'}")
    print("| model | px | nodes | max rel. diff vs torch | speedup exact | tau 0.5 | "
          "frozen gates | first whole node |")
    print("|---|---|---|---|---|---|---|---|")
    failures = 0
    for name in names:
        start = time.perf_counter()
        try:
            row = check(name, args.size, args.dynamo)
        except Exception as exc:  # report and go on
            failures += 1
            message = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
            print(f"| {name} | | | FAILED: {message} | | | | |", flush=True)
            if "-v" in sys.argv:
                traceback.print_exc()
            continue
        first, why = row["whole"]
        print(f"| {name} | {row['size']} | {row['nodes']} | {row['error']:.1e} | "
              f"{row['exact']:.2f}x | {row['tau']:.2f}x | {row['frozen']:.2f}x | "
              f"{first} ({why}) |  <!-- {time.perf_counter() - start:.0f} s -->", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
