"""Pruning to a budget (`prune/compress --flops-target / --params-target`): a plan's FLOPs and
parameters without the surgery equal the pruned model's counts, the threshold found is the
smallest that meets the budget, and both commands use it."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import topologies as T
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxprune import cli, prune, stats
from onnxprune.channel_groups import analyze_channels
from onnxprune.cost import model_cost
from onnxprune.budget import PlanCost, phase_goals, threshold_for_budget
from onnxprune.model_io import InputError
from onnxprune.selection import Criteria, layer_weights, select

TOPOLOGIES = [T.vgg_chain(), T.vgg_chain("separate"), T.resnet_blocks(), T.inception_concat(), T.mobilenet_dw("separate"),
              T.fpn_resize_add(), T.ssd_heads()]  # fmt: skip


def _sparse(model: onnx.ModelProto) -> onnx.ModelProto:
    return T.with_small_weights(copy.deepcopy(model))


@pytest.mark.parametrize("topology", TOPOLOGIES, ids=lambda t: t.name)
@settings(max_examples=6, deadline=None)
@given(sparsity=st.floats(0.05, 1.0), sf=st.floats(0.3, 1.0))
def test_plan_cost_equals_the_pruned_models_count(topology, sparsity, sf):
    model = _sparse(topology.model)
    analysis = analyze_channels(model)
    t = stats.threshold_for_sparsity(list(layer_weights(analysis).values()), sparsity)
    plan, _ = select(analysis, Criteria(threshold=t, sf=sf, sf_low=min(sf, 0.5)))
    pruned = model_cost(prune(model, plan=plan)["model"])
    cost = PlanCost(analysis)
    assert (cost.after(plan.keep, "flops"), cost.after(plan.keep, "params")) == (pruned.flops, pruned.params)


@pytest.mark.parametrize("measure", ["flops", "params"])
@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("target", [0.2, 0.5])
def test_the_threshold_is_the_smallest_that_meets_the_budget(target, relative, measure):
    model = _sparse(T.vgg_chain("separate").model)
    criteria = Criteria(relative=relative)
    t = threshold_for_budget(analyze_channels(model), target, criteria, measure)
    full = getattr(model_cost(model), measure)
    assert prune(model, threshold=t, relative=relative)[f"{measure}_after"] <= (1 - target) * full
    # The next weight magnitude below t (in the statistics' view) misses the budget.
    magnitudes = np.abs(np.concatenate([w.ravel() for w in layer_weights(analyze_channels(model), relative=relative).values()]))
    below = float(magnitudes[magnitudes < t].max())
    assert prune(model, threshold=below, relative=relative)[f"{measure}_after"] > (1 - target) * full


def test_an_unreachable_budget_says_how_much_is_possible():
    model = T.vgg_chain().model
    with pytest.raises(InputError, match=r"can remove at most \d+\.\d% of the FLOPs"):
        threshold_for_budget(analyze_channels(model), 0.9, Criteria(layers=("/conv1/*",)))
    with pytest.raises(InputError, match=r"can remove at most \d+\.\d% of the parameters \(--params-target"):
        threshold_for_budget(analyze_channels(model), 0.9, Criteria(layers=("/conv1/*",)), "params")
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(InputError, match="--flops-target"):
            threshold_for_budget(analyze_channels(model), bad, Criteria())


@pytest.mark.parametrize("measure", ["flops", "params"])
def test_each_phase_takes_the_same_share_of_what_its_layers_can_remove(measure):
    model = T.vgg_chain("separate").model
    phases = [("/conv1/*",), ("/conv2/*", "/conv3/*")]
    goals = phase_goals(analyze_channels(model), [Criteria(layers=p) for p in phases], 0.12, measure)
    full = getattr(model_cost(model), measure)
    # What each phase's layers can remove at most, measured by pruning them with every weight zero.
    room = [full - prune(model, threshold=1e9, layers=p)[f"{measure}_after"] for p in phases]
    assert goals[-1] == pytest.approx(0.88 * full)
    assert (full - goals[0]) / (full - goals[1]) == pytest.approx(room[0] / sum(room))
    with pytest.raises(InputError, match=r"the phases' layers can remove at most \d+\.\d%"):
        phase_goals(analyze_channels(model), [Criteria(layers=("/conv1/*",))], 0.9, measure)
    # Phases over the same layers cannot remove more than those layers once.
    twice = [Criteria(layers=phases[0])] * 2
    assert phase_goals(analyze_channels(model), twice, 0.9 * room[0] / full, measure)[-1] == pytest.approx(full - 0.9 * room[0])
    with pytest.raises(InputError, match=rf"can remove at most {100 * room[0] / full:.1f}%"):
        phase_goals(analyze_channels(model), twice, 1.5 * room[0] / full, measure)


def test_prune_cli_with_a_flops_target(tmp_path, capsys):
    src, out = tmp_path / "m.onnx", tmp_path / "p.onnx"
    onnx.save(_sparse(T.resnet_blocks().model), src)
    assert cli.main(["prune", str(src), "-o", str(out), "--flops-target", "0.3", "--relative", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["flops_target"] == 0.3 and report["flops_after"] <= 0.7 * report["flops_before"]
    assert report["flops_after"] == model_cost(onnx.load(out)).flops
    assert cli.main(["prune", str(src), "-o", str(out), "--flops-target", "0.3", "--relative"]) == 0
    assert "(the smallest for 30% fewer FLOPs)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        cli.main(["prune", str(src), "-o", str(out), "--flops-target", "0.3", "--threshold", "0.1"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert cli.main(["prune", str(src), "-o", str(out), "--flops-target", "1.5"]) == 2
    assert "--flops-target must be in (0, 1)" in capsys.readouterr().err
    assert cli.main(["prune", str(src), "-o", str(out), "--params-target", "0.4", "--relative", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["params_target"] == 0.4 and report["params_after"] <= 0.6 * report["params_before"]
    assert report["params_after"] == model_cost(onnx.load(out)).params


@pytest.mark.parametrize(("measure", "target"), [("flops", 0.3), ("params", 0.12)])
def test_compress_with_a_budget_in_two_phases(tmp_path, capsys, measure, target):
    model = T.dynamic_batch(T.vgg_chain("separate").model)
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    data = T.labelled_npz(tmp_path / "train.npz", 32)
    out = tmp_path / "small.onnx"
    option = f"--{measure}-target"
    args = ["compress", str(src), "-o", str(out), "--data", f"npz:{data}", "--phases", "/conv1/*,/conv2/*", "/conv3/*",
            option, str(target), "--relative", "--finetune-epochs", "1", "--batch-size", "8", "--no-augment",
            "--recalibrate-bn", "16", "--json"]  # fmt: skip
    assert cli.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    first, second = report["stages"]
    full = getattr(model_cost(model), measure)
    goal = f"{measure}_goal"
    assert full > first[goal] > second[goal] == int(full * (1 - target))
    assert getattr(model_cost(onnx.load(tmp_path / "small.onnx.stages" / "1_pruned.onnx")), measure) <= first[goal]
    assert report[f"{measure}_after"] <= (1 - target) * report[f"{measure}_before"]
    assert first["batchnorm_recalibrated"] is True and 0 <= first["metric_pruned"] <= 1
    assert "sweep" not in first, "a budget replaces the metric sweep"
    first_bytes = out.read_bytes()
    assert cli.main(args) == 0 and out.read_bytes() == first_bytes, "a second run resumes from the stages"
    capsys.readouterr()
    assert cli.main([*args[:-1], option, "1.5"]) == 2
    assert option in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.main([*args, "--flops-target" if measure == "params" else "--params-target", "0.3"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    # A budget the phases cannot reach stops before any training.
    fresh = tmp_path / "unreachable.onnx"
    assert cli.main(["compress", str(src), "-o", str(fresh), "--data", f"npz:{data}", "--phases", "/conv1/*", option,
                     "0.9", "--sparsify-epochs", "1"]) == 2  # fmt: skip
    assert "the phases' layers can remove at most" in capsys.readouterr().err
    assert not (tmp_path / "unreachable.onnx.stages" / "0_sparsified.onnx").exists()
