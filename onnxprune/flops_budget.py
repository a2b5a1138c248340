"""The global threshold that meets a FLOPs budget: `prune --flops-target F` and `compress
--flops-target F` remove a share F of the model's FLOPs with Algorithm 1 at the smallest
threshold that reaches it, instead of a threshold the user picks or a sweep chooses on a metric.
Candidates are placed in sparsity space (as the sweep places them) and bisected; each is costed
from its plan without the surgery (`PlanCost`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from onnxprune import stats
from onnxprune.channel_groups import ChannelAnalysis
from onnxprune.cost import model_cost
from onnxprune.model_io import InputError
from onnxprune.selection import Criteria, layer_weights, select

__all__ = ["PlanCost", "threshold_for_flops"]


class PlanCost:
    """MACs of the model with each group cut to a plan's keep masks, without the surgery: each
    node's MACs scaled by the share of its weight's rows and columns kept (what `model_cost`
    counts on the pruned model; the tests check that they agree)."""

    def __init__(self, analysis: ChannelAnalysis) -> None:
        cost = model_cost(analysis.model)
        self.macs = dict(cost.node_macs)
        self.total = cost.macs
        self.dims: dict[tuple[str, int], int] = {}
        self.slices = {g.name: [sl for sl in (*g.producers, *g.followers, *g.consumers)
                                if sl.node in self.macs and sl.axis in (0, 1)
                                and analysis.rank(analysis.tensor(sl.tensor)) not in (None, 0, 1)] for g in analysis.groups}  # fmt: skip
        for group_slices in self.slices.values():
            for sl in group_slices:
                self.dims[(sl.node, sl.axis)] = sl.index_map.dst_size

    def macs_after(self, keep: dict[str, np.ndarray]) -> int:
        removed: dict[tuple[str, int], set] = {}
        for name, mask in keep.items():
            for sl in self.slices.get(name, ()):
                rows = sl.index_map.positions[~mask]
                removed.setdefault((sl.node, sl.axis), set()).update(rows[rows >= 0].tolist())
        kept, dims = dict(self.macs), dict.fromkeys(self.macs, 1)  # MACs * kept rows * kept columns / (rows * columns)
        for (node, axis), gone in removed.items():
            kept[node] *= self.dims[(node, axis)] - len(gone)
            dims[node] *= self.dims[(node, axis)]
        return sum(round(kept[n] / dims[n]) for n in self.macs)


def threshold_for_flops(analysis: ChannelAnalysis, flops_reduction: float, criteria: Criteria, steps: int = 30) -> float:
    """The smallest threshold (to the resolution of `steps` bisection steps in sparsity of the
    layers in L) at which Algorithm 1 under `criteria` removes at least `flops_reduction` of the
    model's FLOPs. InputError when even every weight counted as zero does not remove that much."""
    if not 0.0 < flops_reduction < 1.0:
        raise InputError(f"--flops-target must be in (0, 1) (the share of FLOPs to remove); got {flops_reduction}")
    weights = list(layer_weights(analysis, criteria.layers, criteria.fold_bn, criteria.relative).values())
    if not weights:
        raise InputError("no layer to prune: every group is pinned or --layers matches nothing prunable")
    cost = PlanCost(analysis)
    goal = cost.total * (1 - flops_reduction)

    def macs_at(sparsity: float) -> tuple[float, int]:
        t = stats.threshold_for_sparsity(weights, sparsity)
        plan, _ = select(analysis, replace(criteria, threshold=t))
        return t, cost.macs_after(plan.keep)

    top, macs = macs_at(1.0)
    if macs > goal:
        raise InputError(f"the layers to prune can remove at most {100 * (1 - macs / cost.total):.1f}% of the FLOPs "
                         f"(--flops-target {flops_reduction}); add layers or lower the target")  # fmt: skip
    lo, hi, best = 0.0, 1.0, top
    for _ in range(steps):
        mid = (lo + hi) / 2
        t, macs = macs_at(mid)
        if macs <= goal:
            hi, best = mid, t
        else:
            lo = mid
    return float(best)
