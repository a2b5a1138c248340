"""Patterns of models in the wild (torchvision, timm, ultralytics exports), each in a small graph of
the same structure: grouped convs lose whole groups, constants shared between readers are cut for
each reader, a Concat of a tensor whose channels are not tracked (an ASPP pooling branch resized
to computed sizes, a channels-last branch) no longer crashes the surgery, and constant channels
through depthwise convs are folded exactly or reported approximate, never wrongly called exact
(prune's own verification raises otherwise)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import topologies as T
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import onnxprune
from onnxprune.channel_groups import analyze_channels

ZERO = {"threshold": 0.0, "sf": 1.0, "sf_low": 1.0, "sg": 1.0}


def _module(cls, *args):
    torch.manual_seed(0)
    module = cls(*args)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return module.eval()


def _zero_filters(model: onnx.ModelProto, conv: str, channels, bias: float | None = 0.0) -> onnx.ModelProto:
    """Filters `channels` of Conv `conv` all zero; its bias there `bias` (None: left as it is)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    node = next(n for n in model.graph.node if n.name == conv)
    inits = {t.name: t for t in model.graph.initializer}
    for k, name in enumerate(node.input[1:3]):
        if k == 1 and bias is None:
            continue
        value = numpy_helper.to_array(inits[name]).copy()
        value[list(channels)] = 0.0 if k == 0 else bias
        inits[name].CopyFrom(numpy_helper.from_array(value, name))
    return model


def _group(report: dict, conv: str) -> dict:
    return next(g for g in report["groups"] if conv in g["producers"])


# ----- grouped convs (ResNeXt, RegNet) ------------------------------------------------------


class GroupedBlock(nn.Module):
    """stem 3->8; grouped 3x3 8->8 in 4 groups of 2; 1x1 8->6; GAP, Gemm -> logits."""

    def __init__(self, bn: bool) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=not bn)
        self.bn = nn.BatchNorm2d(8) if bn else nn.Identity()
        self.project = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self.bn(self.grouped(x)))
        x = F.relu(self.project(x))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("bn", ["folded", "separate"])
def test_a_grouped_conv_loses_whole_groups(bn):
    model = T.export_module(_module(GroupedBlock, bn == "separate"), (1, 3, 12, 12), ("logits",), bn)
    analysis = analyze_channels(model)
    group = next(g for g in analysis.groups if "/stem/Conv" in g.producer_nodes)
    assert not group.pinned and group.size == 4  # four groups of two channels
    assert "/grouped/Conv" in group.producer_nodes
    # Group 1 (channels 2, 3) all zero in both convs: it goes, in both, with project's inputs.
    zeroed = _zero_filters(_zero_filters(model, "/stem/Conv", [2, 3]), "/grouped/Conv", [2, 3])
    report = onnxprune.prune(zeroed, **ZERO)
    g = _group(report, "/stem/Conv")
    assert (g["channels_before"], g["channels_after"]) == (4, 3)
    assert report["verification"]["status"] == "passed"
    pruned = report["model"]
    node = next(n for n in pruned.graph.node if n.name == "/grouped/Conv")
    assert next(a.i for a in node.attribute if a.name == "group") == 3
    weights = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    assert weights[node.input[1]].shape == (6, 2, 3, 3)


def test_half_a_group_zero_keeps_the_group():
    model = T.export_module(_module(GroupedBlock, False), (1, 3, 12, 12), ("logits",))
    zeroed = _zero_filters(_zero_filters(model, "/stem/Conv", [2]), "/grouped/Conv", [2, 3])
    report = onnxprune.prune(zeroed, **ZERO)
    g = _group(report, "/stem/Conv")
    assert g["channels_after"] == g["channels_before"]


# ----- constants shared between readers -----------------------------------------------------


