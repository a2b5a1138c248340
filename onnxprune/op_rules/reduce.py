"""Ops that mix values across channels without weights: reductions over the channel axis (the
sum of squares in SSD's L2Norm), LpNormalization and Softmax over channels. Removing a channel
leaves them exact only when the channel is zero; the surgery reports the others as approximate."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.op_rules.reshape import axes_of

if TYPE_CHECKING:
    from onnxprune.channel_groups import ChannelAnalysis

REDUCE = (
    "ReduceL1", "ReduceL2", "ReduceSum", "ReduceSumSquare", "ReduceMean", "ReduceMax", "ReduceMin",
    "ReduceProd", "ReduceLogSum", "ReduceLogSumExp",
)  # fmt: skip


def _reduce(a: ChannelAnalysis, node: gs.Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    lx, rank = a.layout(x), a.rank(x)
    given, axes = axes_of(a, node)
    if not given:
        axes = [] if node.attrs.get("noop_with_empty_axes", 0) else list(range(rank or 0))
    if axes is None or rank is None:
        a.pin(lx, f"{node.op} {node.name} reduces computed axes")
        return
    axes = [ax + rank if ax < 0 else ax for ax in axes]
    if 0 in axes:
        a.pin(lx, f"{node.op} {node.name} reduces the batch axis")
    elif 1 in axes:
        a.add_value_step(node, "reduce", (x.name,))  # the output has no channels to track
    else:
        a.set_layout(y, lx)  # axes >= 2 reduced (kept or removed): axis 1 stays
        dims = [a.shape(x)[ax] for ax in axes] if a.shape(x) is not None else [None]
        count = int(np.prod(dims)) if all(isinstance(d, int) for d in dims) else None
        a.add_value_step(node, "reduce_spatial", (x.name, node.op, count))


def _across_channels(a: ChannelAnalysis, node: gs.Node) -> None:
    """Softmax, LogSoftmax, LpNormalization: the output keeps the input's channels; over axis 1
    (or, before opset 13, Softmax's flattened axes from 1 on) it mixes their values."""
    x, y = node.inputs[0], node.outputs[0]
    lx, rank = a.layout(x), a.rank(x)
    default = 1 if node.op != "LpNormalization" and a.opset < 13 else -1
    axis = int(node.attrs.get("axis", default))
    axis = axis + rank if rank is not None and axis < 0 else axis
    if rank is None or axis == 0:
        a.pin(lx, f"{node.op} {node.name} normalises over the batch axis")
        return
    a.set_layout(y, lx)
    mixes = axis == 1 or (node.op != "LpNormalization" and a.opset < 13 and axis <= 1)
    if mixes:
        a.add_value_step(node, "reduce", (x.name,))
    # A constant channel normalised over its spatial axes depends on their size: not evaluated.
    a.add_value_step(node, "opaque", (y.name,))


def _layer_norm(a: ChannelAnalysis, node: gs.Node) -> None:
    """LayerNormalization over the channels (ConvNeXt's, on channels-last tensors) divides by their
    count and mixes their mean and variance into every output: removing a channel, even a zero
    one, changes every other. With `pad_layer_norms` the channels pass it all the same (its scale
    and bias follow them): the surgery pads the removed channels' constant values back in before
    the norm and slices them off after, which keeps the statistics exact. Otherwise, or over other
    axes too, it pins them. Its output keeps the channels either way, so the depthwise convs and
    residual Adds behind it follow them (and name this reason)."""
    x, y = node.inputs[0], node.outputs[0]
    lx, rank = a.layout(x), a.rank(x)
    axis = int(node.attrs.get("axis", -1))
    axis = axis + rank if rank is not None and axis < 0 else axis
    params = [t for t in node.inputs[1:3] if t.name]
    over_channels = rank is not None and a.axis(x) == axis == rank - 1  # the channels alone
    if over_channels and a.pad_layer_norms:
        if any(a.constant(t) is None or a.shape(t) != (len(lx),) for t in params):
            a.pin(lx, f"LayerNormalization {node.name} has a computed or broadcast scale or bias")
        elif any(t.name and t.outputs for t in node.outputs[1:]):
            a.pin(lx, f"LayerNormalization {node.name}: its Mean and InvStdDev outputs are read")
        else:
            for t in params:
                a.add_slice("follower", node, t, 0, lx)
            a.add_edit(node, "layer_norm", (x.name,))
            a.add_value_step(node, "layer_norm", (x.name,))
            a.set_layout(y, lx, a.axis(x))
            return
    elif over_channels:
        a.pin(lx, f"LayerNormalization {node.name} normalizes over the channels (their mean and variance reach every output; "
                  "prune --pad-layer-norms pads removed channels back in before it)")  # fmt: skip
    elif rank is None or a.axis(x) >= axis:
        a.pin(lx, f"LayerNormalization {node.name} normalizes over axes {axis}.. with the channels "
                  "(their mean and variance reach every output)")  # fmt: skip
    else:
        a.pin(lx, f"LayerNormalization {node.name} normalizes over axes {axis}.. and has no rule for the channels it keeps")
    a.set_layout(y, lx, a.axis(x))
    a.add_value_step(node, "opaque", (y.name,))


RULES = {**{op: _reduce for op in REDUCE}, "LayerNormalization": _layer_norm, "LpNormalization": _across_channels, "Softmax": _across_channels,
         "LogSoftmax": _across_channels}  # fmt: skip
