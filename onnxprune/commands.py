"""The Python API behind `onnxprune analyze` and `onnxprune prune`: load -> analyse -> select ->
cut -> verify -> save, each returning plain data (the JSON the CLI prints)."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from onnxprune.channel_groups import analyze_channels
from onnxprune.cost import model_cost
from onnxprune.budget import threshold_for_budget
from onnxprune.model_io import InputError, load_model, save_model
from onnxprune.report import report_paths, write_prune_report
from onnxprune.selection import Criteria, PrunePlan, select, threshold_for_sparsity
from onnxprune.surgery import apply_plan
from onnxprune.verify import probe_reference_async, verify_pruned

__all__ = ["analyze", "format_analysis", "format_prune", "prune"]

ModelLike = str | os.PathLike | onnx.ModelProto


class _Progress:
    """One line per stage on stderr (`-v` adds timings); silent when asked to be."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.start = enabled, time.perf_counter()

    def __call__(self, stage: str) -> None:
        if self.enabled:
            print(f"[{time.perf_counter() - self.start:6.1f}s] {stage}", file=sys.stderr, flush=True)


def analyze(
    model: ModelLike,
    threshold: float = 0.0,
    *,
    layers: tuple[str, ...] = (),
    fold_bn: bool = False,
    relative: bool = False,
    pad_layer_norms: bool = False,
    progress: bool = False,
) -> dict:
    """Channel groups of `model` with their layers, channel counts, pins and, at `threshold`,
    the zero fraction of their filters (`fold_bn`: as deployed, as `prune --fold-bn` sees them;
    `relative`: the threshold in units of each layer's RMS weight, as `prune --relative`;
    `pad_layer_norms`: as `prune --pad-layer-norms` groups them).
    Returns the JSON object `onnxprune analyze --json` prints."""
    say = _Progress(progress)
    say("loading and analysing")
    proto = load_model(model)
    analysis = analyze_channels(proto, check=False, pad_layer_norms=pad_layer_norms)
    criteria = Criteria(threshold=threshold, layers=tuple(layers), fold_bn=fold_bn, relative=relative)
    _, group_stats = select(analysis, criteria, every_group=True)
    say("statistics done")
    cost = model_cost(proto)
    groups = []
    for group, st in zip(analysis.groups, group_stats, strict=True):
        sf = st.sf[np.isfinite(st.sf)]
        groups.append({
            "name": group.name,
            "producers": group.producer_nodes,
            "channels": group.size,
            "zero_filters": int((sf >= 1.0).sum()),
            "mean_filter_zero_fraction": float(sf.mean()) if sf.size else None,
            "pinned_by": group.pinned_by,
        })  # fmt: skip
    return {
        "model": str(model) if not isinstance(model, onnx.ModelProto) else None,
        "threshold": threshold,
        "params": cost.params,
        "flops": cost.flops,
        "prunable_groups": sum(1 for g in groups if not g["pinned_by"]),
        "groups": groups,
    }


