"""Vision Transformer ViT-B/16 (Dosovitskiy et al. 2021) as torchvision builds it.

After the patch embedding (a 16 x 16, stride-16 convolution) every operator mixes
all positions, so each is a whole-tensor :class:`~kryptonref.layers.TensorOp`
(per-sample semantics: tensors keep torch's shapes with a unit batch axis, module
doc of ``kryptonref.layers.tensor``). Occlusion can then only save the patch
embedding's work: ``kr.speedup`` reports the region whole from the first token
reshape on, which is the honest answer for attention (``docs/zoo.md``).

Node names follow torchvision's ``state_dict`` keys, so its weights saved to
``.npz`` load as they are (``class_token``, ``conv_proj``, ``encoder.pos_embedding``,
``encoder.layers.encoder_layer_<i>.{ln_1, self_attention, self_attention.out_proj,
ln_2, mlp.0, mlp.3}``, ``encoder.ln``, ``heads.head``); parameter-free steps get
names of their own below their block. The dev-only ``tools/check_zoo_torchvision.py``
compares the model with torchvision's, output for output.
"""
from __future__ import annotations

import numpy as np

from ..graph import Graph
from ..layers import GELU, Conv2d, Linear, TensorOp
from ..layers.tensor import freeze_value
from .zoo import register

__all__ = ["vision_transformer"]


def _op(op_type, slots=("x0",), batched=(True,), parameters=(), constants=(), **attributes):
    """A :class:`TensorOp` with attributes given as keywords."""
    return TensorOp(op_type, attributes=tuple((k, freeze_value(v)) for k, v in attributes.items()),
                    slots=tuple(slots), batched=tuple(batched), parameters=tuple(parameters),
                    constants=tuple(freeze_value(np.asarray(c)) for c in constants))


def _reshape(graph, name, shape, source=None, batched=True):
    return graph.add(_op("Reshape", ("x0", "i:0"), (batched,),
                         constants=[np.array(shape, dtype=np.int64)]),
                     inputs=source, name=name)


def _transpose(graph, name, perm, source=None):
    return graph.add(_op("Transpose", perm=list(perm)), inputs=source, name=name)


def _layer_norm(graph, name, width, source=None, eps=1e-6):
    """``nn.LayerNorm(width)`` on the last axis: parameters ``weight`` and ``bias``."""
    return graph.add(_op("LayerNormalization", ("x0", "p:weight", "p:bias"),
                         parameters=(("weight", (width,)), ("bias", (width,))),
                         axis=-1, epsilon=eps), inputs=source, name=name)


def _linear(graph, name, width_in, width_out, source=None):
    """``nn.Linear`` on ``(tokens, width_in)`` rows: ``Gemm`` with ``transB``."""
    return graph.add(_op("Gemm", ("x0", "p:weight", "p:bias"),
                         parameters=(("weight", (width_out, width_in)), ("bias", (width_out,))),
                         transB=1), inputs=source, name=name)


def _attention(graph, prefix, source, tokens, width, heads):
    """``nn.MultiheadAttention(width, heads)`` on ``(1, tokens, width)``, self-attention.

    One ``Gemm`` for the packed query/key/value projection (torch's ``in_proj_weight``
    and ``in_proj_bias``), split, heads of ``width / heads`` channels, scaled dot
    products (``MatMul``), softmax over keys, the heads joined and ``out_proj``.
    """
    head = width // heads
    rows = _reshape(graph, f"{prefix}.rows", (tokens, width), source)
    packed = graph.add(_op("Gemm", ("x0", "p:in_proj_weight", "p:in_proj_bias"),
                           parameters=(("in_proj_weight", (3 * width, width)),
                                       ("in_proj_bias", (3 * width,))), transB=1),
                       inputs=rows, name=prefix)
    parts = []
    for index, part in enumerate("qkv"):
        sliced = graph.add(_op("SplitPart", axis=1, start=index * width,
                               stop=(index + 1) * width), inputs=packed, name=f"{prefix}.{part}")
        split = _reshape(graph, f"{prefix}.{part}.heads", (tokens, heads, head), sliced)
        # (heads first; the keys transposed for the product with the queries)
        perm = (1, 2, 0) if part == "k" else (1, 0, 2)
        parts.append(_transpose(graph, f"{prefix}.{part}.first", perm, split))
    query, key, value = parts
    query = graph.add(_op("Div", ("x0", "i:0"), constants=[np.float64(np.sqrt(head))]),
                      inputs=query, name=f"{prefix}.scale")
    scores = graph.add(_op("MatMul", ("x0", "x1"), (True, True)), inputs=[query, key],
                       name=f"{prefix}.scores")
    weights = graph.add(_op("Softmax", axis=-1), inputs=scores, name=f"{prefix}.softmax")
    mixed = graph.add(_op("MatMul", ("x0", "x1"), (True, True)), inputs=[weights, value],
                      name=f"{prefix}.mix")
    mixed = _transpose(graph, f"{prefix}.join", (1, 0, 2), mixed)
    mixed = _reshape(graph, f"{prefix}.join.rows", (tokens, width), mixed)
    out = _linear(graph, f"{prefix}.out_proj", width, width, mixed)
    return _reshape(graph, f"{prefix}.tokens", (1, tokens, width), out)


