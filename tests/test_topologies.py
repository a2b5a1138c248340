"""The test topologies (tests/topologies.py): valid models, honest ground truth, working edit helpers."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from topologies import (
    BN_MODES,
    BUILDERS,
    Topology,
    channel_tensor,
    constant_channels,
    run,
    torch_module,
    with_outputs,
    zero_channels,
    zero_consumer_slices,
)

CASES = [(name, bn) for name, (_, takes_bn) in BUILDERS.items() for bn in (BN_MODES if takes_bn else (None,))]
IDS = [name if bn is None else f"{name}-{bn}" for name, bn in CASES]
TORCH_CASES = [case for case in CASES if case[1] is not None]
TORCH_IDS = [f"{name}-{bn}" for name, bn in TORCH_CASES]

OUTPUT_SHAPES = {
    "vgg_chain": {"logits": (1, 10)},
    "resnet_blocks": {"logits": (1, 10)},
    "inception_concat": {"logits": (1, 10)},
    "mobilenet_dw": {"logits": (1, 10)},
    "fpn_resize_add": {"p3": (1, 6, 16, 16), "p4": (1, 6, 8, 8)},
    "ssd_heads": {"scores": (1, 704, 3), "boxes": (1, 704, 4)},
    "onnx_chain_misc": {"logits": (1, 10)},
}

# Ops a channel can pass through from a conv to the convs in `consumers` (zero stays zero, channel
# c stays channel c); Add and Mul only with a per-channel / scalar initializer.
CHANNELWISE = {"BatchNormalization", "Relu", "PRelu", "Clip", "HardSwish", "MaxPool", "AveragePool", "Add", "Mul"}


@functools.cache
def build(name: str, bn: str | None) -> Topology:
    builder = BUILDERS[name][0]
    return builder() if bn is None else builder(bn)


def sample(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    (found,) = [n for n in model.graph.node if n.name == name]
    return found


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    (found,) = [t for t in model.graph.initializer if t.name == name]
    return numpy_helper.to_array(found)


def group(conv: onnx.NodeProto) -> int:
    return next((a.i for a in conv.attribute if a.name == "group"), 1)


def readers(model: onnx.ModelProto, tensor: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if tensor in n.input]


def channelwise(n: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    """Whether node `n` maps channel c to channel c and zero to zero."""
    if n.op_type not in CHANNELWISE:
        return False
    if n.op_type not in ("Add", "Mul"):
        return True
    constants = [list(inits[i].dims) for i in n.input if i in inits]
    if len(constants) != 1:
        return False
    (dims,) = constants
    per_channel = len(dims) in (3, 4) and dims[-2:] == [1, 1] and (len(dims) == 3 or dims[0] == 1)
    return per_channel or (n.op_type == "Mul" and dims in ([], [1]))


def channel_paths(model: onnx.ModelProto, conv_name: str) -> tuple[set[str], set[str], bool]:
    """Follow conv `conv_name`'s output through non-Conv nodes: (group-1 Convs reached, ops or
    depthwise convs that are not channel-wise pass-throughs, whether a graph output is reached)."""
    inits = {t.name: t for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    convs: set[str] = set()
    other: set[str] = set()
    reaches_output = False
    todo, seen = [node(model, conv_name).output[0]], set()
    while todo:
        tensor = todo.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        reaches_output |= tensor in outputs
        for n in readers(model, tensor):
            if n.op_type == "Conv":
                (convs if group(n) == 1 else other).add(n.name)
                continue
            if not channelwise(n, inits):
                other.add(n.op_type)
            if n.op_type in ("Gemm", "MatMul"):
                continue
            todo.extend(n.output)
    return convs, other, reaches_output


def output_map(model: onnx.ModelProto, x: np.ndarray, tensors: list[str]) -> dict[str, np.ndarray]:
    tensors = list(dict.fromkeys(tensors))
    names = [o.name for o in model.graph.output] + tensors
    values = run(with_outputs(model, tensors), x)
    return dict(zip(names, values, strict=True))


@pytest.mark.parametrize(("name", "bn"), CASES, ids=IDS)
def test_valid_and_runs(name: str, bn: str | None) -> None:
    topo = build(name, bn)
    onnx.checker.check_model(topo.model, full_check=True)
    assert [o.version for o in topo.model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    (graph_input,) = topo.model.graph.input
    dims = tuple(d.dim_value for d in graph_input.type.tensor_type.shape.dim)
    assert dims == topo.input_shape and topo.input_shape[0] == 1
    expected = OUTPUT_SHAPES[name]
    assert [o.name for o in topo.model.graph.output] == list(expected)
    outputs = run(topo.model, sample(topo.input_shape))
    assert [o.shape for o in outputs] == list(expected.values())
    assert all(np.isfinite(o).all() and np.abs(o).max() > 0 for o in outputs)


@pytest.mark.parametrize(("name", "bn"), TORCH_CASES, ids=TORCH_IDS)
def test_matches_torch_and_bn_mode(name: str, bn: str) -> None:
    topo = build(name, bn)
    module, shape = torch_module(name)
    x = sample(shape)
    with torch.no_grad():
        expected = module(torch.from_numpy(x))
    expected = expected if isinstance(expected, tuple) else (expected,)
    for got, want in zip(run(topo.model, x), expected, strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)
    bn_nodes = [n for n in topo.model.graph.node if n.op_type == "BatchNormalization"]
    bn_modules = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bn_nodes) == (len(bn_modules) if bn == "separate" else 0)
    # Folding is visible: the first conv's weight is the module's only when BN is kept separate.
    first_conv = next(n for n in topo.model.graph.node if n.op_type == "Conv")
    first_module = next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))
    same = np.array_equal(initializer(topo.model, first_conv.input[1]), first_module.weight.detach().numpy())
    assert same == (bn == "separate")
    if bn == "separate":
        for n in bn_nodes:
            scale, bias, mean, var = (initializer(topo.model, i) for i in n.input[1:])
            assert not (np.allclose(scale, 1) or np.allclose(bias, 0) or np.allclose(mean, 0) or np.allclose(var, 1))


@pytest.mark.parametrize(("name", "bn"), CASES, ids=IDS)
def test_deterministic(name: str, bn: str | None) -> None:
    builder = BUILDERS[name][0]
    again = builder() if bn is None else builder(bn)
    assert again.model.SerializeToString() == build(name, bn).model.SerializeToString()


@pytest.mark.parametrize(("name", "bn"), CASES, ids=IDS)
def test_ground_truth(name: str, bn: str | None) -> None:
    """prunable / pinned / consumers / tied name Conv nodes and agree with the graph's structure."""
    topo = build(name, bn)
    model = topo.model
    convs = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
    out_channels = {k: initializer(model, n.input[1]).shape[0] for k, n in convs.items()}
    assert set(topo.prunable) <= set(convs) and set(topo.pinned) <= set(convs)
    assert not set(topo.prunable) & set(topo.pinned)
    assert topo.prunable == {k: out_channels[k] for k in topo.prunable}
    assert all(4 <= c <= 16 for c in topo.prunable.values())
    # Every conv is accounted for; the rest are depthwise convs.
    for k in set(convs) - set(topo.prunable) - set(topo.pinned):
        n = convs[k]
        assert group(n) > 1 and group(n) == out_channels[k] == initializer(model, n.input[1]).shape[0], k
    for k in topo.pinned:
        assert channel_paths(model, k)[2], f"{k} is pinned but does not reach a graph output"
    for k in topo.prunable:
        reached, other, reaches_output = channel_paths(model, k)
        assert not reaches_output, f"{k} is prunable but reaches a graph output"
        if k in topo.consumers:
            assert not other, f"{k}: channels pass through {other}"
            assert reached == set(topo.consumers[k]), k
        else:
            assert other, f"{k} reaches only {reached} through channel-wise ops but has no consumers entry"
    for k, names in topo.consumers.items():
        for c in names:
            assert group(convs[c]) == 1 and initializer(model, convs[c].input[1]).shape[1] == out_channels[k]
    for tied in topo.tied:
        assert len(tied) >= 2 and set(tied) <= set(topo.prunable)
        assert len({out_channels[k] for k in tied}) == 1
        assert all("Add" in channel_paths(model, k)[1] for k in tied)
    assert sum(len(t) for t in topo.tied) == len({k for t in topo.tied for k in t})


