"""Algorithm 1 and its options: the F and G rules against a NumPy reference, sequential
statistics, --sparsity, --layers, --round-to, plans written and applied, the analyze table."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
import pytest
import topologies as T
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxprune import Criteria, analyze, cli, prune
from onnxprune.channel_groups import analyze_channels
from onnxprune.selection import select, threshold_for_sparsity
from onnxprune.threshold_search import _layer_weights


def _vgg_with_sparse_weights(seed: int = 0, scale: float = 0.05) -> onnx.ModelProto:
    """vgg_chain with many small weights, so thresholds select a spread of filters."""
    return T.with_small_weights(T.vgg_chain("separate").model, seed, scale)


def _reference_algorithm1(w: np.ndarray, w_next: np.ndarray, t: float, sf: float, sf_low: float, sg: float) -> np.ndarray:
    """Algorithm 1 for one conv and its single conv reader, straight from the paper."""
    zero = np.abs(w.astype(np.float64)) <= t
    s_f = zero.reshape(w.shape[0], -1).mean(axis=1)
    s_g = (np.abs(w_next.astype(np.float64)) <= t).transpose(1, 0, 2, 3).reshape(w.shape[0], -1).mean(axis=1)
    return (s_f >= sf) | ((s_f >= sf_low) & (s_f < sf) & (s_g >= sg))


@pytest.mark.parametrize("t", [0.0, 0.02, 0.05, 0.2])
@pytest.mark.parametrize(("sf", "sf_low", "sg"), [(0.9, 0.5, 0.9), (0.7, 0.3, 0.5), (1.0, 0.0, 0.8)])
def test_first_layer_selection_matches_the_paper(t, sf, sf_low, sg):
    model = _vgg_with_sparse_weights()
    analysis = analyze_channels(model)
    plan, _ = select(analysis, Criteria(threshold=t, sf=sf, sf_low=sf_low, sg=sg))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    group = next(g for g in analysis.groups if g.name == "/conv1/Conv")
    w = inits[next(sl.tensor for sl in group.producers if inits[sl.tensor].ndim == 4)]
    w_next = inits[next(sl.tensor for sl in group.consumers)]
    expected = _reference_algorithm1(w, w_next, t, sf, sf_low, sg)
    if expected.all():
        expected[np.argmin(np.abs(w).reshape(len(w), -1).__le__(t).mean(axis=1))] = False  # one channel stays
    np.testing.assert_array_equal(~plan.keep["/conv1/Conv"], expected)


def test_filters_followed_by_batchnorm_are_judged_as_deployed():
    """With fold_bn, BatchNorm's scale is folded in: a large filter whose BatchNorm scale is tiny
    contributes nothing and goes at a small threshold; a tiny filter under a large scale stays."""
    model = T.vgg_chain("separate").model
    inits = {i.name: i for i in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.name == "/conv2/Conv")
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization" and n.input[0] == conv.output[0])
    w, scale, var = (onnx.numpy_helper.to_array(inits[name]).copy() for name in (conv.input[1], bn.input[1], bn.input[4]))
    w[0], scale[0] = 1.0, 1e-7  # filter 0: large weights, no contribution
    w[1], scale[1], var[1] = 1e-4, 1e4, 1.0  # filter 1: tiny weights, deployed as about 1.0
    for name, value in ((conv.input[1], w), (bn.input[1], scale), (bn.input[4], var)):
        inits[name].CopyFrom(onnx.numpy_helper.from_array(value, name))
    criteria = Criteria(threshold=1e-3, sf=0.95, sf_low=0.95, sg=1)
    plan, _ = select(analyze_channels(model), replace(criteria, fold_bn=True))
    removed = np.nonzero(~plan.keep["/conv2/Conv"])[0]
    assert 0 in removed and 1 not in removed
    weights = _layer_weights(model, ("/conv2/Conv",), fold_bn=True)
    np.testing.assert_allclose(weights[conv.input[1]][1], np.full_like(w[1], 1e-4 * 1e4 / np.sqrt(1.0 + 1e-5)), rtol=1e-5)
    # The paper's rule reads the raw weights: the other way round.
    plan, _ = select(analyze_channels(model), criteria)
    removed = np.nonzero(~plan.keep["/conv2/Conv"])[0]
    assert 1 in removed and 0 not in removed
    assert prune(model, threshold=1e-3, sf=0.95, sf_low=0.95, sg=1, fold_bn=True)["params_after"] < (
        prune(model, threshold=0.0)["params_before"]
    )
    # analyze shows the view asked for: with filter 1 back to ordinary weights, only the folded
    # view sees a zero filter (filter 0).
    w[1] = 0.5
    inits[conv.input[1]].CopyFrom(onnx.numpy_helper.from_array(w, conv.input[1]))
    zero = {fold: next(g for g in analyze(model, 1e-3, fold_bn=fold)["groups"] if g["name"] == "/conv2/Conv")["zero_filters"]
            for fold in (False, True)}  # fmt: skip
    assert zero == {False: 0, True: 1}


def _scaled(model: onnx.ModelProto, scales: list[float]) -> onnx.ModelProto:
    """A copy whose k-th conv weight tensor is multiplied by scales[k]."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    convs = [t for t in out.graph.initializer if len(t.dims) == 4]
    for t, s in zip(convs, scales, strict=True):
        t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t) * np.float32(s), t.name))
    return out


