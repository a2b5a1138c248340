"""Pooling, resizing and box pooling (RoiAlign) work on each channel by itself: the output keeps
the input's channels. A Resize given explicit `sizes` counts the channels there, so the surgery
rewrites that entry."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.op_rules.conv import zero_padded

if TYPE_CHECKING:
    from onnxprune.channel_groups import ChannelAnalysis

POOLS = ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")


def _pool(a: ChannelAnalysis, node: gs.Node) -> None:
    x = node.inputs[0]
    lx = a.layout(x)
    if len(node.outputs) > 1 and node.outputs[1].outputs:
        a.pin(lx, f"MaxPool {node.name} indices are used")
        return
    a.set_layout(node.outputs[0], lx)
    # An average over zero padding turns a constant channel into a non-constant one at borders.
    kernel = tuple(node.attrs.get("kernel_shape", ()))
    blurs = node.op in ("AveragePool", "LpPool") and (
        node.attrs.get("count_include_pad", 0) or node.op == "LpPool"
    ) and zero_padded(node, kernel)  # fmt: skip
    a.add_value_step(node, "gather", ((node.outputs[0].name, ((x.name, np.arange(len(lx))),), not blurs),))


def _resize(a: ChannelAnalysis, node: gs.Node) -> None:
    x = node.inputs[0]
    lx = a.layout(x)
    inputs = {i: t for i, t in enumerate(node.inputs) if t.name}
    scales_at, sizes_at = (2, 3) if node.op == "Resize" and a.opset >= 11 else (1, None)
    if node.op == "Resize" and a.opset < 11:
        scales_at = 1
    scales = a.static_value(inputs.get(scales_at)) if scales_at in inputs else None
    if node.op == "Upsample" and "scales" in node.attrs:
        scales = np.asarray(node.attrs["scales"])
    sizes = a.static_value(inputs.get(sizes_at)) if sizes_at is not None and sizes_at in inputs else None
    axes = node.attrs.get("axes")
    if axes is not None and 1 not in [ax % a.rank(x) for ax in axes]:
        pass  # channels untouched
    elif sizes is not None:
        channel = list(axes).index(1) if axes is not None else 1
        a.add_edit(node, "resize_sizes", (x.name,), (sizes_at, channel))
    elif scales is not None and scales.size:
        channel = list(axes).index(1) if axes is not None else 1
        if scales.reshape(-1)[channel] != 1:
            a.pin(lx, f"{node.op} {node.name} scales the channel axis")
            return
    else:
        a.pin(lx, f"{node.op} {node.name} has computed scales or sizes")
        return
    a.set_layout(node.outputs[0], lx)
    a.add_value_step(node, "gather", ((node.outputs[0].name, ((x.name, np.arange(len(lx))),), True),))


def _roi(a: ChannelAnalysis, node: gs.Node) -> None:
    """RoiAlign / MaxRoiPool pool each channel of the feature map (input 0) over each box: the
    output keeps its channels. Samples outside the map read zeros, so only zero channels stay
    exactly what they were."""
    x = node.inputs[0]
    lx = a.layout(x)
    if lx is None or any(a.layout(t) is not None for t in node.inputs[1:]):
        a.pin_inputs(node, f"{node.op} {node.name} reads tracked channels as boxes")
        return
    a.set_layout(node.outputs[0], lx)
    a.add_value_step(node, "gather", ((node.outputs[0].name, ((x.name, np.arange(len(lx))),), False),))


RULES = {**{op: _pool for op in POOLS}, "Resize": _resize, "Upsample": _resize, "RoiAlign": _roi, "MaxRoiPool": _roi}