def _encoder_block(graph, prefix, source, tokens, width, heads, mlp_width):
    """torchvision's ``EncoderBlock``: pre-norm attention and MLP, each with a residual."""
    normed = _layer_norm(graph, f"{prefix}.ln_1", width, source)
    attended = _attention(graph, f"{prefix}.self_attention", normed, tokens, width, heads)
    middle = graph.add(_op("Add", ("x0", "x1"), (True, True)), inputs=[attended, source],
                       name=f"{prefix}.add_1")
    normed = _layer_norm(graph, f"{prefix}.ln_2", width, middle)
    rows = _reshape(graph, f"{prefix}.mlp.rows", (tokens, width), normed)
    hidden = _linear(graph, f"{prefix}.mlp.0", width, mlp_width, rows)
    hidden = graph.add(GELU(), name=f"{prefix}.mlp.1")
    out = _linear(graph, f"{prefix}.mlp.3", mlp_width, width, hidden)
    out = _reshape(graph, f"{prefix}.mlp.tokens", (1, tokens, width), out)
    return graph.add(_op("Add", ("x0", "x1"), (True, True)), inputs=[out, middle],
                     name=f"{prefix}.add_2")


def vision_transformer(image_size, num_classes, patch=16, layers=12, width=768, heads=12,
                       mlp_width=3072):
    """torchvision's ``VisionTransformer`` (``heads.head`` only, no pre-logits layer).

    Raises
    ------
    ValueError
        If ``image_size`` is not a multiple of ``patch``.
    """
    if image_size % patch:
        raise ValueError(f"ViT: the image size must be a multiple of the patch size {patch}, "
                         f"got {image_size}")
    side = image_size // patch
    tokens = side * side + 1
    graph = Graph((3, image_size, image_size))
    graph.add(Conv2d(3, width, patch, stride=patch), name="conv_proj")
    _reshape(graph, "encoder.flatten", (1, width, side * side), batched=False)
    _transpose(graph, "encoder.tokens", (0, 2, 1))
    graph.add(_op("Concat", ("p:class_token", "x0"), parameters=(("class_token", (1, 1, width)),),
                  axis=1), name="class_token")
    x = graph.add(_op("Add", ("x0", "p:pos_embedding"),
                      parameters=(("pos_embedding", (1, tokens, width)),)), name="encoder")
    for index in range(layers):
        x = _encoder_block(graph, f"encoder.layers.encoder_layer_{index}", x, tokens, width,
                           heads, mlp_width)
    _layer_norm(graph, "encoder.ln", width, x)
    graph.add(_op("Gather", ("x0", "i:0"), constants=[np.int64(0)], axis=1), name="class")
    graph.add(TensorOp("Unbatch", batched=(True,)), name="unbatch")
    graph.add(Linear(width, num_classes), name="heads.head")
    return graph


@register("vit_b_16", default_size=224,
          description="torchvision vit_b_16 (Dosovitskiy et al. 2021): 12 encoder layers, "
                      "width 768, 12 heads, 16 x 16 patches")
def vit_b_16(image_size=224, num_classes=1000):
    """torchvision's ``vit_b_16()``: 86.6 M parameters, 17.56 G MACs at 224 px."""
    return vision_transformer(image_size, num_classes)
