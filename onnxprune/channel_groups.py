"""Channel-group analysis: which channels of an ONNX CNN can be removed together, and where.

The graph is walked once in order. Every channel that a layer creates (a Conv/Gemm/MatMul output
channel) is an *element*; pad channels (Pad on the channel axis) and channels of the graph's own
inputs are elements too. Each tracked tensor gets a *layout*: for each position of its channel
axis, the element there. The channel axis is axis 1, or the last axis of a channels-last tensor
(behind a Transpose to NHWC, or the features of a Linear layer on a rank > 2 tensor: ConvNeXt's
MLP); only elementwise ops, MatMul and Transpose follow channels-last tensors, anything else
pins them. Op rules (`onnxprune.op_rules`) say how layouts flow through a
node, which parameter axes follow them (producers, followers, consumers) and when channels must be
*tied* (a residual Add joins two channels into one removable unit) or *pinned* (an op without a
rule, a graph output, a Transpose that moves the channel axis: never guess).

A union-find over ties gives *classes* (the units of removal) and, over the spaces they touch,
*groups* (`ChannelGroup`): plain data with the parameter slices of each class, expressed as
`IndexMap`s from the group's classes to positions on the parameter's axis.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.index_maps import IndexMap
from onnxprune.model_io import load_model, shape_skeleton

__all__ = ["ChannelAnalysis", "ChannelGroup", "ElementKind", "ParamSlice", "analyze_channels"]


class ElementKind(IntEnum):
    """What made a channel: a layer (removable when its filters qualify), a constant pad channel
    (removable with whatever it is tied to), or a channel nobody may change (a graph input)."""

    LAYER = 0
    PAD = 1
    FIXED = 2


@dataclass(frozen=True, eq=False)
class ParamSlice:
    """One axis of one constant tensor that follows a group's channels.

    role: "producer" (makes the channel: conv weight axis 0, its bias), "follower" (moves with it:
    BatchNorm statistics, PRelu slopes, per-channel constants, depthwise filters) or "consumer"
    (reads it: conv weight axis 1, Gemm/MatMul rows). `index_map` sends class k of the group to
    its positions on `axis` of `tensor`."""

    role: str
    node: str
    tensor: str
    axis: int
    index_map: IndexMap


@dataclass(eq=False)
class ChannelGroup:
    """Channels that can only change together, with everything that must change with them."""

    name: str
    size: int  # removable units (classes); tied channels count once
    producer_nodes: list[str]
    producers: list[ParamSlice] = field(default_factory=list)
    followers: list[ParamSlice] = field(default_factory=list)
    consumers: list[ParamSlice] = field(default_factory=list)
    pinned_by: list[str] = field(default_factory=list)
    # Per class: True where the class holds a pad channel (a constant that needs no filter).
    has_pad: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    # Per class: True where it holds a channel nobody may remove (a graph input's channel).
    has_fixed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    # Sets of classes that some tensor holds (a Split part, one side of a tied Add): each must
    # keep a channel, or a layer would read an empty tensor.
    tensor_classes: list[np.ndarray] = field(default_factory=list)

    @property
    def pinned(self) -> bool:
        return bool(self.pinned_by)


@dataclass(frozen=True)
class ChannelEdit:
    """A node whose attributes or constant inputs count channels (Reshape shape, Split sizes,
    Slice bounds, Pad amounts, Resize sizes): the surgery rewrites them from the kept positions."""

    node: str
    kind: str
    inputs: tuple[str, ...]  # tracked input tensors the edit reads positions of
    detail: tuple = ()


@dataclass(frozen=True)
class ValueStep:
    """How a node carries the values of removed channels, for bias compensation and exactness:
    `kind` is "layer" (a new space; constant when the filter is all zero), "depthwise", "eval"
    (elementwise: evaluate the node on per-channel vectors), "gather" (positions copied from
    inputs: pooling, Concat, Slice, Pad, Flatten), "reduce" (values mix across channels: exact
    only when the removed channels are zero)."""

    node: str
    kind: str
    detail: tuple = ()


class ChannelAnalysis:
    """The analysis state the op rules write into, and its result (`groups`).

    Rules call `layout`, `set_layout`, `new_layer_channels`, `new_pad_channels`, `tie`,
    `add_slice`, `pin`, `add_edit` and `add_value_step`; `finish()` builds the groups."""

    def __init__(self, model: onnx.ModelProto, graph: gs.Graph) -> None:
        self.model = model
        self.graph = graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.layouts: dict[str, np.ndarray] = {}
        self.axes: dict[str, int] = {}  # channel axis of the tracked tensors where it is not 1
        self._parent: list[int] = []
        self._kind: list[int] = []
        self._space: list[int] = []  # element -> space id
        self._space_parent: list[int] = []
        self._space_node: list[str] = []  # node that made the space ("" for graph inputs)
        self._space_kind: list[int] = []
        self.pad_values: dict[int, float] = {}  # pad element -> its constant value
        self._raw_slices: list[tuple[str, str, str, int, np.ndarray]] = []
        self._pins: list[tuple[np.ndarray, str]] = []
        self.edits: list[ChannelEdit] = []
        self.value_steps: list[ValueStep] = []
        self.groups: list[ChannelGroup] = []  # the groups with layer channels, in graph order
        self.all_groups: list[ChannelGroup] = []  # and those of graph inputs and lone pads
        self.element_class: np.ndarray = np.zeros(0, dtype=np.int64)
        self.class_group: np.ndarray = np.zeros(0, dtype=np.int64)
        self.class_index: np.ndarray = np.zeros(0, dtype=np.int64)
        self._producer_ops: dict[str, str] = {}
        self._folded: dict[str, np.ndarray | None] = {}
        self._static: dict[str, np.ndarray | None] = {}  # static_value results (import_graph's too)
        self._values: dict[str, np.ndarray] = {}
        self._names: set[str] | None = None
        self.opset_imports = list(model.opset_import)
        self._tensors: dict[str, gs.Tensor] | None = None
        self._nodes: dict[str, gs.Node] | None = None
        self.owns_model = False  # True when loaded here from a file: the surgery may edit it
        self.unnamed: set[str] = set()  # nodes named here (for messages); the output keeps them unnamed
        # Channels may pass LayerNormalization over them: the surgery pads removed constants back in.
        self.pad_layer_norms = False

    # ----- what the rules read -------------------------------------------------------------
    def layout(self, tensor: gs.Tensor) -> np.ndarray | None:
        """Elements on the channel axis of `tensor`, or None when its channels are not tracked."""
        return self.layouts.get(tensor.name)

    def axis(self, tensor: gs.Tensor | str) -> int:
        """The channel axis of a tracked tensor: 1, or the last axis of a channels-last tensor."""
        return self.axes.get(tensor if isinstance(tensor, str) else tensor.name, 1)

    @staticmethod
    def shape(tensor: gs.Tensor) -> tuple | None:
        if isinstance(tensor, gs.Constant):
            return tuple(tensor.shape)
        return tuple(tensor.shape) if tensor.shape is not None else None

    def rank(self, tensor: gs.Tensor) -> int | None:
        shape = self.shape(tensor)
        return len(shape) if shape is not None else None

    def constant(self, tensor: gs.Tensor | None) -> np.ndarray | None:
        """The value of an initializer, a Constant node's output, or a small tensor computed from
        constants only (the pads or slice bounds exporters build from Shape/Concat/...); None for
        tensors that depend on the graph's inputs."""
        if tensor is None:
            return None
        if isinstance(tensor, gs.Constant):
            if tensor.name not in self._values:  # read once: selection and surgery share it
                self._values[tensor.name] = constant_value(tensor)
            return self._values[tensor.name]
        if tensor.name not in self._folded:
            self._folded[tensor.name] = _fold(tensor, self.opset_imports)
        return self._folded[tensor.name]

    def static_value(self, tensor: gs.Tensor | None) -> np.ndarray | None:
        """`constant(tensor)`, or else its value computed from the inferred shapes of the tensors
        it reads the Shape of, when no unknown dim changes it (a Slice bound of C/2, as C2f's
        chunk exports). The surgery writes such values as constants where it changes them."""
        value = self.constant(tensor)
        if value is not None or tensor is None or isinstance(tensor, gs.Constant):
            return value
        if tensor.name not in self._static:
            self._static[tensor.name] = _static_value(tensor, self.opset_imports)
        return self._static[tensor.name]

    def is_constant(self, tensor: gs.Tensor | None) -> bool:
        """True for initializers and tensors computed from constants only (cheap for weights)."""
        return isinstance(tensor, gs.Constant) or self.constant(tensor) is not None

    def tensor(self, name: str) -> gs.Tensor:
        """The graph's tensor called `name`."""
        if self._tensors is None:
            self._tensors = self.graph.tensors()
        return self._tensors[name]

    def node(self, name: str) -> gs.Node | None:
        """The graph's node called `name`, or None."""
        if self._nodes is None:
            self._nodes = {n.name: n for n in self.graph.nodes}
        return self._nodes.get(name)

    def deployed_scale(self, node_name: str) -> np.ndarray | None:
        """|scale| / sqrt(var + epsilon) per output channel of the inference BatchNormalization
        that alone reads Conv `node_name`'s output, or None. Folding it gives the filter as
        deployed: BatchNorm divides the raw filter's own scale away, so only the folded filter
        says how much a channel contributes."""
        node = self.node(node_name)
        if node is None or node.op != "Conv" or len(node.outputs[0].outputs) != 1:
            return None
        bn = node.outputs[0].outputs[0]
        if bn.op != "BatchNormalization" or int(bn.attrs.get("training_mode", 0)) or node.outputs[0] in self.graph.outputs:
            return None
        scale, var = self.constant(bn.inputs[1]), self.constant(bn.inputs[4])
        if scale is None or var is None or scale.shape != var.shape or scale.ndim != 1:
            return None
        epsilon = float(bn.attrs.get("epsilon", 1e-5))
        return np.abs(scale.astype(np.float64)) / np.sqrt(var.astype(np.float64) + epsilon)

    # ----- what the rules write ------------------------------------------------------------
    def set_layout(self, tensor: gs.Tensor, layout: np.ndarray, axis: int = 1) -> None:
        """`tensor` carries the channels `layout` on `axis` (non-negative)."""
        self.layouts[tensor.name] = np.asarray(layout, dtype=np.int64)
        if axis != 1:
            self.axes[tensor.name] = axis
        else:
            self.axes.pop(tensor.name, None)

    def _new_elements(self, count: int, kind: ElementKind, node: str) -> np.ndarray:
        space = len(self._space_parent)
        self._space_parent.append(space)
        self._space_node.append(node)
        self._space_kind.append(int(kind))
        start = len(self._parent)
        self._parent.extend(range(start, start + count))
        self._kind.extend([int(kind)] * count)
        self._space.extend([space] * count)
        return np.arange(start, start + count, dtype=np.int64)

    def new_layer_channels(self, node: gs.Node, count: int) -> np.ndarray:
        """`count` new channels made by the layer `node` (a Conv, Gemm or MatMul output)."""
        self._producer_ops[node.name] = node.op
        return self._new_elements(count, ElementKind.LAYER, node.name)

    def new_pad_channels(self, node: gs.Node, count: int, value: float) -> np.ndarray:
        """`count` constant channels added by the Pad `node`."""
        elements = self._new_elements(count, ElementKind.PAD, node.name)
        for e in elements:
            self.pad_values[int(e)] = value
        return elements

    def new_fixed_channels(self, count: int) -> np.ndarray:
        """Channels nobody may remove (a graph input's, or an untracked tensor's joined by Concat)."""
        return self._new_elements(count, ElementKind.FIXED, "")

    def tie(self, a: np.ndarray, b: np.ndarray) -> None:
        """Position-wise: channel a[i] and channel b[i] can only be removed together."""
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            rx, ry = self._find(x), self._find(y)
            if rx != ry:
                self._parent[max(rx, ry)] = min(rx, ry)
            sx, sy = self._find_space(self._space[x]), self._find_space(self._space[y])
            if sx != sy:
                self._space_parent[max(sx, sy)] = min(sx, sy)

    def add_slice(self, role: str, node: gs.Node, tensor: gs.Tensor, axis: int, layout: np.ndarray) -> None:
        """Axis `axis` of the constant `tensor` (an input of `node`) follows the channels `layout`."""
        shape = self.shape(tensor)
        if shape is None or axis >= len(shape) or shape[axis] != len(layout):
            raise AssertionError(f"{node.name}: {tensor.name} axis {axis} {shape} does not match {len(layout)} channels")
        self._raw_slices.append((role, node.name, tensor.name, axis, np.asarray(layout, dtype=np.int64)))

    def pin(self, layout: np.ndarray | None, reason: str) -> None:
        """The groups of these channels must not change, because of `reason` (one short sentence)."""
        if layout is not None and len(layout):
            self._pins.append((np.asarray(layout, dtype=np.int64), reason))

    def pin_inputs(self, node: gs.Node, reason: str) -> None:
        for tensor in node.inputs:
            self.pin(self.layout(tensor), reason)

    def add_edit(self, node: gs.Node, kind: str, inputs: tuple[str, ...], detail: tuple = ()) -> None:
        self.edits.append(ChannelEdit(node.name, kind, inputs, detail))

    def add_value_step(self, node: gs.Node, kind: str, detail: tuple = ()) -> None:
        self.value_steps.append(ValueStep(node.name, kind, detail))

    # ----- union-find ----------------------------------------------------------------------
    def _find(self, x: int) -> int:
        return _root(self._parent, x)

    def _find_space(self, s: int) -> int:
        return _root(self._space_parent, s)

    # ----- result --------------------------------------------------------------------------
    def finish(self) -> None:
        """Turn elements, ties, slices and pins into `groups` (in graph order of their layers)."""
        n = len(self._parent)
        roots = np.array([self._find(e) for e in range(n)], dtype=np.int64)
        space = np.asarray(self._space, dtype=np.int64)
        space_root = np.array([self._find_space(s) for s in range(len(self._space_parent))], dtype=np.int64)
        kind = np.asarray(self._kind, dtype=np.int64)
        # Classes numbered by their smallest element, grouped by the root of their space.
        class_roots, element_class = np.unique(roots, return_inverse=True)
        element_class = element_class.astype(np.int64)
        class_space = space_root[space[class_roots]]
        group_roots = np.unique(class_space)
        group_of_root = {int(r): i for i, r in enumerate(group_roots)}
        class_group = np.array([group_of_root[int(s)] for s in class_space], dtype=np.int64)
        class_index = np.zeros(len(class_roots), dtype=np.int64)
        counts = np.zeros(len(group_roots), dtype=np.int64)
        for c, g in enumerate(class_group.tolist()):
            class_index[c] = counts[g]
            counts[g] += 1
        self.element_class, self.class_group, self.class_index = element_class, class_group, class_index

        self._unshare_constants()
        groups: list[ChannelGroup] = []
        for g, root in enumerate(group_roots.tolist()):
            member_spaces = np.nonzero(space_root == root)[0]
            nodes = [self._space_node[s] for s in member_spaces if self._space_kind[s] == ElementKind.LAYER]
            name = nodes[0] if nodes else (self._space_node[member_spaces[0]] or f"fixed:{root}")
            classes = np.nonzero(class_group == g)[0]
            members = np.isin(element_class, classes)
            has_pad = np.zeros(len(classes), dtype=bool)
            has_fixed = np.zeros(len(classes), dtype=bool)
            has_pad[class_index[element_class[members & (kind == ElementKind.PAD)]]] = True
            has_fixed[class_index[element_class[members & (kind == ElementKind.FIXED)]]] = True
            groups.append(ChannelGroup(name, len(classes), nodes, has_pad=has_pad, has_fixed=has_fixed))

        for role, node, tensor, axis, layout in self._raw_slices:
            cls = element_class[layout]
            for g in np.unique(class_group[cls]).tolist():
                index_map = _index_map(class_index[cls], class_group[cls] == g, groups[g].size, len(layout))
                sl = ParamSlice(role, node, tensor, axis, index_map)
                {"producer": groups[g].producers, "follower": groups[g].followers,
                 "consumer": groups[g].consumers}[role].append(sl)  # fmt: skip
        for layout, reason in self._pins:
            for g in np.unique(class_group[element_class[layout]]).tolist():
                if reason not in groups[g].pinned_by:
                    groups[g].pinned_by.append(reason)
        seen: set[tuple[int, bytes]] = set()
        for layout in self.layouts.values():
            cls = np.unique(element_class[layout])
            owners = np.unique(class_group[cls])
            if len(owners) == 1 and len(layout):
                key = (int(owners[0]), cls.tobytes())
                if key not in seen:
                    seen.add(key)
                    groups[int(owners[0])].tensor_classes.append(class_index[cls])
        _pin_shared_constants(groups, self._raw_slices, self.graph)
        # Groups without any layer channel (graph inputs, pads alone) are nothing to prune.
        self.groups = [g for g in groups if g.producer_nodes]
        self.all_groups = groups

    def _unshare_constants(self) -> None:
        """A sliced constant that several nodes read (exporters share equal initializers, or
        read one through Identity nodes, whose output is then shared) gets a copy for each reader
        after the first, so each reader's slice can be cut alone. One listed as a graph input
        stays shared (and pinned)."""
        sliced = {tensor for _, _, tensor, _, _ in self._raw_slices}
        readers: dict[str, list[gs.Node]] = {}
        for node in self.graph.nodes:
            for t in node.inputs:
                if t.name in sliced:
                    users = readers.setdefault(t.name, [])
                    if node not in users:
                        users.append(node)
        graph_inputs = {t.name for t in self.graph.inputs}
        renamed: dict[tuple[str, str], str] = {}
        for name, users in readers.items():
            if len(users) < 2 or name in graph_inputs:
                continue
            original = next(t for t in users[0].inputs if t.name == name)
            # An initializer's copy shares its lazily loaded values; a computed constant (the
            # output of an Identity of one) becomes an initializer of its value.
            values = original._values if isinstance(original, gs.Constant) else self.constant(original)
            for node in users[1:]:
                copy = gs.Constant(self.unique_name(f"{name}_{node.name}"), values)
                for i, t in enumerate(node.inputs):
                    if t is original:
                        node.inputs[i] = copy
                renamed[(node.name, name)] = copy.name
        if renamed:
            self._tensors = None
            self._raw_slices = [(role, node, renamed.get((node, tensor), tensor), axis, layout)
                                for role, node, tensor, axis, layout in self._raw_slices]  # fmt: skip

    def group_index(self) -> dict[str, int]:
        """Position in `all_groups` of each reported group, by name."""
        return {g.name: i for i, g in enumerate(self.all_groups) if g.producer_nodes}

    def unique_name(self, base: str) -> str:
        """`base`, or `base_1`, `base_2`, ...: a tensor name the graph does not use yet."""
        if self._names is None:
            self._names = set(self.graph.tensors())
        name, i = base, 0
        while name in self._names:
            i += 1
            name = f"{base}_{i}"
        self._names.add(name)
        return name

    def producer_op(self, node_name: str) -> str:
        return self._producer_ops.get(node_name, "")


