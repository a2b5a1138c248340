"""Surgery: apply a PrunePlan to the analysed graph and return a new, valid ONNX model.

Guarantees (DESIGN.md section 4), checked before returning: same graph inputs and outputs, opset,
IR version, metadata and node names; `onnx.checker` full check passes. Removed channels whose
value is the same everywhere (a zero filter outputs its bias; BatchNorm, activations and
per-channel constants map that to another constant) are folded into the bias of each layer that
reads them, which is exact for 1x1 convs, Gemm and padding-free convs. Behind zero padding a
constant channel varies at the borders; with static spatial sizes the value pass follows it as a
map (`constant_maps`) through depthwise convs and elementwise ops, and the reader folds the map's
interior value into its bias (exact except at the borders), or with `exact_borders` adds the
whole map to its output (exact; new Add and Gather nodes). Each
removed channel is reported as `exact`, `folded` (exact fold), `folded_border` or `approximate`
(its value varied, e.g. a near-zero filter cut at a threshold above zero: what fine-tuning is
for).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune import constant_maps
from onnxprune.channel_groups import ChannelAnalysis
from onnxprune.index_maps import removed_positions
from onnxprune.model_io import InputError, check_model
from onnxprune.op_rules.channel_axis import pad_params
from onnxprune.op_rules.conv import zero_padded
from onnxprune.op_rules.reshape import shape_pieces
from onnxprune.selection import PrunePlan

__all__ = ["GroupChange", "SurgeryResult", "apply_plan"]

STATUSES = ("exact", "folded", "folded_border", "approximate")


@dataclass
class GroupChange:
    """What happened to one group: its channel counts and how exactly each removal was made."""

    name: str
    producers: list[str]
    channels_before: int
    channels_after: int
    pinned_by: list[str]
    removal: dict[str, int] = field(default_factory=dict)  # status -> removed channels


@dataclass
class SurgeryResult:
    model: onnx.ModelProto
    groups: list[GroupChange]
    changed: bool
    keep: dict[str, np.ndarray] = field(default_factory=dict)  # tensor -> channels kept (its channel axis), where some went
    changed_nodes: dict[str, str] = field(default_factory=dict)  # node -> what the surgery did to it, for messages


# A reduction of `n` equal values c, for the reductions that do not keep a constant.
_REDUCE_CONSTANT = {
    "ReduceSum": lambda c, n: c * n,
    "ReduceSumSquare": lambda c, n: c * c * n,
    "ReduceL1": lambda c, n: np.abs(c) * n,
    "ReduceL2": lambda c, n: np.abs(c) * np.sqrt(n),
    "ReduceProd": lambda c, n: c**n,
    "ReduceLogSum": lambda c, n: np.log(c * n),
    "ReduceLogSumExp": lambda c, n: c + np.log(n),
}
_REDUCE_MAP = {
    "ReduceMean": np.mean,
    "ReduceMax": np.max,
    "ReduceMin": np.min,
    "ReduceSum": np.sum,
    "ReduceSumSquare": lambda m: np.sum(m * m),
    "ReduceL1": lambda m: np.sum(np.abs(m)),
    "ReduceL2": lambda m: np.sqrt(np.sum(m * m)),
    "ReduceProd": np.prod,
    "ReduceLogSum": lambda m: np.log(np.sum(m)),
    "ReduceLogSumExp": lambda m: np.log(np.sum(np.exp(m))),
}
# Ops whose value step copies channels without touching their spatial values (a pool of the same
# size does touch them: its maps are not carried).
_MAP_KEEPING = ("Concat", "Split", "Slice", "Identity", "Dropout", "Pad", "Cast")
_ZERO_KEEPING_REDUCTIONS = ("ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceProd")


@dataclass
class _MapFold:
    """A constant map added to a reader's output: its grid constant (1, O, r, s), the output
    tensor, and the grid with the row and column runs that expand it."""

    constant: gs.Constant
    output: str
    grid: np.ndarray
    rows: np.ndarray
    cols: np.ndarray


class _Surgery:
    def __init__(self, analysis: ChannelAnalysis, plan: PrunePlan, exact_borders: bool = False) -> None:
        self.a = analysis
        self.exact_borders = exact_borders
        self.nodes = {n.name: n for n in analysis.graph.nodes}
        self.keep_class = np.ones(len(analysis.class_group), dtype=bool)
        index = analysis.group_index()
        for name, mask in plan.keep.items():
            if name not in index:
                raise InputError(f"the plan names group {name!r}, which this model does not have; "
                                 "make the plan from this model")  # fmt: skip
            group = analysis.all_groups[index[name]]
            if len(mask) != group.size:
                raise InputError(f"the plan gives group {name!r} {len(mask)} channels; the model has {group.size}")
            if group.pinned and not mask.all():
                raise InputError(f"the plan removes channels of group {name!r}, which is pinned ({group.pinned_by[0]})")
            classes = np.nonzero(analysis.class_group == index[name])[0]
            self.keep_class[classes[analysis.class_index[classes]]] = mask
        self.arrays: dict[str, np.ndarray] = {}
        self.values: dict[str, np.ndarray] = {}
        self.status = np.zeros(len(self.keep_class), dtype=np.int64)  # index into STATUSES
        self.new_biases: dict[str, tuple[gs.Node, int, str]] = {}  # const name -> (node, axis, output)
        self.modified: set[str] = set()  # constants whose values changed (compensated biases)
        # Removed channels whose value is an input-independent map rather than a constant: tensor
        # -> position -> (H, W) float64 array; `values` holds NaN there, so map-unaware steps stay safe.
        self.maps: dict[str, dict[int, np.ndarray]] = {}
        self.map_folds: dict[str, _MapFold] = {}  # reader node -> the constant map added to its output
        self.orphaned = False  # a computed input was replaced by a constant: its nodes may be unused
        self.consumer_nodes = {sl.node for g in analysis.all_groups for sl in g.consumers}
        # LayerNormalization -> its removed inputs' constants, and their (P, H, W) maps or None
        self.norm_pads: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}

    # ----- helpers -------------------------------------------------------------------------
    def keep(self, tensor: str) -> np.ndarray:
        return self.keep_class[self.a.element_class[self.a.layouts[tensor]]]

    def mark(self, tensor: str, positions: np.ndarray, status: str) -> None:
        classes = self.a.element_class[self.a.layouts[tensor][positions]]
        self.status[classes] = np.maximum(self.status[classes], STATUSES.index(status))

    def array(self, tensor: gs.Tensor) -> np.ndarray:
        """A constant's value: read-only, or the working copy once something changed it."""
        if tensor.name in self.arrays:
            return self.arrays[tensor.name]
        return self.a.constant(tensor)

    def writable(self, tensor: gs.Tensor) -> np.ndarray:
        if tensor.name not in self.arrays:
            self.arrays[tensor.name] = np.array(self.a.constant(tensor))
        return self.arrays[tensor.name]

    def value(self, tensor: gs.Tensor) -> np.ndarray:
        layout = self.a.layout(tensor)
        return self.values.get(tensor.name, np.full(len(layout) if layout is not None else 0, np.nan))

    def spatial(self, tensor: gs.Tensor, channels_last: bool = False) -> tuple[int, int] | None:
        """The static height and width of a 4-D tensor with its channels on axis 1 (or, where
        `channels_last` says the caller handles it, axis 3), else None."""
        shape, axis = self.a.shape(tensor), self.a.axis(tensor.name)
        if shape is None or len(shape) != 4 or axis not in ((1, 3) if channels_last else (1,)):
            return None
        hw = shape[2:] if axis == 1 else shape[1:3]
        return (hw[0], hw[1]) if all(isinstance(d, int) and d > 0 for d in hw) else None

    def planes(self, tensor: gs.Tensor, positions: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        """The (P, H, W) values of `tensor` at `positions`: maps, or constants filled in."""
        maps, v = self.maps.get(tensor.name, {}), self.value(tensor)
        return np.stack([maps[p] if p in maps else np.full(hw, v[p]) for p in positions.tolist()]) if len(positions) else np.zeros((0, *hw))

    def set_maps(self, name: str, values: np.ndarray, positions: np.ndarray, maps: np.ndarray) -> None:
        """Store `values` for tensor `name`, with the (P, H, W) `maps` at `positions`: a uniform map
        becomes a constant, a map with any NaN an unknown value."""
        values = np.array(values, dtype=np.float64)
        kept = {}
        for p, m in zip(positions.tolist(), maps, strict=True):
            if not np.all(np.isfinite(m)):
                values[p] = np.nan
            elif np.all(m == m.flat[0]):
                values[p] = m.flat[0]
            else:
                values[p] = np.nan
                kept[p] = m
        self.values[name] = values
        if kept:
            self.maps[name] = kept
        else:
            self.maps.pop(name, None)

    def mapped(self, tensor: gs.Tensor) -> np.ndarray:
        """Positions of `tensor` that hold a map."""
        return np.array(sorted(self.maps.get(tensor.name, {})), dtype=np.int64)

    # ----- values of removed channels and bias compensation --------------------------------
    def propagate(self) -> None:
        for step in self.a.value_steps:
            node = self.nodes[step.node]
            getattr(self, f"_step_{step.kind}")(node, step.detail)

    def _step_layer(self, node: gs.Node, detail: tuple) -> None:
        x, y = node.inputs[0], node.outputs[0]
        w = self.array(node.inputs[1])
        in_axis, out_axis = detail  # the weight axes the op rule recorded
        if self.a.layout(x) is not None and node.name in self.consumer_nodes:
            self._compensate(node, x, w, in_axis, out_axis)
        keep_out = self.keep(y.name)
        out = np.full(len(keep_out), np.nan)
        gone_out = np.nonzero(~keep_out)[0]
        if gone_out.size:
            # Only the removed outputs' filters matter: is each all zero over the kept inputs?
            wk = np.take(w, gone_out, axis=out_axis)
            if self.a.layout(x) is not None and len(self.a.layout(x)) == w.shape[in_axis]:
                wk = np.compress(self.keep(x.name), wk, axis=in_axis)
            rows = np.moveaxis(wk, out_axis, 0).reshape(len(gone_out), -1)
            silent = ~np.any(rows != 0, axis=1)
            # A MatMul's bias is the Add after it, which its own value step adds.
            bias = None if node.op == "MatMul" else self._bias(node, out_axis, create=False)
            base = np.zeros(len(out)) if bias is None else np.broadcast_to(bias.reshape(-1), out.shape).astype(np.float64)
            if node.op == "Gemm" and bias is not None:
                base = base * float(node.attrs.get("beta", 1.0))
            out[gone_out] = np.where(silent, base[gone_out], np.nan)
        fold = self.map_folds.get(node.name)
        if fold is not None and gone_out.size:
            # The constant map added to this output is part of its removed channels' values too.
            full = constant_maps.expanded(fold.grid, fold.rows, fold.cols)
            silent_gone = gone_out[np.isfinite(out[gone_out])]
            self.set_maps(y.name, out, silent_gone, full[silent_gone] + out[silent_gone, None, None])
            return
        self.values[y.name] = out

    def _compensate(self, node: gs.Node, x: gs.Tensor, w: np.ndarray, in_axis: int, out_axis: int) -> None:
        """Fold removed input channels of `node` that hold a constant into its bias."""
        gone = ~self.keep(x.name)
        if not gone.any():
            return
        v = self.value(x)
        positions = np.nonzero(gone)[0]
        vals = v[positions]
        has_map = np.isin(positions, self.mapped(x))
        self.mark(x.name, positions[(vals == 0) & ~has_map], "exact")
        nonzero = (vals != 0) | has_map  # zero channels need no weights read
        positions, vals, has_map = positions[nonzero], vals[nonzero], has_map[nonzero]
        if not positions.size:
            return
        per_position = np.moveaxis(np.take(w, positions, axis=in_axis), (in_axis, out_axis), (0, 1))
        silent = ~np.any(per_position.reshape(len(positions), -1) != 0, axis=1)
        const = np.isfinite(vals) & (vals != 0) & ~silent
        mapped = has_map & ~silent
        self.mark(x.name, positions[silent], "exact")
        varying = ~silent & ~np.isfinite(vals) & ~has_map
        self.mark(x.name, positions[varying], "approximate")
        if mapped.any() or (const.any() and zero_padded(node, tuple(w.shape[2:]))):
            status = self._fold_map(node, x, w, positions[const | mapped])
            if status is not None:
                self.mark(x.name, positions[const | mapped], status)
                return
        self.mark(x.name, positions[mapped], "approximate")
        if not const.any():
            return
        sums = per_position[const].reshape(int(const.sum()), per_position.shape[1], -1).sum(axis=2)
        delta = vals[const] @ sums  # per output channel
        uniform = node.op in ("Gemm", "MatMul") or (
            node.op == "Conv" and not zero_padded(node, tuple(w.shape[2:]))
        )  # fmt: skip
        if node.op == "ConvTranspose" and self.exact_borders and self._fold_transpose_map(node, w, positions[const], vals[const]):
            self.mark(x.name, positions[const], "folded")
            return
        if node.op == "ConvTranspose" or (node.op == "Gemm" and float(node.attrs.get("beta", 1.0)) == 0.0):
            self.mark(x.name, positions[const], "approximate")
            return
        if node.op == "Gemm":
            delta = delta * float(node.attrs.get("alpha", 1.0)) / float(node.attrs.get("beta", 1.0))
        bias = self._bias(node, out_axis, create=True)
        if bias is None:
            self.mark(x.name, positions[const], "approximate")
            return
        bias += delta.reshape(bias.shape).astype(bias.dtype)
        self.modified.add(self._bias_name(node))
        self.mark(x.name, positions[const], "folded" if uniform else "folded_border")

    def _fold_map(self, node: gs.Node, x: gs.Tensor, w: np.ndarray, positions: np.ndarray) -> str | None:
        """Fold removed input channels `positions` of the 2-D Conv `node` that hold constants or
        maps: convolve them alone (zero padding included). A result uniform per output goes into
        the bias ("folded"); any other, with `exact_borders`, into a constant map added to the
        output ("folded"), else its interior value into the bias ("folded_border"). None when the
        conv's geometry or sizes are not static (the caller falls back to scalar folding)."""
        y = node.outputs[0]
        in_hw, out_hw = self.spatial(x), self.spatial(y)
        if node.op != "Conv" or int(node.attrs.get("group", 1)) != 1 or w.ndim != 4 or in_hw is None or out_hw is None:
            return None
        geometry = constant_maps.conv_geometry(node, in_hw, tuple(w.shape[2:]))
        if geometry is None:
            return None
        delta = constant_maps.conv2d(self.planes(x, positions, in_hw), np.take(w, positions, axis=1), *geometry, out_hw)
        if self.exact_borders and not constant_maps.uniform(delta):
            self._add_map(node, *constant_maps.compress(delta.astype(w.dtype)))
            return "folded"
        bias = self._bias(node, 0, create=True)
        bias += constant_maps.interior(delta).reshape(bias.shape).astype(bias.dtype)
        self.modified.add(self._bias_name(node))
        return "folded" if constant_maps.uniform(delta) else "folded_border"

    def _fold_transpose_map(self, node: gs.Node, w: np.ndarray, positions: np.ndarray, vals: np.ndarray) -> bool:
        """Constant input channels of a 2-D ConvTranspose whose stride is its kernel (no overlap,
        no padding: ultralytics' and U-Nets' 2x upsampling): output pixel (i, j) sees tap
        (i mod kh, j mod kw) alone, so the removed channels add a map that repeats with the
        kernel's period, stored as one kernel-sized grid."""
        y = node.outputs[0]
        out_hw = self.spatial(y)
        kernel = tuple(w.shape[2:])
        if (out_hw is None or w.ndim != 4 or int(node.attrs.get("group", 1)) != 1
                or tuple(node.attrs.get("strides", (1, 1))) != kernel or any(node.attrs.get("pads", (0,) * 4))
                or any(d != 1 for d in node.attrs.get("dilations", (1, 1))) or any(node.attrs.get("output_padding", (0, 0)))
                or node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET") or node.attrs.get("output_shape")):
            return False  # fmt: skip
        grid = np.einsum("k,koab->oab", vals, np.take(w, positions, axis=0).astype(np.float64))
        rows, cols = np.arange(out_hw[0]) % kernel[0], np.arange(out_hw[1]) % kernel[1]
        self._add_map(node, grid.astype(w.dtype), rows, cols)
        return True

    def _add_map(self, node: gs.Node, grid: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
        """Insert `output = reader output + map` right after `node`, the (O, H, W) map stored as
        its run-compressed `grid` and expanded by Gathers along `rows` and `cols`; the output
        keeps its name, so nothing downstream changes."""
        y = node.outputs[0]
        const, added, current = self._gathered(self.a.unique_name(f"{node.name}_constant_map"), grid[None], rows, cols, (2, 3), y.dtype)
        raw = gs.Variable(self.a.unique_name(f"{y.name}_before_constant_map"), dtype=y.dtype)
        node.outputs[0] = raw
        added.append(gs.Node("Add", self.a.unique_name(f"{node.name}_add_constant_map"), inputs=[raw, current], outputs=[y]))
        at = self.a.graph.nodes.index(node) + 1
        self.a.graph.nodes[at:at] = added
        self.map_folds[node.name] = _MapFold(const, y.name, grid, rows, cols)

    def _gathered(self, name: str, grid: np.ndarray, rows: np.ndarray, cols: np.ndarray, axes: tuple[int, int], dtype):
        """A run-compressed map: the constant `grid` and the Gathers along its height and width
        `axes` that expand it by `rows` and `cols` (none where nothing repeats). Returns the
        constant, the Gather nodes and the expanded tensor."""
        const = gs.Constant(name, np.ascontiguousarray(grid))
        added, current = [], const
        for axis, index in zip(axes, (rows, cols), strict=True):
            if len(index) != int(grid.shape[axis]) or np.any(index != np.arange(len(index))):
                out = gs.Variable(self.a.unique_name(f"{name}_expanded"), dtype=dtype)
                idx = gs.Constant(self.a.unique_name(f"{name}_index"), index)
                added.append(gs.Node("Gather", self.a.unique_name(f"{name}_gather"), {"axis": axis}, [current, idx], [out]))
                current = out
        return const, added, current

    def _bias(self, node: gs.Node, out_axis: int, create: bool) -> np.ndarray | None:
        """The working copy of the layer's bias (Conv B, Gemm C, the Add after a MatMul), made
        with zeros when `create` and the layer has none."""
        if node.op == "MatMul":
            users = node.outputs[0].outputs
            if len(users) == 1 and users[0].op == "Add":
                other = next((t for t in users[0].inputs if t is not node.outputs[0]), None)
                value = self.a.constant(other)
                if value is not None and value.size == node.outputs[0].shape[-1] and value.dtype.kind == "f":
                    return (self.writable(other) if create else self.array(other)).reshape(-1)
            return None
        index = 2
        if len(node.inputs) > index and node.inputs[index].name:
            if self.array(node.inputs[index]).size == 1 and create:
                return self._widen_bias(node, out_axis)
            return (self.writable(node.inputs[index]) if create else self.array(node.inputs[index])).reshape(-1)
        if not create:
            return None
        w = self.array(node.inputs[1])
        name = self.a.unique_name(f"{node.name}_bias")
        const = gs.Constant(name, np.zeros(w.shape[out_axis], dtype=w.dtype))
        while len(node.inputs) < index:
            node.inputs.append(gs.Variable.empty())
        node.inputs.append(const)
        self.arrays[name] = np.array(const.values)
        self.new_biases[name] = (node, 0, node.outputs[0].name)
        return self.arrays[name]

    def _bias_name(self, node: gs.Node) -> str:
        if node.op == "MatMul":
            add = node.outputs[0].outputs[0]
            return next(t for t in add.inputs if t is not node.outputs[0]).name
        return node.inputs[2].name

    def _widen_bias(self, node: gs.Node, out_axis: int) -> np.ndarray:
        """A scalar Gemm bias becomes one per output so a per-output correction fits."""
        old = node.inputs[2]
        m = self.array(node.inputs[1]).shape[out_axis]
        name = self.a.unique_name(f"{node.name}_bias")
        value = np.full(m, self.array(old).reshape(-1)[0], dtype=self.array(old).dtype)
        const = gs.Constant(name, value)
        node.inputs[2] = const
        self.arrays[name] = value
        self.new_biases[name] = (node, 0, node.outputs[0].name)
        return value

    def _step_depthwise(self, node: gs.Node, detail: tuple) -> None:
        (multiplier,) = detail
        x, y = node.inputs[0], node.outputs[0]
        w = self.array(node.inputs[1])
        b = self.array(node.inputs[2]).astype(np.float64) if len(node.inputs) > 2 and node.inputs[2].name else 0.0
        vin = np.repeat(self.value(x), multiplier)
        padded = zero_padded(node, tuple(w.shape[2:]))
        out = vin * w.reshape(w.shape[0], -1).sum(axis=1) + b
        values = np.where(np.isfinite(vin) & ((vin == 0) | (not padded)), out, np.nan)
        # Where zero padding meets a nonzero constant, or a map comes in, the output is a map.
        source = np.repeat(np.arange(len(self.value(x))), multiplier)
        varies = (np.isfinite(vin) & (vin != 0) & padded) | np.isin(source, self.mapped(x))
        in_hw, out_hw = self.spatial(x), self.spatial(y)
        geometry = constant_maps.conv_geometry(node, in_hw, tuple(w.shape[2:])) if in_hw and out_hw and w.ndim == 4 else None
        if varies.any() and geometry is not None:
            positions = np.nonzero(varies)[0]
            maps = constant_maps.conv2d(self.planes(x, source[positions], in_hw), w[positions], *geometry, out_hw, depthwise=True)
            bias = np.broadcast_to(np.asarray(b, dtype=np.float64).reshape(-1), (len(vin),))
            self.set_maps(y.name, values, positions, maps + bias[positions, None, None])
            return
        self.values[y.name] = values

    def _step_gather(self, node: gs.Node, detail: tuple) -> None:
        for out_name, segments, exact_nonzero in detail:
            parts, maps, offset = [], {}, 0
            # A Transpose keeps the maps when height and width stay in order (NCHW <-> NHWC too).
            perm = list(node.attrs.get("perm", ())) if node.op == "Transpose" else []
            nhwc = perm in ([0, 2, 3, 1], [0, 3, 1, 2])
            out_hw = self.spatial(self.a.tensor(out_name), channels_last=nhwc)
            moves_nothing = node.op in _MAP_KEEPING or perm[2:] == [2, 3] or nhwc
            for source, positions in segments:
                if source is None:
                    parts.append(np.asarray(positions, dtype=np.float64))
                else:
                    tensor = self.a.tensor(source)
                    parts.append(self.value(tensor)[positions])
                    source_maps = self.maps.get(source, {})
                    same_size = out_hw is not None and self.spatial(tensor, channels_last=nhwc) == out_hw and moves_nothing
                    for i, p in enumerate(np.asarray(positions).tolist()):
                        if p in source_maps:
                            if same_size and exact_nonzero:
                                maps[offset + i] = source_maps[p]
                            elif node.op in ("GlobalAveragePool", "GlobalMaxPool"):
                                parts[-1] = parts[-1].copy()
                                parts[-1][i] = _REDUCE_MAP["ReduceMean" if node.op == "GlobalAveragePool" else "ReduceMax"](source_maps[p])
                offset += len(parts[-1])
            v = np.concatenate(parts) if parts else np.zeros(0)
            if not exact_nonzero:
                v = np.where(v == 0, v, np.nan)
            self.values[out_name] = v
            if maps:
                self.maps[out_name] = maps

    def _step_agree(self, node: gs.Node, detail: tuple) -> None:
        vs = [self.value(self.a.tensor(name)) for name in detail]
        first = vs[0]
        same = np.all([v == first for v in vs], axis=0)
        self.values[node.outputs[0].name] = np.where(same, first, np.nan)

    def _step_reduce(self, node: gs.Node, detail: tuple) -> None:
        x = self.a.tensor(detail[0])
        gone = np.nonzero(~self.keep(x.name))[0]
        v = self.value(x)[gone]
        self.mark(x.name, gone[v != 0], "approximate")  # NaN != 0 too

    def _step_reduce_spatial(self, node: gs.Node, detail: tuple) -> None:
        """A reduction over the spatial axes of constant channels: c, or c combined `count` times."""
        x_name, op, count = detail
        v = self.value(self.a.tensor(x_name))
        with np.errstate(all="ignore"):
            if op in ("ReduceMean", "ReduceMax", "ReduceMin"):
                out = v
            elif count is None:
                out = np.where(v == 0, 0.0, np.nan) if op in _ZERO_KEEPING_REDUCTIONS else np.full(len(v), np.nan)
            else:
                out = _REDUCE_CONSTANT[op](v, count)
            out = np.array(out, dtype=np.float64)
            hw = self.spatial(self.a.tensor(x_name))
            for p, m in self.maps.get(x_name, {}).items():
                if hw is not None and count == hw[0] * hw[1]:  # over the whole map: a constant
                    out[p] = _REDUCE_MAP[op](m)
        self.values[node.outputs[0].name] = out

    def _step_layer_norm(self, node: gs.Node, detail: tuple) -> None:
        """A LayerNormalization over the channels: its removed inputs must be constants or maps,
        which the edit pads back in (exact; a map, without `exact_borders`, as its interior value:
        a border fold); a varying one is approximate. A removed output is its bias where its
        scale is zero, else it varies with the other channels."""
        x, y = self.a.tensor(detail[0]), node.outputs[0]
        gone = np.nonzero(~self.keep(x.name))[0]
        out = np.full(len(self.keep(x.name)), np.nan)
        if gone.size:
            vals, maps = self.value(x)[gone], self.maps.get(x.name, {})
            has_map = np.isin(gone, self.mapped(x))
            hw = self.spatial(x, channels_last=True)
            planes = None
            if has_map.any() and self.exact_borders and hw is not None:
                planes = self.planes(x, gone, hw)
                planes[~np.isfinite(planes)] = 0.0  # the varying ones (approximate)
            elif has_map.any():
                vals = vals.copy()
                vals[has_map] = [constant_maps.interior(maps[p][None])[0] for p in gone[has_map].tolist()]
                self.mark(x.name, gone[has_map], "folded_border")
            self.mark(x.name, gone[~np.isfinite(vals) & ~has_map], "approximate")
            vals = np.where(np.isfinite(vals), vals, 0.0)
            self.norm_pads[node.name] = (vals, planes)
            scale = self.array(node.inputs[1]).reshape(-1).astype(np.float64)[gone]
            has_bias = len(node.inputs) > 2 and node.inputs[2].name
            bias = self.array(node.inputs[2]).reshape(-1).astype(np.float64)[gone] if has_bias else np.zeros(len(gone))
            out[gone] = np.where(scale == 0, bias, np.nan)
        self.values[y.name] = out

    def _step_expand(self, node: gs.Node, detail: tuple) -> None:
        y = node.outputs[0]
        data = self.array(node.inputs[0])
        channels = len(self.a.layouts[y.name])
        rank = len(self.a.shape(y))
        axis = data.ndim - (rank - 1)
        per_channel = np.moveaxis(data, axis, 0).reshape(channels, -1) if axis >= 0 and data.ndim and data.shape[axis] == channels else None
        if per_channel is not None and (per_channel == per_channel[:, :1]).all():
            self.values[y.name] = per_channel[:, 0].astype(np.float64)
        else:
            self.values[y.name] = np.full(channels, np.nan)

    def _step_opaque(self, node: gs.Node, detail: tuple) -> None:
        self.values[detail[0]] = np.full(len(self.a.layouts[detail[0]]), np.nan)

    def _step_eval(self, node: gs.Node, detail: tuple) -> None:
        y = node.outputs[0]
        keep = self.keep(y.name)
        if keep.all():
            return
        from onnx.reference import ReferenceEvaluator
        from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

        rank = len(self.a.shape(y)) if self.a.shape(y) is not None else 2
        channels = len(keep)
        feeds, inits, tracked_zero = {}, [], None
        proto_inputs = []
        for t in node.inputs:
            if not t.name:
                continue
            if self.a.layout(t) is not None:
                v = self.value(t).reshape(_channel_shape(rank, self.a.axis(t), channels))
                feeds[t.name] = v.astype(np.float32)
                tracked_zero = v == 0 if tracked_zero is None else tracked_zero
            elif self.a.constant(t) is not None:
                inits.append(onnx.numpy_helper.from_array(self.array(t), t.name))
            else:
                shape = [1] * rank
                feeds[t.name] = np.ones(shape, dtype=np.float32)  # an untracked activation (a norm)
                proto_inputs.append(t.name)
        # x * y and x / y stay 0 where the tracked x is 0, whatever the untracked y (a norm) is.
        annihilates = bool(proto_inputs) and node.op in ("Mul", "Div") and node.inputs[0].name not in proto_inputs
        model = onnx.helper.make_model(
            onnx.helper.make_graph(
                [OnnxExporter.export_node(node)], "eval",
                [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in feeds],
                [onnx.ValueInfoProto(name=y.name)], inits,
            ),
            opset_imports=self.a.opset_imports,
        )  # fmt: skip
        out = np.asarray(ReferenceEvaluator(model).run([y.name], feeds)[0], dtype=np.float64).reshape(-1)
        if proto_inputs:
            out = np.where(annihilates & tracked_zero.reshape(-1), 0.0, np.nan) if annihilates else np.full(channels, np.nan)
        self.values[y.name] = out
        tracked = [t for t in node.inputs if t.name and self.a.layout(t) is not None]
        positions = np.unique(np.concatenate([self.mapped(t) for t in tracked])) if tracked else np.zeros(0, np.int64)
        if positions.size and not proto_inputs and self.spatial(y) is not None:
            self._eval_maps(node, y, out, tracked, positions, model)

    def _eval_maps(self, node: gs.Node, y: gs.Tensor, out: np.ndarray, tracked: list, positions: np.ndarray, model) -> None:
        """The maps of an elementwise node's output: the node run on its inputs' maps (and on
        the per-channel constants it reads, at the same positions)."""
        from onnx.reference import ReferenceEvaluator

        feeds = {}
        for t in tracked:
            hw = self.spatial(t)
            if hw is None:
                return
            feeds[t.name] = self.planes(t, positions, hw)[None].astype(np.float32)
        rank, channels = 4, len(out)
        inits = []
        for init in model.graph.initializer:
            value = onnx.numpy_helper.to_array(init)
            axis = 0 if node.op in ("BatchNormalization", "InstanceNormalization") else 1 - (rank - value.ndim)
            if 0 <= axis < value.ndim and value.shape[axis] == channels:
                value = np.take(value, positions, axis=axis)
            inits.append(onnx.numpy_helper.from_array(np.ascontiguousarray(value), init.name))
        del model.graph.initializer[:]
        model.graph.initializer.extend(inits)
        maps = np.asarray(ReferenceEvaluator(model).run([y.name], feeds)[0], dtype=np.float64)[0]
        if maps.shape[1:] != self.spatial(y):
            return
        self.set_maps(y.name, out, positions, maps)

    # ----- the cut -------------------------------------------------------------------------
    def cut(self) -> bool:
        """Delete removed positions from every parameter slice; rewrite channel-counting inputs
        and attributes; fix the shapes of changed tensors. True if anything changed."""
        removals: dict[str, dict[int, np.ndarray]] = {}
        index = {id(g): i for i, g in enumerate(self.a.all_groups)}
        for group in self.a.all_groups:
            classes = np.nonzero(self.a.class_group == index[id(group)])[0]
            keep = np.ones(group.size, dtype=bool)
            keep[self.a.class_index[classes]] = self.keep_class[classes]
            if keep.all():
                continue
            for sl in (*group.producers, *group.followers, *group.consumers):
                gone = removed_positions(sl.index_map, keep)
                if gone.size:
                    axes = removals.setdefault(sl.tensor, {})
                    axes[sl.axis] = np.union1d(axes.get(sl.axis, np.zeros(0, dtype=np.int64)), gone)
        for name, (_, axis, output) in self.new_biases.items():
            gone = np.nonzero(~self.keep(output))[0]
            if gone.size:
                removals.setdefault(name, {})[axis] = gone
        for fold in self.map_folds.values():
            gone = np.nonzero(~self.keep(fold.output))[0]
            if gone.size:
                fold.constant.values = np.ascontiguousarray(np.delete(fold.constant.values, gone, axis=1))
        touched = set(removals) | self.modified
        for name in touched:
            value = self.arrays[name] if name in self.arrays else self.array(self.a.tensor(name))
            for axis, gone in removals.get(name, {}).items():
                kept = np.setdiff1d(np.arange(value.shape[axis]), gone)
                value = np.take(value, kept, axis=axis)  # several times faster than np.delete
            self._write(name, value)
        for edit in self.a.edits:
            getattr(self, f"_edit_{edit.kind}")(self.nodes[edit.node], edit)
        for name in self.a.layouts:
            tensor = self.a.tensor(name)
            if isinstance(tensor, gs.Variable) and tensor.shape is not None and len(tensor.shape) >= 2:
                shape = list(tensor.shape)
                shape[self.a.axis(name)] = int(self.keep(name).sum())
                tensor.shape = shape
        return bool(removals)

    def _write(self, name: str, value: np.ndarray) -> None:
        """Store a new value for the constant `name` (in place for initializers; a new initializer
        for a Constant node's or a constant subgraph's output, which is left unused)."""
        if name in self.new_biases:
            node = self.new_biases[name][0]
            const = next(t for t in node.inputs if t.name == name)
            const.values = value
            return
        tensor = self.a.tensor(name)
        if isinstance(tensor, gs.Constant):
            tensor.values = value
            return
        self.orphaned = True
        const = gs.Constant(self.a.unique_name(f"{name}_pruned"), value)
        for reader in list(tensor.outputs):
            for i, t in enumerate(reader.inputs):
                if t is tensor:
                    reader.inputs[i] = const

    def _set_input(self, node: gs.Node, index: int, value: np.ndarray, name: str) -> None:
        self.orphaned = True
        const = gs.Constant(self.a.unique_name(f"{node.name}_{name}"), value)
        while len(node.inputs) <= index:
            node.inputs.append(gs.Variable.empty())
        node.inputs[index] = const

    def _edit_reshape(self, node: gs.Node, edit) -> None:
        entry, factor = edit.detail
        count = int(self.keep(node.outputs[0].name).sum()) if factor > 1 else int(self.keep(edit.inputs[0]).sum())
        self._write_shape_entry(node, entry, count)

    def _edit_shuffle(self, node: gs.Node, edit) -> None:
        entry, groups = edit.detail
        width = int(self.keep(edit.inputs[0]).sum()) // groups
        self._write_shape_entry(node, entry, width)
        mid = node.outputs[0]  # (N, g, C/g, H, W), then transposed to (N, C/g, g, H, W)
        for tensor, axis in ((mid, 2), (mid.outputs[0].outputs[0], 1)):
            if tensor.shape is not None:
                tensor.shape = [*tensor.shape[:axis], width, *tensor.shape[axis + 1 :]]

    def _write_shape_entry(self, node: gs.Node, entry: int, count: int) -> None:
        static = self.a.static_value(node.inputs[1])
        if self.a.constant(node.inputs[1]) is None and static is not None:
            new = np.array(static).reshape(-1)  # computed from static shapes: written as a constant
            new[entry] = count
            self._set_input(node, 1, new, "shape")
            return
        for piece, at in shape_pieces(self.a, node.inputs[1]) or ():
            value = self.a.constant(piece)
            if value is not None and at <= entry < at + value.size:
                new = value.reshape(-1).copy()
                new[entry - at] = count
                owner = node if piece is node.inputs[1] else node.inputs[1].inputs[0]
                owner.inputs[owner.inputs.index(piece)] = gs.Constant(self.a.unique_name(f"{owner.name}_shape"), new.reshape(value.shape))
                return
        raise AssertionError(f"reshape {node.name}: no constant entry {entry}")

    def _edit_split(self, node: gs.Node, edit) -> None:
        sizes = np.array([int(self.keep(y.name).sum()) for y in node.outputs], dtype=np.int64)
        if self.a.opset >= 13:
            node.attrs.pop("num_outputs", None)
            self._set_input(node, 1, sizes, "split")
        else:
            node.attrs["split"] = sizes.tolist()

    def _edit_slice(self, node: gs.Node, edit) -> None:
        (k,) = edit.detail
        x, y = edit.inputs[0], node.outputs[0].name
        lx, ly = self.a.layouts[x], self.a.layouts[y]
        start = _find_start(lx, ly)
        new_start = int(self.keep(x)[:start].sum())
        new_end = new_start + int(self.keep(y).sum())
        if self.a.opset < 10:
            starts, ends = list(node.attrs["starts"]), list(node.attrs["ends"])
            starts[k], ends[k] = new_start, new_end
            node.attrs["starts"], node.attrs["ends"] = starts, ends
            return
        for index, new in ((1, new_start), (2, new_end)):
            value = np.array(self.a.static_value(node.inputs[index])).reshape(-1)
            value[k] = new
            self._set_input(node, index, value, "starts" if index == 1 else "ends")

    def _edit_pad(self, node: gs.Node, edit) -> None:
        begin, end = edit.detail
        ly = self.a.layouts[node.outputs[0].name]
        keep = self.keep_class[self.a.element_class[ly]]
        kept_begin, kept_end = int(keep[:begin].sum()), int(keep[len(ly) - end :].sum())
        pads, _, axes = pad_params(self.a, node)
        rank = len(self.a.shape(node.inputs[0]))
        axes = [ax + rank if ax < 0 else ax for ax in axes]
        k, n = axes.index(1), len(axes)
        pads[k], pads[n + k] = kept_begin, kept_end
        if self.a.opset < 11:
            node.attrs["pads"] = pads
        else:
            self._set_input(node, 1, np.array(pads, dtype=np.int64), "pads")

    def _edit_layer_norm(self, node: gs.Node, edit) -> None:
        """Pad the removed channels' values back in at the end of the channel (last) axis: Pad
        (one constant), Pad + Add of a vector (several), or with maps Pad + Add of their grid,
        expanded by Gathers; normalize over all of them with zero scale and bias there, and
        Slice the kept channels off. The norm's count, mean and variance are the unpruned
        model's; its output keeps its name."""
        if node.name not in self.norm_pads:
            return
        vals, planes = self.norm_pads[node.name]
        x, y = node.inputs[0], node.outputs[0]
        kept, m = int(self.keep(x.name).sum()), len(vals)
        rank = len(self.a.shape(x))
        dtype = node.inputs[1].values.dtype

        def name(base: str) -> str:
            return self.a.unique_name(f"{node.name}_{base}")

        shape = [*x.shape[:-1], kept + m] if x.shape is not None else None
        pads = np.zeros(2 * rank, dtype=np.int64)
        pads[2 * rank - 1] = m
        uniform = planes is None and bool(np.all(vals == vals[0]))
        padded = gs.Variable(name("padded"), dtype=x.dtype, shape=shape)
        fill = gs.Constant(name("pad_value"), np.array(vals[0] if uniform else 0.0, dtype=dtype))
        before = [gs.Node("Pad", name("pad_removed"), inputs=[x, gs.Constant(name("pads"), pads), fill], outputs=[padded])]
        if planes is not None:  # (N, H, W, C): the grid (1, r, s, C), zero on the kept channels
            full = np.concatenate([np.zeros((kept, *planes.shape[1:])), planes])
            grid, rows, cols = constant_maps.compress(full)
            _, gathers, addend = self._gathered(name("constant_map"), np.moveaxis(grid, 0, -1)[None].astype(dtype), rows, cols, (1, 2), x.dtype)
            before.extend(gathers)
        elif not uniform:
            addend = gs.Constant(name("removed_values"), np.concatenate([np.zeros(kept), vals]).astype(dtype))
        if not uniform:
            filled = gs.Variable(name("filled"), dtype=x.dtype, shape=shape)
            before.append(gs.Node("Add", name("fill_removed"), inputs=[padded, addend], outputs=[filled]))
            padded = filled
        node.inputs[0] = padded
        for index in (1, 2):
            if len(node.inputs) > index and node.inputs[index].name:
                value = np.concatenate([np.asarray(node.inputs[index].values).reshape(-1), np.zeros(m, dtype=dtype)])
                self._set_input(node, index, value, "scale" if index == 1 else "bias")
        raw = gs.Variable(name("with_removed"), dtype=y.dtype, shape=shape)
        node.outputs[0] = raw
        bounds = [gs.Constant(name(n), np.array([v], dtype=np.int64)) for n, v in (("starts", 0), ("ends", kept), ("axes", rank - 1))]
        after = gs.Node("Slice", name("slice_kept"), inputs=[raw, *bounds], outputs=[y])
        at = self.a.graph.nodes.index(node)
        self.a.graph.nodes[at : at + 1] = [*before, node, after]

    def _edit_group(self, node: gs.Node, edit) -> None:
        node.attrs["group"] = int(self.keep(edit.inputs[0]).sum())

    def _edit_groups(self, node: gs.Node, edit) -> None:
        (width,) = edit.detail
        node.attrs["group"] = int(self.keep(edit.inputs[0]).sum()) // width

    def _edit_resize_sizes(self, node: gs.Node, edit) -> None:
        at, channel = edit.detail
        sizes = np.array(self.a.static_value(node.inputs[at])).reshape(-1)
        sizes[channel] = int(self.keep(node.outputs[0].name).sum())
        self._set_input(node, at, sizes, "sizes")

    def record(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """The kept channels of every tensor that lost some, and what was done to which node."""
        keep = {name: k for name in self.a.layouts if not (k := self.keep(name)).all()}
        done: dict[str, str] = {}
        for node in self.a.graph.nodes:
            if any(t.name in keep for t in node.inputs):
                done[node.name] = "cut input channels"
        for name in self.modified:
            for node in self.a.graph.nodes:
                if any(t.name == name for t in node.inputs):
                    done[node.name] = "folded the constant values of removed input channels into its bias"
        for reader in self.map_folds:
            done[reader] = "folded the constant maps of removed input channels into a map added to its output"
        for norm in self.norm_pads:
            done[norm] = "normalized over its kept channels and the removed ones' constants, padded back in"
        return keep, done

    def changes(self) -> list[GroupChange]:
        out = []
        index = self.a.group_index()
        for group in self.a.groups:
            classes = np.nonzero(self.a.class_group == index[group.name])[0]
            gone = classes[~self.keep_class[classes]]
            removal = {s: int((self.status[gone] == i).sum()) for i, s in enumerate(STATUSES)}
            out.append(GroupChange(group.name, list(group.producer_nodes), group.size,
                                   group.size - len(gone), list(group.pinned_by), removal))  # fmt: skip
        return out


def _channel_shape(rank: int, axis: int, channels: int) -> tuple[int, ...]:
    """The shape of one value per channel on `axis`, broadcastable against a rank-`rank` tensor."""
    return tuple(channels if i == axis else 1 for i in range(rank))


def _find_start(lx: np.ndarray, ly: np.ndarray) -> int:
    """Where the slice `ly` begins inside `lx` (channels are unique within a layout)."""
    if len(ly) == 0:
        return 0
    return int(np.nonzero(lx == ly[0])[0][0])


def apply_plan(analysis: ChannelAnalysis, plan: PrunePlan, exact_borders: bool = False) -> SurgeryResult:
    """The model with the plan's channels removed. The analysis is consumed: its graph is
    edited, and so is its model when the analysis loaded it itself (`owns_model`). With
    `exact_borders`, constant channels behind zero padding are folded exactly, as constant maps
    added after their readers (new Add and Gather nodes); without, the model keeps its nodes and
    their interior values go into the readers' biases (exact except at the borders)."""
    surgery = _Surgery(analysis, plan, exact_borders)
    surgery.propagate()
    changed = surgery.cut()
    keep, changed_nodes = surgery.record()
    if surgery.orphaned:
        # Drop the nodes that only computed a replaced input (a Reshape of a weight, the
        # ConstantOfShape/Concat chain of a Pad's pads); every other node keeps its name.
        analysis.graph.cleanup(remove_unused_graph_inputs=False)
    for node in analysis.graph.nodes:
        if node.name in analysis.unnamed:
            node.name = ""
    model = export(analysis)
    check_model(model)
    return SurgeryResult(model, surgery.changes(), changed, keep, changed_nodes)


def export(analysis: ChannelAnalysis) -> onnx.ModelProto:
    """The edited graph written into the input model (or a copy, when the caller owns it): nodes
    and value_info replaced, changed and new constants written, unused ones dropped; weights that
    did not change are not copied, and every model-level field (opset, IR version, producer,
    metadata, functions) stays. Graph inputs and outputs stay exactly as they were, except that
    inputs naming initializers (older exporters list weights as inputs) get their new shapes."""
    from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter, dtype_to_onnx
    from onnx_graphsurgeon.ir.tensor import LazyValues

    model = analysis.model
    if not analysis.owns_model:
        model = onnx.ModelProto()
        model.CopyFrom(analysis.model)
    g = model.graph
    nodes = [OnnxExporter.export_node(n) for n in analysis.graph.nodes]
    del g.node[:]
    g.node.extend(nodes)
    tensors = analysis.graph.tensors()
    constants = {name: t for name, t in tensors.items() if isinstance(t, gs.Constant)}
    position = {t.name: i for i, t in enumerate(g.initializer)}
    for name, const in constants.items():
        if isinstance(const._values, LazyValues) and name in position:
            continue  # unchanged: the tensor already in the model
        value = np.ascontiguousarray(const.values)
        if name in position:
            t = g.initializer[position[name]]
            for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
                t.ClearField(field)
            del t.dims[:]
            t.dims.extend(value.shape)
            t.raw_data = value.tobytes()
        else:
            g.initializer.append(onnx.numpy_helper.from_array(value, name))
    for i in sorted((i for n, i in position.items() if n not in constants), reverse=True):
        del g.initializer[i]
    graph_io = {t.name for t in (*analysis.graph.inputs, *analysis.graph.outputs)}
    del g.value_info[:]
    # Shape inference names the dims it cannot know `unk__N`; onnxruntime takes equal names for
    # equal dims, and a name that two unrelated dims share made RetinaNet's pruned post-processing
    # fail. So such dims are written unnamed.
    g.value_info.extend(
        onnx.helper.make_tensor_value_info(t.name, dtype_to_onnx(t.dtype), [_dim(d) for d in t.shape])
        for name, t in tensors.items()
        if isinstance(t, gs.Variable) and name not in graph_io and t.dtype is not None and t.shape is not None
    )
    weights = {t.name: t for t in g.initializer}
    inputs = list(g.input)
    del g.input[:]
    for info in inputs:
        if info.name not in position:
            g.input.append(info)
        elif info.name in weights:
            t = weights[info.name]
            g.input.append(onnx.helper.make_tensor_value_info(info.name, t.data_type, list(t.dims)))
    return model


def _dim(d):
    """A dim for value_info: a size, a name the model gave, or None (unknown) for an inferred name."""
    return None if isinstance(d, str) and d.startswith("unk__") else d
