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
"""
from . import _openblas  # noqa: F401  (first: before NumPy loads OpenBLAS)
from . import geometry, images
from .engine import IncrementalResult, incremental_inference, patch_positions
from .graph import Graph, Node
from .layers import (Add, AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Concat, Conv2d, Dropout,
                     Flatten, GlobalAvgPool2d, Linear, MaxPool2d, ReLU, ReLU6, Softmax)
from .model import Model
from .analysis import SpeedupReport, speedup
from .models.zoo import zoo, zoo_names
from .models.onnx_io import from_onnx, to_onnx
from .occlusion import OcclusionResult, occlusion
from .tuning import DrilldownTuning, TauTuning, tune_drilldown, tune_tau

__version__ = "0.1.0"

__all__ = [
    "Graph", "Node", "Model", "incremental_inference", "IncrementalResult", "patch_positions",
    "geometry", "images", "occlusion", "OcclusionResult", "zoo", "zoo_names", "speedup", "SpeedupReport",
    "from_onnx", "to_onnx", "tune_tau", "TauTuning", "tune_drilldown", "DrilldownTuning",
    "Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "AdaptiveAvgPool2d",
    "ReLU", "ReLU6", "BatchNorm2d", "Dropout", "Flatten", "Linear", "Softmax", "Add", "Concat",
]