def _shared_weight_model(through_identity: str) -> onnx.ModelProto:
    """stem (3->4); branches a and b (1x1, 4->4) read one weight W (b through an Identity when
    `through_identity` is "b", both through one Identity when "both", as exporters deduplicate
    equal initializers); Concat; 1x1 mix (8->3)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("ws", (4, 3, 1, 1)), ("W", (4, 4, 1, 1)), ("wm", (3, 8, 1, 1)), ("bm", (3,)))]  # fmt: skip
    inits.append(numpy_helper.from_array(np.linspace(-1, 1, 4).astype(np.float32), "B"))
    nodes = [helper.make_node("Conv", ["x", "ws"], ["s"], name="stem")]
    if through_identity:
        nodes.append(helper.make_node("Identity", ["W"], ["W_copy"], name="copy"))
    nodes += [
        helper.make_node("Conv", ["s", "W_copy" if through_identity == "both" else "W", "B"], ["a"], name="branch_a"),
        helper.make_node("Conv", ["s", "W_copy" if through_identity else "W", "B"], ["b"], name="branch_b"),
        helper.make_node("Concat", ["a", "b"], ["ab"], name="concat", axis=1),
        helper.make_node("Relu", ["ab"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "wm", "bm"], ["y"], name="mix"),
    ]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 6, 6])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("through_identity", ["", "b", "both"], ids=["same-initializer", "identity", "one-identity"])
def test_a_shared_weight_is_cut_for_each_reader(through_identity):
    model = _shared_weight_model(through_identity)
    w = {t.name: t for t in model.graph.initializer}
    value = numpy_helper.to_array(w["W"]).copy()
    value[2] = 0.0  # filter 2 of both branches (they share W), whose bias is B[2] = 1/3
    w["W"].CopyFrom(numpy_helper.from_array(value, "W"))
    analysis = analyze_channels(model)
    assert not any(g.pinned for g in analysis.groups if g.name in ("branch_a", "branch_b"))
    report = onnxprune.prune(model, **ZERO)
    for name in ("branch_a", "branch_b"):
        g = _group(report, name)
        assert (g["channels_before"], g["channels_after"]) == (4, 3)
        assert g["removal"]["folded"] == 1  # channel 2 holds B[2] (ReLU keeps it): folded into mix's bias
    assert report["verification"]["status"] == "passed"
    onnx.checker.check_model(report["model"], full_check=True)


# ----- Concat of an untracked tensor --------------------------------------------------------


class AsppPooling(nn.Module):
    """DeepLabV3's ASPP: a 1x1 branch and a pooled branch (GAP, 1x1, ReLU, resized back to the
    feature's computed size) concatenated, then a 1x1 projection."""

    def __init__(self) -> None:
        super().__init__()
        self.feature = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.branch = nn.Conv2d(8, 6, 1)
        self.pooled = nn.Conv2d(8, 4, 1)
        self.project = nn.Conv2d(10, 5, 1)

    def forward(self, x):
        f = F.relu(self.feature(x))
        p = F.relu(self.pooled(F.adaptive_avg_pool2d(f, 1)))
        p = F.interpolate(p, size=f.shape[-2:], mode="bilinear", align_corners=False)
        return self.project(torch.cat([F.relu(self.branch(f)), p], dim=1))


