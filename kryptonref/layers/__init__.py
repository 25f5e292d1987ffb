"""Layer types: their specs (the IR's vocabulary), registry records and kernels.

One module per layer family: :mod:`.conv`, :mod:`.pool`, :mod:`.elementwise`,
:mod:`.dense`, :mod:`.merge`, :mod:`.activations`, :mod:`.channels`, each defining its spec classes and registering
them (:mod:`.registry`) with their CPU kernels, and a ``_cuda`` twin holding
the CUDA kernels; :mod:`.window` gathers read windows. Importing this package
registers every layer type.
"""
from .activations import (ELU, GELU, Clip, Erf, HardSigmoid, HardSwish, Mish, Power, PReLU,
                          SiLU, Sigmoid, Softplus, Tanh)
from .base import Layer
from .channels import Arithmetic, ChannelLinear, ChannelShuffle, ChannelSlice, LayerNorm2d
from .conv import Conv2d
from .dense import Flatten, Linear, Softmax
from .elementwise import BatchNorm2d, Dropout, LeakyReLU, ReLU, ReLU6
from .merge import Add, Concat, Mul
from .pool import AdaptiveAvgPool2d, AvgPool2d, GlobalAvgPool2d, MaxPool2d
from .tensor import TensorOp

__all__ = ["Layer", "Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "AdaptiveAvgPool2d",
           "ReLU", "ReLU6", "LeakyReLU", "BatchNorm2d", "Dropout", "Flatten", "Linear",
           "Softmax", "Add", "Concat", "Mul", "Sigmoid", "HardSigmoid", "HardSwish", "SiLU",
           "GELU", "ELU", "Tanh", "Softplus", "Mish", "Erf", "Clip", "Power", "PReLU",
           "Arithmetic", "LayerNorm2d", "ChannelLinear", "ChannelSlice", "ChannelShuffle",
           "TensorOp"]
