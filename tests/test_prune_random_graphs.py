"""`onnxprune prune` on random small CNNs built with onnx.helper: whatever the topology, removing
exactly-zero filters keeps the model valid, keeps its interface and node names (adding only the
constant maps of exact borders and the pads of LayerNorms), computes the same
outputs (where the report says the removal is exact), reports consistent channel counts, and
removes every zeroed channel that nothing ties or pins.

A graph is described by a `Spec` (plain data: a seed for the weights, a list of blocks, a head,
and which conv output channels to zero), so any failing example hypothesis prints can be rebuilt
with `build(Spec(...))` and pasted into a regression test.

Blocks, each applied to the current tensor (C channels, S x S spatial; the input is (1, 3, 16, 16)):
- ("conv3x3", cout, bias): 3x3 conv, pad 1, optional bias, Relu.
- ("conv1x1_bn", cout, act): 1x1 conv without bias, BatchNormalization (random statistics,
  var > 0), then LeakyRelu / Sigmoid / HardSwish / Clip(0, 6).
- ("depthwise", bias): 3x3 conv with group = C, pad 1, optional bias, Relu.
- ("residual", cout, k1, k2, bias1, bias2, relu): two convs (kernel 1 or 3) of the current tensor,
  added (their channels are tied), optionally followed by Relu.
- ("identity_residual", bias): a 3x3 conv C -> C added to its own input (ties the conv to
  whatever made the current tensor: a graph input, a concat of two convs, ...), then Relu.
- ("concat", w1, w2, k1, k2): two convs of different widths, concatenated on axis 1.
- ("split", s1, cout1, cout2): Split on axis 1 into (s1, C - s1) (sizes as the second input), a
  3x3 conv on each part, Concat. A Split output must keep a channel: when all of a part's
  channels are zero filters, one of them stays.
- ("maxpool",) / ("avgpool",): 2x2, stride 2 (only while S >= 4).
- ("resize_pool",): Resize nearest x2 (inputs X, '', scales [1, 1, 2, 2]), MaxPool 2x2 back.
- ("mul",) / ("add",): times / plus a per-channel constant of shape (C, 1, 1).
- ("layer_norm", silent): Transpose to NHWC, LayerNormalization over the channels (random scale
  and bias), Transpose back (ConvNeXt's LayerNorm2d); with `silent`, the scale is zero on the
  channels the spec zeroes (their norm output is its bias: exact), else they are approximate.
  Pruned with `--pad-layer-norms`.
Heads: "gap_gemm" (GlobalAveragePool, Flatten, Gemm transB=1 to 5 outputs) or "flatten_matmul"
(Flatten, MatMul by a constant, Add a bias constant).

Conv nodes are named "b{i}_conv" (or "b{i}_conv_a" / "b{i}_conv_b" in two-conv blocks); zeroing
channel c of a conv sets weight[c] = 0, bias[c] = 0 and, when a BatchNormalization reads the conv,
its scale[c] = B[c] = 0 (`topologies.zero_channels`), so the channel is exactly 0 there.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest
import topologies as T
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnxprune import cli

INPUT_SHAPE = (1, 3, 16, 16)
OUTPUTS = 5
ACTIVATIONS = ("LeakyRelu", "Sigmoid", "HardSwish", "Clip")
SELECT_ZERO_FILTERS = ["--threshold", "0", "--sf", "1", "--sf-low", "1", "--sg", "1"]
INEXACT = ("folded_border", "approximate")  # removals the report itself calls inexact


# ---------------------------------------------------------------------------------------------
# the graphs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """Everything that determines a test graph; `build(spec)` makes it."""

    seed: int
    blocks: tuple[tuple, ...]
    head: str = "gap_gemm"
    zero: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (conv name, output channels to zero)


@dataclass(frozen=True)
class ConvInfo:
    name: str
    out_channels: int
    depthwise: bool
    tie: str | None = None  # convs with the same tie are joined by a residual Add
    identity_tie: bool = False  # tied to the channels of the tensor it reads (identity shortcut)


Origin = tuple[str, int] | None  # (conv, output channel) a channel comes from; None: the graph input


@dataclass
class Built:
    model: onnx.ModelProto  # without zeroed channels
    zeroed: onnx.ModelProto  # the spec's channels zeroed
    convs: dict[str, ConvInfo] = field(default_factory=dict)
    split_parts: list[list[Origin]] = field(default_factory=list)  # the channels of each Split output


class _Graph:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.convs: dict[str, ConvInfo] = {}
        self.x, self.c, self.s = "input", INPUT_SHAPE[1], INPUT_SHAPE[2]
        # Where each channel of the current tensor comes from: the conv that made it (through
        # channel-wise ops, a depthwise conv or a residual Add, which keep or tie its channels).
        self.origin: list[Origin] = [None] * self.c
        self.zero: dict[str, tuple[int, ...]] = {}  # the spec's zeroed channels, for norm scales
        self.split_parts: list[list[Origin]] = []

    def const(self, name: str, array, dtype=np.float32) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, outputs: int | list[str] = 1, **attrs) -> list[str]:
        if isinstance(outputs, int):
            names = [name] if outputs == 1 else [f"{name}_{i}" for i in range(outputs)]
        else:
            names = outputs
        self.nodes.append(helper.make_node(op, inputs, names, name=name, **attrs))
        return names

    def conv(self, name: str, x: str, cin: int, cout: int, k: int, bias: bool, group: int = 1, **info) -> str:
        fan_in = cin // group * k * k
        w = self.rng.standard_normal((cout, cin // group, k, k)) * (1.5 / np.sqrt(fan_in))
        inputs = [x, self.const(f"{name}.weight", w)]
        if bias:
            inputs.append(self.const(f"{name}.bias", self.rng.uniform(-0.5, 0.5, cout)))
        (y,) = self.node("Conv", inputs, name, kernel_shape=[k, k], pads=[k // 2] * 4, group=group)
        self.convs[name] = ConvInfo(name, cout, group > 1, **info)
        return y

    def relu(self, name: str, x: str) -> str:
        return self.node("Relu", [x], name)[0]

    def pool(self, op: str, name: str, x: str) -> str:
        return self.node(op, [x], name, kernel_shape=[2, 2], strides=[2, 2])[0]


def _made(conv: str, channels: int) -> list[Origin]:
    return [(conv, k) for k in range(channels)]


def _block(g: _Graph, i: int, block: tuple) -> None:
    kind, args = block[0], block[1:]
    p = f"b{i}"
    if kind == "conv3x3":
        cout, bias = args
        g.x, g.c = g.relu(f"{p}_relu", g.conv(f"{p}_conv", g.x, g.c, cout, 3, bias)), cout
        g.origin = _made(f"{p}_conv", cout)
    elif kind == "conv1x1_bn":
        cout, act = args
        y = g.conv(f"{p}_conv", g.x, g.c, cout, 1, False)
        stats = [
            g.const(f"{p}_bn.scale", g.rng.uniform(0.5, 1.5, cout)),
            g.const(f"{p}_bn.B", g.rng.uniform(-0.5, 0.5, cout)),
            g.const(f"{p}_bn.mean", g.rng.uniform(-0.5, 0.5, cout)),
            g.const(f"{p}_bn.var", g.rng.uniform(0.5, 2.0, cout)),
        ]
        (y,) = g.node("BatchNormalization", [y, *stats], f"{p}_bn", epsilon=1e-5)
        if act == "LeakyRelu":
            (y,) = g.node("LeakyRelu", [y], f"{p}_act", alpha=0.1)
        elif act == "Clip":
            (y,) = g.node("Clip", [y, g.const(f"{p}_act.min", 0.0), g.const(f"{p}_act.max", 6.0)], f"{p}_act")
        else:
            (y,) = g.node(act, [y], f"{p}_act")
        g.x, g.c, g.origin = y, cout, _made(f"{p}_conv", cout)
    elif kind == "depthwise":
        (bias,) = args
        g.x = g.relu(f"{p}_relu", g.conv(f"{p}_conv", g.x, g.c, g.c, 3, bias, group=g.c))
    elif kind == "residual":
        cout, k1, k2, bias1, bias2, relu = args
        a = g.conv(f"{p}_conv_a", g.x, g.c, cout, k1, bias1, tie=p)
        b = g.conv(f"{p}_conv_b", g.x, g.c, cout, k2, bias2, tie=p)
        (y,) = g.node("Add", [a, b], f"{p}_add")
        g.x, g.c = (g.relu(f"{p}_relu", y) if relu else y), cout
        g.origin = _made(f"{p}_conv_a", cout)  # tied to b{i}_conv_b's channel k
    elif kind == "identity_residual":
        (bias,) = args
        y = g.conv(f"{p}_conv", g.x, g.c, g.c, 3, bias, tie=p, identity_tie=True)
        g.x = g.relu(f"{p}_relu", g.node("Add", [y, g.x], f"{p}_add")[0])
    elif kind == "concat":
        w1, w2, k1, k2 = args
        a = g.conv(f"{p}_conv_a", g.x, g.c, w1, k1, True)
        b = g.conv(f"{p}_conv_b", g.x, g.c, w2, k2, True)
        g.x, g.c = g.node("Concat", [a, b], f"{p}_concat", axis=1)[0], w1 + w2
        g.origin = _made(f"{p}_conv_a", w1) + _made(f"{p}_conv_b", w2)
    elif kind == "split":
        s1, cout1, cout2 = args
        sizes = g.const(f"{p}_split.sizes", [s1, g.c - s1], np.int64)
        x1, x2 = g.node("Split", [g.x, sizes], f"{p}_split", outputs=2, axis=1)
        g.split_parts += [g.origin[:s1], g.origin[s1:]]
        a = g.conv(f"{p}_conv_a", x1, s1, cout1, 3, True)
        b = g.conv(f"{p}_conv_b", x2, g.c - s1, cout2, 3, False)
        g.x, g.c = g.node("Concat", [a, b], f"{p}_concat", axis=1)[0], cout1 + cout2
        g.origin = _made(f"{p}_conv_a", cout1) + _made(f"{p}_conv_b", cout2)
    elif kind in ("maxpool", "avgpool"):
        g.x, g.s = g.pool("MaxPool" if kind == "maxpool" else "AveragePool", f"{p}_pool", g.x), g.s // 2
    elif kind == "resize_pool":
        scales = g.const(f"{p}_resize.scales", [1.0, 1.0, 2.0, 2.0])
        (y,) = g.node("Resize", [g.x, "", scales], f"{p}_resize", mode="nearest")
        g.x = g.pool("MaxPool", f"{p}_pool", y)
    elif kind in ("mul", "add"):
        low, high = (0.5, 2.0) if kind == "mul" else (-1.0, 1.0)
        value = g.const(f"{p}_{kind}.value", g.rng.uniform(low, high, (g.c, 1, 1)))
        g.x = g.node(kind.capitalize(), [g.x, value], f"{p}_{kind}")[0]
    elif kind == "layer_norm":
        (silent,) = args
        scale = g.rng.uniform(0.5, 1.5, g.c)
        if silent:
            scale[[k for k, o in enumerate(g.origin) if o is not None and o[1] in g.zero.get(o[0], ())]] = 0.0
        (y,) = g.node("Transpose", [g.x], f"{p}_to_nhwc", perm=[0, 2, 3, 1])
        (y,) = g.node("LayerNormalization", [y, g.const(f"{p}_norm.scale", scale), g.const(f"{p}_norm.B", g.rng.uniform(-0.5, 0.5, g.c))],
                      f"{p}_norm", axis=-1, epsilon=1e-5)  # fmt: skip
        g.x = g.node("Transpose", [y], f"{p}_to_nchw", perm=[0, 3, 1, 2])[0]
    else:
        raise ValueError(f"unknown block {block!r}")


def _head(g: _Graph, head: str) -> None:
    if head == "gap_gemm":
        (y,) = g.node("GlobalAveragePool", [g.x], "head_gap")
        (y,) = g.node("Flatten", [y], "head_flatten", axis=1)
        w = g.const("head_fc.weight", g.rng.standard_normal((OUTPUTS, g.c)) / np.sqrt(g.c))
        b = g.const("head_fc.bias", g.rng.uniform(-0.5, 0.5, OUTPUTS))
        g.node("Gemm", [y, w, b], "head_fc", outputs=["logits"], transB=1)
    elif head == "flatten_matmul":
        (y,) = g.node("Flatten", [g.x], "head_flatten", axis=1)
        features = g.c * g.s * g.s
        w = g.const("head_fc.weight", g.rng.standard_normal((features, OUTPUTS)) / np.sqrt(features))
        (y,) = g.node("MatMul", [y, w], "head_matmul")
        g.node("Add", [y, g.const("head_fc.bias", g.rng.uniform(-0.5, 0.5, OUTPUTS))], "head_bias", outputs=["logits"])
    else:
        raise ValueError(f"unknown head {head!r}")


def build(spec: Spec) -> Built:
    g = _Graph(spec.seed)
    g.zero = dict(spec.zero)
    for i, block in enumerate(spec.blocks):
        _block(g, i, block)
    _head(g, spec.head)
    graph = helper.make_graph(
        g.nodes,
        "random_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(INPUT_SHAPE))],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, OUTPUTS])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", T.OPSET)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    zeroed = model
    for conv, channels in spec.zero:
        zeroed = T.zero_channels(zeroed, conv, channels)
    return Built(model, zeroed, g.convs, g.split_parts)


# ---------------------------------------------------------------------------------------------
# the strategy
# ---------------------------------------------------------------------------------------------

_WIDTH = st.integers(2, 6)
_KERNEL = st.sampled_from([1, 3])


@st.composite
def specs(draw) -> Spec:
    seed = draw(st.integers(0, 2**32 - 1))
    c, s = INPUT_SHAPE[1], INPUT_SHAPE[2]
    blocks = []
    for _ in range(draw(st.integers(1, 6))):
        kinds = ["conv3x3", "conv1x1_bn", "depthwise", "residual", "identity_residual", "concat", "split",
                 "resize_pool", "mul", "add", "layer_norm"] + (["maxpool", "avgpool"] if s >= 4 else [])  # fmt: skip
        kind = draw(st.sampled_from(kinds))
        if kind == "conv3x3":
            block = (kind, draw(_WIDTH), draw(st.booleans()))
        elif kind == "conv1x1_bn":
            block = (kind, draw(_WIDTH), draw(st.sampled_from(ACTIVATIONS)))
        elif kind in ("depthwise", "identity_residual", "layer_norm"):
            block = (kind, draw(st.booleans()))
        elif kind == "residual":
            block = (kind, draw(_WIDTH), draw(_KERNEL), draw(_KERNEL), draw(st.booleans()), draw(st.booleans()),
                     draw(st.booleans()))  # fmt: skip
        elif kind == "concat":
            w1 = draw(_WIDTH)
            block = (kind, w1, draw(_WIDTH.filter(lambda w, w1=w1: w != w1)), draw(_KERNEL), draw(_KERNEL))
        elif kind == "split":
            block = (kind, draw(st.integers(1, c - 1)), draw(_WIDTH), draw(_WIDTH))
        else:
            block = (kind,)
        blocks.append(block)
        if kind in ("conv3x3", "conv1x1_bn", "residual"):
            c = block[1]
        elif kind == "concat":
            c = block[1] + block[2]
        elif kind == "split":
            c = block[2] + block[3]
        elif kind in ("maxpool", "avgpool"):
            s //= 2
    head = draw(st.sampled_from(["gap_gemm", "flatten_matmul"]))
    convs = build(Spec(seed, tuple(blocks), head)).convs
    zero: dict[str, tuple[int, ...]] = {}
    for name, info in convs.items():
        n = info.out_channels
        partner = next((z for z in zero if info.tie is not None and convs[z].tie == info.tie), None)
        if partner is not None and draw(st.booleans()):
            zero[name] = zero[partner]  # the same channels of both tied convs: removable through the Add
        elif draw(st.booleans()):
            zero[name] = tuple(sorted(draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=n - 1))))
    return Spec(seed, tuple(blocks), head, tuple(zero.items()))


# ---------------------------------------------------------------------------------------------
# pruning and the invariants
# ---------------------------------------------------------------------------------------------


def prune(model: onnx.ModelProto, *extra: str) -> tuple[onnx.ModelProto, dict]:
    """`onnxprune prune IN -o OUT <zero filters> --json`, in process; the pruned model and report."""
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, src)
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = cli.main(["prune", str(src), "-o", str(out), *SELECT_ZERO_FILTERS, "--json", *extra])
        assert code == 0, stderr.getvalue()
        return onnx.load(out), json.loads(stdout.getvalue())


def _group_of(report: dict, conv: str) -> dict:
    found = [g for g in report["groups"] if conv in g["producers"]]
    assert len(found) == 1, f"{conv} is a producer of {len(found)} groups"
    return found[0]


def _emptied_split_parts(built: Built, conv: str, channels: tuple[int, ...]) -> int:
    """How many Split outputs hold only channels of `conv` from `channels`: removing them all
    would leave a layer reading an empty tensor, so one channel of each such part stays."""
    gone = {(conv, c) for c in channels}
    return sum(1 for part in built.split_parts if part and all(o in gone for o in part))


def check_invariants(spec: Spec, exact_borders: bool = False) -> tuple[onnx.ModelProto, dict]:
    """Prune the spec's zeroed model and assert the invariants; returns the pruned model and report.
    With `exact_borders`, border folds become constant maps (new nodes) and nothing is inexact."""
    built = build(spec)
    original, zeroed = built.model, built.zeroed
    pruned, report = prune(zeroed, "--pad-layer-norms", *(("--exact-borders",) if exact_borders else ()))

    # 1. a valid model with the same interface, and no node it did not have
    onnx.checker.check_model(pruned, full_check=True)
    assert [i.SerializeToString() for i in pruned.graph.input] == [i.SerializeToString() for i in original.graph.input]
    assert [o.SerializeToString() for o in pruned.graph.output] == [
        o.SerializeToString() for o in original.graph.output
    ]
    added = {n.name for n in pruned.graph.node} - {n.name for n in original.graph.node}
    norms = tuple(f"{n.name}_" for n in original.graph.node if n.op_type == "LayerNormalization")
    assert all((exact_borders and "constant_map" in name) or name.startswith(norms) for name in added), added
    if exact_borders:
        assert not any(g["removal"]["folded_border"] for g in report["groups"])

    # 2. the same outputs, wherever the report says every removal was exact
    x = np.random.default_rng(spec.seed ^ 0x5EED).standard_normal(INPUT_SHAPE).astype(np.float32)
    inexact = sum(g["removal"][k] for g in report["groups"] for k in INEXACT)
    for want, got in zip(T.run(zeroed, x), T.run(pruned, x), strict=True):
        assert got.shape == want.shape and np.isfinite(got).all()
        if not inexact:
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(float(np.abs(want).max()), 1e-6))

    # 3. consistent counts
    zero = dict(spec.zero)
    for g in report["groups"]:
        before, after = g["channels_before"], g["channels_after"]
        assert 1 <= after <= before, g
        if g["pinned_by"]:
            assert after == before, g
        assert sum(g["removal"].values()) == before - after, g
        assert set(g["removal"]) == {"exact", "folded", "folded_border", "approximate"}, g
        if not any(p in zero and not built.convs[p].depthwise for p in g["producers"]):
            assert after == before, f"{g['name']} lost channels but none of its filters is zero: {g}"

    # 4. zeroed channels that nothing ties or pins are gone (but for one per Split output that
    #    would otherwise have no channel left)
    for conv, channels in zero.items():
        info = built.convs[conv]
        if info.depthwise:
            continue
        group = _group_of(report, conv)
        if group["pinned_by"]:
            continue
        origin = conv if info.tie is None else f"{info.tie}_conv_a"
        expected = group["channels_before"] - len(channels) + _emptied_split_parts(built, origin, channels)
        if info.tie is None and group["producers"] == [conv]:
            assert group["channels_after"] == expected, f"{conv} zeroed {channels}: {group}"
        elif info.tie is not None and not info.identity_tie:
            pair = sorted(c for c, i in built.convs.items() if i.tie == info.tie)
            if sorted(group["producers"]) == pair and all(zero.get(c) == channels for c in pair):
                assert group["channels_after"] == expected, f"{pair} both zeroed {channels}: {group}"
    return pruned, report


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_random_graphs_prune_zero_filters_exactly(spec):
    check_invariants(spec)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_random_graphs_with_exact_borders_fold_every_constant_exactly(spec):
    check_invariants(spec, exact_borders=True)


# ---------------------------------------------------------------------------------------------
# regression cases
# ---------------------------------------------------------------------------------------------


def test_tied_residual_zeroed_in_both_convs_goes_through_the_add():
    spec = Spec(1, (("residual", 5, 3, 1, True, False, True), ("conv3x3", 4, True)), "gap_gemm",
                (("b0_conv_a", (1, 3)), ("b0_conv_b", (1, 3))))  # fmt: skip
    _, report = check_invariants(spec)
    group = _group_of(report, "b0_conv_a")
    assert sorted(group["producers"]) == ["b0_conv_a", "b0_conv_b"]
    assert (group["channels_before"], group["channels_after"]) == (5, 3)


def test_tied_residual_zeroed_in_one_conv_only_keeps_the_channels():
    spec = Spec(2, (("residual", 4, 3, 3, True, True, False),), "flatten_matmul", (("b0_conv_a", (0, 2)),))
    _, report = check_invariants(spec)
    group = _group_of(report, "b0_conv_a")
    assert group["channels_after"] == group["channels_before"] == 4


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_constant_channels_after_bn_and_activation_fold_into_a_1x1_reader(act):
    # BatchNorm with zeroed scale and B gives 0; Sigmoid maps that to 0.5, a constant that the 1x1
    # convs reading it absorb exactly into their biases; the other activations keep 0.
    spec = Spec(3, (("conv1x1_bn", 6, act), ("concat", 2, 3, 1, 1), ("avgpool",)), "flatten_matmul",
                (("b0_conv", (0, 4, 5)),))  # fmt: skip
    _, report = check_invariants(spec)
    group = _group_of(report, "b0_conv")
    assert group["channels_after"] == 3
    assert group["removal"] == {"exact": 0, "folded": 0, "folded_border": 0, "approximate": 0} | (
        {"folded": 3} if act == "Sigmoid" else {"exact": 3}
    )


def test_split_part_whose_channels_are_all_zeroed_keeps_one():
    # conv (4 channels, 0, 1 and 3 zero) -> Relu -> Split [2, 2] -> a conv on each part -> Concat.
    # Channels 0 and 1 are the whole first part: removing both would leave that Split output
    # empty and b1_conv_a with a (3, 0, 3, 3) weight, which onnx.checker accepts but onnxruntime
    # refuses ("Conv input and output channels must be greater than 0"). One of them stays.
    spec = Spec(0, (("conv3x3", 4, True), ("split", 2, 3, 2)), "gap_gemm", (("b0_conv", (0, 1, 3)),))
    pruned, report = check_invariants(spec)
    assert _group_of(report, "b0_conv")["channels_after"] == 2
    split = next(n for n in pruned.graph.node if n.name == "b1_split")
    sizes = next(t for t in pruned.graph.initializer if t.name == split.input[1])
    assert numpy_helper.to_array(sizes).tolist() == [1, 1]


@pytest.mark.parametrize(("exact_borders", "status"), [(False, "folded_border"), (True, "folded")])
def test_constant_maps_reach_a_padded_layer_norm_through_nhwc(exact_borders, status):
    # conv (channels 1 and 2 zero) + a per-channel constant: constants; the padded depthwise conv
    # makes maps of them, which the Transpose to NHWC carries to the norm (scale zero there): padded
    # back in as maps with exact borders, as their interior value without.
    spec = Spec(4, (("conv3x3", 4, True), ("add",), ("depthwise", True), ("layer_norm", True), ("conv3x3", 3, True)),
                "gap_gemm", (("b0_conv", (1, 2)),))  # fmt: skip
    pruned, report = check_invariants(spec, exact_borders=exact_borders)
    group = _group_of(report, "b0_conv")
    assert group["channels_after"] == 2 and group["removal"][status] == 2
    names = {n.name for n in pruned.graph.node}
    assert {"b3_norm_pad_removed", "b3_norm_slice_kept"} <= names
    assert any("b3_norm_constant_map" in n for n in names) == exact_borders == ("b3_norm_fill_removed" in names)


def test_a_layer_norm_whose_scale_stays_makes_its_removed_channels_approximate():
    spec = Spec(5, (("conv3x3", 4, True), ("layer_norm", False), ("conv3x3", 3, True)), "gap_gemm", (("b0_conv", (0, 3)),))
    _, report = check_invariants(spec)
    group = _group_of(report, "b0_conv")
    assert group["channels_after"] == 2 and group["removal"]["approximate"] == 2