class ChannelsLastBranch(nn.Module):
    """A conv output concatenated with a branch computed channels-last (Transpose, Sigmoid, Mul,
    Transpose back), whose channels the analysis does not follow (BlazeFace, YOLO decodes)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Conv2d(9, 4, 1)

    def forward(self, x):
        side = (x.permute(0, 2, 3, 1).sigmoid() * 2.0).permute(0, 3, 1, 2)
        return self.head(torch.cat([F.relu(self.conv(x)), side], dim=1))


def _export_dynamic(module, shape):
    """Exported with dynamic height and width, so sizes are computed from Shape at run time."""
    import io
    import warnings

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(module, (torch.zeros(shape),), buffer, dynamo=False, input_names=["input"],
                          output_names=["out"], opset_version=T.OPSET,
                          dynamic_axes={"input": {2: "h", 3: "w"}, "out": {2: "h", 3: "w"}})  # fmt: skip
    return onnx.load_from_string(buffer.getvalue())


@pytest.mark.parametrize(("cls", "conv", "dynamic"), [
    (AsppPooling, "/branch/Conv", True), (AsppPooling, "/branch/Conv", False), (ChannelsLastBranch, "/conv/Conv", False),
], ids=["aspp-dynamic", "aspp-static", "channels-last"])  # fmt: skip
def test_concat_of_an_untracked_tensor_prunes_its_tracked_inputs(cls, conv, dynamic):
    module = _module(cls)
    shape = (1, 3, 16, 16)
    model = _export_dynamic(module, shape) if dynamic else T.export_module(module, shape, ("out",))
    report = onnxprune.prune(_zero_filters(model, conv, [1, 4]), **ZERO, shapes={"input": shape})
    g = _group(report, conv)
    assert g["channels_before"] - g["channels_after"] == 2 and not g["pinned_by"]
    assert report["verification"]["status"] == "passed"


# ----- constant channels through depthwise convs --------------------------------------------


class DepthwiseChain(nn.Module):
    """stem (3->8) + BN + ReLU; depthwise k x k (multiplier m) + BN + ReLU; 1x1 (8m->6)."""

    def __init__(self, k: int, pad: int, stride: int, multiplier: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8 * multiplier, k, stride=stride, padding=pad, groups=8, bias=False)
        self.dw_bn = nn.BatchNorm2d(8 * multiplier)
        self.pw = nn.Conv2d(8 * multiplier, 6, 1)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        return self.pw(F.relu(self.dw_bn(self.dw(x))))


@pytest.mark.parametrize("bn", ["folded", "separate"])
@pytest.mark.parametrize(("k", "pad", "stride", "multiplier"), [(3, 1, 1, 1), (3, 0, 1, 1), (1, 0, 2, 1), (3, 1, 2, 2),
                                                               (3, 0, 2, 2)])  # fmt: skip
def test_constant_channels_through_a_depthwise_conv(bn, k, pad, stride, multiplier):
    """A removed stem channel holds a positive constant; through a zero-padded depthwise conv it
    varies at the borders. By default its interior value goes into the 1x1 conv's bias (exact
    but at the borders, and the model keeps its nodes); with exact_borders the whole map is added
    to the 1x1 conv's output, stored as one row and column per run of equal ones."""
    module = _module(DepthwiseChain, k, pad, stride, multiplier)
    model = T.export_module(module, (1, 3, 10, 10), ("out",), bn)
    zeroed = _zero_filters(model, "/stem/Conv", [1, 5], bias=2.0)  # then 2.0 (BN: positive) everywhere
    default = onnxprune.prune(zeroed, **ZERO)  # raises where a removal called exact is not
    g = _group(default, "/stem/Conv")
    assert g["channels_before"] - g["channels_after"] == 2 and g["removal"]["approximate"] == 0
    assert bool(g["removal"]["folded_border"]) == bool(pad)
    assert {n.name for n in default["model"].graph.node} <= {n.name for n in zeroed.graph.node}
    report = onnxprune.prune(zeroed, **ZERO, exact_borders=True)
    g = _group(report, "/stem/Conv")
    assert g["channels_before"] - g["channels_after"] == 2
    assert g["removal"]["approximate"] == g["removal"]["folded_border"] == 0 and g["removal"]["folded"] >= 1
    assert report["verification"]["status"] == "passed"
    maps = [t for t in report["model"].graph.initializer if "constant_map" in t.name and not t.name.endswith(("index", "index_1"))]
    assert len(maps) == (1 if pad else 0)
    if pad:  # border rows and columns (a stride of 2 may read padding at one end only), one for the interior
        assert list(maps[0].dims[:2]) == [1, 6] and 2 <= maps[0].dims[2] <= 2 * pad + 1 and 2 <= maps[0].dims[3] <= 2 * pad + 1


