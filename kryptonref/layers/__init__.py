"""Layer specs (the IR's vocabulary) and their CPU kernels.

One module per layer family: :mod:`.conv`, :mod:`.pool`, :mod:`.window`
(gathering read windows), with :mod:`.ops` dispatching a spec to its
computation and :mod:`.specs` defining the specs themselves.
"""
from .specs import (Add, AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Concat, Conv2d, Dropout,
                    Flatten, GlobalAvgPool2d, Layer, Linear, MaxPool2d, ReLU, ReLU6, Softmax)

__all__ = ["Add", "AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm2d", "Concat", "Conv2d", "Dropout",
           "Flatten", "GlobalAvgPool2d", "Layer", "Linear", "MaxPool2d", "ReLU", "ReLU6",
           "Softmax"]
