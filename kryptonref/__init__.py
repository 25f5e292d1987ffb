"""kryptonref: a reference implementation of KRYPTON's incremental and approximate
CNN inference for occlusion-based explanations (Nakandala & Kumar).

Public API
----------
Graph, layer specs     describe an architecture (the model IR)
Model                  a graph with weights; ``forward`` runs full inference
incremental_inference  outputs for many occlusion positions, computed incrementally
patch_positions        the grid of patch positions for a patch size and stride
geometry               per-axis changed-region rules (paper eq. 1-8, generalised)
zoo, zoo_names         torchvision-identical architectures (AlexNet ... Inception v3)
occlusion              heatmaps and Captum-compatible attributions (Algorithm 2);
                       mode="approximate": tau and adaptive drill-down
tune_tau               pick tau for a target heatmap SSIM (the paper's quadratic fit)
tune_drilldown         pick drill-down's coarse stride and r_drill for a target SSIM
images                 load_image: PNG/JPEG -> normalised (3, H, W) array (needs Pillow)
speedup                the cost simulator: theoretical speedup per layer and position
from_onnx, to_onnx     ONNX import and export (extra ``kryptonref[onnx]``)
from_torch             a PyTorch ``nn.Module`` via in-memory ONNX (extra ``kryptonref[torch]``)
captum                 ``kryptonref.captum.Occlusion``: Captum's Occlusion API (submodule)
runtime                process-wide performance settings, applied by the entry points
explain_many           many images on Dask into a resumable Zarr store (extra ``kryptonref[dask]``);
                       store_info, load_result read the store

Importing kryptonref changes nothing in the host process and loads its
modules on first use of a name (PEP 562), so ``import kryptonref`` is cheap and
the ``kryptonref`` command can set what must precede NumPy
(:mod:`kryptonref.runtime`).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: Public name -> the module defining it.
_EXPORTS = {
    "Graph": "graph", "Node": "graph", "Model": "model",
    "incremental_inference": "engine", "IncrementalResult": "engine",
    "patch_positions": "engine", "Occluder": "engine",
    "occlusion": "explain", "OcclusionResult": "explain",
    "zoo": "models.zoo", "zoo_names": "models.zoo",
    "from_onnx": "models.onnx_import", "to_onnx": "models.onnx_export",
    "from_torch": "models.torch_io",
    "speedup": "analysis.cost", "SpeedupReport": "analysis.cost",
    "tune_tau": "tuning", "TauTuning": "tuning", "tune_drilldown": "tuning",
    "DrilldownTuning": "tuning",
    "explain_many": "many", "ManySummary": "many", "local_cluster": "cluster",
    "store_info": "store", "load_result": "store",
    "Conv2d": "layers", "MaxPool2d": "layers", "AvgPool2d": "layers",
    "GlobalAvgPool2d": "layers", "AdaptiveAvgPool2d": "layers", "ReLU": "layers",
    "ReLU6": "layers", "LeakyReLU": "layers", "BatchNorm2d": "layers", "Dropout": "layers",
    "Flatten": "layers", "Linear": "layers", "Softmax": "layers", "Add": "layers",
    "Concat": "layers", "Mul": "layers",
    "Sigmoid": "layers",
    "HardSigmoid": "layers",
    "HardSwish": "layers",
    "SiLU": "layers",
    "GELU": "layers",
    "ELU": "layers",
    "Tanh": "layers",
    "Softplus": "layers",
    "Mish": "layers",
    "Erf": "layers",
    "Clip": "layers",
    "Power": "layers",
    "PReLU": "layers",
    "Arithmetic": "layers",
    "LayerNorm2d": "layers",
    "ChannelLinear": "layers",
    "ChannelSlice": "layers",
    "ChannelShuffle": "layers",
    "TensorOp": "layers",
}
#: Public submodules.
_MODULES = ("geometry", "images", "layers", "models", "analysis", "schedule", "engine",
            "explain", "runtime", "backends", "datasets", "validate", "many", "store", "cluster",
            "captum")

__all__ = sorted(_EXPORTS) + ["geometry", "images", "runtime", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'kryptonref' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_MODULES))


if TYPE_CHECKING:  # pragma: no cover - what the names above resolve to, for type checkers
    from typing import Any

    # ``X as X``: re-exported explicitly (the package is checked with no_implicit_reexport).
    from . import (analysis as analysis, backends as backends, datasets as datasets,
                   engine as engine, geometry as geometry, images as images,
                   layers as layers, models as models)
    from . import runtime as runtime, schedule as schedule, validate as validate
    from . import explain as explain
    from . import captum as captum
    from .analysis.cost import SpeedupReport as SpeedupReport, speedup as speedup
    from .engine import (IncrementalResult as IncrementalResult, Occluder as Occluder,
                         incremental_inference as incremental_inference,
                         patch_positions as patch_positions)
    from .graph import Graph as Graph, Node as Node
    from .layers import (Add as Add, AdaptiveAvgPool2d as AdaptiveAvgPool2d,
                         AvgPool2d as AvgPool2d, BatchNorm2d as BatchNorm2d,
                         Concat as Concat, Conv2d as Conv2d, Dropout as Dropout,
                         Flatten as Flatten, GlobalAvgPool2d as GlobalAvgPool2d,
                         LeakyReLU as LeakyReLU, Linear as Linear, MaxPool2d as MaxPool2d,
                         ReLU as ReLU, ReLU6 as ReLU6, Softmax as Softmax, Mul as Mul,
                         Sigmoid as Sigmoid, HardSigmoid as HardSigmoid,
                         HardSwish as HardSwish, SiLU as SiLU, GELU as GELU, ELU as ELU,
                         Tanh as Tanh, Softplus as Softplus, Mish as Mish, Erf as Erf,
                         Clip as Clip, Power as Power, PReLU as PReLU,
                         Arithmetic as Arithmetic, LayerNorm2d as LayerNorm2d,
                         ChannelLinear as ChannelLinear, ChannelSlice as ChannelSlice,
                         ChannelShuffle as ChannelShuffle, TensorOp as TensorOp)
    from .model import Model as Model
    from .models.onnx_export import to_onnx as to_onnx
    from .models.onnx_import import from_onnx as from_onnx
    from .models.torch_io import from_torch as from_torch
    from .models.zoo import zoo as zoo, zoo_names as zoo_names
    from .explain import OcclusionResult as OcclusionResult, occlusion as occlusion
    from .tuning import (DrilldownTuning as DrilldownTuning, TauTuning as TauTuning,
                         tune_drilldown as tune_drilldown, tune_tau as tune_tau)
    from . import cluster as cluster, many as many, store as store
    from .cluster import local_cluster as local_cluster
    from .many import ManySummary as ManySummary, explain_many as explain_many
    from .store import load_result as load_result, store_info as store_info
