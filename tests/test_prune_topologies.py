"""`onnxprune prune` on one small model per topology: zeroed filters (or zeroed readers, or
constant filters) disappear exactly, pinned and partly-zeroed tied channels stay, and the pruned
model is valid, keeps its interface and node names, and computes the same outputs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import topologies as T

from onnxprune import cli

SELECT_ZERO_FILTERS = ["--threshold", "0", "--sf", "1", "--sf-low", "1", "--sg", "1"]
SELECT_ZERO_READERS = ["--threshold", "0", "--sf", "1", "--sf-low", "0", "--sg", "1"]
CHANNELS = [0, 2]


def _cases(kind: str):
    """(topology, conv) pairs: every prunable conv of every topology (tied convs together)."""
    cases = []
    for topo in T.all_topologies():
        for conv in topo.prunable:
            tied = next((group for group in topo.tied if conv in group), None)
            if tied is not None and conv != tied[0]:
                continue  # a tied group is one case, named after its first conv
            if kind == "readers" and not topo.consumers.get(conv):
                continue
            cases.append(pytest.param(topo, conv, id=f"{topo.name}-{conv}"))
    return cases


def _prune(tmp_path, model: onnx.ModelProto, flags: list[str], capsys) -> tuple[onnx.ModelProto, dict]:
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(model, src)
    before = src.read_bytes()
    code = cli.main(["prune", str(src), "-o", str(out), *flags, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert src.read_bytes() == before, "the input model was modified"
    return onnx.load(out), json.loads(captured.out)


def _group_of(report: dict, conv: str) -> dict:
    return next(g for g in report["groups"] if conv in g["producers"])


def _assert_same_model_interface(original: onnx.ModelProto, pruned: onnx.ModelProto) -> None:
    onnx.checker.check_model(pruned, full_check=True)
    assert [i.SerializeToString() for i in pruned.graph.input] == [i.SerializeToString() for i in original.graph.input]
    assert [o.SerializeToString() for o in pruned.graph.output] == [o.SerializeToString() for o in original.graph.output]
    assert pruned.opset_import == original.opset_import and pruned.ir_version == original.ir_version
    assert {n.name for n in pruned.graph.node} <= {n.name for n in original.graph.node}


def _assert_same_outputs(topo: T.Topology, a: onnx.ModelProto, b: onnx.ModelProto, tol: float = 1e-5) -> None:
    x = np.random.default_rng(1).standard_normal(topo.input_shape).astype(np.float32)
    for ya, yb in zip(T.run(a, x), T.run(b, x), strict=True):
        np.testing.assert_allclose(yb, ya, rtol=tol, atol=tol * max(1.0, float(np.abs(ya).max())))


@pytest.mark.parametrize(("topo", "conv"), _cases("filters"))
def test_zeroed_filters_are_removed_exactly(topo, conv, tmp_path, capsys):
    tied = next((group for group in topo.tied if conv in group), [conv])
    model = topo.model
    for name in tied:
        model = T.zero_channels(model, name, CHANNELS)
    pruned, report = _prune(tmp_path, model, SELECT_ZERO_FILTERS, capsys)
    group = _group_of(report, conv)
    assert not group["pinned_by"]
    assert group["channels_after"] == group["channels_before"] - len(CHANNELS)
    assert group["removal"]["exact"] + group["removal"]["folded"] == len(CHANNELS)
    others = [g for g in report["groups"] if g is not group]
    assert all(g["channels_after"] == g["channels_before"] for g in others), "only the zeroed channels go"
    _assert_same_model_interface(topo.model, pruned)
    _assert_same_outputs(topo, model, pruned)
    assert report["params_after"] < report["params_before"]
    assert report["flops_after"] < report["flops_before"]


@pytest.mark.parametrize(("topo", "conv"), _cases("readers"))
def test_channels_nobody_reads_are_removed_by_the_g_rule(topo, conv, tmp_path, capsys):
    model = T.zero_consumer_slices(topo.model, conv, CHANNELS, topo.consumers[conv])
    # With s'_F = 0 the G rule alone selects: the filters are not zero, their readers are.
    pruned, report = _prune(tmp_path, model, SELECT_ZERO_READERS, capsys)
    group = _group_of(report, conv)
    assert group["channels_after"] == group["channels_before"] - len(CHANNELS)
    assert group["removal"]["exact"] == len(CHANNELS)
    _assert_same_outputs(topo, model, pruned)
    # The same model with the default cut-offs keeps them (sF is far below s'_F = 0.5).
    _, report = _prune(tmp_path, model, ["--threshold", "0"], capsys)
    assert _group_of(report, conv)["channels_after"] == _group_of(report, conv)["channels_before"]


@pytest.mark.parametrize(("topo", "conv"), _cases("filters"))
def test_constant_channels_are_folded_into_the_readers_bias(topo, conv, tmp_path, capsys):
    tied = next((group for group in topo.tied if conv in group), [conv])
    model = topo.model
    for name in tied:
        model = T.constant_channels(model, name, CHANNELS, 0.75)
    pruned, report = _prune(tmp_path, model, SELECT_ZERO_FILTERS, capsys)
    group = _group_of(report, conv)
    assert group["channels_after"] == group["channels_before"] - len(CHANNELS)
    onnx.checker.check_model(pruned, full_check=True)
    removal = group["removal"]
    if removal["folded_border"] == 0 and removal["approximate"] == 0:
        _assert_same_outputs(topo, model, pruned, tol=1e-4)  # what the report calls exact must be


def test_constant_channels_read_by_1x1_convs_are_folded_exactly(tmp_path, capsys):
    topo = T.inception_concat("separate")
    model = T.constant_channels(topo.model, "/stem/Conv", CHANNELS, 0.75)
    pruned, report = _prune(tmp_path, model, SELECT_ZERO_FILTERS, capsys)
    group = _group_of(report, "/stem/Conv")
    assert group["channels_after"] == group["channels_before"] - len(CHANNELS)
    assert group["removal"]["folded"] + group["removal"]["exact"] == len(CHANNELS)
    _assert_same_outputs(topo, model, pruned, tol=1e-4)


@pytest.mark.parametrize("topo", [pytest.param(t, id=t.name) for t in T.all_topologies() if t.pinned])
def test_pinned_convs_keep_their_channels(topo, tmp_path, capsys):
    model = topo.model
    for conv in topo.pinned:
        model = T.zero_channels(model, conv, [0])
    pruned, report = _prune(tmp_path, model, SELECT_ZERO_FILTERS, capsys)
    for conv in topo.pinned:
        group = _group_of(report, conv)
        assert group["pinned_by"], f"{conv} should be pinned"
        assert group["channels_after"] == group["channels_before"]
    _assert_same_outputs(topo, model, pruned)


@pytest.mark.parametrize("topo", [pytest.param(t, id=t.name) for t in T.all_topologies() if t.tied])
def test_tied_channels_go_only_together(topo, tmp_path, capsys):
    tied = topo.tied[0]
    model = T.zero_channels(topo.model, tied[0], CHANNELS)  # only one of the tied filters is zero
    _, report = _prune(tmp_path, model, SELECT_ZERO_FILTERS, capsys)
    group = _group_of(report, tied[0])
    assert set(tied) <= set(group["producers"])
    assert group["channels_after"] == group["channels_before"]
