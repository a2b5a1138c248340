"""Elementwise ops: activations keep their input's channels; BatchNorm, InstanceNorm and PRelu
carry per-channel parameters that follow them; binary ops tie two tracked inputs channel by
channel, and a constant operand follows the channels when it is per-channel."""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx_graphsurgeon as gs

if TYPE_CHECKING:
    from onnxprune.channel_groups import ChannelAnalysis

UNARY = (
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu",
    "Softplus", "Softsign", "Mish", "Gelu", "ThresholdedRelu", "Abs", "Neg", "Exp", "Log", "Sqrt",
    "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Erf", "Sin", "Cos", "Identity", "Cast", "Clip",
    "Dropout",
)  # fmt: skip
BINARY = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu")


def _unary(a: ChannelAnalysis, node: gs.Node) -> None:
    lx = a.layout(node.inputs[0])
    if lx is None:
        return
    for extra in node.inputs[1:]:  # Clip's min/max, Dropout's ratio: scalars
        if extra.name and a.layout(extra) is not None:
            a.pin(lx, f"{node.op} {node.name} takes a tracked tensor as a bound")
            return
    if node.op == "Dropout" and len(node.outputs) > 1 and node.outputs[1].outputs:
        a.pin(lx, f"Dropout {node.name} mask is used")
        return
    a.set_layout(node.outputs[0], lx, a.axis(node.inputs[0]))
    a.add_value_step(node, "eval")


def _batch_norm(a: ChannelAnalysis, node: gs.Node) -> None:
    lx = a.layout(node.inputs[0])
    params = node.inputs[1:5]
    if len(node.outputs) > 1 or any(a.constant(p) is None for p in params):
        a.pin(lx, f"BatchNormalization {node.name} in training mode or with computed statistics")
        return
    for p in params:
        a.add_slice("follower", node, p, 0, lx)
    a.set_layout(node.outputs[0], lx)
    a.add_value_step(node, "eval")


def _instance_norm(a: ChannelAnalysis, node: gs.Node) -> None:
    lx = a.layout(node.inputs[0])
    if any(a.constant(p) is None for p in node.inputs[1:3]):
        a.pin(lx, f"InstanceNormalization {node.name} with computed parameters")
        return
    for p in node.inputs[1:3]:
        a.add_slice("follower", node, p, 0, lx)
    a.set_layout(node.outputs[0], lx)
    a.add_value_step(node, "eval")


def _binary(a: ChannelAnalysis, node: gs.Node) -> None:
    """Broadcasting ops: the output's channel axis is its tracked inputs' (axis 1, or the last
    axis of channels-last tensors); each operand either carries it (tracked: tie), follows it
    (constant with that axis of full size), or broadcasts over it."""
    out_rank = a.rank(node.outputs[0])
    tracked = [t for t in node.inputs if a.layout(t) is not None]
    if out_rank is None or out_rank < 2:
        a.pin_inputs(node, f"{node.op} {node.name} has an output of unknown or scalar shape")
        return
    layout = a.layout(tracked[0])
    size, channel_axis = len(layout), a.axis(tracked[0])
    for t in tracked:
        if a.rank(t) != out_rank or len(a.layout(t)) != size or a.axis(t) != channel_axis:
            a.pin_inputs(node, f"{node.op} {node.name} broadcasts a tracked tensor over channels")
            return
    followers, expanded = [], []
    for t in node.inputs:
        if a.layout(t) is not None:
            continue
        source = _expanded_constant(a, t) if channel_axis == 1 else None
        if source is not None:  # Expand(per-channel constant, Shape(x)): the constant follows
            expanded.append(t)
            t = source
        shape = a.shape(t)
        if shape is None:
            a.pin_inputs(node, f"{node.op} {node.name} mixes channels with a tensor of unknown shape")
            return
        axis = channel_axis - (out_rank - len(shape))
        dim = shape[axis] if axis >= 0 else 1
        if dim == 1:
            continue  # broadcasts over the channels (a scalar, an L2 norm, ...)
        if dim == size and a.constant(t) is not None:
            followers.append((t, axis))
        else:
            a.pin_inputs(node, f"{node.op} {node.name} mixes tracked channels with untracked ones ({t.name})")
            return
    for other in tracked[1:]:
        a.tie(layout, a.layout(other))
    for t, axis in followers:
        reader = node if any(t is i for i in node.inputs) else t.outputs[0]
        a.add_slice("follower", reader, t, axis, layout)
    for t in expanded:
        a.set_layout(t, layout)
        a.add_value_step(t.inputs[0], "expand")
    a.set_layout(node.outputs[0], layout, channel_axis)
    a.add_value_step(node, "eval")


def _expanded_constant(a: ChannelAnalysis, t: gs.Tensor) -> gs.Tensor | None:
    """The constant that an Expand node broadcasts into `t` (SSD's L2Norm scale `expand_as`)."""
    if len(t.inputs) != 1 or t.inputs[0].op != "Expand" or len(t.outputs) != 1:
        return None
    data = t.inputs[0].inputs[0]
    return data if a.constant(data) is not None and len(data.outputs) == 1 else None


RULES = {
    **{op: _unary for op in UNARY},
    **{op: _binary for op in BINARY},
    "BatchNormalization": _batch_norm,
    "InstanceNormalization": _instance_norm,
}
