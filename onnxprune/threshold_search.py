"""Global threshold search: the largest threshold t whose thresholded model (every weight of the
pruned layers with |w| <= t set to 0) keeps its metric within a tolerance of the model's own.

That is the paper's rule. With `prune=Criteria(...)` each candidate is instead the model Algorithm
1 prunes at t (filters with sF >= s_F, or s'_F <= sF < s_F and sG >= s_G, removed from the
unthresholded weights): the metric is then that of the model that will ship, which the
thresholded model overestimates when partly non-zero filters go.

Candidates are placed in sparsity space through the native curve (`stats.threshold_for_sparsity`):
a grid first, then bisection between the last sparsity that passed and the first that failed, so
the answer comes with the next candidate above it that did not pass. Results are cached per
threshold.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from onnxprune import stats
from onnxprune.channel_groups import analyze_channels
from onnxprune.commands import prune as prune_model
from onnxprune.evaluate import Evaluator
from onnxprune.model_io import InputError, load_model
from onnxprune.selection import Criteria, layer_weights

__all__ = ["Candidate", "SweepResult", "plot", "sweep", "thresholded"]


@dataclass(frozen=True)
class Candidate:
    sparsity: float
    threshold: float
    metric: float
    within: bool
    params: int | None = None  # of the pruned candidate (sweeps that prune)


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
    judged: str = "thresholded"  # or "pruned": what each candidate's metric was measured on

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SweepResult:
        def candidate(c: dict | None) -> Candidate | None:
            return None if c is None else Candidate(**c)

        return cls(**(data | {"candidates": [Candidate(**c) for c in data["candidates"]],
                              "chosen": candidate(data["chosen"]), "next_above": candidate(data["next_above"])}))  # fmt: skip


def _layer_weights(
    model: onnx.ModelProto, layers: tuple[str, ...], fold_bn: bool = False, relative: bool = False
) -> dict[str, np.ndarray]:
    """The producing weights of the chosen layers as the statistics see them (`fold_bn`: as
    deployed; `relative`: each tensor over its RMS)."""
    initializers = {t.name for t in model.graph.initializer}  # what `thresholded` can rewrite
    weights = layer_weights(analyze_channels(model, check=False), layers, fold_bn, relative)
    return {name: w for name, w in weights.items() if name in initializers}


def thresholded(model: onnx.ModelProto, weights: dict[str, np.ndarray], threshold: float) -> onnx.ModelProto:
    """A copy of `model` whose weights named in `weights` are 0 wherever |weights| <= threshold
    (`weights` as `_layer_weights` gives them; the other values stay the model's own)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name in weights:
            w = onnx.numpy_helper.to_array(t)
            t.CopyFrom(onnx.numpy_helper.from_array(np.where(np.abs(weights[t.name]) <= threshold, 0, w).astype(w.dtype), t.name))
    return out


def _evaluate(model: onnx.ModelProto, weights: dict[str, np.ndarray], evaluator: Evaluator, prune: Criteria | None,
              threshold: float) -> tuple[float, int | None]:  # fmt: skip
    """(metric, parameters) of the candidate at `threshold`: thresholded, or pruned by `prune`."""
    if prune is None:
        return evaluator(thresholded(model, weights, threshold)), None
    result = prune_model(model, threshold=threshold, sf=prune.sf, sf_low=prune.sf_low, sg=prune.sg,
                         layers=prune.layers, round_to=prune.round_to, fold_bn=prune.fold_bn,
                         relative=prune.relative)  # fmt: skip
    return evaluator(result["model"]), result["params_after"]


# Per worker process: the model, its layer weights, the evaluator and the criteria, sent once.
_WORKER: dict = {}


def _init_worker(model_bytes: bytes, weights: dict[str, np.ndarray], evaluator: Evaluator, prune) -> None:
    _WORKER.update(model=onnx.load_from_string(model_bytes), weights=weights, evaluator=evaluator, prune=prune)


def _evaluate_in_worker(threshold: float) -> tuple[float, int | None]:
    return _evaluate(_WORKER["model"], _WORKER["weights"], _WORKER["evaluator"], _WORKER["prune"], threshold)


def sweep(
    model: str | os.PathLike | onnx.ModelProto,
    evaluator: Evaluator,
    tolerance: float,
    *,
    layers: tuple[str, ...] = (),
    grid: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
    refine: int = 4,
    workers: int = 1,
    prune: Criteria | None = None,
    baseline: float | None = None,
    fold_bn: bool = False,
    relative: bool = False,
    progress: bool = False,
) -> SweepResult:
    """Search the largest global threshold within `tolerance` of the model's metric. With one
    worker: the grid in order up to the first failure, then `refine` bisection steps. With N
    workers (processes): the whole grid at once, then `refine` rounds that each split the
    remaining interval into N + 1 parts, which narrows it N + 1 times per round instead of 2.
    `prune`: evaluate the model Algorithm 1 prunes at each candidate (its layers and threshold are
    ignored: `layers` and the candidate's threshold apply). `baseline`: the model's metric when the
    caller has measured it already. `fold_bn`: thresholds apply to the filters as deployed
    (BatchNorm's scale folded in; `selection.stats_weight`), for candidates of both kinds;
    `relative`: thresholds are in units of each layer's RMS weight."""
    if not tolerance >= 0:
        raise InputError(f"--tolerance must be >= 0; got {tolerance}")
    if workers < 1:
        raise InputError(f"--workers must be >= 1; got {workers}")
    proto = load_model(model)
    weights = _layer_weights(proto, layers, fold_bn, relative)
    if not weights:
        raise InputError("no layer to threshold: every group is pinned or --layers matches nothing")
    if baseline is None:
        baseline = evaluator(proto)
    result = SweepResult(evaluator.name, evaluator.higher_is_better, baseline, tolerance,
                         judged="thresholded" if prune is None else "pruned")  # fmt: skip
    sign = 1.0 if evaluator.higher_is_better else -1.0
    cache: dict[float, Candidate] = {}
    pruning = replace(prune, layers=tuple(layers), fold_bn=fold_bn, relative=relative) if prune is not None else None
    pool = None
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                                   initargs=(proto.SerializeToString(), weights, evaluator, pruning))  # fmt: skip

    def evaluate(sparsities: list[float]) -> list[Candidate]:
        thresholds = [float(stats.threshold_for_sparsity(list(weights.values()), s)) for s in sparsities]
        todo = [t for t in dict.fromkeys(thresholds) if t not in cache]
        if pool is not None:
            results = list(pool.map(_evaluate_in_worker, todo))
        else:
            results = [_evaluate(proto, weights, evaluator, pruning, t) for t in todo]
        for t, (metric, params) in zip(todo, results, strict=True):
            s = sparsities[thresholds.index(t)]
            cache[t] = Candidate(s, t, metric, sign * (metric - baseline) >= -tolerance, params)
            if progress:
                size = f", {params:,} parameters" if params is not None else ""
                print(f"sparsity {s:.3f} threshold {t:.4g}: {evaluator.name} {metric:.4f}{size}"
                      f" ({'within' if cache[t].within else 'outside'} tolerance)", flush=True)  # fmt: skip
        return [cache[t] for t in thresholds]

    def first_failure(candidates: list[Candidate]) -> tuple[Candidate | None, Candidate | None]:
        """The last candidate within tolerance before the first one outside it, and that one."""
        passed = None
        for c in candidates:
            if not c.within:
                return passed, c
            passed = c
        return passed, None

    try:
        if pool is None:
            passed, failed = None, None
            for s in grid:
                (c,) = evaluate([s])
                if not c.within:
                    failed = c
                    break
                passed = c
        else:
            passed, failed = first_failure(evaluate(list(grid)))
        if failed is None:
            result.stopped = f"every grid candidate up to sparsity {grid[-1]} is within tolerance"
        else:
            for _ in range(refine):
                lo = passed.sparsity if passed is not None else 0.0
                points = [lo + (failed.sparsity - lo) * (k + 1) / (workers + 1) for k in range(workers)]
                found_pass, found_fail = first_failure(evaluate(points))
                passed = found_pass or passed
                failed = found_fail or failed
            result.stopped = "refinement done" if passed is not None else "even the smallest candidate is outside tolerance"
    finally:
        if pool is not None:
            pool.shutdown()
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
    ax.axhline(result.baseline, color="gray", lw=1, label="the model as it is")
    band = result.baseline - result.tolerance if result.higher_is_better else result.baseline + result.tolerance
    ax.axhline(band, color="gray", lw=1, ls="--", label=f"tolerance {result.tolerance:g}")
    if result.chosen is not None:
        ax.plot([100 * result.chosen.sparsity], [result.chosen.metric], "*", ms=14, color="tab:red",
                label=f"chosen: t = {result.chosen.threshold:.3g}")  # fmt: skip
    ax.set_xlabel("weights zero in the pruned layers (%)")
    ax.set_ylabel(result.metric_name)
    ax.set_title(f"Global threshold search ({result.judged} model at each threshold)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
