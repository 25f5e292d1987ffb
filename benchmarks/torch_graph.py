"""A PyTorch executor of a kryptonref graph (the cuDNN baseline of ``occlusion_gpu.py``).

``TorchGraph(model, device)`` copies ``model.params`` to torch tensors once and
runs full inference with ``torch.nn.functional`` ops, walking ``graph.order``
and releasing each value after its last consumer (as ``Model.run_on`` does).
Asymmetric padding is applied with ``F.pad`` before the op (``-inf`` for max
pooling); ceil mode is torch's own (kryptonref's semantics are PyTorch's). Not a
dependency of kryptonref: only the benchmark imports it, and only when torch is
installed.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import kryptonref as kr

__all__ = ["TorchGraph", "configure_fp32"]


def configure_fp32(benchmark=False):
    """Strict fp32 (TF32 off); cuDNN autotuning only when ``benchmark`` is true.

    ``benchmark=False`` is PyTorch's default (what a Captum user runs: cuDNN's
    heuristics pick each convolution's algorithm); ``benchmark=True`` times the
    algorithms once per input shape and keeps the fastest (autotuned). The flag is
    read at each convolution, so it may be toggled between measurements.
    """
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = bool(benchmark)


def _symmetric(padding):
    (top, bottom), (left, right) = padding
    return (top, left) if top == bottom and left == right else None


def _padded(x, padding, value=0.0):
    """``x`` with ``padding`` applied by ``F.pad`` (used when it is asymmetric)."""
    (top, bottom), (left, right) = padding
    return F.pad(x, (left, right, top, bottom), value=value)


class TorchGraph:
    """Full inference of ``model`` (a kryptonref Model) with torch functional ops."""

    def __init__(self, model, device="cuda", nodes=None):
        """``nodes``: copy only these nodes' weights (to call :meth:`op` on them alone)."""
        self.graph = model.graph
        self.device = torch.device(device)
        self.params = {
            name: {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)).to(self.device)
                   for k, v in model.params.get(name, {}).items()}
            for name in (self.graph.order if nodes is None else nodes)}
        self.consumers = {n: len(users) for n, users in self.graph.consumers().items()}

    def __call__(self, x):
        graph = self.graph
        values = {graph.input_name: x}
        remaining = dict(self.consumers)
        for name in graph.order:
            node = graph.nodes[name]
            values[name] = self.op(name, node.layer, [values[i] for i in node.inputs])
            for src in node.inputs:
                remaining[src] -= 1
                if remaining[src] == 0 and src != graph.output:
                    del values[src]
        return values[graph.output]

    def _crop(self, name, y):
        """Crop to the graph's shape (``F.pad`` + ceil mode may add a trailing row/column)."""
        h, w = self.graph.shapes[name][1:]
        if y.shape[2] < h or y.shape[3] < w:
            raise RuntimeError(f"torch output of {name!r} is {tuple(y.shape[1:])}, "
                               f"expected {self.graph.shapes[name]}")
        return y[:, :, :h, :w]

    def op(self, name, layer, xs):  # noqa: C901 - one branch per layer type
        """Node ``name`` (its spec ``layer``) applied to its input tensors ``xs``."""
        p = self.params[name]
        x = xs[0]
        if isinstance(layer, kr.Conv2d):
            pad = _symmetric(layer.padding)
            if pad is None:
                x, pad = _padded(x, layer.padding), 0
            return F.conv2d(x, p["weight"], p.get("bias"), layer.stride, pad, layer.dilation,
                            layer.groups)
        if isinstance(layer, kr.MaxPool2d):
            pad = _symmetric(layer.padding)
            if pad is None:
                x, pad = _padded(x, layer.padding, float("-inf")), 0
            y = F.max_pool2d(x, layer.kernel_size, layer.stride, pad, layer.dilation,
                             ceil_mode=layer.ceil_mode)
            return self._crop(name, y)
        if isinstance(layer, kr.AvgPool2d):
            pad = _symmetric(layer.padding)
            if pad is None:
                if not layer.count_include_pad:
                    raise ValueError(f"{name}: the PyTorch baseline has no asymmetric "
                                     f"padding without count_include_pad")
                x, pad = _padded(x, layer.padding), 0
            y = F.avg_pool2d(x, layer.kernel_size, layer.stride, pad, layer.ceil_mode,
                             layer.count_include_pad)
            return self._crop(name, y)
        if isinstance(layer, kr.GlobalAvgPool2d):
            return x.mean(dim=(2, 3), keepdim=True)
        if isinstance(layer, kr.AdaptiveAvgPool2d):
            return F.adaptive_avg_pool2d(x, layer.output_size)
        if isinstance(layer, kr.ReLU):
            return F.relu(x)
        if isinstance(layer, kr.ReLU6):
            return F.relu6(x)
        if isinstance(layer, kr.Dropout):
            return x
        if isinstance(layer, kr.BatchNorm2d):
            return F.batch_norm(x, p["running_mean"], p["running_var"], p["weight"], p["bias"],
                                training=False, eps=layer.eps)
        if isinstance(layer, kr.Flatten):
            return torch.flatten(x, 1)
        if isinstance(layer, kr.Linear):
            return F.linear(x, p["weight"], p.get("bias"))
        if isinstance(layer, kr.Softmax):
            return F.softmax(x, dim=1)
        if isinstance(layer, kr.Add):
            out = xs[0] + xs[1]
            for other in xs[2:]:
                out = out + other
            return out
        if isinstance(layer, kr.Concat):
            return torch.cat(xs, dim=1)
        raise ValueError(f"{name}: the PyTorch baseline has no op for {type(layer).__name__}")
