"""Dev-only: ``kr.from_torch`` on torchvision's own models, compared with torch.

For each model: random weights with randomised batch-norm statistics
(``check_torchvision_onnx.randomise``), ``kr.from_torch(module, (3, S, S))`` timed,
its full inference on a seeded batch of two compared with torch's (float32, the largest
difference relative to the largest output), and, in float64, ``kryptonref.captum.Occlusion``
against ``captum.attr.Occlusion`` (when captum is installed) on the model as torchvision
initialises it (batch-norm statistics 0 and 1: with randomised statistics mobilenet_v2's
output does not react to occlusion at all, its attributions are 0 up to rounding). Prints
a Markdown table.

Needs torch and torchvision (a dev-only environment, e.g. ``pip install torch==2.14.1
torchvision==0.29.1``; not kryptonref dependencies):

    PYTHONPATH=. python tools/check_from_torch.py [--models resnet18,mobilenet_v2] [--size 224]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torchvision

import kryptonref as kr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_torchvision_onnx import randomise  # noqa: E402


def output_error(model, imported, size):
    """Largest |kryptonref - torch| over the largest |torch| output, float32, batch of 2."""
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x).numpy()
    got = imported.forward(x.numpy())
    return float(np.abs(got - want).max() / np.abs(want).max())


def captum_error(name, size, window):
    """(largest attribution difference, largest attribution), float64, or None."""
    try:
        from captum.attr import Occlusion as CaptumOcclusion
    except ImportError:
        return None
    from kryptonref.captum import Occlusion
    model = torchvision.models.get_model(name, weights=None).eval().double()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2),
                    dtype=torch.float64)
    settings = dict(sliding_window_shapes=(3, window, window), strides=(3, window, window),
                    target=0, baselines=0.0, perturbations_per_eval=16)
    want = CaptumOcclusion(model).attribute(x, **settings).double()
    got = Occlusion(model).attribute(x, **settings)
    return float((got - want).abs().max()), float(want.abs().max())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--window", type=int, default=16,
                        help="Captum comparison window and stride (default 16)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{args.size} px, random weights, randomised batch-norm statistics")
    print("| model | from_torch | nodes | float32 outputs vs torch (/ max) | "
          "float64 attributions vs Captum (/ max) |")
    print("|---|---|---|---|---|")
    for name in args.models.split(","):
        model = randomise(torchvision.models.get_model(name, weights=None))
        start = time.perf_counter()
        imported = kr.from_torch(model, (3, args.size, args.size))
        seconds = time.perf_counter() - start
        error = output_error(model, imported, args.size)
        attribution = captum_error(name, args.size, args.window)
        if attribution is None:
            shown = "captum not installed"
        else:
            diff, largest = attribution
            shown = (f"{diff / largest:.1e}" if largest > 0 else
                     f"all attributions 0 in both (difference {diff:.1e})")
        print(f"| {name} | {seconds:.1f} s | {len(imported.graph)} | {error:.1e} | {shown} |",
              flush=True)


if __name__ == "__main__":
    main()
