"""The zoo's SSDs: the paper's parameter counts, prior boxes, ONNX export equal to torch, the
priors carried in the metadata, and SSD300 analysed and pruned exactly by onnxprune."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
import topologies as T

from onnxprune import commands
from onnxprune.zoo import SSD, SSD300, SSD512, TINY_SSD, export_ssd, tiny_ssd
from onnxprune.zoo.ssd import decode_boxes, read_ssd_metadata

PAPER = {"ssd300": (SSD300, 26.3e6, 8732), "ssd512": (SSD512, 27.2e6, 24564)}
VGG = [f"conv{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1)]
BACKBONE_AND_EXTRAS = VGG + ["fc6", "fc7"] + [f"conv{b}_{i}" for b in (8, 9, 10, 11) for i in (1, 2)]


@pytest.fixture(scope="module")
def ssd300_onnx(tmp_path_factory):
    model = SSD(SSD300, seed=0).eval()
    path = export_ssd(model, tmp_path_factory.mktemp("ssd300") / "ssd300.onnx")
    return model, onnx.load(path)


@pytest.mark.parametrize("name", PAPER)
def test_paper_ssd_has_the_papers_parameter_count_and_priors(name):
    spec, params, priors = PAPER[name]
    model = SSD(spec, seed=None)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - params) / params < 0.02, count
    assert model.priors.shape == (priors, 4)  # SSD's published default-box counts
    assert ((model.priors >= 0) & (model.priors <= 1)).all()


@pytest.mark.parametrize("name", PAPER)
def test_paper_ssd_exports_and_runs_in_onnxruntime_like_torch(name, tmp_path, ssd300_onnx):
    if name == "ssd300":
        model, proto = ssd300_onnx
    else:
        model = SSD(SSD512, seed=1).eval()
        proto = onnx.load(export_ssd(model, tmp_path / "ssd512.onnx"))
    x = torch.randn(1, 3, model.spec.size, model.spec.size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scores, loc = model(x)
    got = T.run(proto, x.numpy())
    assert [o.name for o in proto.graph.output] == ["scores", "loc"]
    np.testing.assert_allclose(got[0], scores.numpy(), atol=1e-5)
    np.testing.assert_allclose(got[1], loc.numpy(), atol=1e-4 * max(1.0, float(loc.abs().max())))
    nodes = {n.name for n in proto.graph.node if n.op_type == "Conv"}
    assert set(BACKBONE_AND_EXTRAS) <= nodes and "conv4_3_norm_mbox_conf" in nodes


def test_ssd300_backbone_and_extras_are_prunable_and_heads_pinned(ssd300_onnx):
    _, proto = ssd300_onnx
    report = commands.analyze(proto)
    by_producer = {p: g for g in report["groups"] for p in g["producers"]}
    for layer in BACKBONE_AND_EXTRAS:
        assert not by_producer[layer]["pinned_by"], (layer, by_producer[layer]["pinned_by"])
    heads = [n for n in by_producer if "_mbox_" in n]
    assert len(heads) == 12
    assert all(by_producer[h]["pinned_by"] for h in heads)


def test_zeroed_filters_of_ssd300_are_removed_exactly(ssd300_onnx, tmp_path):
    _, proto = ssd300_onnx
    zeroed = proto
    for conv in ("conv1_1", "conv4_3", "fc7", "conv8_1", "conv11_2"):
        zeroed = T.zero_channels(zeroed, conv, [0, 5, 7])
    out = tmp_path / "pruned.onnx"
    report = commands.prune(zeroed, out, threshold=0.0, sf=1.0, sf_low=1.0, sg=1.0)
    changed = {p: g for g in report["groups"] for p in g["producers"] if g["channels_after"] != g["channels_before"]}
    assert set(changed) == {"conv1_1", "conv4_3", "fc7", "conv8_1", "conv11_2"}
    assert all(g["channels_before"] - g["channels_after"] == 3 for g in changed.values())
    pruned = onnx.load(out)
    x = np.random.default_rng(0).normal(size=(1, 3, 300, 300)).astype(np.float32)
    for a, b in zip(T.run(zeroed, x), T.run(pruned, x), strict=True):
        np.testing.assert_allclose(b, a, atol=1e-4 * max(1.0, float(np.abs(a).max())), rtol=1e-4)


def test_metadata_carries_the_priors_and_decoding_inside_the_graph_matches(tmp_path):
    model = tiny_ssd(seed=3).eval()
    raw = onnx.load(export_ssd(model, tmp_path / "raw.onnx"))
    decoded = onnx.load(export_ssd(model, tmp_path / "decoded.onnx", decode=True))
    meta = read_ssd_metadata(raw)
    np.testing.assert_array_equal(meta.priors, model.priors.numpy())
    assert not meta.decoded and read_ssd_metadata(decoded).decoded and meta.num_classes == TINY_SSD.num_classes
    assert json.loads(raw.metadata_props[0].value)["feature_maps"] == [20, 10, 5, 3, 2, 1]
    x = np.random.default_rng(1).normal(size=(2, 3, 160, 160)).astype(np.float32)
    (s_raw, loc), (s_dec, boxes) = T.run(raw, x), T.run(decoded, x)
    np.testing.assert_allclose(s_dec, s_raw, atol=1e-6)
    expected = decode_boxes(torch.from_numpy(loc), model.priors, TINY_SSD.priors.variances).numpy()
    np.testing.assert_allclose(boxes, expected, atol=1e-5)
    assert read_ssd_metadata(onnx.ModelProto()) is None


def test_tiny_ssd_has_the_same_shape_as_ssd300_at_a_fraction_of_its_size():
    tiny, full = tiny_ssd(), SSD(SSD300, seed=None)
    convs = [[name for kind, name in model.layers if kind == "conv"] for model in (tiny, full)]
    assert convs[0] == convs[1] == BACKBONE_AND_EXTRAS
    assert len(tiny.feature_maps) == len(full.feature_maps) == 6
    assert sum(p.numel() for p in tiny.parameters()) < 0.03 * sum(p.numel() for p in full.parameters())
