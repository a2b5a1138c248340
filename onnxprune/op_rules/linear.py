"""Gemm and MatMul with a constant weight: they read the features of a 2-D input (weight rows, or
columns when transposed) and make a new feature space (the other weight axis and Gemm's bias).
MatMul also reads and makes features on the last axis of a rank > 2 input (a Linear layer on
channels-last activations, as in ConvNeXt's MLP)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx_graphsurgeon as gs

from onnxprune.op_rules.conv import add_layer

if TYPE_CHECKING:
    from onnxprune.channel_groups import ChannelAnalysis


def _gemm(a: ChannelAnalysis, node: gs.Node) -> None:
    x, w = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    lx = a.layout(x)
    if not a.is_constant(w) or node.attrs.get("transA", 0) or len(a.shape(w)) != 2:
        a.pin(lx, f"Gemm {node.name} has a computed weight or transA=1")
        return
    trans_b = int(node.attrs.get("transB", 0))
    out = add_layer(a, node, w, 1 if trans_b else 0, 0 if trans_b else 1)
    if c is not None:
        bias = a.constant(c)
        if bias is None:
            a.pin(out, f"Gemm {node.name} has a computed bias")
        elif bias.ndim >= 1 and bias.shape[-1] == len(out) and bias.size == len(out):
            a.add_slice("producer", node, c, bias.ndim - 1, out)
        elif bias.size != 1:
            a.pin(out, f"Gemm {node.name} has a bias of shape {bias.shape} that is not per feature")


def _matmul(a: ChannelAnalysis, node: gs.Node) -> None:
    x, w = node.inputs
    lx, rank = a.layout(x), a.rank(x)
    if not a.is_constant(w) or len(a.shape(w)) != 2 or rank is None or rank < 2 or a.rank(node.outputs[0]) != rank:
        a.pin(lx, f"MatMul {node.name} is not an input times a constant matrix")
        return
    if lx is not None and a.axis(x) != rank - 1:
        a.pin(lx, f"MatMul {node.name} multiplies over axis {rank - 1}, not the channels (axis {a.axis(x)})")
        return
    add_layer(a, node, w, 0, 1, channel_axis=rank - 1)


RULES = {"Gemm": _gemm, "MatMul": _matmul}
