"""Op rules on their own: tiny graphs built directly in ONNX, one idea each. A zeroed (or
constant) channel of `conv_a` goes through the op under test; the prune must remove it exactly,
or pin the group with the expected reason."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import topologies as T
from onnx import TensorProto, helper, numpy_helper

import onnxprune

RNG = np.random.default_rng(0)


def _w(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _model(nodes, inits: dict[str, np.ndarray], out_shape, in_shape=(1, 3, 8, 8), opset=17) -> onnx.ModelProto:
    """x -> conv_a (4 channels, 3x3, bias) -> `nodes` (reading "a") -> y."""
    first = helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a", pads=[1, 1, 1, 1])
    tensors = [numpy_helper.from_array(v, k) for k, v in {"wa": _w(4, in_shape[1], 3, 3), "ba": _w(4), **inits}.items()]
    graph = helper.make_graph(
        [first, *nodes], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))], tensors,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def _prune(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    report = onnxprune.prune(model, threshold=0.0, sf=1.0, sf_low=1.0, sg=1.0)
    return report["model"], {g["name"]: g for g in report["groups"]}


def _same(a: onnx.ModelProto, b: onnx.ModelProto, shape=(1, 3, 8, 8), tol=1e-5) -> None:
    x = RNG.standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(T.run(b, x)[0], T.run(a, x)[0], rtol=tol, atol=tol)


def test_conv_transpose_reads_and_makes_channels():
    nodes = [
        helper.make_node("ConvTranspose", ["a", "wt", "bt"], ["t"], name="deconv", strides=[2, 2], kernel_shape=[2, 2]),
        helper.make_node("Relu", ["t"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "wc"], ["y"], name="conv_c"),
    ]
    model = _model(nodes, {"wt": _w(4, 5, 2, 2), "bt": _w(5), "wc": _w(2, 5, 1, 1)}, (1, 2, 16, 16))
    zeroed = T.zero_channels(model, "conv_a", [1])
    inits = {t.name: t for t in zeroed.graph.initializer}
    wt, bt = numpy_helper.to_array(inits["wt"]).copy(), numpy_helper.to_array(inits["bt"]).copy()
    wt[:, 3], bt[3] = 0, 0  # deconv output channel 3 is zero too (weight axis 1, and its bias)
    inits["wt"].CopyFrom(numpy_helper.from_array(wt, "wt"))
    inits["bt"].CopyFrom(numpy_helper.from_array(bt, "bt"))
    pruned, groups = _prune(zeroed)
    assert groups["conv_a"]["channels_after"] == 3
    assert groups["deconv"]["channels_after"] == 4
    assert [d for d in numpy_helper.to_array(next(t for t in pruned.graph.initializer if t.name == "wt")).shape] == [3, 4, 2, 2]
    _same(zeroed, pruned)


@pytest.mark.parametrize(
    ("nodes", "inits", "out_shape", "reason"),
    [
        ([helper.make_node("ConvTranspose", ["a", "wg"], ["y"], name="grouped", group=2)], {"wg": _w(4, 2, 1, 1)},
         (1, 4, 8, 8), "ConvTranspose grouped with group=2 or a fixed output_shape"),
        ([helper.make_node("Transpose", ["a"], ["y"], name="tr", perm=[0, 2, 1, 3])], {}, (1, 8, 4, 8),
         "Transpose tr (perm=[0, 2, 1, 3]) moves the channel axis to axis 2"),
        ([helper.make_node("Transpose", ["a"], ["t"], name="tr", perm=[0, 2, 3, 1]),
          helper.make_node("MaxPool", ["t"], ["y"], name="pool", kernel_shape=[1, 1])], {}, (1, 8, 8, 4),
         "MaxPool pool reads channels on axis 3 (channels-last); only elementwise ops, MatMul and Transpose follow them there"),
        ([helper.make_node("LRN", ["a"], ["y"], name="lrn", size=3)], {}, (1, 4, 8, 8), "no rule for op LRN (node lrn)"),
        ([helper.make_node("Relu", ["a"], ["y"], name="relu")], {}, (1, 4, 8, 8), "feeds graph output y"),
    ],
)  # fmt: skip
def test_pins_name_their_reason(nodes, inits, out_shape, reason):
    model = T.zero_channels(_model(nodes, inits, out_shape), "conv_a", [1])
    pruned, groups = _prune(model)
    assert reason in groups["conv_a"]["pinned_by"]
    assert groups["conv_a"]["channels_after"] == 4
    _same(model, pruned)


def test_reshape_with_a_literal_shape_is_rewritten():
    nodes = [
        helper.make_node("Reshape", ["a", "shape"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wf"], ["y"], name="fc", transB=1),
    ]
    model = _model(nodes, {"shape": np.array([1, 256], np.int64), "wf": _w(3, 256)}, (1, 3))
    zeroed = T.zero_channels(model, "conv_a", [0, 2])
    pruned, groups = _prune(zeroed)
    assert groups["conv_a"]["channels_after"] == 2
    shapes = [numpy_helper.to_array(t) for t in pruned.graph.initializer if t.data_type == TensorProto.INT64]
    assert any(list(s) == [1, 128] for s in shapes)
    _same(zeroed, pruned)


def test_resize_with_sizes_is_rewritten():
    nodes = [
        helper.make_node("Resize", ["a", "", "", "sizes"], ["r"], name="up", mode="nearest"),
        helper.make_node("Conv", ["r", "wc"], ["y"], name="conv_c"),
    ]
    model = _model(nodes, {"sizes": np.array([1, 4, 16, 16], np.int64), "wc": _w(2, 4, 1, 1)}, (1, 2, 16, 16))
    zeroed = T.zero_channels(model, "conv_a", [3])
    pruned, groups = _prune(zeroed)
    assert groups["conv_a"]["channels_after"] == 3
    _same(zeroed, pruned)


def test_a_constant_channel_into_matmul_is_folded_into_the_following_add():
    nodes = [
        helper.make_node("GlobalAveragePool", ["a"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "wm"], ["m"], name="fc"),
        helper.make_node("Add", ["m", "bm"], ["y"], name="fc_bias"),
    ]
    model = _model(nodes, {"wm": _w(4, 3), "bm": _w(3)}, (1, 3))
    constant = T.constant_channels(model, "conv_a", [2], 0.75)
    pruned, groups = _prune(constant)
    assert groups["conv_a"]["channels_after"] == 3
    assert groups["conv_a"]["removal"]["folded"] == 1
    _same(constant, pruned, tol=1e-5)


def test_a_constant_channel_into_a_padded_3x3_conv_is_folded_at_the_borders():
    nodes = [helper.make_node("Conv", ["a", "wc", "bc"], ["y"], name="conv_c", pads=[1, 1, 1, 1])]
    model = _model(nodes, {"wc": _w(2, 4, 3, 3), "bc": _w(2)}, (1, 2, 8, 8))
    constant = T.constant_channels(model, "conv_a", [2], 0.75)
    pruned, groups = _prune(constant)
    assert groups["conv_a"]["removal"]["folded_border"] == 1
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    before, after = T.run(constant, x)[0], T.run(pruned, x)[0]
    np.testing.assert_allclose(after[..., 1:-1, 1:-1], before[..., 1:-1, 1:-1], rtol=1e-5, atol=1e-5)
    assert not np.allclose(after, before, atol=1e-3), "the borders differ: that is what folded_border says"


def test_exact_borders_adds_the_constant_map_to_a_padded_3x3_conv():
    """The reader's output gains the constant map the removed channel made (border pixels see
    fewer taps), so the fold is exact everywhere."""
    nodes = [helper.make_node("Conv", ["a", "wc", "bc"], ["y"], name="conv_c", pads=[1, 1, 1, 1])]
    model = _model(nodes, {"wc": _w(2, 4, 3, 3), "bc": _w(2)}, (1, 2, 8, 8))
    constant = T.constant_channels(model, "conv_a", [2], 0.75)
    report = onnxprune.prune(constant, threshold=0.0, sf=1.0, sf_low=1.0, sg=1.0, exact_borders=True)
    pruned = report["model"]
    assert next(g for g in report["groups"] if g["name"] == "conv_a")["removal"]["folded"] == 1
    assert [n.op_type for n in pruned.graph.node][-3:] == ["Gather", "Gather", "Add"]
    _same(constant, pruned)


def test_a_channel_reaching_an_l2_norm_is_exact_only_when_zero():
    nodes = [
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("ReduceL2", ["r", "axes"], ["n"], name="norm", keepdims=1),
        helper.make_node("Div", ["r", "n"], ["d"], name="div"),
        helper.make_node("Conv", ["d", "wc"], ["y"], name="conv_c"),
    ]
    model = _model(nodes, {"axes": np.array([1], np.int64), "wc": _w(2, 4, 1, 1)}, (1, 2, 8, 8), opset=18)
    zeroed = T.zero_channels(model, "conv_a", [0])
    pruned, groups = _prune(zeroed)
    assert groups["conv_a"]["removal"]["exact"] == 1
    _same(zeroed, pruned)
    constant = T.constant_channels(model, "conv_a", [0], 0.75)
    _, groups = _prune(constant)
    assert groups["conv_a"]["removal"]["approximate"] == 1, "a constant changes the L2 norm"
