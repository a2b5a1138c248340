"""Ops that change a tensor's shape: Flatten or Reshape from (N, C, H, W) to (N, C*H*W) repeats
each channel H*W times along the feature axis (a following Gemm/MatMul reads H*W rows per
channel); reshapes that keep axes 0 and 1, Transpose/Squeeze/Unsqueeze that leave axis 1 in place
keep the channels; ShuffleNet's channel shuffle (Reshape to groups, Transpose, Reshape back)
interleaves them; anything else moves the channel axis and pins."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

if TYPE_CHECKING:
    from onnxprune.channel_groups import ChannelAnalysis


def _same(x: gs.Tensor, y: gs.Tensor, lx: np.ndarray, a: ChannelAnalysis, node: gs.Node, axis: int = 1) -> None:
    a.set_layout(y, lx, axis)
    a.add_value_step(node, "gather", ((y.name, ((x.name, np.arange(len(lx))),), True),))


def _repeat(x: gs.Tensor, y: gs.Tensor, lx: np.ndarray, factor: int, a: ChannelAnalysis, node: gs.Node) -> None:
    a.set_layout(y, np.repeat(lx, factor))
    a.add_value_step(node, "gather", ((y.name, ((x.name, np.repeat(np.arange(len(lx)), factor)),), True),))


def _spatial_size(shape: tuple | None) -> int | None:
    if shape is None or not all(isinstance(d, int) for d in shape[2:]):
        return None
    return int(np.prod(shape[2:], dtype=np.int64))


def _flatten(a: ChannelAnalysis, node: gs.Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    lx, shape = a.layout(x), a.shape(x)
    rank = len(shape) if shape is not None else None
    axis = int(node.attrs.get("axis", 1))
    axis = axis + rank if rank is not None and axis < 0 else axis
    factor = _spatial_size(shape)
    if axis != 1:
        a.pin(lx, f"Flatten {node.name} (axis={axis}) does not keep channels on axis 1")
        return
    if factor is None:
        a.pin(lx, f"Flatten {node.name}: the spatial size is not known (dynamic dims); export with fixed H and W")
        return
    _repeat(x, y, lx, factor, a, node)


def shape_pieces(a: ChannelAnalysis, tensor: gs.Tensor) -> list[tuple[gs.Tensor, int]] | None:
    """A Reshape's shape input as its 1-D pieces (tensor, offset of its first entry): the
    constant itself, or the inputs of the Concat that builds it (`x.view(x.size(0), -1)`)."""
    if a.constant(tensor) is not None:
        return [(tensor, 0)]
    if len(tensor.inputs) != 1 or tensor.inputs[0].op != "Concat":
        return None
    pieces, at = [], 0
    for piece in tensor.inputs[0].inputs:
        shape = a.shape(piece)
        if shape is None or len(shape) != 1 or not isinstance(shape[0], int):
            return None
        pieces.append((piece, at))
        at += shape[0]
    return pieces


def shape_entry(a: ChannelAnalysis, tensor: gs.Tensor, index: int) -> int | str | None:
    """Entry `index` of a Reshape's shape input: an int when constant, "batch" when it is the
    batch size read from a tensor at run time (Gather(Shape(x), 0)), else None."""
    pieces = shape_pieces(a, tensor)
    for piece, at in pieces or ():
        value = a.constant(piece)
        if value is not None and at <= index < at + value.size:
            return int(value.reshape(-1)[index - at])
        if value is None and at == index and _is_batch_size(a, piece):
            return "batch"
    return None


def _is_batch_size(a: ChannelAnalysis, piece: gs.Tensor) -> bool:
    node = piece.inputs[0] if len(piece.inputs) == 1 else None
    if node is not None and node.op == "Unsqueeze":
        node = node.inputs[0].inputs[0] if len(node.inputs[0].inputs) == 1 else None
    if node is None or node.op != "Gather" or int(node.attrs.get("axis", 0)) != 0:
        return False
    index = a.constant(node.inputs[1])
    shape_node = node.inputs[0].inputs[0] if len(node.inputs[0].inputs) == 1 else None
    return (
        index is not None and int(index.reshape(-1)[0]) == 0
        and shape_node is not None and shape_node.op == "Shape" and not shape_node.attrs.get("start", 0)
    )  # fmt: skip


def _reshape(a: ChannelAnalysis, node: gs.Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    lx, shape, out = a.layout(x), a.shape(x), a.shape(y)
    target = a.shape(node.inputs[1])
    if shape is None or len(shape) < 2 or target is None or not isinstance(target[0], int):
        a.pin(lx, f"Reshape {node.name} has unknown shapes")
        return
    entries = [shape_entry(a, node.inputs[1], i) for i in range(min(target[0], 2))]
    factor = _spatial_size(shape)
    batch_kept = out[0] == shape[0] if out is not None else entries[0] in ("batch", 0)
    if out is None and entries[0] == shape[0] and isinstance(shape[0], int):
        batch_kept = True
    if target[0] >= 2 and batch_kept and (out[1] == shape[1] if out is not None else entries[1] == 0):
        if entries[1] is None:
            a.pin(lx, f"Reshape {node.name} has a computed shape")
            return
        if isinstance(entries[1], int) and entries[1] > 0:
            a.add_edit(node, "reshape", (x.name,), (1, 1))
        _same(x, y, lx, a, node)
    elif target[0] == 2 and batch_kept and factor is not None and (
        out[1] == shape[1] * factor if out is not None else entries[1] == -1
    ):
        if entries[1] is None or entries[1] == 0:
            a.pin(lx, f"Reshape {node.name} has a computed shape")
            return
        if entries[1] > 0:
            a.add_edit(node, "reshape", (x.name,), (1, factor))
        _repeat(x, y, lx, factor, a, node)
    elif not _channel_shuffle(a, node):
        a.pin(lx, f"Reshape {node.name} to {list(out) if out else '?'} moves the channel axis")


def _only_reader(t: gs.Tensor, op: str) -> gs.Node | None:
    return t.outputs[0] if len(t.outputs) == 1 and t.outputs[0].op == op else None


def _channel_shuffle(a: ChannelAnalysis, node: gs.Node) -> bool:
    """ShuffleNet's channel shuffle: Reshape (N, C, H, W) -> (N, g, C/g, H, W), Transpose
    (0, 2, 1, 3, 4), Reshape back to (N, C, H, W). Channel k of every group is tied (each group
    keeps as many), and the shuffled tensor holds them interleaved. True when recorded."""
    x, mid = node.inputs[0], node.outputs[0]
    lx, five = a.layout(x), a.shape(mid)
    transpose = _only_reader(mid, "Transpose")
    back = _only_reader(transpose.outputs[0], "Reshape") if transpose is not None else None
    if back is None or five is None or len(five) != 5:
        return False
    groups, width = five[1], five[2]
    y = back.outputs[0]
    if (list(transpose.attrs.get("perm", ())) != [0, 2, 1, 3, 4] or not isinstance(groups, int) or groups < 1
            or not isinstance(width, int) or groups * width != len(lx) or a.shape(y) is None
            or list(a.shape(y)[1:]) != [len(lx), *five[3:]]):  # fmt: skip
        return False
    target, back_target = a.static_value(node.inputs[1]), a.static_value(back.inputs[1])
    if target is None or back_target is None or len(target) != 5 or len(back_target) != 4:
        return False
    entries, back_entry = [int(target[1]), int(target[2])], int(back_target[1])
    if entries != [groups, width] or back_entry == 0:
        return False
    blocks = lx.reshape(groups, width)
    for j in range(1, groups):
        a.tie(blocks[0], blocks[j])
    order = np.arange(len(lx)).reshape(groups, width).T.reshape(-1)  # position k*g + j <- j*width + k
    a.set_layout(y, lx[order])
    a.add_edit(node, "shuffle", (x.name,), (2, groups))
    if back_entry != -1:
        a.add_edit(back, "reshape", (x.name,), (1, 1))
    a.add_value_step(node, "gather", ((y.name, ((x.name, order),), True),))
    return True


def _transpose(a: ChannelAnalysis, node: gs.Node) -> None:
    """A Transpose moves the channel axis to where `perm` puts it: to axis 1, or to the last axis
    (channels-last: NCHW -> NHWC); to any other axis, or off the batch axis, it pins them."""
    x, y = node.inputs[0], node.outputs[0]
    perm = [int(p) for p in node.attrs.get("perm", ())]
    lx = a.layout(x)
    axis = a.axis(x)
    if len(perm) < 2 or perm[0] != 0 or axis not in perm:
        a.pin(lx, f"Transpose {node.name} (perm={perm}) moves the channel axis")
        return
    moved = perm.index(axis)
    if moved not in (1, len(perm) - 1):
        a.pin(lx, f"Transpose {node.name} (perm={perm}) moves the channel axis to axis {moved}")
        return
    _same(x, y, lx, a, node, moved)


def axes_of(a: ChannelAnalysis, node: gs.Node) -> tuple[bool, list[int] | None]:
    """The `axes` of Reduce*/Squeeze/Unsqueeze, from the attribute (older opsets) or the second
    input: (False, None) when absent, (True, None) when computed at run time."""
    if "axes" in node.attrs:
        return True, list(node.attrs["axes"])
    if len(node.inputs) > 1 and node.inputs[1].name:
        v = a.constant(node.inputs[1])
        return True, None if v is None else [int(e) for e in v.reshape(-1)]
    return False, None


def _squeeze(a: ChannelAnalysis, node: gs.Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    lx = a.layout(x)
    given, axes = axes_of(a, node)
    if not given:
        shape = a.shape(x)
        axes = None if shape is None else [i for i, d in enumerate(shape) if d == 1]
    rank = a.rank(y) if node.op == "Unsqueeze" else a.rank(x)
    if axes is None or rank is None or any((ax + rank if ax < 0 else ax) < 2 for ax in axes):
        a.pin(lx, f"{node.op} {node.name} moves the channel axis")
        return
    _same(x, y, lx, a, node)


def _shape_of(a: ChannelAnalysis, node: gs.Node) -> None:
    """Shape and Size read a tensor's dims at run time: they follow any channel count."""


RULES = {"Shape": _shape_of, "Size": _shape_of, "Flatten": _flatten, "Reshape": _reshape, "Transpose": _transpose, "Squeeze": _squeeze, "Unsqueeze": _squeeze}
