"""Captum's Occlusion against kryptonref.captum.Occlusion on the same torch modules.

What is measured
----------------
Per model, one image ``(1, 3, S, S)`` (seeded normal values), the predicted class as
target, baseline 0, windows ``(3, P, P)`` at stride ``(3, s, s)`` and
``perturbations_per_eval=16`` (``--ppe``), both in this process:

- ``captum.attr.Occlusion(module).attribute(...)`` under ``torch.no_grad()``: one
  forward pass per batch of occluded images (PyTorch's CPU kernels, oneDNN);
- ``kryptonref.captum.Occlusion(module).attribute(...)``, the same call: the module is
  converted once by ``kr.from_torch`` (timed apart, with Numba's first compilations,
  as "first call"), then each call runs ``kr.occlusion``'s incremental inference.

Both are the best of ``--repeat`` calls, made in alternation (a slow spell of a shared
machine falls on both); the script prints both times, the ratio
(Captum / kryptonref) and the largest attribution difference relative to the largest
Captum attribution (``diff/attr``) and to the target's score (``diff/score``): an
attribution is a difference of two float32 scores, so where occlusion barely moves the
score (random weights, large patches) float32 rounding of the scores (~1e-7 of them) is
a larger share of the attributions. Models (float32, seeded random weights, batch-norm statistics
random), built by hand in torchvision's layouts because torchvision's wheels cannot be
imported beside the CPU build of torch here (``DESIGN.md`` section 8):

- ``vgg16``: torchvision's VGG16 (stride 16 by default: 196 windows at 224 px);
- ``resnet18``: torchvision's ResNet18 (stride 8: 729 windows);
- ``convnext``: a ConvNeXt-style model (torchvision's ConvNeXt-T blocks: 7x7 depthwise
  conv, channels-last LayerNorm and MLP, layer scale; stages of depth 1, 1, 3, 1 and
  widths 96-768; stride 8).

Usage::

    python3 benchmarks/captum.py                             # the three models at 224 px
    python3 benchmarks/captum.py --models resnet18 --size 64 --stride 16 --repeat 1  # smoke
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

import numpy as np

# This file is named captum.py: its folder leaves sys.path so that `import captum` finds
# Captum, and the shared helpers are loaded from their file.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
_spec = importlib.util.spec_from_file_location("_bench_common", os.path.join(_HERE, "common.py"))
_common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_common)
best_of_interleaved, machine_info = _common.best_of_interleaved, _common.machine_info

DEFAULT_STRIDE = {"vgg16": 16, "resnet18": 8, "convnext": 8}


def _torch():
    import torch
    from torch import nn
    return torch, nn


def vgg16(classes=1000):
    """torchvision's vgg16 layout (features, avgpool 7x7, classifier)."""
    torch, nn = _torch()
    layers, c = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v
    net = nn.Sequential()
    net.features = nn.Sequential(*layers)
    net.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    net.flatten = nn.Flatten()
    net.classifier = nn.Sequential(nn.Linear(512 * 49, 4096), nn.ReLU(True), nn.Dropout(),
                                   nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
                                   nn.Linear(4096, classes))
    return net


def resnet18(classes=1000):
    """torchvision's resnet18 layout (BasicBlock, [2, 2, 2, 2])."""
    torch, nn = _torch()

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                nn.BatchNorm2d(cout))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            widths, cin, stages = (64, 128, 256, 512), 64, []
            for i, w in enumerate(widths):
                stages.append(nn.Sequential(Block(cin, w, 1 if i == 0 else 2), Block(w, w, 1)))
                cin = w
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet18()


