"""Parameters and FLOPs of an ONNX model, from its initializers and inferred shapes.

What is counted:
- parameters: elements of every floating-point initializer and Constant tensor (weights, biases,
  BatchNorm statistics, per-channel scales, and constants such as SSD priors); integer tensors
  (shapes, indices) are not parameters.
- MACs (multiply-accumulates) of Conv, ConvTranspose, Gemm and MatMul, the layers filter pruning
  changes; FLOPs = 2 x MACs. Elementwise ops, pooling, normalisation and activations are not
  counted (together usually a few percent of a CNN's FLOPs).
- A symbolic batch dimension counts as 1; a node whose output shape stays unknown after shape
  inference is listed in `unknown` instead of being guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto

from onnxprune.model_io import shape_skeleton

__all__ = ["ModelCost", "model_cost"]

_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}


@dataclass(frozen=True)
class ModelCost:
    """Size and compute of a model, and each counted node's MACs."""

    params: int
    macs: int
    node_macs: dict[str, int] = field(default_factory=dict)
    unknown: tuple[str, ...] = ()  # nodes whose MACs could not be computed (unknown shapes)

    @property
    def flops(self) -> int:
        return 2 * self.macs


def model_cost(model: onnx.ModelProto) -> ModelCost:
    """Parameters and MACs of `model` (see the module docstring for what is counted)."""
    inferred = onnx.shape_inference.infer_shapes(shape_skeleton(model), data_prop=True)
    shapes = _shapes(inferred)
    params = sum(_elements(t) for t in _float_tensors(model.graph))
    node_macs: dict[str, int] = {}
    unknown: list[str] = []
    for node in model.graph.node:
        if node.op_type not in _MACS:
            continue
        name = node.name or node.output[0]
        macs = _MACS[node.op_type](node, shapes)
        if macs is None:
            unknown.append(name)
        else:
            node_macs[name] = macs
    return ModelCost(params=params, macs=sum(node_macs.values()), node_macs=node_macs, unknown=tuple(unknown))


def _float_tensors(graph: onnx.GraphProto):
    for t in graph.initializer:
        if t.data_type in _FLOAT_TYPES:
            yield t
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t") and attr.t.data_type in _FLOAT_TYPES:
                yield attr.t
            if attr.HasField("g"):
                yield from _float_tensors(attr.g)
            for sub in attr.graphs:
                yield from _float_tensors(sub)


def _elements(t: TensorProto) -> int:
    return int(np.prod(t.dims, dtype=np.int64))


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...] | None]:
    """Known shapes by tensor name; None where a dimension other than the first is symbolic."""
    shapes: dict[str, tuple[int, ...] | None] = {}
    g = model.graph
    for info in (*g.input, *g.value_info, *g.output):
        if not info.type.HasField("tensor_type") or not info.type.tensor_type.HasField("shape"):
            continue
        dims = info.type.tensor_type.shape.dim
        shape = []
        for i, d in enumerate(dims):
            if d.HasField("dim_value"):
                shape.append(d.dim_value)
            elif i == 0:
                shape.append(1)  # a symbolic batch counts as 1
            else:
                shape = None
                break
        shapes[info.name] = tuple(shape) if shape is not None else None
    for t in g.initializer:
        shapes[t.name] = tuple(t.dims)
    return shapes


def _conv(node: onnx.NodeProto, shapes) -> int | None:
    out, w = shapes.get(node.output[0]), shapes.get(node.input[1])
    if out is None or w is None:
        return None
    # every output element takes (in_channels / groups) * kernel MACs
    return int(np.prod(out, dtype=np.int64) * np.prod(w[1:], dtype=np.int64))


def _conv_transpose(node: onnx.NodeProto, shapes) -> int | None:
    x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
    if x is None or w is None:
        return None
    # every input element is spread over (out_channels / groups) * kernel outputs
    return int(np.prod(x, dtype=np.int64) * np.prod(w[1:], dtype=np.int64))


def _gemm(node: onnx.NodeProto, shapes) -> int | None:
    a, b, out = (shapes.get(n) for n in (node.input[0], node.input[1], node.output[0]))
    if out is None:
        return None
    attrs = {attr.name: attr.i for attr in node.attribute}
    if b is not None:  # K from the weight, whose shape is known even when A's is not
        k = b[1] if attrs.get("transB", 0) else b[0]
    elif a is not None:
        k = a[0] if attrs.get("transA", 0) else a[1]
    else:
        return None
    return int(np.prod(out, dtype=np.int64) * k)


def _matmul(node: onnx.NodeProto, shapes) -> int | None:
    a, b, out = (shapes.get(n) for n in (node.input[0], node.input[1], node.output[0]))
    if out is None or (a is None and (b is None or len(b) < 2)):
        return None
    k = b[-2] if b is not None and len(b) >= 2 else a[-1]
    return int(np.prod(out, dtype=np.int64) * k)


_MACS = {"Conv": _conv, "ConvTranspose": _conv_transpose, "Gemm": _gemm, "MatMul": _matmul}