# Quantized weights stay quantized: folding them would silently turn the model into a float one.
_NOT_FOLDED = ("DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear", "If", "Loop", "Scan")
def _root(parent: list[int], x: int) -> int:
    """Union-find: the root of x, compressing the path on the way."""
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        parent[x], x = root, parent[x]
    return root


_FOLD_LIMIT = 256  # nodes: torchvision detectors pad the resized image with a 73-node computation


def constant_value(tensor: gs.Constant) -> np.ndarray:
    """An initializer's value, read-only. Read straight from the TensorProto, so the graph keeps
    its lazily loaded constants: the export then reuses the original tensors it did not change."""
    values = tensor._values
    if hasattr(values, "tensor") and isinstance(values.tensor, onnx.TensorProto):
        array = onnx.numpy_helper.to_array(values.tensor)
    else:
        array = np.asarray(tensor.values)
    array = array.view()
    array.setflags(write=False)
    return array  # nodes; constant subgraphs that exporters build for shapes are small


def _fold(tensor: gs.Variable, opset_imports, unknown_dim: int | None = None) -> np.ndarray | None:
    """Evaluate `tensor` with onnx's reference evaluator when everything it depends on is a
    constant (and Shape nodes read only constants); None otherwise. With `unknown_dim`, a Shape
    node is evaluated from its input's inferred shape, unknown dims taking that value."""
    nodes: list[gs.Node] = []
    leaves: dict[str, np.ndarray] = {}
    seen: set[str] = set()
    stack = [tensor]
    while stack:
        t = stack.pop()
        if isinstance(t, gs.Constant) or t.name in seen:
            continue
        seen.add(t.name)
        if len(t.inputs) != 1 or len(nodes) >= _FOLD_LIMIT:
            return None  # a graph input, or too much to be a shape computation
        node = t.inputs[0]
        if node.op == "Constant":
            nodes.append(node)
            continue
        if node.op == "Shape" and unknown_dim is not None and node.inputs[0].shape is not None:
            dims = [d if isinstance(d, int) and d >= 0 else unknown_dim for d in node.inputs[0].shape]
            start, end = int(node.attrs.get("start", 0)), node.attrs.get("end")
            leaves[t.name] = np.array(dims[start : None if end is None else int(end)], dtype=np.int64)
            continue
        if node.domain not in ("", "ai.onnx", None) or node.op in _NOT_FOLDED:
            return None
        nodes.append(node)
        stack.extend(i for i in node.inputs if i.name)
    from onnx.reference import ReferenceEvaluator
    from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

    if tensor.name in leaves:
        return leaves[tensor.name]
    unique = list({id(n): n for n in nodes}.values())
    constants = {i.name: i for n in unique for i in n.inputs if isinstance(i, gs.Constant)}
    if any(c.values.size > 4096 for c in constants.values()):
        return None
    try:
        # Nodes were found walking backwards; a reversed DFS finish order is not always a valid
        # order, so sort them: a node comes after every node making its inputs.
        ordered, done = [], {c for c in constants} | set(leaves)
        pending = unique[::-1]
        while pending:
            ready = [n for n in pending if all(not i.name or i.name in done for i in n.inputs)]
            if not ready:
                return None
            for n in ready:
                ordered.append(n)
                done.update(o.name for o in n.outputs)
            pending = [n for n in pending if n not in ready]
        proto = onnx.helper.make_model(
            onnx.helper.make_graph(
                [OnnxExporter.export_node(n) for n in ordered], "fold", [],
                [onnx.ValueInfoProto(name=tensor.name)],
                [onnx.numpy_helper.from_array(np.asarray(c.values), c.name) for c in constants.values()]
                + [onnx.numpy_helper.from_array(v, name) for name, v in leaves.items()],
            ),
            opset_imports=opset_imports,
        )  # fmt: skip
        return np.asarray(ReferenceEvaluator(proto).run(None, {})[0])
    except Exception:  # noqa: BLE001 - anything the evaluator cannot run is simply not a constant
        return None


