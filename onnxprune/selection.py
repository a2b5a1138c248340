"""Filter selection: the global threshold and Algorithm 1 of Singh et al. turn weight statistics
into a `PrunePlan` (which channels of each group to keep).

Algorithm 1, per layer l in L (graph order) and output channel i, on weights with |w| <= t
counted as zero: select i when ``sF_i >= s_F``, or when ``s'_F <= sF_i < s_F`` and
``sG_i >= s_G``, where sF_i is the zero fraction of filter i and sG_i that of every weight of
the following layers that reads channel i. The statistics of a layer are taken after the layers
before it lost their channels.

Rules for what the paper does not cover (ours):
- Tied channels (a residual Add, a depthwise conv between two layers) form one class; a class is
  removed only when *every* filter that makes it qualifies, all its layers are in L, and it has
  no channel of a graph input. Pad channels (constants) never block a removal.
- A group never loses all its channels: the best-kept class stays.
- `round_to=N` keeps each group's channel count a multiple of N (or the whole group), putting
  back the selected classes whose filters are least zero.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from onnxprune import stats
from onnxprune.channel_groups import ChannelAnalysis, ChannelGroup, ParamSlice
from onnxprune.model_io import InputError
from onnxprune.op_rules import conv

__all__ = ["Criteria", "GroupStats", "PrunePlan", "default_layers", "layer_weights", "select", "stats_weight", "threshold_for_sparsity"]



@dataclass(frozen=True)
class Criteria:
    """The knobs of Algorithm 1: global threshold t, cut-offs s_F, s'_F, s_G, the pruned set L
    as globs over node or output names (empty: every Conv/ConvTranspose), and rounding."""

    threshold: float = 0.0
    sf: float = 0.9
    sf_low: float = 0.5
    sg: float = 0.9
    layers: tuple[str, ...] = ()
    round_to: int = 1
    fold_bn: bool = False  # judge a conv followed by BatchNorm by its deployed filters (see stats_weight)
    relative: bool = False  # the threshold in units of each layer's RMS weight (see stats_weight)

    def __post_init__(self) -> None:
        for name in ("sf", "sf_low", "sg"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"--{name.replace('_', '-')} must be in [0, 1]; got {value}")
        if self.sf_low > self.sf:
            raise InputError(f"--sf-low ({self.sf_low}) must not exceed --sf ({self.sf})")
        if not self.threshold >= 0.0 or math.isinf(self.threshold):
            raise InputError(f"--threshold must be a finite number >= 0; got {self.threshold}")
        if self.round_to < 1:
            raise InputError(f"--round-to must be >= 1; got {self.round_to}")


@dataclass
class GroupStats:
    """Per class of one group: the smallest filter zero fraction over its layers (sF), the zero
    fraction of what reads it (sG, NaN when nothing with weights reads it), and the decision."""

    name: str
    sf: np.ndarray
    sg: np.ndarray
    keep: np.ndarray
    in_layers: bool


@dataclass
class PrunePlan:
    """Keep masks per group, with the criteria that chose them. Serialises to JSON; a plan made
    for one model applies to the same model (groups are matched by name and size)."""

    threshold: float
    criteria: dict
    keep: dict[str, np.ndarray] = field(default_factory=dict)

    def removed(self) -> dict[str, list[int]]:
        return {name: np.nonzero(~mask)[0].tolist() for name, mask in self.keep.items()}

    def to_json(self) -> dict:
        return {
            "format": "onnxprune-plan",
            "version": 1,
            "threshold": self.threshold,
            "criteria": self.criteria,
            "groups": [{"name": n, "channels": len(m), "remove": np.nonzero(~m)[0].tolist()} for n, m in self.keep.items()],
        }

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> PrunePlan:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: not a readable plan file ({err})") from err
        if not isinstance(data, dict) or data.get("format") != "onnxprune-plan":
            raise InputError(f"{path}: not an onnxprune plan (made by `onnxprune prune --plan-out`)")
        keep = {}
        try:
            for g in data["groups"]:
                mask = np.ones(int(g["channels"]), dtype=bool)
                mask[np.asarray(g["remove"], dtype=np.int64)] = False
                keep[str(g["name"])] = mask
            return cls(float(data["threshold"]), dict(data.get("criteria", {})), keep)
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise InputError(f"{path}: malformed plan ({err})") from err


def is_pointwise_matmul(analysis: ChannelAnalysis, node) -> bool:
    """A MatMul over channels-last feature maps or tokens (a Linear layer there: ConvNeXt's MLP)."""
    return node is not None and node.op == "MatMul" and (analysis.rank(node.outputs[0]) or 0) > 2


def default_layers(analysis: ChannelAnalysis, globs: tuple[str, ...]) -> set[str]:
    """Names of the layers in L: those matching a glob (node name or an output name), or when no
    glob is given every Conv/ConvTranspose layer and every MatMul over channels-last feature maps
    or tokens (a Linear layer there is a pointwise conv: ConvNeXt's MLP)."""
    layers = {n for g in analysis.groups for n in g.producer_nodes}
    nodes = {n.name: n for n in analysis.graph.nodes}
    if not globs:
        return {n for n in layers if analysis.producer_op(n) in conv.LAYER_OPS or is_pointwise_matmul(analysis, nodes.get(n))}
    chosen = set()
    for name in layers:
        names = [name, *(t.name for t in nodes[name].outputs)] if name in nodes else [name]
        if any(fnmatch.fnmatchcase(n, glob) for glob in globs for n in names):
            chosen.add(name)
    if not chosen:
        raise InputError(f"--layers {' '.join(globs)} matches no layer; `onnxprune analyze` lists them")
    return chosen


def layer_weights(
    analysis: ChannelAnalysis, globs: tuple[str, ...] = (), fold_bn: bool = False, relative: bool = False
) -> dict[str, np.ndarray]:
    """The weights (two or more axes) producing the channels of the layers in L, by tensor name,
    as the statistics read them (`stats_weight`)."""
    layers = default_layers(analysis, globs)
    weights = {}
    for group in analysis.groups:
        for sl in group.producers:
            if sl.node in layers and sl.tensor not in weights:
                w = stats_weight(analysis, sl, fold_bn, relative)
                if w.ndim >= 2:
                    weights[sl.tensor] = w
    return weights


def threshold_for_sparsity(
    analysis: ChannelAnalysis, sparsity: float, globs: tuple[str, ...] = (), fold_bn: bool = False,
    relative: bool = False,
) -> float:
    """The threshold at which a fraction `sparsity` of the weights of the layers in L is zero."""
    if not 0.0 <= sparsity <= 1.0:
        raise InputError(f"--sparsity must be in [0, 1]; got {sparsity}")
    weights = layer_weights(analysis, globs, fold_bn, relative)
    if not weights:
        raise InputError("no layer to prune: every group is pinned or --layers matches nothing prunable")
    return float(stats.threshold_for_sparsity(list(weights.values()), sparsity))


class _Weights:
    """Float32 views of the weights and, per (tensor, axis), the positions removed so far."""

    def __init__(self, analysis: ChannelAnalysis, fold_bn: bool = False, relative: bool = False) -> None:
        self.analysis = analysis
        self.fold_bn = fold_bn
        self.relative = relative
        self.removed: dict[tuple[str, int], np.ndarray] = {}
        self._cache: dict[str, np.ndarray] = {}

    def get(self, sl: ParamSlice) -> np.ndarray:
        if sl.tensor not in self._cache:
            self._cache[sl.tensor] = stats_weight(self.analysis, sl, self.fold_bn, self.relative)
        return self._cache[sl.tensor]

    def zero_counts(self, sl: ParamSlice, threshold: float) -> tuple[np.ndarray, int]:
        """Zero weights at each position of `sl`'s axis, over what other layers have kept, and
        how many weights each position has."""
        w = self.get(sl)
        other = 1 - sl.axis
        gone = self.removed.get((sl.tensor, other), np.zeros(0, dtype=np.int64))
        counts, per = _axis_zero_counts(w, sl.axis, threshold)
        if gone.size:
            # Subtract what the removed slices of the other axis held (cheaper than a copy of
            # the kept part when, as usual, fewer are removed than kept).
            gone_counts, gone_per = _axis_zero_counts(np.ascontiguousarray(np.take(w, gone, axis=other)), sl.axis, threshold)
            counts, per = counts - gone_counts, per - gone_per
        return counts, per

    def remove(self, sl: ParamSlice, positions: np.ndarray) -> None:
        key = (sl.tensor, sl.axis)
        self.removed[key] = np.union1d(self.removed.get(key, np.zeros(0, dtype=np.int64)), positions)


def _axis_zero_counts(w: np.ndarray, axis: int, threshold: float) -> tuple[np.ndarray, int]:
    """Zero weights at each position of axis 0 or 1 of `w`, and the weights per position."""
    if axis == 0:
        fractions = stats.filter_zero_fractions(w, threshold)
        per = int(np.prod(w.shape[1:], dtype=np.int64))
    else:
        fractions = stats.input_channel_zero_fractions(w, threshold)
        per = int(w.size // max(w.shape[1], 1))
    return np.rint(np.nan_to_num(fractions) * per), per


def stats_weight(analysis: ChannelAnalysis, sl: ParamSlice, fold_bn: bool = False, relative: bool = False) -> np.ndarray:
    """The weights the statistics read, float32 or float64. With `fold_bn`, a Conv followed by
    BatchNorm is read as deployed, its BatchNorm's scale folded in (exact zeros stay zeros): the
    view that matches sparsity trained on BatchNorm's scales (`--l1-groups channels`), where the
    raw filter's own scale means nothing. With `relative`, a weight tensor (two or more axes) is
    divided by its root mean square, so one global threshold cuts each layer relative to its own
    scale instead of emptying the layers with small weights (wide fan-in) first. The paper's rule,
    and the default, reads raw weights, which matches L1 trained on them."""
    w = np.asarray(analysis.constant(analysis.tensor(sl.tensor)))
    dtype = np.float64 if w.dtype == np.float64 else np.float32
    scale = analysis.deployed_scale(sl.node) if fold_bn and w.ndim >= 2 else None
    if scale is not None and len(scale) == w.shape[0]:
        w = w * scale.astype(dtype).reshape(-1, *[1] * (w.ndim - 1))
    if relative and w.ndim >= 2:
        flat = w.reshape(-1)  # a dot product: no squared copy of a large tensor
        rms = float(np.sqrt(np.dot(flat, flat) / flat.size)) if flat.size else 0.0
        w = w / rms if rms > 0 else w
    return np.ascontiguousarray(w, dtype=dtype)


def _class_fractions(
    slices: list[ParamSlice], weights: _Weights, threshold: float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per class: zero weights and all weights over the positions of the given slices."""
    zeros, totals = np.zeros(size), np.zeros(size)
    for sl in slices:
        counts, per = weights.zero_counts(sl, threshold)
        rows = sl.index_map.positions
        valid = rows >= 0
        zeros += np.where(valid, counts[np.where(valid, rows, 0)], 0).sum(axis=1)
        totals += valid.sum(axis=1) * per
    return zeros, totals


def _stat_slices(slices: list[ParamSlice], weights: _Weights) -> list[ParamSlice]:
    """The weight slices (two or more axes; not biases) of a role."""
    return [sl for sl in slices if weights.get(sl).ndim >= 2 and sl.axis in (0, 1)]


def group_stats(
    group: ChannelGroup, weights: _Weights, criteria: Criteria, layers: set[str], every_group: bool = False
) -> GroupStats:
    """Algorithm 1 for one group: sF per producing layer, sG over all readers, the decision.
    Groups that cannot change (pinned, or no layer in L) keep everything without statistics
    unless `every_group` (the analysis table shows them all)."""
    size = group.size
    if not every_group and (group.pinned or not set(group.producer_nodes) & layers):
        nan = np.full(size, np.nan)
        return GroupStats(group.name, nan, nan, np.ones(size, dtype=bool), False)
    producers = _stat_slices(group.producers, weights)
    qualifies = np.ones(size, dtype=bool)
    has_layer = np.zeros(size, dtype=bool)
    in_layers = np.ones(size, dtype=bool)
    sf_min = np.full(size, np.nan)
    c_zero, c_total = _class_fractions(_stat_slices(group.consumers, weights), weights, criteria.threshold, size)
    with np.errstate(invalid="ignore", divide="ignore"):
        sg = c_zero / c_total
    for sl in producers:
        present = (sl.index_map.positions >= 0).any(axis=1)
        zero, total = _class_fractions([sl], weights, criteria.threshold, size)
        with np.errstate(invalid="ignore", divide="ignore"):
            sf = zero / total
        ok = (sf >= criteria.sf) | ((sf >= criteria.sf_low) & (sf < criteria.sf) & (sg >= criteria.sg))
        qualifies &= ~present | ok
        has_layer |= present
        in_layers &= ~present | (sl.node in layers)
        sf_min = np.where(present, np.fmin(sf_min, sf), sf_min)
    select = qualifies & has_layer & in_layers & ~group.has_fixed
    if group.pinned:
        select[:] = False
    keep = ~select
    _keep_enough(keep, np.nan_to_num(sf_min, nan=-1.0), criteria.round_to, group.tensor_classes)
    return GroupStats(group.name, sf_min, sg, keep, bool((has_layer & in_layers).any()))


def _keep_enough(keep: np.ndarray, score: np.ndarray, round_to: int, tensor_classes: list[np.ndarray]) -> None:
    """Put back selected classes (least zero first) until every tensor of the group keeps a
    channel (a Split part, one stage of a residual chain) and the group keeps a multiple of
    `round_to` (or all)."""
    for classes in tensor_classes:
        if len(classes) and not keep[classes].any():
            keep[classes[np.argmin(score[classes])]] = True
    kept = int(keep.sum())
    target = min(len(keep), max(round_to, -(-kept // round_to) * round_to))
    if kept < target:
        candidates = np.nonzero(~keep)[0]
        back = candidates[np.argsort(score[candidates], kind="stable")][: target - kept]
        keep[back] = True


def select(
    analysis: ChannelAnalysis, criteria: Criteria, *, every_group: bool = False
) -> tuple[PrunePlan, list[GroupStats]]:
    """Run Algorithm 1 over the groups in graph order; returns the plan and each group's stats
    (of every group when `every_group`, else of those that can change)."""
    layers = default_layers(analysis, criteria.layers)
    weights = _Weights(analysis, criteria.fold_bn, criteria.relative)
    plan = PrunePlan(criteria.threshold, asdict(criteria) | {"layers": list(criteria.layers)})
    report = []
    for group in analysis.groups:
        gs_ = group_stats(group, weights, criteria, layers, every_group)
        report.append(gs_)
        plan.keep[group.name] = gs_.keep
        for sl in (*group.producers, *group.followers, *group.consumers):
            rows = sl.index_map.positions[~gs_.keep]
            if rows.size:
                weights.remove(sl, rows[rows >= 0])
    return plan, report