def test_constant_channels_through_a_depthwise_conv_of_dynamic_size():
    """With height and width computed at run time the map cannot be known: the removal is
    approximate (never called exact)."""
    module = _module(DepthwiseChain, 3, 1, 1, 1)
    zeroed = _zero_filters(_export_dynamic(module, (1, 3, 10, 10)), "/stem/Conv", [1, 5], bias=2.0)
    report = onnxprune.prune(zeroed, **ZERO, shapes={"input": (1, 3, 10, 10)})
    g = _group(report, "/stem/Conv")
    assert g["channels_before"] - g["channels_after"] == 2 and g["removal"]["approximate"] >= 1


class DepthwiseThenPool(nn.Module):
    """stem 1x1 (3->8), ReLU, depthwise 3x3 (padded), max pool 3x3 of the same size, 1x1 (8->6)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.dw, self.pw = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 6, 1)

    def forward(self, x):
        return self.pw(F.max_pool2d(self.dw(F.relu(self.stem(x))), 3, stride=1, padding=1))


def test_a_map_through_a_pool_of_the_same_size_is_not_taken_as_unchanged():
    """A max pool changes a map's values, though not its size: the removal is approximate, not
    a wrong fold."""
    model = T.export_module(_module(DepthwiseThenPool), (1, 3, 10, 10), ("out",))
    report = onnxprune.prune(_zero_filters(model, "/stem/Conv", [1, 5], bias=2.0), **ZERO, exact_borders=True)
    g = _group(report, "/stem/Conv")
    assert g["channels_before"] - g["channels_after"] == 2 and g["removal"]["approximate"] == 2


class PaddedReader(nn.Module):
    """conv 3->8 (1x1), ReLU, conv 8->6 (3x3, zero padding 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 6, 3, padding=1)

    def forward(self, x):
        return self.b(F.relu(self.a(x)))


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_a_constant_channel_into_a_padded_conv(dynamic):
    """exact_borders with static sizes: folded exactly (a constant map on the reader's output);
    with dynamic sizes the interior value goes into the bias, exact except at the borders
    (`folded_border`)."""
    module = _module(PaddedReader)
    shape = (1, 3, 9, 9)
    model = _export_dynamic(module, shape) if dynamic else T.export_module(module, shape, ("out",))
    report = onnxprune.prune(_zero_filters(model, "/a/Conv", [2, 3], bias=0.5), **ZERO, shapes={"input": shape},
                             exact_borders=True)  # fmt: skip
    g = _group(report, "/a/Conv")
    assert g["channels_before"] - g["channels_after"] == 2
    if dynamic:
        assert g["removal"]["folded_border"] == 2 and report["verification"]["status"] == "deviates"
    else:
        assert g["removal"]["folded"] == 2 and report["verification"]["status"] == "passed"


# ----- bounds and sizes computed from shapes (ultralytics C2f) ------------------------------


class C2f(nn.Module):
    """cv1 (1x1, 3->8) chunked in two halves (exported as Slices whose bounds are computed from
    Shape: C/2), a 3x3 conv on the second half, all three concatenated, cv2 (1x1, 12->5)."""

    def __init__(self) -> None:
        super().__init__()
        self.cv1 = nn.Conv2d(3, 8, 1)
        self.m = nn.Conv2d(4, 4, 3, padding=1)
        self.cv2 = nn.Conv2d(12, 5, 1)

    def forward(self, x):
        y = list(F.silu(self.cv1(x)).chunk(2, 1))
        y.append(F.silu(self.m(y[-1])))
        return self.cv2(torch.cat(y, 1))


