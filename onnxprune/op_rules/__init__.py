"""Op rules: for each ONNX op, how its tensors' channels flow, tie, or pin (one module per family).

A rule is a function `rule(analysis, node)` that reads the layouts of the node's inputs from the
`ChannelAnalysis` and records what the node does to them: new layer channels, parameter slices,
ties, edits of channel-counting attributes, and pins with a reason. An op without a rule pins
every tracked channel it touches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx_graphsurgeon as gs

from onnxprune.op_rules import channel_axis, conv, elementwise, linear, reduce, reshape, spatial

if TYPE_CHECKING:
    from onnxprune.channel_groups import ChannelAnalysis

__all__ = ["RULES", "apply"]

RULES = {
    **conv.RULES,
    **linear.RULES,
    **elementwise.RULES,
    **spatial.RULES,
    **channel_axis.RULES,
    **reshape.RULES,
    **reduce.RULES,
}


CHANNELS_LAST = {*elementwise.UNARY, *elementwise.BINARY, "MatMul", "Transpose", "Shape", "Size", "LayerNormalization"}
"""The ops whose rules follow channels on any axis (the others assume axis 1)."""


def apply(analysis: ChannelAnalysis, node: gs.Node) -> None:
    """Record what `node` does to the channels it reads (its rule, or pins when it has none)."""
    if not any(analysis.layout(t) is not None for t in node.inputs):
        if node.op in conv.LAYER_OPS or node.op in linear.RULES:
            RULES[node.op](analysis, node)  # layers reading untracked inputs still make channels
        return
    rule = RULES.get(node.op) if node.domain in ("", "ai.onnx", None) else None
    last = next((t for t in node.inputs if analysis.layout(t) is not None and analysis.axis(t) != 1), None)
    if rule is not None and last is not None and node.op not in CHANNELS_LAST:
        analysis.pin_inputs(node, f"{node.op} {node.name} reads channels on axis {analysis.axis(last)} "
                                  "(channels-last); only elementwise ops, MatMul and Transpose follow them there")  # fmt: skip
        return
    if rule is None:
        domain = f"{node.domain}." if node.domain not in ("", "ai.onnx", None) else ""
        analysis.pin_inputs(node, f"no rule for op {domain}{node.op} (node {node.name})")
        return
    rule(analysis, node)
