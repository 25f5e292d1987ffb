"""Dev-only: export torchvision's building blocks to small ONNX fixtures for the tests.

Needs torch and torchvision (not kryptonref dependencies). Writes, for each block,
``tests/fixtures/onnx/<name>.onnx`` (exported by torch's TorchScript exporter at
opset 17, random weights and batch-norm statistics) and ``<name>.npz`` holding a
fixed input ``x`` and torch's output ``y`` (float32), so that
``tests/test_modern_blocks.py`` compares kryptonref with torch without torch.

    python tools/export_onnx_fixtures.py            # (re)write every fixture
"""
from __future__ import annotations

import io
import os
import warnings

import numpy as np
import torch
from torch import nn
from torchvision.models import convnext, efficientnet, mobilenetv3, shufflenetv2
from torchvision.ops import SqueezeExcitation

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "onnx")


def randomise(module, seed):
    """Random weights, batch-norm statistics and layer scales (eval mode)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if tensor.dtype.is_floating_point:
                if name.endswith("running_var"):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
                else:
                    tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)
    return module.eval()


class Block(nn.Module):
    """A block with a head, so that the fixture ends in class scores (as occlusion needs)."""

    def __init__(self, body, channels, classes=5):
        super().__init__()
        self.body = body
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.body(x)), 1))


def blocks():
    """name -> (module, input shape (C, H, W))."""
    cnf = efficientnet.MBConvConfig(4, 3, 1, 8, 8, 1, width_mult=1.0, depth_mult=1.0)
    fused = efficientnet.FusedMBConvConfig(4, 3, 2, 8, 16, 1)
    v3 = mobilenetv3.InvertedResidualConfig(8, 3, 24, 8, True, "HS", 1, 1, 1.0)
    return {
        "se_block": (Block(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1),
                                         SqueezeExcitation(8, 2)), 8), (3, 12, 11)),
        "mbconv": (Block(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1),
                                       efficientnet.MBConv(cnf, 0.0, nn.BatchNorm2d)), 8),
                   (3, 12, 12)),
        "fused_mbconv": (Block(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1),
                                             efficientnet.FusedMBConv(fused, 0.0,
                                                                      nn.BatchNorm2d)), 16),
                         (3, 12, 12)),
        "mobilenet_v3_block": (Block(nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), mobilenetv3.InvertedResidual(v3, nn.BatchNorm2d)),
            8), (3, 11, 12)),
        "convnext_block": (Block(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1),
                                               convnext.CNBlock(8, 0.5, 0.0)), 8), (3, 14, 13)),
        "shufflenet_unit": (Block(nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), shufflenetv2.InvertedResidual(8, 8, 1),
            shufflenetv2.InvertedResidual(8, 16, 2)), 16), (3, 12, 12)),
        "activations": (Block(nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 8, 1), nn.SiLU(),
            nn.Conv2d(8, 8, 1), nn.Mish(), nn.Conv2d(8, 8, 1), nn.GELU(approximate="tanh"),
            nn.Conv2d(8, 8, 1), nn.ELU(0.7), nn.Conv2d(8, 8, 1), nn.PReLU(8),
            nn.Conv2d(8, 8, 1), nn.Hardtanh(-0.5, 1.5), nn.Conv2d(8, 8, 1), nn.Softplus(),
            nn.Conv2d(8, 8, 1), nn.Tanh()), 8), (3, 10, 9)),
    }


def export(module, shape):
    x = torch.randn((2,) + tuple(shape), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = module(x)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, x[:1], buffer, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return buffer.getvalue(), x.numpy(), y.numpy()


def main():
    os.makedirs(OUT, exist_ok=True)
    for seed, (name, (module, shape)) in enumerate(blocks().items()):
        data, x, y = export(randomise(module, seed), shape)
        with open(os.path.join(OUT, f"{name}.onnx"), "wb") as f:
            f.write(data)
        np.savez(os.path.join(OUT, f"{name}.npz"), x=x, y=y)
        print(f"{name}: {len(data) / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