def test_slices_with_bounds_computed_from_shapes_are_cut():
    model = T.export_module(_module(C2f), (1, 3, 8, 8), ("out",))
    slices = [n for n in model.graph.node if n.op_type == "Slice"]
    assert slices and all(i in {o for n in model.graph.node if n.op_type != "Constant" for o in n.output}
                          for s in slices for i in s.input[2:3])  # fmt: skip
    zeroed = _zero_filters(model, "/cv1/Conv", [1, 6])  # one channel in each half
    report = onnxprune.prune(zeroed, **ZERO)
    g = _group(report, "/cv1/Conv")
    assert (g["channels_before"], g["channels_after"]) == (8, 6) and not g["pinned_by"]
    assert report["verification"]["status"] == "passed"
    onnx.checker.check_model(report["model"], full_check=True)


def test_sizes_behind_computed_slice_bounds_are_inferred_and_maps_folded_there():
    """onnx's shape inference loses every dim behind C2f's Slices (bounds computed from Shape);
    the analysis evaluates the bounds and infers again, so the 3x3 conv behind gets static sizes
    and a constant channel it reads is folded exactly, borders included."""
    model = T.export_module(_module(C2f), (1, 3, 8, 8), ("out",))
    plain = onnx.shape_inference.infer_shapes(model, data_prop=True)
    lost = {v.name for v in plain.graph.value_info if any(not d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)}
    m_input = next(n for n in model.graph.node if n.name == "/m/Conv").input[0]
    assert m_input in lost  # what the refinement is for
    analysis = analyze_channels(model)
    assert analysis.tensor(m_input).shape == [1, 4, 8, 8]
    report = onnxprune.prune(_zero_filters(model, "/cv1/Conv", [1, 6], bias=0.5), **ZERO, exact_borders=True)
    g = _group(report, "/cv1/Conv")
    assert g["channels_before"] - g["channels_after"] == 2 and g["removal"]["folded"] == 2
    assert report["verification"]["status"] == "passed"


def test_inferred_dim_names_are_not_written():
    """Shape inference names unknown dims unk__N; onnxruntime takes equal names for equal dims,
    so the pruned model must not carry them (they broke RetinaNet's post-processing)."""
    model = T.export_module(_module(C2f), (1, 3, 8, 8), ("out",))
    # A NonZero of the output: its count is unknown, inference names it.
    model.graph.node.append(helper.make_node("NonZero", ["out"], ["where"], name="nonzero"))
    model.graph.node.append(helper.make_node("Transpose", ["where"], ["found"], name="transpose", perm=[1, 0]))
    model.graph.output.append(helper.make_tensor_value_info("found", TensorProto.INT64, [None, 4]))
    report = onnxprune.prune(_zero_filters(model, "/cv1/Conv", [1, 6]), **ZERO)
    names = [d.dim_param for v in report["model"].graph.value_info for d in v.type.tensor_type.shape.dim]
    assert not [n for n in names if n.startswith("unk__")]
    assert "where" in {v.name for v in report["model"].graph.value_info}
    assert report["verification"]["not_compared"] == ["found"]


def test_roi_align_keeps_the_feature_channels():
    """Faster R-CNN's box head pools the FPN features per box: they stay prunable through it."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("wf", (6, 3, 3, 3)), ("wh", (4, 6, 1, 1)))]  # fmt: skip
    inits += [numpy_helper.from_array(np.array([[0, 0, 4, 4], [2, 2, 7, 7]], np.float32), "rois"),
              numpy_helper.from_array(np.zeros(2, np.int64), "batch")]  # fmt: skip
    nodes = [helper.make_node("Conv", ["x", "wf"], ["f"], name="feature", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["f"], ["r"], name="relu"),
             helper.make_node("RoiAlign", ["r", "rois", "batch"], ["p"], name="roi", output_height=2, output_width=2),
             helper.make_node("Conv", ["p", "wh"], ["y"], name="head")]  # fmt: skip
    graph = helper.make_graph(nodes, "roi", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 2, 2])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)], ir_version=8)
    report = onnxprune.prune(_zero_filters(model, "feature", [0, 4], bias=None), **ZERO)
    g = _group(report, "feature")
    assert (g["channels_before"], g["channels_after"]) == (6, 4) and not g["pinned_by"]
    assert report["verification"]["status"] == "passed"


# ----- channel shuffle (ShuffleNet) ---------------------------------------------------------


class ShuffleUnit(nn.Module):
    """conv (3->8), channel shuffle in 2 groups (view, transpose, view with computed sizes, as
    torchvision's ShuffleNetV2 exports), then a 1x1 conv (8->5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.out = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        x = F.relu(self.conv(x))
        n, c, h, w = x.size()
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, -1, h, w)
        return self.out(x)


