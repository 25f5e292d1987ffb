#!/usr/bin/env python
"""Dev-only check: torchvision -> ``torch.onnx.export`` -> ``kryptonref.from_onnx``.

For each torchvision model named (default: resnet18, vgg16, mobilenet_v2), build it
with ``weights=None`` in eval mode, randomise its batch-norm statistics and affine
parameters (so that batch norm is not the identity), export it with
``torch.onnx.export`` (dynamic batch axis, opset 17), import the file with
``kryptonref.from_onnx`` and compare kryptonref's float32 output with torch's on
the same random batch (rtol 1e-4, atol 1e-5 times the largest logit), and with
onnxruntime's where it is installed. It then runs a few occlusion positions
incrementally on the imported model and checks them against full inference on
the occluded images.

``--exporter legacy`` (default) uses the TorchScript exporter (``dynamo=False``,
opset 17); ``--exporter dynamo`` the ``torch.export``-based one (needs onnxscript;
opset 18, its lowest); ``both`` runs each. torch and torchvision are NOT
dependencies of kryptonref or of its tests; run this from an environment that has
them, with kryptonref importable::

    /tmp/tvenv/bin/pip install onnx onnxruntime       # once (+ onnxscript for dynamo)
    PYTHONPATH=. /tmp/tvenv/bin/python tools/check_onnx_torch.py
    PYTHONPATH=. /tmp/tvenv/bin/python tools/check_onnx_torch.py resnet50 vgg11_bn --size 224
    PYTHONPATH=. /tmp/tvenv/bin/python tools/check_onnx_torch.py --exporter both

VGG and AlexNet need an input size at which their ``AdaptiveAvgPool2d`` is exact
in ONNX: 224 px for VGG (7x7 features; at 32 px the legacy exporter refuses the
pooling and the dynamo exporter writes it with Transpose, which kryptonref does
not import). Models with HardSwish/HardSigmoid (mobilenet_v3) are not supported.
The exit status is 1 if any model fails.
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

DEFAULT_MODELS = ("resnet18", "vgg16", "mobilenet_v2")
TV_KWARGS = {
    "googlenet": dict(aux_logits=False, transform_input=False, init_weights=True),
    "inception_v3": dict(aux_logits=False, transform_input=False, init_weights=True),
}


def build_torch(name, seed):
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None, **TV_KWARGS.get(name, {}))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(c, generator=gen) * 0.1)
    return model.eval()


def export(model, x, path, exporter, opset):
    import torch

    kwargs = dict(input_names=["input"], output_names=["logits"], opset_version=opset)
    if exporter == "legacy":
        kwargs.update(dynamo=False, dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    else:
        batch = torch.export.Dim("N", min=1, max=1024)
        kwargs.update(dynamo=True, dynamic_shapes=({0: batch},), external_data=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), path, **kwargs)


def op_histogram(path):
    import onnx

    counts = {}
    for node in onnx.load(path, load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def check(name, size, exporter, opset, seed, batch, rtol, atol, workdir):
    import torch

    import kryptonref as kr

    model = build_torch(name, seed)
    x = torch.from_numpy(np.random.default_rng(seed).normal(
        size=(batch, 3, size, size)).astype(np.float32))
    with torch.no_grad():
        want = model(x).numpy()
    path = os.path.join(workdir, f"{name}_{exporter}.onnx")
    t0 = time.perf_counter()
    export(model, x, path, exporter, opset)
    t_export = time.perf_counter() - t0
    ops = op_histogram(path)

    t0 = time.perf_counter()
    ours = kr.from_onnx(path)
    t_import = time.perf_counter() - t0
    got = ours.forward(x.numpy())
    scale = float(np.abs(want).max())
    diff = float(np.abs(got - want).max())
    ok = got.shape == want.shape and np.allclose(got, want, rtol=rtol, atol=atol * scale)
    lines = [f"  ONNX ops: {ops}",
             f"  kryptonref graph: {len(ours.graph)} nodes, input {ours.graph.input_shape}, "
             f"export {t_export:.1f} s, import {t_import:.1f} s",
             f"  torch vs kryptonref: max |diff| {diff:.3g} (max |logit| {scale:.3g})"]
    try:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        theirs = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        d_ort = float(np.abs(theirs - got).max())
        ok &= np.allclose(got, theirs, rtol=rtol, atol=atol * scale)
        lines.append(f"  onnxruntime vs kryptonref: max |diff| {d_ort:.3g}")
    except ImportError:
        lines.append("  (onnxruntime not installed: skipped)")

    # Occlusion: a few patch positions incrementally vs full inference on occluded images.
    image = x.numpy()[0]
    patch = max(8, size // 14)
    positions = kr.patch_positions((size, size), patch=patch, stride=size // 3)[:4]
    inc = kr.incremental_inference(ours, image, positions, patch=patch, fill=0.0)
    occluded = np.repeat(image[None], len(positions), axis=0)
    for k, (r, c) in enumerate(positions):
        occluded[k, :, r:r + patch, c:c + patch] = 0.0
    full = ours.forward(occluded)
    d_inc = float(np.abs(inc.output - full).max())
    ok &= np.allclose(inc.output, full, rtol=rtol, atol=atol * float(np.abs(full).max()))
    lines.append(f"  incremental vs full on {len(positions)} occluded images "
                 f"(patch {patch}): max |diff| {d_inc:.3g}")
    return ok, lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=list(DEFAULT_MODELS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--exporter", choices=("legacy", "dynamo", "both"), default="legacy")
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset (default: 17 legacy, 18 dynamo, its lowest)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rtol", type=float, default=1e-4)
    parser.add_argument("--atol", type=float, default=1e-5,
                        help="absolute tolerance, relative to the largest logit")
    args = parser.parse_args(argv)
    import torch

    import kryptonref
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"torch {torch.__version__}, kryptonref from {os.path.dirname(kryptonref.__file__)}")
    exporters = ("legacy", "dynamo") if args.exporter == "both" else (args.exporter,)
    failed = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models:
            for exporter in exporters:
                opset = args.opset or (17 if exporter == "legacy" else 18)
                print(f"{name} at {args.size} px, {exporter} exporter, opset {opset}:")
                try:
                    ok, lines = check(name, args.size, exporter, opset, args.seed,
                                      args.batch, args.rtol, args.atol, workdir)
                except Exception:  # report and go on with the next model
                    ok, lines = False, ["  " + line for line in
                                        traceback.format_exc().strip().splitlines()[-6:]]
                print("\n".join(lines))
                print(f"  -> {'OK' if ok else 'FAIL'}", flush=True)
                if not ok:
                    failed.append(f"{name} ({exporter})")
    print(f"{len(failed)} failed: {', '.join(failed)}" if failed else "all OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
