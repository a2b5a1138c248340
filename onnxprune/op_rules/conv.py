"""Conv and ConvTranspose: a plain conv reads one channel space (weight axis 1) and makes a new
one (weight axis 0 and bias); a depthwise conv keeps its input's channels (its filters follow
them); other grouped convs lose whole groups, since every group must keep the same size."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

if TYPE_CHECKING:
    from onnxprune.channel_groups import ChannelAnalysis

LAYER_OPS = ("Conv", "ConvTranspose")


def zero_padded(node: gs.Node, kernel: tuple[int, ...]) -> bool:
    """True when the conv or pool reads zero padding at the borders (explicit pads or SAME)."""
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return any(k > 1 for k in kernel)
    return any(p != 0 for p in node.attrs.get("pads", ()))


def computed_weight_reason(node: gs.Node, w: gs.Tensor) -> str:
    maker = w.inputs[0].op if len(w.inputs) == 1 else None
    if maker == "DequantizeLinear":
        return f"{node.op} {node.name} has quantized weights (DequantizeLinear); prune the float model"
    return f"{node.op} {node.name} has weights computed at run time, not constants"


def add_layer(
    a: ChannelAnalysis,
    node: gs.Node,
    weight: gs.Tensor,
    in_axis: int,
    out_axis: int,
    bias: gs.Tensor | None = None,
    channel_axis: int = 1,
) -> np.ndarray:
    """A layer (Conv, ConvTranspose, Gemm, MatMul) that reads its first input's channels on
    `in_axis` of its weight and makes new channels on `out_axis` (and on axis 0 of `bias`), on
    `channel_axis` of its output. The value step carries both weight axes to the surgery. Returns
    the new channels."""
    lx = a.layout(node.inputs[0])
    if lx is not None:
        a.add_slice("consumer", node, weight, in_axis, lx)
    out = a.new_layer_channels(node, a.shape(weight)[out_axis])
    a.add_slice("producer", node, weight, out_axis, out)
    if bias is not None:
        a.add_slice("producer", node, bias, 0, out)
    a.set_layout(node.outputs[0], out, channel_axis)
    a.add_value_step(node, "layer", (in_axis, out_axis))
    return out


def _conv(a: ChannelAnalysis, node: gs.Node) -> None:
    x, w = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    y = node.outputs[0]
    lx = a.layout(x)
    if not a.is_constant(w) or (b is not None and not a.is_constant(b)):
        a.pin(lx, computed_weight_reason(node, w))
        return
    groups = int(node.attrs.get("group", 1))
    out_channels, in_per_group = a.shape(w)[0], a.shape(w)[1]
    in_channels = in_per_group * groups
    if groups == 1:
        add_layer(a, node, w, 1, 0, b)
    elif in_per_group == 1 and out_channels % in_channels == 0 and lx is not None:
        # Depthwise: output channel o reads input channel o // m; the filters follow the input.
        out = np.repeat(lx, out_channels // in_channels)
        a.add_slice("follower", node, w, 0, out)
        if b is not None:
            a.add_slice("follower", node, b, 0, out)
        a.set_layout(y, out)
        a.add_edit(node, "group", (x.name,))
        a.add_value_step(node, "depthwise", (out_channels // in_channels,))
    elif lx is not None and len(lx) == in_channels and out_channels % groups == 0:
        _grouped(a, node, w, b, groups)
    else:
        reason = f"grouped conv {node.name} (group={groups}) must keep equal groups"
        a.pin(lx, reason)
        out = a.new_layer_channels(node, out_channels)
        a.add_slice("producer", node, w, 0, out)
        a.set_layout(y, out)
        a.pin(out, reason)
        a.add_value_step(node, "layer", (1, 0))


def _grouped(a: ChannelAnalysis, node: gs.Node, w: gs.Tensor, b: gs.Tensor | None, groups: int) -> None:
    """A grouped conv (RegNet, ResNeXt) loses whole groups: the input channels of group g and the
    output channels it makes are tied into one class, so every group keeps its width."""
    x, y = node.inputs[0], node.outputs[0]
    lx = a.layout(x)
    out_channels = a.shape(w)[0]
    width_in, width_out = len(lx) // groups, out_channels // groups
    out = a.new_layer_channels(node, out_channels)
    first = np.repeat(lx[::width_in], width_in)  # each input channel's group leader
    a.tie(lx, first)
    a.tie(out, np.repeat(lx[::width_in], width_out))
    a.add_slice("producer", node, w, 0, out)
    if b is not None:
        a.add_slice("producer", node, b, 0, out)
    a.set_layout(y, out)
    a.add_edit(node, "groups", (x.name,), (width_in,))
    a.add_value_step(node, "layer", (1, 0))


def _conv_transpose(a: ChannelAnalysis, node: gs.Node) -> None:
    x, w = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    lx = a.layout(x)
    if not a.is_constant(w) or (b is not None and not a.is_constant(b)):
        a.pin(lx, computed_weight_reason(node, w))
        return
    groups = int(node.attrs.get("group", 1))
    if groups != 1 or node.attrs.get("output_shape"):
        a.pin(lx, f"ConvTranspose {node.name} with group={groups} or a fixed output_shape")
        return
    add_layer(a, node, w, 0, 1, b)


RULES = {"Conv": _conv, "ConvTranspose": _conv_transpose}