@pytest.mark.parametrize(("zeroed", "removed"), [([1, 5], 2), ([1, 6], 0), ([0, 2, 4, 6], 4)])
def test_a_channel_shuffle_keeps_its_groups_equal(zeroed, removed):
    """Channel k of each half is tied to channel k of the other: zero in both, both go."""
    model = T.export_module(_module(ShuffleUnit), (1, 3, 6, 6), ("out",))
    report = onnxprune.prune(_zero_filters(model, "/conv/Conv", zeroed), **ZERO)
    g = _group(report, "/conv/Conv")
    assert not g["pinned_by"] and g["channels_before"] == 4  # four pairs
    assert 2 * (g["channels_before"] - g["channels_after"]) == removed
    assert report["verification"]["status"] == "passed"
    onnx.checker.check_model(report["model"], full_check=True)


# ----- channels-last blocks (ConvNeXt) ------------------------------------------------------


class ConvNeXtBlock(nn.Module):
    """stem 3->8 with a channels-last LayerNorm; depthwise 7x7; to NHWC; LayerNorm; Linear 8->32,
    GELU, Linear 32->8; layer scale; back to NCHW; residual; GAP, Linear -> logits. The MLP's 32
    hidden features are prunable; the residual stream goes through LayerNorm over its channels
    and is not."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stem_norm = nn.LayerNorm(8)
        self.dw = nn.Conv2d(8, 8, 7, padding=3, groups=8)
        self.norm = nn.LayerNorm(8)
        self.fc1 = nn.Linear(8, 32)
        self.fc2 = nn.Linear(32, 8)
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, 8))
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem_norm(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = self.gamma * self.fc2(F.gelu(self.fc1(y)))
        x = x + y.permute(0, 3, 1, 2)
        return self.head(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("bias", [0.0, 0.7])
def test_a_channels_last_mlp_loses_its_zero_hidden_features(bias):
    module = _module(ConvNeXtBlock)
    with torch.no_grad():
        module.fc1.weight[[3, 17, 30]] = 0.0
        module.fc1.bias[[3, 17, 30]] = bias  # a nonzero one is GELU(bias) everywhere: folded into fc2's bias
    model = T.export_module(module, (1, 3, 12, 12), ("logits",))
    analysis = analyze_channels(model)
    fc1 = next(n.name for n in analysis.graph.nodes if n.op == "MatMul" and n.inputs[0].shape[-1] == 8)
    hidden = next(g for g in analysis.groups if fc1 in g.producer_nodes)
    assert hidden.size == 32 and not hidden.pinned
    stream = next(g for g in analysis.groups if "/stem/Conv" in g.producer_nodes)
    assert stream.pinned_by and all("LayerNormalization" in r and "normalizes over the channels" in r or r.startswith("feeds")
                                    for r in stream.pinned_by)  # not "grouped conv": the depthwise conv follows the stream
    report = onnxprune.prune(model, **ZERO)
    g = _group(report, fc1)
    assert (g["channels_before"], g["channels_after"]) == (32, 29)
    assert g["removal"]["exact" if bias == 0 else "folded"] == 3
    assert report["verification"]["status"] == "passed"


def _silence_stream(module: ConvNeXtBlock, channels: list[int], case: str) -> None:
    """Stream channels `channels` silent: the stem's filters and the MLP's output rows zero, and
    the stem norm's scale. "exact": everything the block reads there is zero; "folded": the stream
    stays zero, the depthwise biases and the block norm's bias do not (the norm reads distinct
    constants and outputs its bias: folded into fc1's); "map": the stem norm's bias does not either,
    so the stream is a nonzero constant and the padded depthwise conv makes maps of it;
    "approximate": as "folded", with the block norm's scale kept (its output varies)."""
    with torch.no_grad():
        for p in (module.stem.weight, module.stem.bias, module.stem_norm.weight, module.stem_norm.bias,
                  module.fc2.weight, module.fc2.bias):  # fmt: skip
            p[channels] = 0.0
        if case == "exact":
            module.dw.bias[channels] = 0.0
            module.norm.bias[channels] = 0.0
        else:
            module.dw.bias[channels] = torch.tensor([0.3, -0.8])
            module.norm.bias[channels] = torch.tensor([0.5, 1.1])
        if case == "map":
            module.stem_norm.bias[channels] = torch.tensor([0.4, -0.6])
        if case != "approximate":
            module.norm.weight[channels] = 0.0


