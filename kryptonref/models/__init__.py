"""The model zoo (architectures described in the kryptonref IR) and ONNX import/export.

``kryptonref.zoo(name, image_size=None, num_classes=1000, weights=None, seed=0)``
builds one; :func:`zoo_names` lists them. Parameterised nodes carry torchvision's
module paths, so torchvision weights saved to ``.npz`` load directly.
:func:`from_onnx` (:mod:`.onnx_import`) and :func:`to_onnx` (:mod:`.onnx_export`)
read and write ONNX files; :func:`from_torch` (:mod:`.torch_io`) reads a PyTorch module.
"""
from .onnx_export import to_onnx
from .onnx_import import from_onnx
from .torch_io import from_torch
from .vgg import VGG16_CONFIG, vgg16_demo_net
from .zoo import ZooEntry, build_graph, register, zoo, zoo_entry, zoo_names

__all__ = ["VGG16_CONFIG", "vgg16_demo_net", "zoo", "zoo_names", "zoo_entry", "build_graph",
           "register", "ZooEntry", "from_onnx", "to_onnx",
           "from_torch"]
