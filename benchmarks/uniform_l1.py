"""Uniform L1-norm filter pruning (Li et al., ICLR 2017) as an onnxprune PrunePlan: every prunable
channel group loses the same fraction of its channels, those whose filters have the smallest L1
norms (summed over the group's producing convs, so a residual chain is judged as a whole). The
peer baseline of the benchmarks, and a way to make pruned models of any size for timing.
"""

from __future__ import annotations

import math

import numpy as np

from onnxprune.channel_groups import ChannelAnalysis
from onnxprune.selection import PrunePlan, stats_weight


def filter_l1_norms(analysis: ChannelAnalysis, group) -> np.ndarray | None:
    """Per channel of `group`, the L1 norm of its producing conv filters (raw weights, summed over
    the producers, as Li et al. rank them); None for a group no conv makes."""
    if any(analysis.node(n) is None or analysis.node(n).op != "Conv" for n in group.producer_nodes):
        return None  # filters of convs only, as the method defines them (fully connected layers stay)
    score, producers = np.zeros(group.size), 0
    for sl in group.producers:
        w = stats_weight(analysis, sl)
        if w.ndim < 2 or sl.axis != 0:
            continue
        norms = np.abs(w).reshape(len(w), -1).sum(axis=1)
        rows = sl.index_map.positions
        valid = rows >= 0
        score += np.where(valid, norms[np.where(valid, rows, 0)], 0).sum(axis=1)
        producers += 1
    return score if producers else None


def largest(score: np.ndarray, kept: int) -> np.ndarray:
    """Keep mask of the `kept` channels of highest score (ties: the first)."""
    mask = np.zeros(len(score), dtype=bool)
    mask[np.argsort(-score, kind="stable")[:kept]] = True
    return mask


def uniform_l1_plan(analysis: ChannelAnalysis, fraction: float, round_to: int = 1) -> PrunePlan:
    """Keep, in every prunable group, the ceil((1 - fraction) * size) channels (rounded up to a
    multiple of `round_to`) whose producing filters have the largest L1 norms (`filter_l1_norms`).
    Groups made by other layers than convs, split across several tensors, or with fixed channels
    stay whole."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1); got {fraction}")
    keep = {}
    for group in analysis.groups:
        if group.pinned or group.has_fixed.any() or len(group.tensor_classes) > 1:
            continue
        score = filter_l1_norms(analysis, group)
        if score is None:
            continue
        kept = min(group.size, math.ceil(math.ceil((1 - fraction) * group.size) / round_to) * round_to)
        keep[group.name] = largest(score, kept)
    return PrunePlan(0.0, {"method": "uniform-l1", "fraction": fraction, "round_to": round_to}, keep)
