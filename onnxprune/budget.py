"""The global threshold that meets a budget: `prune/compress --flops-target F` (or
`--params-target P`) remove a share F of the model's FLOPs (P of its parameters) with Algorithm 1
at the smallest threshold that reaches it, instead of a threshold the user picks or a sweep
chooses on a metric. Candidates are placed in sparsity space (as the sweep places them) and
bisected; each is costed from its plan without the surgery (`PlanCost`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from onnxprune import stats
from onnxprune.channel_groups import ChannelAnalysis
from onnxprune.cost import model_cost
from onnxprune.model_io import InputError
from onnxprune.selection import Criteria, layer_weights, select

__all__ = ["MEASURES", "PlanCost", "check_target", "phase_goals", "threshold_for_budget"]

MEASURES = ("flops", "params")  # what a budget counts; the option is --{measure}-target
_WHAT = {"flops": "FLOPs", "params": "parameters"}


def check_target(reduction: float, measure: str = "flops") -> None:
    """InputError unless `reduction` is a share of the FLOPs or parameters that can be removed."""
    if not 0.0 < reduction < 1.0:
        raise InputError(f"--{measure}-target must be in (0, 1) (the share of {_WHAT[measure]} to remove); got {reduction}")


class PlanCost:
    """FLOPs and parameters of the model with each group cut to a plan's keep masks, without the
    surgery (what `model_cost` counts on the pruned model; the tests check that they agree):
    each node's MACs, and each weight tensor's elements, scaled by the share of the rows and
    columns kept."""

    def __init__(self, analysis: ChannelAnalysis) -> None:
        cost = model_cost(analysis.model)
        self.total = {"flops": cost.flops, "params": cost.params}
        self.macs = dict(cost.node_macs)
        self.elements: dict[str, int] = {}  # float constants the groups slice
        # (key, axis) -> slices and the axis' size; key: a node (MACs) or a tensor (parameters)
        self.slices: dict[str, dict[str, list]] = {"flops": {}, "params": {}}
        self.dims: dict[str, dict[tuple[str, int], int]] = {"flops": {}, "params": {}}
        for g in analysis.groups:
            for sl in (*g.producers, *g.followers, *g.consumers):
                tensor = analysis.tensor(sl.tensor)
                value = analysis.constant(tensor)
                if value is not None and value.dtype.kind == "f":
                    self.elements[sl.tensor] = value.size
                    self._add("params", g.name, sl, sl.tensor)
                if sl.node in self.macs and sl.axis in (0, 1) and analysis.rank(tensor) not in (None, 0, 1):
                    self._add("flops", g.name, sl, sl.node)

    def _add(self, measure: str, group: str, sl, key: str) -> None:
        self.slices[measure].setdefault(group, []).append((key, sl))
        self.dims[measure][(key, sl.axis)] = sl.index_map.dst_size

    def after(self, keep: dict[str, np.ndarray], measure: str = "flops") -> int:
        """FLOPs (`measure="flops"`) or parameters of the model pruned to `keep`."""
        removed: dict[tuple[str, int], set] = {}
        for name, mask in keep.items():
            for key, sl in self.slices[measure].get(name, ()):
                rows = sl.index_map.positions[~mask]
                removed.setdefault((key, sl.axis), set()).update(rows[rows >= 0].tolist())
        # count * kept rows * kept columns / (rows * columns), per node or tensor
        full = self.macs if measure == "flops" else self.elements
        kept, dims = dict(full), dict.fromkeys(full, 1)
        for (key, axis), gone in removed.items():
            kept[key] *= self.dims[measure][(key, axis)] - len(gone)
            dims[key] *= self.dims[measure][(key, axis)]
        left = sum((2 * kept[k] + dims[k]) // (2 * dims[k]) for k in full)  # integers: exact past 2**53
        if measure == "flops":
            return 2 * left
        return self.total["params"] - sum(full.values()) + left


def threshold_for_budget(analysis: ChannelAnalysis, reduction: float, criteria: Criteria, measure: str = "flops",
                         steps: int = 30) -> float:  # fmt: skip
    """The smallest threshold (to the resolution of `steps` bisection steps in sparsity of the
    layers in L) at which Algorithm 1 under `criteria` removes at least `reduction` of the
    model's FLOPs (`measure="flops"`) or parameters. InputError when even every weight counted as
    zero does not remove that much."""
    check_target(reduction, measure)
    what = _WHAT[measure]
    cost = PlanCost(analysis)
    total = cost.total[measure]
    goal = total * (1 - reduction)
    cost_at = _costing(analysis, criteria, cost, measure)
    top, left = cost_at(1.0)
    if left > goal:
        raise InputError(f"the layers to prune can remove at most {100 * (1 - left / total):.1f}% of the {what} "
                         f"(--{measure}-target {reduction}); add layers or lower the target")  # fmt: skip
    lo, hi, best = 0.0, 1.0, top
    for _ in range(steps):
        mid = (lo + hi) / 2
        t, left = cost_at(mid)
        if left <= goal:
            hi, best = mid, t
        else:
            lo = mid
    return float(best)


def phase_goals(analysis: ChannelAnalysis, phases: list[Criteria], reduction: float, measure: str = "flops") -> list[float]:
    """The FLOPs or parameters (`measure`) the model should have after each phase of a pipeline
    that removes `reduction` of them in all: each phase takes the same share of what its layers
    could remove at most (measured on `analysis`' model), so a phase over a few small layers is
    not asked for as much as one over the heavy ones. InputError when the phases together cannot
    remove that much (their layers all cut at once: phases may share layers)."""
    check_target(reduction, measure)
    cost = PlanCost(analysis)
    total = cost.total[measure]
    room = [total - _costing(analysis, criteria, cost, measure)(1.0)[1] for criteria in phases]
    reach = room[0]  # one phase: its own room; several may share layers, so cut their union once
    if len(phases) > 1:
        every = () if any(not c.layers for c in phases) else tuple(dict.fromkeys(g for c in phases for g in c.layers))
        reach = total - _costing(analysis, replace(phases[0], layers=every), cost, measure)(1.0)[1]
    if reduction * total > reach:
        what = _WHAT[measure]
        raise InputError(f"the phases' layers can remove at most {100 * reach / total:.1f}% of the {what} "
                         f"(--{measure}-target {reduction}); add layers or lower the target")  # fmt: skip
    done = np.cumsum(room) / sum(room)
    return [total * (1 - reduction * float(share)) for share in done]


def _costing(analysis: ChannelAnalysis, criteria: Criteria, cost: PlanCost, measure: str):
    """sparsity -> (threshold, FLOPs or parameters left) of Algorithm 1 on the layers of `criteria`."""
    weights = list(layer_weights(analysis, criteria.layers, criteria.fold_bn, criteria.relative).values())
    if not weights:
        raise InputError("no layer to prune: every group is pinned or --layers matches nothing prunable")

    def cost_at(sparsity: float) -> tuple[float, int]:
        t = stats.threshold_for_sparsity(weights, sparsity)
        plan, _ = select(analysis, replace(criteria, threshold=t))
        return t, cost.after(plan.keep, measure)

    return cost_at
