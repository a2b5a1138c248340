"""The uniform L1-norm baseline of the benchmarks (Li et al. 2017) keeps the strongest filters."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import topologies as T

from onnxprune import prune
from onnxprune.channel_groups import analyze_channels

_SPEC = importlib.util.spec_from_file_location("uniform_l1", Path(__file__).resolve().parents[1] / "benchmarks" / "uniform_l1.py")
uniform_l1 = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(uniform_l1)


@pytest.mark.parametrize(("fraction", "round_to"), [(0.0, 1), (0.5, 1), (0.75, 1), (0.6, 8)])
def test_every_group_keeps_its_share_of_the_largest_filters(fraction, round_to):
    model = T.vgg_chain("folded").model
    analysis = analyze_channels(model)
    plan = uniform_l1.uniform_l1_plan(analysis, fraction, round_to)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    convs = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
    assert set(plan.keep) == set(T.vgg_chain().prunable)
    for name, keep in plan.keep.items():
        size = len(keep)
        assert keep.sum() == min(size, math.ceil(math.ceil((1 - fraction) * size) / round_to) * round_to)
        norms = np.abs(inits[convs[name].input[1]]).reshape(size, -1).sum(axis=1)
        assert norms[keep].min() >= norms[~keep].max(initial=-1.0)
    result = prune(model, plan=plan)
    assert result["flops_after"] <= result["flops_before"]
    x = np.random.default_rng(0).standard_normal(T.vgg_chain().input_shape).astype(np.float32)
    assert T.run(result["model"], x)[0].shape == (1, 10)


def test_residual_chains_are_judged_as_a_whole_and_bad_fractions_refused():
    topo = T.resnet_blocks("folded")
    plan = uniform_l1.uniform_l1_plan(analyze_channels(topo.model), 0.5)
    tied = {c for group in topo.tied for c in group}
    assert plan.keep and all(mask.sum() == math.ceil(len(mask) / 2) for mask in plan.keep.values())
    assert tied, "the topology has residual chains"
    with pytest.raises(ValueError, match="fraction"):
        uniform_l1.uniform_l1_plan(analyze_channels(topo.model), 1.0)