def pick(count: int) -> list[int]:
    return [0, count // 2, count - 1]


@pytest.mark.parametrize(("name", "bn"), CASES, ids=IDS)
def test_zero_channels(name: str, bn: str | None) -> None:
    """The picked channels are exactly 0 at the conv output and after its BN / bias Add; the other
    channels and the original model are untouched."""
    topo = build(name, bn)
    x = sample(topo.input_shape)
    before = topo.model.SerializeToString()
    for conv_name, count in topo.prunable.items():
        chans = pick(count)
        keep = [c for c in range(count) if c not in chans]
        conv_out = node(topo.model, conv_name).output[0]
        after = channel_tensor(topo.model, conv_name)
        follower = readers(topo.model, conv_out)
        if bn == "separate" and [n.op_type for n in follower] == ["BatchNormalization"]:
            assert after == follower[0].output[0]
        if conv_name == "conv_a":
            assert after == "a_bias"
        zeroed = zero_channels(topo.model, conv_name, chans)
        onnx.checker.check_model(zeroed, full_check=True)
        old = output_map(topo.model, x, [conv_out, after])
        new = output_map(zeroed, x, [conv_out, after])
        for tensor in {conv_out, after}:
            assert np.all(new[tensor][:, chans] == 0), (conv_name, tensor)
            assert np.abs(old[tensor][:, chans]).max() > 0, (conv_name, tensor)
            np.testing.assert_allclose(new[tensor][:, keep], old[tensor][:, keep], rtol=1e-6, atol=1e-6)
    assert topo.model.SerializeToString() == before


@pytest.mark.parametrize(("name", "bn"), CASES, ids=IDS)
def test_constant_channels(name: str, bn: str | None) -> None:
    topo = build(name, bn)
    x = sample(topo.input_shape)
    for conv_name, count in topo.prunable.items():
        chans = pick(count)
        conv_out = node(topo.model, conv_name).output[0]
        after = channel_tensor(topo.model, conv_name)
        model = constant_channels(topo.model, conv_name, chans, 0.75)
        onnx.checker.check_model(model, full_check=True)
        assert len(node(model, conv_name).input) == 3
        values = output_map(model, x, [conv_out, after])
        assert np.all(values[conv_out][:, chans] == np.float32(0.75)), conv_name
        per_channel = values[after][0, chans]
        assert np.ptp(per_channel.reshape(len(chans), -1), axis=1).max() <= 1e-6, conv_name
        if after != conv_out:  # BN / bias Add untouched: constant, but not 0.75 and not 0
            assert not np.allclose(per_channel, 0.75) and not np.allclose(per_channel, 0)


@pytest.mark.parametrize(("name", "bn"), CASES, ids=IDS)
def test_consumers_read_the_channels(name: str, bn: str | None) -> None:
    """With a producer's channels zeroed, zeroing its consumers' input slices changes no output; on
    the original model it does."""
    topo = build(name, bn)
    x = sample(topo.input_shape)
    base = run(topo.model, x)
    for producer, consumers in topo.consumers.items():
        chans = pick(topo.prunable[producer])
        zeroed = zero_channels(topo.model, producer, chans)
        sliced = zero_consumer_slices(zeroed, producer, chans, consumers)
        for a, b in zip(run(zeroed, x), run(sliced, x), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, err_msg=producer)
        changed = run(zero_consumer_slices(topo.model, producer, chans, consumers), x)
        assert any(not np.allclose(a, b) for a, b in zip(changed, base, strict=True)), producer


TIED_CASES = [case for case in CASES if case[0] in ("resnet_blocks", "fpn_resize_add")]


@pytest.mark.parametrize(("name", "bn"), TIED_CASES, ids=[f"{n}-{b}" for n, b in TIED_CASES])
def test_tied_groups(name: str, bn: str | None) -> None:
    """Zeroing a channel in every conv of a tied group zeroes it after their Add; one conv is not enough."""
    topo = build(name, bn)
    x = sample(topo.input_shape)
    for tied in topo.tied:
        adds = set.intersection(*({n.name for n in residual_adds(topo.model, k)} for k in tied))
        assert adds, tied
        add_outputs = [node(topo.model, a).output[0] for a in sorted(adds)]
        chans = pick(topo.prunable[tied[0]])
        model = topo.model
        for k in tied:
            alone = output_map(zero_channels(topo.model, k, chans), x, add_outputs)
            assert all(np.abs(alone[t][:, chans]).max() > 0 for t in add_outputs), k
            model = zero_channels(model, k, chans)
        together = output_map(model, x, add_outputs)
        assert all(np.all(together[t][:, chans] == 0) for t in add_outputs), tied


def residual_adds(model: onnx.ModelProto, conv_name: str) -> list[onnx.NodeProto]:
    """The first Add of two computed tensors on each path from the conv (through BN, Relu, Resize)."""
    inits = {t.name for t in model.graph.initializer}
    found, todo = [], [node(model, conv_name).output[0]]
    while todo:
        for n in readers(model, todo.pop()):
            if n.op_type == "Add" and not inits & set(n.input):
                found.append(n)
            elif n.op_type in ("BatchNormalization", "Relu", "Resize"):
                todo.append(n.output[0])
    return found


def shared_weight_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((3, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv1"),
         helper.make_node("Conv", ["y", "w"], ["z"], name="conv2")],
        "shared",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3, 4, 4])],
        [w],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_edit_errors() -> None:
    shared = shared_weight_model()
    with pytest.raises(ValueError, match="shared"):
        zero_channels(shared, "conv1", [0])
    with pytest.raises(ValueError, match="shared"):
        constant_channels(shared, "conv2", [0], 1.0)
    mobilenet = build("mobilenet_dw", "folded")
    with pytest.raises(ValueError, match="group=8"):
        zero_consumer_slices(mobilenet.model, "/stem/Conv", [0], ["/block1/dw/Conv"])
    with pytest.raises(ValueError, match="out of range"):
        zero_channels(mobilenet.model, "/stem/Conv", [8])
    with pytest.raises(ValueError, match="0 nodes"):
        zero_channels(mobilenet.model, "/nope/Conv", [0])
    with pytest.raises(ValueError, match="is a Relu"):
        zero_channels(mobilenet.model, "/Relu", [0])
    misc = build("onnx_chain_misc", None)
    with pytest.raises(ValueError, match="reads 8 channels"):
        zero_consumer_slices(misc.model, "conv_d0", [0], ["conv_e"])
