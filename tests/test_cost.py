"""Parameters and MACs of ONNX models against hand-computed values, one small graph per op."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.cost import model_cost
from onnxprune.model_io import load_model


def single_op(op, inputs, output, weights, **attrs):
    """x -> op(x, *weights) -> y, with the given (name, shape) of x and y."""
    (x_name, x_shape), (y_name, y_shape) = inputs, output
    inits = [numpy_helper.from_array(np.ones(s, dtype), n) for n, s, dtype in weights]
    node = helper.make_node(op, [x_name, *(n for n, _, _ in weights)], [y_name], name=op.lower(), **attrs)
    graph = helper.make_graph(
        [node], op, [helper.make_tensor_value_info(x_name, TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(y_name, TensorProto.FLOAT, y_shape)], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


F32 = np.float32
CASES = {
    # 4 filters of 3x3x3 over an 8x8 output: 4*64 outputs x 27 MACs; 4*27 weights + 4 biases
    "conv": (single_op("Conv", ("x", [1, 3, 8, 8]), ("y", None), [("w", (4, 3, 3, 3), F32), ("b", (4,), F32)],
                       pads=[1, 1, 1, 1]), 6912, 112),
    # depthwise: each output reads one input channel: 4*64 outputs x 9
    "depthwise": (single_op("Conv", ("x", [1, 4, 8, 8]), ("y", None), [("w", (4, 1, 3, 3), F32)], group=4,
                            pads=[1, 1, 1, 1]), 2304, 36),
    # strided conv with a symbolic batch (counted as 1): 8 x 4x4 outputs x 2*3*3
    "strided-dynamic-batch": (single_op("Conv", ("x", ["N", 2, 8, 8]), ("y", None), [("w", (8, 2, 3, 3), F32)],
                                        strides=[2, 2], pads=[1, 1, 1, 1]), 8 * 16 * 18, 144),
    # every input element feeds out_channels * kernel outputs: 32 x 3*2*2
    "conv-transpose": (single_op("ConvTranspose", ("x", [1, 2, 4, 4]), ("y", None), [("w", (2, 3, 2, 2), F32)],
                                 strides=[2, 2]), 384, 24),
    "gemm-transB": (single_op("Gemm", ("x", [1, 8]), ("y", None), [("w", (10, 8), F32), ("b", (10,), F32)],
                              transB=1), 80, 90),
    "matmul-batched": (single_op("MatMul", ("x", [2, 3, 8]), ("y", None), [("w", (8, 5), F32)]), 240, 40),
    # integer initializers (shapes) are not parameters; Reshape has no MACs
    "reshape": (single_op("Reshape", ("x", [1, 12]), ("y", None), [("s", (2,), np.int64)]), 0, 0),
}  # fmt: skip


@pytest.mark.parametrize("name", CASES)
def test_macs_and_params(name):
    model, macs, params = CASES[name]
    cost = model_cost(model)
    assert (cost.macs, cost.params, cost.flops, cost.unknown) == (macs, params, 2 * macs, ())


def test_unknown_spatial_size_is_listed_not_guessed():
    model = single_op("Conv", ("x", [1, 3, "H", "W"]), ("y", None), [("w", (4, 3, 3, 3), F32)])
    cost = model_cost(model)
    assert cost.unknown == ("conv",) and cost.macs == 0 and cost.params == 108


def test_constant_node_tensors_count_as_parameters():
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones((3, 5), F32)))
    add = helper.make_node("Add", ["x", "c"], ["y"])
    graph = helper.make_graph([const, add], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])])  # fmt: skip
    assert model_cost(helper.make_model(graph)).params == 15


def test_resnet20_matches_the_published_flops(assets):
    cost = model_cost(load_model(assets / "models" / "akamaster_cifar10_resnet20.onnx"))
    # NVIDIA ModelOpt's table gives 81.2M FLOPs and 268k parameters for this network
    assert cost.unknown == () and abs(cost.flops - 81.2e6) < 0.2e6
    assert 268_000 <= cost.params <= 270_000


def test_torch_conv_net_macs_match_a_hand_count(tmp_path):
    torch = pytest.importorskip("torch")
    from onnxprune.zoo import export_onnx

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(32 * 16 * 16, 10))
    cost = model_cost(onnx.load(export_onnx(net, tmp_path / "net.onnx", (1, 3, 32, 32))))
    expected = 16 * 32 * 32 * 27 + 32 * 16 * 16 * 16 * 9 + 10 * 32 * 16 * 16
    assert cost.macs == expected and cost.params == sum(p.numel() for p in net.parameters())
