"""Global threshold search: the largest threshold t whose thresholded model (every weight of the
pruned layers with |w| <= t set to 0) keeps its metric within a tolerance of the model's own.

Candidates are placed in sparsity space through the native curve (`stats.threshold_for_sparsity`):
a grid first, then bisection between the last sparsity that passed and the first that failed, so
the answer comes with the next candidate above it that did not pass. Results are cached per
threshold.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from onnxprune import stats
from onnxprune.channel_groups import analyze_channels
from onnxprune.evaluate import Evaluator
from onnxprune.model_io import InputError, load_model
from onnxprune.selection import default_layers

__all__ = ["Candidate", "SweepResult", "plot", "sweep", "thresholded"]


@dataclass(frozen=True)
class Candidate:
    sparsity: float
    threshold: float
    metric: float
    within: bool


@dataclass
class SweepResult:
    """The search: the model's own metric, the tolerance, every candidate evaluated (by sparsity)
    and the chosen one (None when even the smallest candidate failed)."""

    metric_name: str
    higher_is_better: bool
    baseline: float
    tolerance: float
    candidates: list[Candidate] = field(default_factory=list)
    chosen: Candidate | None = None
    next_above: Candidate | None = None
    stopped: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def _layer_weights(model: onnx.ModelProto, layers: tuple[str, ...]) -> dict[str, np.ndarray]:
    analysis = analyze_channels(model, check=False)
    chosen = default_layers(analysis, layers)
    names = {sl.tensor for g in analysis.groups for sl in g.producers if sl.node in chosen}
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name in names and len(t.dims) >= 2}


def thresholded(model: onnx.ModelProto, weights: dict[str, np.ndarray], threshold: float) -> onnx.ModelProto:
    """A copy of `model` whose `weights` have every |w| <= threshold set to 0."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name in weights:
            w = weights[t.name]
            t.CopyFrom(onnx.numpy_helper.from_array(np.where(np.abs(w) <= threshold, 0, w).astype(w.dtype), t.name))
    return out


def sweep(
    model: str | os.PathLike | onnx.ModelProto,
    evaluator: Evaluator,
    tolerance: float,
    *,
    layers: tuple[str, ...] = (),
    grid: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
    refine: int = 4,
    progress: bool = False,
) -> SweepResult:
    """Search the largest global threshold within `tolerance` of the model's metric."""
    if not tolerance >= 0:
        raise InputError(f"--tolerance must be >= 0; got {tolerance}")
    proto = load_model(model)
    weights = _layer_weights(proto, layers)
    if not weights:
        raise InputError("no layer to threshold: every group is pinned or --layers matches nothing")
    baseline = evaluator(proto)
    result = SweepResult(evaluator.name, evaluator.higher_is_better, baseline, tolerance)
    sign = 1.0 if evaluator.higher_is_better else -1.0
    cache: dict[float, Candidate] = {}

    def evaluate(sparsity: float) -> Candidate:
        t = float(stats.threshold_for_sparsity(list(weights.values()), sparsity))
        if t not in cache:
            metric = evaluator(thresholded(proto, weights, t))
            cache[t] = Candidate(sparsity, t, metric, sign * (metric - baseline) >= -tolerance)
            if progress:
                c = cache[t]
                print(f"sparsity {sparsity:.3f} threshold {t:.4g}: {evaluator.name} {metric:.4f}"
                      f" ({'within' if c.within else 'outside'} tolerance)", flush=True)  # fmt: skip
        return cache[t]

    passed, failed = None, None
    for s in grid:
        c = evaluate(s)
        if not c.within:
            failed = c
            break
        passed = c
    if failed is None:
        result.stopped = f"every grid candidate up to sparsity {grid[-1]} is within tolerance"
    else:
        lo = passed.sparsity if passed is not None else 0.0
        hi = failed.sparsity
        for _ in range(refine):
            mid = (lo + hi) / 2
            c = evaluate(mid)
            if c.within:
                passed, lo = c, mid
            else:
                failed, hi = c, mid
        result.stopped = "bisection done" if passed is not None else "even the smallest candidate is outside tolerance"
    result.candidates = sorted(cache.values(), key=lambda c: c.sparsity)
    result.chosen = passed
    result.next_above = failed
    return result


def plot(result: SweepResult, path: str | os.PathLike) -> Path:
    """Metric vs sparsity with the tolerance band and the chosen point, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    xs = [100 * c.sparsity for c in result.candidates]
    ax.plot(xs, [c.metric for c in result.candidates], "o-", color="tab:blue", label=result.metric_name)
    ax.axhline(result.baseline, color="gray", lw=1, label="unthresholded")
    band = result.baseline - result.tolerance if result.higher_is_better else result.baseline + result.tolerance
    ax.axhline(band, color="gray", lw=1, ls="--", label=f"tolerance {result.tolerance:g}")
    if result.chosen is not None:
        ax.plot([100 * result.chosen.sparsity], [result.chosen.metric], "*", ms=14, color="tab:red",
                label=f"chosen: t = {result.chosen.threshold:.3g}")  # fmt: skip
    ax.set_xlabel("weights zero in the pruned layers (%)")
    ax.set_ylabel(result.metric_name)
    ax.set_title("Global threshold search")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
