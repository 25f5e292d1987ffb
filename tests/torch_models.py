"""Small PyTorch modules for the from_torch and Captum tests (import only where torch is).

Each builder returns a module in eval mode with seeded weights; ``batch_norm``
statistics are random so that an import which ignored them would be caught.
"""
from __future__ import annotations

import torch
from torch import nn


def _seeded(module, seed, dtype):
    torch.manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return module.to(dtype).eval()


def chain(channels=3, classes=5, dtype=torch.float32, seed=0):
    """Conv, ReLU, max pool, conv, average pool, flatten, dense head (a small VGG)."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(channels, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(3),
        nn.Flatten(), nn.Linear(32, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, classes))
    return _seeded(net, seed, dtype)


class Residual(nn.Module):
    """A ResNet basic block stack: conv-BN-ReLU stem, one residual block, GAP, dense."""

    def __init__(self, channels=3, classes=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, 8, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(8), nn.ReLU())
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        x = self.stem(x)
        y = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(y)) + x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def residual(channels=3, classes=4, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return _seeded(Residual(channels, classes), seed, dtype)


def one_output(dtype=torch.float32, seed=0):
    """A regressor with one output per example (target=None is allowed)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 1))
    return _seeded(net, seed, dtype)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x, y):
        return self.conv(x) + self.conv(y)


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x):
        y = torch.flatten(self.conv(x), 1)
        return y, y


class Unsupported(nn.Module):
    """A chain with an operator kryptonref does not import (a cumulative sum)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.head = nn.Linear(2, 3)

    def forward(self, x):
        x = torch.cumsum(self.conv(x), dim=3)
        return self.head(x.mean(dim=(2, 3)))

