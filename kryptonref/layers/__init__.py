"""Layer types: their specs (the IR's vocabulary), registry records and kernels.

One module per layer family: :mod:`.conv`, :mod:`.pool`, :mod:`.elementwise`,
:mod:`.dense`, :mod:`.merge`, each defining its spec classes and registering
them (:mod:`.registry`) with their CPU kernels, and a ``_cuda`` twin holding
the CUDA kernels; :mod:`.window` gathers read windows. Importing this package
registers every layer type.
"""
from .base import Layer
from .conv import Conv2d
from .dense import Flatten, Linear, Softmax
from .elementwise import BatchNorm2d, Dropout, LeakyReLU, ReLU, ReLU6
from .merge import Add, Concat
from .pool import AdaptiveAvgPool2d, AvgPool2d, GlobalAvgPool2d, MaxPool2d

__all__ = ["Layer", "Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "AdaptiveAvgPool2d",
           "ReLU", "ReLU6", "LeakyReLU", "BatchNorm2d", "Dropout", "Flatten", "Linear",
           "Softmax", "Add", "Concat"]