def convnext(classes=1000, depths=(1, 1, 3, 1), dims=(96, 192, 384, 768)):
    """ConvNeXt-T's blocks (torchvision's CNBlock and LayerNorm2d), shallower stages."""
    torch, nn = _torch()
    F = torch.nn.functional

    class LayerNorm2d(nn.LayerNorm):
        def forward(self, x):
            x = x.permute(0, 2, 3, 1)
            x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
            return x.permute(0, 3, 1, 2)

    class Permute(nn.Module):
        def __init__(self, dims):
            super().__init__()
            self.dims = dims

        def forward(self, x):
            return torch.permute(x, self.dims)

    class CNBlock(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 0.5))
            self.block = nn.Sequential(
                nn.Conv2d(dim, dim, 7, padding=3, groups=dim), Permute([0, 2, 3, 1]),
                nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4 * dim), nn.GELU(),
                nn.Linear(4 * dim, dim), Permute([0, 3, 1, 2]))

        def forward(self, x):
            return self.layer_scale * self.block(x) + x

    layers = [nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6))]
    for i, (depth, dim) in enumerate(zip(depths, dims)):
        layers.append(nn.Sequential(*[CNBlock(dim) for _ in range(depth)]))
        if i + 1 < len(dims):
            layers.append(nn.Sequential(LayerNorm2d(dim, eps=1e-6),
                                        nn.Conv2d(dim, dims[i + 1], 2, 2)))
    net = nn.Sequential()
    net.features = nn.Sequential(*layers)
    net.avgpool = nn.AdaptiveAvgPool2d(1)
    net.classifier = nn.Sequential(LayerNorm2d(dims[-1], eps=1e-6), nn.Flatten(1),
                                   nn.Linear(dims[-1], classes))
    return net


BUILDERS = {"vgg16": vgg16, "resnet18": resnet18, "convnext": convnext}


def build(name, seed=0):
    """The model with seeded weights, random batch-norm statistics, in eval mode."""
    torch, nn = _torch()
    torch.manual_seed(seed)
    net = BUILDERS[name]()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def bench(name, args):
    import torch
    from captum.attr import Occlusion as CaptumOcclusion

    from kryptonref.captum import Occlusion

    module = build(name)
    size, patch = args.size, args.patch
    stride = args.stride or DEFAULT_STRIDE[name]
    x = torch.randn((1, 3, size, size), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        scores = module(x)[0]
    target = int(scores.argmax())
    kwargs = dict(sliding_window_shapes=(3, patch, patch), strides=(3, stride, stride),
                  target=target, baselines=0, perturbations_per_eval=args.ppe)
    windows = (-(-(size - patch) // stride) + 1) ** 2

    def run_captum():
        with torch.no_grad():
            return CaptumOcclusion(module).attribute(x, **kwargs)

    ours = Occlusion(module)
    start = time.perf_counter()
    ours.attribute(x, **kwargs)
    first = time.perf_counter() - start
    (t_ours, a_ours), (t_captum, a_captum) = best_of_interleaved(
        [lambda: ours.attribute(x, **kwargs), run_captum], args.repeat)
    theirs = a_captum.double().numpy()
    diff = float(np.abs(a_ours.double().numpy() - theirs).max())
    return dict(model=name, size=size, patch=patch, stride=stride, windows=windows,
                captum=t_captum, kryptonref=t_ours, first=first, ratio=t_captum / t_ours,
                diff=diff / np.abs(theirs).max(), diff_score=diff / abs(float(scores[target])))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="vgg16,resnet18,convnext",
                   help="comma-separated: vgg16, resnet18, convnext")
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--stride", type=int, default=None,
                   help="default: 16 for vgg16, 8 for resnet18 and convnext")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--ppe", type=int, default=16, help="perturbations_per_eval (16)")
    p.add_argument("--repeat", type=int, default=1, help="best of N calls (1)")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(BUILDERS))
    if unknown:
        p.error(f"unknown models {unknown}; known: {sorted(BUILDERS)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    import torch
    import captum
    machine_info()
    print(f"torch {torch.__version__} (threads {torch.get_num_threads()})  "
          f"captum {captum.__version__}")
    print(f"patch {args.patch}, perturbations_per_eval {args.ppe}, size {args.size}, "
          f"best of {args.repeat}; first call = from_torch + Numba compilation")
    header = (f"{'model':<10}{'stride':>7}{'windows':>9}{'captum s':>11}{'kryptonref s':>14}"
              f"{'ratio':>8}{'first call s':>14}{'diff/attr':>11}{'diff/score':>11}")
    print(header)
    for name in args.models:
        r = bench(name, args)
        print(f"{r['model']:<10}{r['stride']:>7}{r['windows']:>9}{r['captum']:>11.2f}"
              f"{r['kryptonref']:>14.2f}{r['ratio']:>7.2f}x{r['first']:>14.2f}"
              f"{r['diff']:>11.1e}{r['diff_score']:>11.1e}", flush=True)


if __name__ == "__main__":
    main()
