"""Every real model in ../shared/assets/models is analysed and pruned: a valid graph with the same
interface, and exact outputs when the removed channels were zero."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import topologies as T

from onnxprune import cli
from onnxprune.channel_groups import analyze_channels

MODELS = [
    "akamaster_cifar10_resnet20.onnx",
    "akamaster_cifar10_resnet20_bn.onnx",
    "onnxzoo_mnist_opset13_rebuilt.onnx",
    "ulfd_version-RFB-320.onnx",
    "ulfd_version-slim-320.onnx",
    "ulfd_version-slim-320_without_postprocessing.onnx",
    "yunet_n_320_320.onnx",
]


def _input_shape(model: onnx.ModelProto) -> tuple[int, ...]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)


def _zero_classes(model: onnx.ModelProto, count: int) -> tuple[onnx.ModelProto, str]:
    """Zero `count` channels of the first prunable group: every producer and follower slice (the
    filters, biases, BatchNorm parameters, depthwise filters), so the channels output exactly 0."""
    analysis = analyze_channels(model)
    group = next(g for g in analysis.groups if not g.pinned and g.size > count + 1 and not g.has_pad[:count].any())
    zeroed = onnx.ModelProto()
    zeroed.CopyFrom(model)
    inits = {t.name: t for t in zeroed.graph.initializer}
    for sl in (*group.producers, *group.followers):
        tensor = inits[sl.tensor]
        value = onnx.numpy_helper.to_array(tensor).copy()
        positions = sl.index_map.positions[:count]
        index = [slice(None)] * value.ndim
        index[sl.axis] = positions[positions >= 0]
        value[tuple(index)] = 0
        tensor.CopyFrom(onnx.numpy_helper.from_array(value, sl.tensor))
    return zeroed, group.name


@pytest.mark.parametrize("name", MODELS)
def test_asset_models_are_analysed(assets, name, capsys):
    assert cli.main(["analyze", str(assets / "models" / name), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["groups"] and report["params"] > 0
    assert report["prunable_groups"] >= 1
    assert all(g["producers"] and g["channels"] >= 1 for g in report["groups"])
    assert all(reason.strip() for g in report["groups"] for reason in g["pinned_by"])


@pytest.mark.parametrize("name", MODELS)
def test_asset_models_lose_exactly_their_zero_channels(assets, name, tmp_path, capsys):
    model = onnx.load(assets / "models" / name)
    zeroed, group_name = _zero_classes(model, 2)
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(zeroed, src)
    assert cli.main(["prune", str(src), "-o", str(out), "--threshold", "0", "--sf", "1", "--sf-low", "1", "--sg", "1",
                     "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    group = next(g for g in report["groups"] if g["name"] == group_name)
    assert group["channels_after"] == group["channels_before"] - 2
    pruned = onnx.load(out)
    onnx.checker.check_model(pruned, full_check=True)
    weights = {t.name for t in model.graph.initializer}
    real_inputs = [i.SerializeToString() for i in model.graph.input if i.name not in weights]
    assert [i.SerializeToString() for i in pruned.graph.input if i.name not in weights] == real_inputs
    assert [o.SerializeToString() for o in pruned.graph.output] == [o.SerializeToString() for o in model.graph.output]
    x = np.random.default_rng(0).uniform(-1, 1, _input_shape(model)).astype(np.float32)
    for ya, yb in zip(T.run(zeroed, x), T.run(pruned, x), strict=True):
        np.testing.assert_allclose(yb, ya, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(ya).max())))


@pytest.mark.parametrize("name", MODELS)
def test_asset_models_prune_at_a_real_threshold(assets, name, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    assert cli.main(["prune", str(assets / "models" / name), "-o", str(out), "--sparsity", "0.5", "--sf", "0.6",
                     "--sf-low", "0.4", "--sg", "0.6", "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    pruned = onnx.load(out)
    onnx.checker.check_model(pruned, full_check=True)
    assert report["params_after"] <= report["params_before"]
    x = np.random.default_rng(0).uniform(-1, 1, _input_shape(pruned)).astype(np.float32)
    outputs = T.run(pruned, x)
    assert all(np.isfinite(y).all() for y in outputs)


def test_legacy_mnist_is_refused_with_one_line(assets, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    assert cli.main(["prune", str(assets / "models" / "onnxzoo_mnist_legacy.onnx"), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if not line.startswith("[")]) == 1
    assert "opset 1 is too old" in err[-1]
    assert not out.exists()
