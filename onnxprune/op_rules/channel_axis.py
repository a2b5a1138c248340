"""Ops that move channels along the channel axis: Concat (offsets), Split and Slice (sub-ranges),
Pad (constant channels before and after). On other axes they keep, or tie, the channels."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

if TYPE_CHECKING:
    from onnxprune.channel_groups import ChannelAnalysis


def _axis(a: ChannelAnalysis, node: gs.Node, axis: int, tensor: gs.Tensor) -> int | None:
    rank = a.rank(tensor)
    if rank is None:
        return None
    return axis + rank if axis < 0 else axis


def _concat(a: ChannelAnalysis, node: gs.Node) -> None:
    axis = _axis(a, node, int(node.attrs.get("axis", 0)), node.outputs[0])
    y = node.outputs[0]
    if axis is None:
        a.pin_inputs(node, f"Concat {node.name} has an output of unknown rank")
        return
    if axis != 1:
        tracked = [t for t in node.inputs if a.layout(t) is not None]
        if len(tracked) != len(node.inputs) or len({len(a.layout(t)) for t in tracked}) != 1:
            a.pin_inputs(node, f"Concat {node.name} on axis {axis} joins tracked and untracked channels")
            return
        for t in tracked[1:]:
            a.tie(a.layout(tracked[0]), a.layout(t))
        a.set_layout(y, a.layout(tracked[0]))
        a.add_value_step(node, "agree", tuple(t.name for t in tracked))
        return
    parts, segments = [], []
    for t in node.inputs:
        layout = a.layout(t)
        if layout is None:
            shape = a.shape(t)
            if shape is None or not isinstance(shape[1], int):
                a.pin_inputs(node, f"Concat {node.name} joins a tensor with an unknown channel count")
                return
            layout = a.new_fixed_channels(shape[1])
            segments.append((None, np.full(len(layout), np.nan)))  # untracked: its values are unknown
        else:
            segments.append((t.name, np.arange(len(layout))))
        parts.append(layout)
    a.set_layout(y, np.concatenate(parts))
    a.add_value_step(node, "gather", ((y.name, tuple(segments), True),))


def _split_sizes(a: ChannelAnalysis, node: gs.Node, total: int) -> list[int] | None:
    if "split" in node.attrs:
        return [int(s) for s in node.attrs["split"]]
    if len(node.inputs) > 1 and node.inputs[1].name:
        sizes = a.static_value(node.inputs[1])
        return None if sizes is None else [int(s) for s in sizes]
    parts = int(node.attrs.get("num_outputs", len(node.outputs)))
    step = -(-total // parts)
    return [min(step, total - i * step) for i in range(parts)]


def _split(a: ChannelAnalysis, node: gs.Node) -> None:
    x = node.inputs[0]
    lx = a.layout(x)
    axis = _axis(a, node, int(node.attrs.get("axis", 0)), x)
    if axis != 1:
        if axis is None or axis == 0:
            a.pin(lx, f"Split {node.name} on an unknown axis or the batch axis")
            return
        for y in node.outputs:
            a.set_layout(y, lx)
        a.add_value_step(node, "gather", tuple((y.name, ((x.name, np.arange(len(lx))),), True) for y in node.outputs))
        return
    sizes = _split_sizes(a, node, len(lx))
    if sizes is None or sum(sizes) != len(lx) or len(sizes) != len(node.outputs):
        a.pin(lx, f"Split {node.name} has computed or inconsistent split sizes")
        return
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    steps = []
    for y, start, stop in zip(node.outputs, bounds[:-1], bounds[1:], strict=True):
        a.set_layout(y, lx[start:stop])
        steps.append((y.name, ((x.name, np.arange(start, stop)),), True))
    a.add_edit(node, "split", (x.name,))
    a.add_value_step(node, "gather", tuple(steps))


def _slice_params(a: ChannelAnalysis, node: gs.Node) -> tuple | None:
    """(starts, ends, axes, steps) as int lists, or None when any is computed."""
    if a.opset < 10:
        starts, ends = node.attrs.get("starts"), node.attrs.get("ends")
        axes = node.attrs.get("axes", list(range(len(starts))))
        return list(starts), list(ends), list(axes), [1] * len(starts)
    values = []
    for i in range(1, 5):
        t = node.inputs[i] if len(node.inputs) > i and node.inputs[i].name else None
        v = a.static_value(t) if t is not None else None
        if t is not None and v is None:
            return None
        values.append(None if v is None else [int(e) for e in np.asarray(v).reshape(-1)])
    starts, ends, axes, steps = values
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    return starts, ends, axes, steps


def _slice(a: ChannelAnalysis, node: gs.Node) -> None:
    x = node.inputs[0]
    lx = a.layout(x)
    params = _slice_params(a, node)
    rank = a.rank(x)
    if params is None or rank is None:
        a.pin(lx, f"Slice {node.name} has computed bounds")
        return
    starts, ends, axes, steps = params
    axes = [ax + rank if ax < 0 else ax for ax in axes]
    y = node.outputs[0]
    if 0 in axes:
        a.pin(lx, f"Slice {node.name} slices the batch axis")
        return
    if 1 not in axes:
        a.set_layout(y, lx)
        a.add_value_step(node, "gather", ((y.name, ((x.name, np.arange(len(lx))),), True),))
        return
    k = axes.index(1)
    if steps[k] != 1:
        a.pin(lx, f"Slice {node.name} takes every {steps[k]}th channel")
        return
    positions = np.arange(len(lx))[slice(starts[k], ends[k], 1)]
    a.set_layout(y, lx[positions])
    a.add_edit(node, "slice", (x.name,), (k,))
    a.add_value_step(node, "gather", ((y.name, ((x.name, positions),), True),))


def pad_params(a: ChannelAnalysis, node: gs.Node) -> tuple[list[int], float, list[int]] | None:
    """(pads, constant value, axes) of a Pad node, or None when computed."""
    if a.opset < 11:
        pads = list(node.attrs.get("pads", ()))
        return pads, float(node.attrs.get("value", 0.0)), list(range(len(pads) // 2))
    pads = a.constant(node.inputs[1])
    value_t = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    value = a.constant(value_t) if value_t is not None else np.zeros(1)
    axes_t = node.inputs[3] if len(node.inputs) > 3 and node.inputs[3].name else None
    axes = a.constant(axes_t) if axes_t is not None else np.arange(len(pads) // 2 if pads is not None else 0)
    if pads is None or value is None or axes is None:
        return None
    return [int(p) for p in pads], float(np.asarray(value).reshape(-1)[0]), [int(ax) for ax in axes]


def _pad(a: ChannelAnalysis, node: gs.Node) -> None:
    x = node.inputs[0]
    lx = a.layout(x)
    params = pad_params(a, node)
    rank = a.rank(x)
    if params is None or rank is None:
        a.pin(lx, f"Pad {node.name} has computed pads")
        return
    pads, value, axes = params
    axes = [ax + rank if ax < 0 else ax for ax in axes]
    n = len(axes)
    before = dict(zip(axes, pads[:n], strict=True))
    after = dict(zip(axes, pads[n:], strict=True))
    mode = node.attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    begin, end = before.get(1, 0), after.get(1, 0)
    spatial = any(before.get(ax, 0) or after.get(ax, 0) for ax in range(2, rank))
    y = node.outputs[0]
    if begin < 0 or end < 0 or before.get(0, 0) or after.get(0, 0):
        a.pin(lx, f"Pad {node.name} crops channels or pads the batch axis")
        return
    if begin == 0 and end == 0:
        a.set_layout(y, lx)
        exact = not (spatial and mode == "constant")
        a.add_value_step(node, "gather", ((y.name, ((x.name, np.arange(len(lx))),), exact),))
        return
    if mode != "constant" or spatial:
        a.pin(lx, f"Pad {node.name} pads channels in {mode} mode or together with spatial axes")
        return
    head = a.new_pad_channels(node, begin, value)
    tail = a.new_pad_channels(node, end, value)
    a.set_layout(y, np.concatenate([head, lx, tail]))
    a.add_edit(node, "pad", (x.name,), (len(head), len(tail)))
    segments = ((None, np.full(begin, value)), (x.name, np.arange(len(lx))), (None, np.full(end, value)))
    a.add_value_step(node, "gather", ((y.name, segments, True),))


RULES = {"Concat": _concat, "Split": _split, "Slice": _slice, "Pad": _pad}