@pytest.mark.parametrize(("case", "exact_borders", "status"), [
    ("exact", False, "exact"), ("folded", False, "folded"), ("map", True, "folded"), ("map", False, "folded_border"),
    ("approximate", False, "approximate"),
])  # fmt: skip
def test_channels_pass_a_layer_norm_over_them_when_padded_back_in(case, exact_borders, status):
    """ConvNeXt's stream: with pad_layer_norms the norms no longer pin it; a removed channel's
    value is padded back in before each norm (a Pad; an Add of distinct constants, or of maps
    expanded by Gathers with exact_borders), so the kept channels' statistics are the unpruned
    model's; a removed norm output is its bias only where its scale is zero."""
    module = _module(ConvNeXtBlock)
    _silence_stream(module, [2, 5], case)
    model = T.export_module(module, (1, 3, 12, 12), ("logits",))
    assert "--pad-layer-norms" in _group(onnxprune.prune(model, **ZERO, verify=False), "/stem/Conv")["pinned_by"][0]
    report = onnxprune.prune(model, **ZERO, pad_layer_norms=True, exact_borders=exact_borders)
    g = _group(report, "/stem/Conv")
    assert not g["pinned_by"] and (g["channels_before"], g["channels_after"]) == (8, 6)
    assert g["removal"][status] == 2 and sum(g["removal"].values()) == 2
    ops = [n.op_type for n in report["model"].graph.node]
    assert ops.count("LayerNormalization") == 2 and ops.count("Pad") == 2 and ops.count("Slice") == 2
    assert ops.count("Add") == sum(n.op_type == "Add" for n in model.graph.node) + (case != "exact")
    assert ("Gather" in ops) == (status == "folded" and case == "map")
    if status == "approximate":
        assert report["verification"]["max_deviation"] > 1e-4  # what fine-tuning is for
    elif status != "folded_border":
        assert report["verification"]["status"] == "passed"


def test_analyze_groups_the_stream_as_prune_pad_layer_norms_does(tmp_path, capsys):
    import json

    from onnxprune import cli

    path = tmp_path / "convnext_block.onnx"
    onnx.save(T.export_module(_module(ConvNeXtBlock), (1, 3, 12, 12), ("logits",)), path)
    pins = {}
    for flags in ((), ("--pad-layer-norms",)):
        assert cli.main(["analyze", str(path), "--json", *flags]) == 0
        groups = json.loads(capsys.readouterr().out)["groups"]
        pins[flags] = next(g["pinned_by"] for g in groups if "/stem/Conv" in g["producers"])
    assert any("--pad-layer-norms" in r for r in pins[()]) and pins[("--pad-layer-norms",)] == []