def _index_map(class_idx: np.ndarray, mask: np.ndarray, size: int, axis_len: int) -> IndexMap:
    """Map class k -> the positions (where `mask`) whose class index is k."""
    positions = np.nonzero(mask)[0]
    classes = class_idx[positions]
    order = np.argsort(classes, kind="stable")
    classes, positions = classes[order], positions[order]
    counts = np.bincount(classes, minlength=size)
    width = max(int(counts.max(initial=0)), 1)
    table = np.full((size, width), -1, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    col = np.arange(len(classes)) - starts[classes]
    table[classes, col] = positions
    return IndexMap(table, axis_len)


def _pin_shared_constants(groups: list[ChannelGroup], raw_slices, graph: gs.Graph) -> None:
    """A constant that two nodes read, or that is sliced for two different groups on one axis,
    cannot be cut for one of them alone: pin every group that would slice it."""
    readers: dict[str, set[str]] = {}
    for node in graph.nodes:
        for t in node.inputs:
            readers.setdefault(t.name, set()).add(node.name)
    for g in groups:
        for sl in (*g.producers, *g.followers, *g.consumers):
            if len(readers.get(sl.tensor, ())) > 1:
                reason = f"constant {sl.tensor} is shared by nodes {', '.join(sorted(readers[sl.tensor]))}"
                if reason not in g.pinned_by:
                    g.pinned_by.append(reason)


def analyze_channels(model: onnx.ModelProto | str | os.PathLike, *, check: bool = True,
                     pad_layer_norms: bool = False) -> ChannelAnalysis:
    """Load (if a path), infer shapes and analyse the channel groups of `model` (validated
    unless `check` is False: for a model `load_model` has just checked). With `pad_layer_norms`,
    channels pass a LayerNormalization over them (ConvNeXt's): the surgery pads the constant
    values of removed ones back in before the norm, so its statistics stay exact (a Pad and a
    Slice per norm); without, such norms pin their channels."""
    from onnxprune import op_rules

    proto = load_model(model, check=check)
    graph, static = import_graph(proto)
    analysis = ChannelAnalysis(proto, graph)
    analysis._static.update(static)
    analysis.owns_model = not isinstance(model, onnx.ModelProto)
    analysis.pad_layer_norms = pad_layer_norms
    analysis.unnamed = name_unnamed_nodes(graph)
    for tensor in graph.inputs:
        shape = analysis.shape(tensor)
        if shape is not None and len(shape) >= 2 and isinstance(shape[1], int):
            analysis.set_layout(tensor, analysis.new_fixed_channels(shape[1]))
    for node in graph.nodes:
        op_rules.apply(analysis, node)
    for tensor in graph.outputs:
        analysis.pin(analysis.layout(tensor), f"feeds graph output {tensor.name}")
    analysis.finish()
    return analysis


def name_unnamed_nodes(graph: gs.Graph) -> set[str]:
    """Give each unnamed node its first output's name, so messages and groups can name it; returns
    those names (the surgery clears them again: the output keeps the input's node names)."""
    used = {n.name for n in graph.nodes if n.name}
    named = set()
    for node in graph.nodes:
        if not node.name:
            name = node.outputs[0].name if node.outputs else node.op
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
            named.add(name)
    return named


def import_graph(proto: onnx.ModelProto) -> tuple[gs.Graph, dict[str, np.ndarray]]:
    """The model as an onnx-graphsurgeon graph with inferred shapes on its tensors, and the
    values of the shape operands it evaluated (below) by tensor name. Shapes come
    from inference on a copy whose large weights are left out (inference reads only their dims).
    Where exporters compute Slice bounds, Reshape shapes or Resize sizes from Shape at run time
    (ultralytics' C2f chunk, ShuffleNet's channel shuffle, torchvision detectors' transform),
    inference loses every dim behind them; those operands are evaluated from the inferred shapes
    when no unknown dim changes them, and inference runs again on the copy with them as
    constants, so the tensors behind get their static sizes (the value pass needs them)."""
    skeleton = shape_skeleton(proto)
    graph = gs.import_onnx(proto)
    _apply_shapes(graph, _infer_shapes(skeleton))
    done: dict[str, np.ndarray] = {}
    for _ in range(_REFINE_PASSES):
        static = {}
        for node in graph.nodes:
            for i in _SHAPE_OPERANDS.get(node.op, ()):
                t = node.inputs[i] if i < len(node.inputs) else None
                if t is None or not t.name or isinstance(t, gs.Constant) or t.name in done or t.name in static:
                    continue
                value = _static_value(t, proto.opset_import)
                if value is not None:
                    static[t.name] = value
        done.update(static)
        if not static:
            break
        for node in skeleton.graph.node:
            for i, name in enumerate(node.input):
                if name in static:
                    node.input[i] = f"{name}__static"
        skeleton.graph.initializer.extend(onnx.numpy_helper.from_array(v, f"{n}__static") for n, v in static.items())
        _apply_shapes(graph, _infer_shapes(skeleton))
    return graph, done


# Operands that say how big a tensor is (Slice bounds, Reshape shape, Resize sizes, ...).
_SHAPE_OPERANDS = {
    "Slice": (1, 2, 3, 4), "Split": (1,), "Reshape": (1,), "Resize": (1, 2, 3), "Upsample": (1,), "Expand": (1,),
    "Tile": (1,), "ConstantOfShape": (0,), "Pad": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "Range": (0, 1, 2),
}  # fmt: skip
_REFINE_PASSES = 4


def _static_value(tensor: gs.Tensor, opset_imports) -> np.ndarray | None:
    """The value of a tensor computed from shapes, when no unknown dim changes it."""
    first = _fold(tensor, opset_imports, unknown_dim=7919)
    if first is None:
        return None
    second = _fold(tensor, opset_imports, unknown_dim=104729)
    if second is None or first.shape != second.shape or not np.array_equal(first, second):
        return None
    return first


def _infer_shapes(skeleton: onnx.ModelProto) -> dict[str, tuple[list | None, int | None]]:
    """Tensor name -> (inferred shape, element type) from onnx's shape inference."""
    inferred = onnx.shape_inference.infer_shapes(skeleton, data_prop=True)
    out: dict[str, tuple[list | None, int | None]] = {}
    for info in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input):
        dtype = info.type.tensor_type.elem_type if info.type.HasField("tensor_type") else None
        shape = None
        if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in info.type.tensor_type.shape.dim]
        if info.name not in out or out[info.name][0] is None:
            out[info.name] = (shape, dtype)
    return out


def _apply_shapes(graph: gs.Graph, shapes: dict[str, tuple[list | None, int | None]]) -> None:
    """Give the graph's tensors the inferred shapes: where they have none, or sizes where they
    have unknown dims of the same rank."""
    for name, tensor in graph.tensors().items():
        if not isinstance(tensor, gs.Variable) or shapes.get(name, (None, None))[0] is None:
            continue
        shape, dtype = shapes[name]
        if tensor.shape is None:
            tensor.shape = shape
        elif len(tensor.shape) == len(shape):
            tensor.shape = [d if isinstance(d, int) and d >= 0 else n for d, n in zip(tensor.shape, shape, strict=True)]
        if tensor.dtype is None and dtype:
            tensor.dtype = onnx.helper.tensor_dtype_to_np_dtype(dtype)