def prune(
    model: ModelLike,
    output: str | os.PathLike | None = None,
    *,
    threshold: float | None = None,
    sparsity: float | None = None,
    flops_target: float | None = None,
    params_target: float | None = None,
    sf: float = 0.9,
    sf_low: float = 0.5,
    sg: float = 0.9,
    layers: tuple[str, ...] = (),
    round_to: int = 1,
    fold_bn: bool = False,
    relative: bool = False,
    plan: str | os.PathLike | PrunePlan | None = None,
    plan_out: str | os.PathLike | None = None,
    verify: bool = True,
    shapes: dict[str, tuple[int, ...]] | None = None,
    exact_borders: bool = False,
    pad_layer_norms: bool = False,
    progress: bool = False,
) -> dict:
    """Remove the channels Algorithm 1 selects (or those of `plan`) and write the model to
    `output` (when given). The threshold is `threshold`, or the one at which `sparsity` of the
    pruned layers' weights count as zero, or the smallest that removes `flops_target` of the
    FLOPs (`params_target` of the parameters). With `verify`, both models run in onnxruntime on
    seeded probe inputs (dynamic input shapes from `shapes`) and the deviation is reported;
    VerificationError (nothing written) where removals called exact are not. With
    `exact_borders`, constant channels behind zero padding are folded exactly (a constant map
    added after the reader) instead of into the bias (exact except at borders). With
    `pad_layer_norms`, channels that pass a LayerNormalization over them can go too: the norm
    reads the removed ones' constants, padded back in (a Pad and a Slice added per norm); without,
    such norms pin them. Returns the JSON
    object `onnxprune prune --json` prints, with the pruned `onnx.ModelProto` under the key
    "model" (not printed)."""
    say = _Progress(progress)
    if sum(x is not None for x in (threshold, sparsity, flops_target, params_target, plan)) > 1:
        raise InputError("give one of --threshold, --sparsity, --flops-target, --params-target and --plan")
    if output is not None:
        _check_output(output, model)
    say("loading and analysing channel groups")
    analysis = analyze_channels(model, pad_layer_norms=pad_layer_norms)
    if verify:  # onnxruntime runs the input model on the probes while the selection and surgery work
        pending_reference = probe_reference_async(analysis.model, shapes)
    proto = analysis.model
    if plan is not None:
        chosen = plan if isinstance(plan, PrunePlan) else PrunePlan.load(plan)
        t = chosen.threshold
    else:
        t = threshold if threshold is not None else 0.0
        if sparsity is not None:
            t = threshold_for_sparsity(analysis, sparsity, tuple(layers), fold_bn, relative)
        criteria = Criteria(threshold=t, sf=sf, sf_low=sf_low, sg=sg, layers=tuple(layers), round_to=round_to,
                            fold_bn=fold_bn, relative=relative)  # fmt: skip
        for measure, target in (("flops", flops_target), ("params", params_target)):
            if target is not None:
                say(f"searching the threshold that removes {100 * target:g}% of the {measure}")
                t = threshold_for_budget(analysis, target, criteria, measure)
                criteria = replace(criteria, threshold=t)
        say(f"selecting filters at threshold {t:.6g}")
        chosen, _ = select(analysis, criteria)
    if plan_out is not None:
        chosen.save(plan_out)
    before = model_cost(proto)  # before the surgery, which may edit `proto`
    say("removing channels")
    result = apply_plan(analysis, chosen, exact_borders)
    after = model_cost(result.model)
    verification = None
    if verify:
        say("verifying the pruned model against the input model")
        reference = pending_reference.result()
        exact = all(not g.removal.get(s) for g in result.groups for s in ("folded_border", "approximate"))
        verification = verify_pruned(reference, result.model, keep=result.keep, expect_exact=exact,
                                     changed_nodes=result.changed_nodes)  # fmt: skip
        if verification.status == "skipped" and progress:
            print(f"note: the pruned model was not verified: {verification.reason}", file=sys.stderr)
    if output is not None:
        say(f"saving {output}")
        save_model(result.model, output, input_path=model if not isinstance(model, onnx.ModelProto) else None)
    say("done")
    report = {
        "output": str(output) if output is not None else None,
        "params_before": before.params,
        "params_after": after.params,
        "flops_before": before.flops,
        "flops_after": after.flops,
        "threshold": t,
        "flops_target": flops_target,
        "params_target": params_target,
        "plan": str(plan_out) if plan_out is not None else None,
        "verification": verification.to_json() if verification is not None else None,
        "groups": [
            {"name": g.name, "producers": g.producers, "channels_before": g.channels_before,
             "channels_after": g.channels_after, "pinned_by": g.pinned_by, "removal": g.removal}
            for g in result.groups
        ],  # fmt: skip
    }
    if output is not None:
        report["report"] = str(report_paths(output)[0])
        report["channels"] = [{"layer": g.name, "before": g.channels_before, "after": g.channels_after}
                              for g in result.groups]  # fmt: skip
        write_prune_report(output, report, f"Pruning of {model if not isinstance(model, onnx.ModelProto) else 'a model'}")
    return report | {"model": result.model}