def test_a_matmul_bias_is_added_once_to_a_constant_feature():
    """MatMul + Add (a Linear layer as some exporters write it): a zero column's feature holds the
    Add's bias, once; folded into the next layer's bias, the outputs stay the same."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(8, 6)).astype(np.float32)
    w1[:, [1, 4]] = 0.0
    b1 = np.linspace(0.2, 1.2, 6).astype(np.float32)
    w2, b2 = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"), helper.make_node("Add", ["h0", "b1"], ["h1"], name="add1"),
             helper.make_node("Relu", ["h1"], ["h2"], name="relu"), helper.make_node("MatMul", ["h2", "w2"], ["y0"], name="fc2"),
             helper.make_node("Add", ["y0", "b2"], ["y"], name="add2")]  # fmt: skip
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(v, n) for n, v in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2))],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", T.OPSET)], ir_version=8)
    report = onnxprune.prune(model, **ZERO, layers=("fc1",))
    g = _group(report, "fc1")
    assert (g["channels_before"], g["channels_after"]) == (6, 4) and g["removal"]["folded"] == 2
    assert report["verification"]["status"] == "passed"


# ----- reductions over the spatial axes -----------------------------------------------------


class SpatialReduction(nn.Module):
    """conv 3->6 (3x3), a reduction over height and width, Linear -> logits."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.conv, self.fc, self.how = nn.Conv2d(3, 6, 3, padding=1), nn.Linear(6, 4), how

    def forward(self, x):
        y = self.conv(x)
        pooled = {"sum": lambda: y.sum(dim=(2, 3)), "mean": lambda: y.mean(dim=(2, 3)), "max": lambda: y.amax(dim=(2, 3)),
                  "l2": lambda: torch.linalg.vector_norm(y, dim=(2, 3))}[self.how]()  # fmt: skip
        return self.fc(pooled)


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("how", ["sum", "mean", "max", "l2"])
def test_a_constant_channel_reduced_over_space_folds_its_reduced_value(how, dynamic):
    """A removed conv channel holding 0.5 everywhere reaches the Linear layer as 0.5 x H x W
    through a sum (0.5 through a mean or max): folded exactly when H x W is known, approximate
    (never called exact) when it is computed at run time."""
    module = _module(SpatialReduction, how)
    with torch.no_grad():
        module.conv.weight[[1, 4]] = 0.0
        module.conv.bias[[1, 4]] = 0.5
    shape = (1, 3, 8, 8)
    model = _export_dynamic(module, shape) if dynamic else T.export_module(module, shape, ("out",))
    report = onnxprune.prune(model, **ZERO, shapes={"input": shape})  # raises where a removal called exact is not
    g = _group(report, "/conv/Conv")
    assert g["channels_before"] - g["channels_after"] == 2
    if dynamic and how in ("sum", "l2"):
        assert g["removal"]["approximate"] == 2
    else:
        assert g["removal"]["folded"] == 2 and report["verification"]["status"] == "passed"


class Upsampler(nn.Module):
    """conv 3->8 (1x1), ReLU, ConvTranspose 8->4 (kernel 2, stride 2: ultralytics' proto upsampling)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.a, self.up = nn.Conv2d(3, 8, 1), nn.ConvTranspose2d(8, 4, 2, stride=stride)

    def forward(self, x):
        return self.up(F.relu(self.a(x)))


@pytest.mark.parametrize("stride", [2, 1])
def test_a_constant_channel_into_a_conv_transpose(stride):
    """Stride = kernel: each output pixel sees one tap, so the constant adds a map of the
    kernel's period, folded exactly with exact_borders; overlapping taps (stride 1) stay
    approximate."""
    model = T.export_module(_module(Upsampler, stride), (1, 3, 6, 6), ("out",))
    report = onnxprune.prune(_zero_filters(model, "/a/Conv", [2, 5], bias=0.5), **ZERO, exact_borders=True)
    g = _group(report, "/a/Conv")
    assert g["channels_before"] - g["channels_after"] == 2
    if stride == 2:
        assert g["removal"]["folded"] == 2 and report["verification"]["status"] == "passed"
        grid = next(t for t in report["model"].graph.initializer if t.name.endswith("_constant_map"))
        assert list(grid.dims) == [1, 4, 2, 2]
    else:
        assert g["removal"]["approximate"] == 2
