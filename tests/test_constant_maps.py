"""constant_maps: the float64 convolution the surgery folds maps with, checked against onnx's
reference Conv over random geometries (auto_pad included), and the run compression round trip."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from onnxprune import constant_maps


def _reference_conv(x: np.ndarray, w: np.ndarray, attrs: dict, group: int) -> np.ndarray:
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=group, **attrs)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info(n, TensorProto.DOUBLE, None) for n in "xw"],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return ReferenceEvaluator(model).run(None, {"x": x, "w": w})[0]


@settings(max_examples=60, deadline=None)
@given(
    size=st.tuples(st.integers(3, 9), st.integers(3, 9)),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    strides=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    dilations=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pad=st.sampled_from(["explicit", "SAME_UPPER", "SAME_LOWER", "VALID"]),
    pads=st.tuples(*[st.integers(0, 2)] * 4),
    depthwise=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_conv2d_matches_the_reference_conv(size, kernel, strides, dilations, pad, pads, depthwise, seed):
    rng = np.random.default_rng(seed)
    p, o = 3, 3 if depthwise else 4
    x = rng.normal(size=(1, p, *size))
    w = rng.normal(size=(o, 1 if depthwise else p, *kernel))
    attrs = {"strides": list(strides), "dilations": list(dilations), "kernel_shape": list(kernel)}
    attrs.update({"pads": list(pads)} if pad == "explicit" else {"auto_pad": pad})
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    padded = [s + (pads[i] + pads[i + 2] if pad == "explicit" else 0) for i, s in enumerate(size)]
    if pad in ("explicit", "VALID") and any(q < s for q, s in zip(padded, span, strict=True)):
        return  # the kernel does not fit
    expected = _reference_conv(x, w, attrs, p if depthwise else 1)[0]
    node = gs.Node("Conv", attrs=attrs)
    geometry = constant_maps.conv_geometry(node, size, kernel)
    got = constant_maps.conv2d(x[0], w, *geometry, expected.shape[1:], depthwise=depthwise)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 8), st.integers(1, 8)), levels=st.integers(1, 3),
       seed=st.integers(0, 2**16))  # fmt: skip
def test_compress_round_trips_and_keeps_one_row_per_run(shape, levels, seed):
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.integers(0, levels, shape[1]))  # runs of equal rows and columns
    cols = np.sort(rng.integers(0, levels, shape[2]))
    base = rng.normal(size=(shape[0], levels, levels))
    m = base[:, rows][:, :, cols]
    grid, r, c = constant_maps.compress(m)
    np.testing.assert_array_equal(constant_maps.expanded(grid, r, c), m)
    assert grid.shape[1] <= len(np.unique(rows)) and grid.shape[2] <= len(np.unique(cols))


def test_uniform():
    assert constant_maps.uniform(np.stack([np.full((3, 4), 2.0), np.full((3, 4), -1.0)]))
    m = np.full((2, 3, 4), 2.0)
    m[1, 0, 0] = 2.5
    assert not constant_maps.uniform(m)