def _check_output(output: str | os.PathLike, model: ModelLike) -> None:
    out = Path(output)
    if not isinstance(model, onnx.ModelProto) and Path(model).exists() and out.exists() and os.path.samefile(out, model):
        raise InputError(f"{out}: the output path is the input model; choose another output path")
    if not out.parent.is_dir():
        raise InputError(f"{out}: the output folder {out.parent} does not exist")


def format_analysis(report: dict) -> str:
    """The analysis as a table: one line per group."""
    lines = [
        f"{report['model'] or 'model'}: {report['params']:,} parameters, {report['flops'] / 1e6:,.1f} MFLOPs; "
        f"{report['prunable_groups']} of {len(report['groups'])} channel groups can be pruned",
        f"threshold {report['threshold']:g}: 'zero' = filters with every weight |w| <= threshold",
        "",
        f"{'group':38s} {'layers':>6s} {'channels':>8s} {'zero':>5s} {'mean sF':>7s}  pinned by",
    ]
    for g in report["groups"]:
        mean = "-" if g["mean_filter_zero_fraction"] is None else f"{g['mean_filter_zero_fraction']:.3f}"
        pinned = g["pinned_by"][0] + (f" (+{len(g['pinned_by']) - 1} more)" if len(g["pinned_by"]) > 1 else "") if g["pinned_by"] else ""
        lines.append(f"{_short(g['name'], 38):38s} {len(g['producers']):6d} {g['channels']:8d} {g['zero_filters']:5d} {mean:>7s}  {pinned}")
    return "\n".join(lines)


def format_prune(report: dict) -> str:
    changed = [g for g in report["groups"] if g["channels_after"] != g["channels_before"]]
    chosen = ""
    for key, what in (("flops_target", "FLOPs"), ("params_target", "parameters")):
        if report.get(key):
            chosen = f" (the smallest for {100 * report[key]:g}% fewer {what})"
    lines = [
        f"threshold {report['threshold']:.6g}{chosen}: {len(changed)} groups lost channels",
        f"parameters {report['params_before']:,} -> {report['params_after']:,} "
        f"({report['params_before'] / max(report['params_after'], 1):.2f}x smaller)",
        f"FLOPs      {report['flops_before']:,} -> {report['flops_after']:,} "
        f"({100 * (1 - report['flops_after'] / max(report['flops_before'], 1)):.1f}% fewer)",
    ]
    if changed:
        lines += ["", f"{'group':38s} {'before':>6s} {'after':>6s}  removal (exact / folded / border / approximate)"]
        for g in changed:
            r = g["removal"]
            lines.append(f"{_short(g['name'], 38):38s} {g['channels_before']:6d} {g['channels_after']:6d}  "
                         f"{r['exact']} / {r['folded']} / {r['folded_border']} / {r['approximate']}")  # fmt: skip
    if any(g["channels_after"] % 8 for g in changed):
        lines.append("\nnote: some channel counts are not multiples of 8; onnxruntime's fast CPU convolutions "
                     "want multiples of 8 and the model may run slower than before: try --round-to 8")  # fmt: skip
    v = report.get("verification")
    if v is not None:
        lines.append("")
        if v["status"] == "skipped":
            lines.append(f"not verified: {v['reason']}")
        else:
            worst = f" (output {v['worst_output']})" if v["max_deviation"] else ""
            verdict = "within" if v["status"] == "passed" else "beyond"
            lines.append(f"verified on {v['probes']} probe inputs in onnxruntime: largest deviation {v['max_deviation']:.2g} "
                         f"of the output's magnitude{worst}, {verdict} the tolerance {v['tolerance']:g}")  # fmt: skip
            if v["status"] == "deviates":
                lines.append("(expected: some removals are approximate or border folds; fine-tuning recovers them)")
        if v["not_compared"]:
            lines.append(f"not compared (behind NMS, TopK or another discontinuous op): {', '.join(v['not_compared'])}")
    if report["output"]:
        lines.append(f"\nwrote {report['output']}")
    return "\n".join(lines)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3) :]