@settings(max_examples=15, deadline=None)
@given(scales=st.lists(st.floats(1e-3, 1e3), min_size=4, max_size=4), t=st.floats(0.05, 2.0))
def test_relative_thresholds_ignore_each_layer_s_scale(scales, t):
    """With `relative`, any positive rescaling of a layer's weights selects the same filters:
    the threshold is in units of each layer's RMS weight."""
    model = _vgg_with_sparse_weights()
    criteria = Criteria(threshold=t, relative=True)
    base, _ = select(analyze_channels(model), criteria)
    scaled, _ = select(analyze_channels(_scaled(model, scales)), criteria)
    assert base.keep.keys() == scaled.keep.keys()
    for name in base.keep:
        np.testing.assert_array_equal(base.keep[name], scaled.keep[name])


def test_absolute_thresholds_empty_a_layer_with_small_weights_first(tmp_path, capsys):
    """conv3's weights scaled down 100x: one absolute threshold takes all of its filters but the
    one a group keeps, and none elsewhere; the relative one cuts as on the unscaled model."""
    model = _scaled(T.vgg_chain("folded").model, [1.0, 1.0, 0.01, 1.0])
    rms = {t.name: float(np.sqrt(np.mean(onnx.numpy_helper.to_array(t).astype(np.float64) ** 2)))
           for t in model.graph.initializer if len(t.dims) == 4}  # fmt: skip
    t = 3 * sorted(rms.values())[0]  # above every weight of conv3, below most of the others
    plan, _ = select(analyze_channels(model), Criteria(threshold=t))
    assert plan.keep["/conv3/Conv"].sum() == 1
    assert all(plan.keep[name].all() for name in ("/conv1/Conv", "/conv2/Conv", "/conv4/Conv"))
    relative, _ = select(analyze_channels(model), Criteria(threshold=0.5, relative=True))
    unscaled, _ = select(analyze_channels(T.vgg_chain("folded").model), Criteria(threshold=0.5, relative=True))
    for name in unscaled.keep:
        np.testing.assert_array_equal(relative.keep[name], unscaled.keep[name])
    # The CLI option reaches the selection, and --sparsity is read in the same units.
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    assert cli.main(["prune", str(path), "-o", str(tmp_path / "p.onnx"), "--relative", "--sparsity", "0.5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    weights = _layer_weights(model, (), relative=True)
    zero = sum(int((np.abs(w) <= report["threshold"]).sum()) for w in weights.values())
    assert zero / sum(w.size for w in weights.values()) >= 0.5


def test_statistics_of_a_layer_are_taken_after_the_previous_removal():
    """conv2's filters are half zero only over the inputs conv1 keeps: with conv1's removed
    channels gone, they qualify; counted over all inputs they would not."""
    model = T.vgg_chain("folded").model
    inits = {i.name: i for i in model.graph.initializer}
    analysis = analyze_channels(model)
    g1 = next(g for g in analysis.groups if g.name == "/conv1/Conv")
    g2 = next(g for g in analysis.groups if g.name == "/conv2/Conv")
    w1_name = next(sl.tensor for sl in g1.producers if len(inits[sl.tensor].dims) == 4)
    w2_name = next(sl.tensor for sl in g2.producers if len(inits[sl.tensor].dims) == 4)
    w1 = onnx.numpy_helper.to_array(inits[w1_name]).copy()
    w2 = onnx.numpy_helper.to_array(inits[w2_name]).copy()
    w1[:4] = 0  # conv1 loses channels 0..3 (of 8)
    w2[0, 4:] = 0  # conv2 filter 0: zero over the inputs conv1 keeps, not over 0..3
    inits[w1_name].CopyFrom(onnx.numpy_helper.from_array(w1, w1_name))
    inits[w2_name].CopyFrom(onnx.numpy_helper.from_array(w2, w2_name))
    plan, _ = select(analyze_channels(model), Criteria(threshold=0, sf=0.95, sf_low=0.95, sg=1))
    assert (~plan.keep["/conv1/Conv"]).sum() == 4
    assert not plan.keep["/conv2/Conv"][0], "filter 0 is all zero once conv1's channels are gone"
    assert plan.keep["/conv2/Conv"][1:].all()


def test_sparsity_picks_the_threshold_with_that_share_of_zero_weights():
    model = _vgg_with_sparse_weights()
    analysis = analyze_channels(model)
    t = threshold_for_sparsity(analysis, 0.6)
    weights = [onnx.numpy_helper.to_array(i) for i in model.graph.initializer if len(i.dims) == 4]
    zero = sum(int((np.abs(w.astype(np.float64)) <= t).sum()) for w in weights)
    total = sum(w.size for w in weights)
    assert zero / total >= 0.6 > (zero - 1) / total - 1e-12


def test_layers_limit_the_pruned_set(tmp_path):
    model = _vgg_with_sparse_weights()
    report = prune(model, threshold=0.05, sf=0.5, sf_low=0.3, sg=0.5, layers=("/conv2/*",))
    changed = {g["name"] for g in report["groups"] if g["channels_after"] < g["channels_before"]}
    assert changed == {"/conv2/Conv"}


@pytest.mark.parametrize("n", [2, 4, 8])
def test_round_to_keeps_multiples(n):
    report = prune(_vgg_with_sparse_weights(), threshold=0.05, sf=0.5, sf_low=0.3, sg=0.5, round_to=n)
    for g in report["groups"]:
        if g["channels_after"] != g["channels_before"]:
            assert g["channels_after"] % n == 0


def test_a_group_never_loses_every_channel():
    model = T.vgg_chain("folded").model
    for conv in ("/conv1/Conv", "/conv2/Conv"):
        model = T.zero_channels(model, conv, range(8))
    report = prune(model, threshold=0.0, sf=1, sf_low=1, sg=1)
    for g in report["groups"]:
        assert g["channels_after"] >= 1


def test_a_saved_plan_gives_the_same_model(tmp_path, capsys):
    src = tmp_path / "in.onnx"
    onnx.save(_vgg_with_sparse_weights(), src)
    first, second, plan = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "plan.json"
    flags = ["--sparsity", "0.5", "--sf", "0.6", "--sf-low", "0.3", "--sg", "0.5"]
    assert cli.main(["prune", str(src), "-o", str(first), *flags, "--plan-out", str(plan), "-q"]) == 0
    assert cli.main(["prune", str(src), "-o", str(second), "--plan", str(plan), "-q"]) == 0
    assert onnx.load(first).SerializeToString() == onnx.load(second).SerializeToString()
    data = json.loads(plan.read_text())
    assert data["format"] == "onnxprune-plan" and any(g["remove"] for g in data["groups"])


def test_prune_json_has_the_documented_keys(tmp_path, capsys):
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(_vgg_with_sparse_weights(), src)
    assert cli.main(["prune", str(src), "-o", str(out), "--sparsity", "0.5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("output", "params_before", "params_after", "flops_before", "flops_after", "threshold", "groups"):
        assert key in report
    for g in report["groups"]:
        assert {"name", "producers", "channels_before", "channels_after", "pinned_by"} <= set(g)
    assert report["output"] == str(out)
    assert report["report"] == str(tmp_path / "out.onnx.report.json")
    md = (tmp_path / "out.onnx.report.md").read_text()
    assert "| parameters |" in md and "| layer | channels before | after |" in md
    assert (tmp_path / "out.onnx.report.png").stat().st_size > 10_000


def test_analyze_table_and_json(tmp_path, capsys):
    topo = T.ssd_heads("separate")
    src = tmp_path / "ssd.onnx"
    onnx.save(T.zero_channels(topo.model, "/conv3/Conv", [0, 1, 2]), src)
    assert cli.main(["analyze", str(src)]) == 0
    table = capsys.readouterr().out
    assert "feeds graph output" in table or "(channels-last)" in table
    report = analyze(src)
    conv3 = next(g for g in report["groups"] if g["name"] == "/conv3/Conv")
    assert conv3["zero_filters"] == 3 and not conv3["pinned_by"]
    heads = [g for g in report["groups"] if any(p in topo.pinned for p in g["producers"])]
    assert heads and all(g["pinned_by"] for g in heads)
