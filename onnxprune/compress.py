"""`onnxprune compress`: the whole pipeline in one command, stage by stage.

    sparsify (optional) -> for each phase: sweep -> select + prune -> fine-tune -> bench -> report

With `flops_target` (or `params_target`) each phase prunes at the smallest global threshold that
meets a FLOPs (parameter) budget instead of sweeping on the metric (`onnxprune.budget`): each
phase removes the same share of what its layers could remove at most, the last one reaching the
target.

Each sweep judges, at every candidate threshold, the model Algorithm 1 would prune there (the
paper judges the thresholded model, which overestimates the pruned one; `sweep_pruned=False`
restores that). Every stage writes its model (and each sweep its JSON) into `<OUT>.stages/` and
is skipped when run again (resumable); the final model is copied to OUT, with
`<OUT>.report.json`, `.md` and `.png` beside it. `<OUT>.stages/settings.json` records what made
the stages: a run with other settings is refused rather than resumed from stages they did not make
(without that file, stage files put there by hand are used as they are, with a warning).
Labels are used when the data has them (accuracy and cross-entropy; for boxes mAP@0.5 and the
multibox loss of an `onnxprune.zoo` SSD, other detectors distil); otherwise the original model is
the teacher (fidelity, distillation), so an ONNX file and some images are enough. `distill` adds
the original's outputs to the labels; `teacher` distils from another model instead (e.g. the
original fine-tuned on the data), for the dense baseline too. Each
phase's sweep keeps the metric within the tolerance of the model entering that phase.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import onnx

from onnxprune.bench import bench
from onnxprune.channel_groups import analyze_channels
from onnxprune.commands import prune
from onnxprune.cost import model_cost
from onnxprune.datasets import Preprocess, load_images
from onnxprune.evaluate.choice import choose_evaluator
from onnxprune.budget import MEASURES, check_target, phase_goals, threshold_for_budget
from onnxprune.model_io import InputError, load_model, save_model
from onnxprune.report import write_prune_report
from onnxprune.selection import Criteria
from onnxprune.threshold_search import SweepResult, plot, sweep
from onnxprune.train.loop import TrainConfig, model_input_size, train
from onnxprune.train.recalibrate import Recalibrated, recalibrate_batchnorm
from onnxprune.zoo.ssd import raw_ssd_metadata

__all__ = ["CompressConfig", "compress"]


@dataclass(frozen=True)
class CompressConfig:
    """The pipeline's knobs; `phases` are lists of layer globs pruned one after another."""

    phases: tuple[tuple[str, ...], ...] = ((),)
    sparsify_epochs: int = 0
    finetune_epochs: int = 1
    l1: float = 1e-4
    tolerance: float = 0.01
    sf: float = 0.9
    sf_low: float = 0.5
    sg: float = 0.9
    round_to: int = 1
    val_limit: int | None = None
    metric: str = "auto"  # auto: mAP with boxes, accuracy with labels, else fidelity; or "detection" (agreement)
    decoder: str = "auto"
    score_threshold: float | None = None  # detections kept: 0.05 for mAP, 0.5 for agreement unless told
    sweep_pruned: bool = True  # sweeps judge the pruned model at each threshold (False: the thresholded one)
    dense_baseline: bool = False  # also train the original, without L1, for as many epochs as the pipeline
    fold_bn: bool | None = None  # judge BatchNorm-ed convs as deployed; None: when L1 trains BatchNorm's scales
    relative: bool = False  # thresholds in units of each layer's RMS weight (selection.stats_weight)
    recalibrate: int = 0  # training images to re-estimate BatchNorm statistics on before judging a candidate
    flops_target: float | None = None  # prune to this share of FLOPs fewer (budget.py) instead of sweeping
    params_target: float | None = None  # ... or to this share of parameters fewer
    distill: bool = False  # with labels (classes, an SSD's boxes) too, train every stage to match the original's outputs
    teacher: str | None = None  # distil from this ONNX model instead of the original (implies distill)
    train: TrainConfig = field(default_factory=TrainConfig)


def compress(
    model: str | os.PathLike,
    output: str | os.PathLike,
    data: str,
    *,
    val: str | None = None,
    config: CompressConfig = CompressConfig(),
    progress: bool = True,
) -> dict:
    """Run the pipeline on `model` and write the compressed model to `output` (see the module
    docstring). Returns the report (also written as `<output>.report.json`)."""
    out = Path(output)
    if not out.parent.is_dir():
        raise InputError(f"{out}: the output folder {out.parent} does not exist")
    if config.recalibrate < 0:
        raise InputError(f"--recalibrate-bn must be >= 0 (images); got {config.recalibrate}")
    budget = _budget(config)
    stages = out.with_name(out.name + ".stages")
    original = load_model(model)
    stages.mkdir(exist_ok=True)
    _claim_stages(stages, _settings(model, data, val, config))
    if config.teacher is not None:
        _check_teacher(original, config.teacher)
    preprocess: Preprocess = config.train.preprocess
    size = model_input_size(original, preprocess)
    val_set = load_images(val or data, size, config.val_limit)
    evaluator = choose_evaluator(config.metric, original, val_set, preprocess, size, config.decoder,
                                 config.score_threshold)  # fmt: skip
    judge = evaluator  # what the sweeps measure candidates with
    if config.recalibrate > 0:
        judge = Recalibrated(evaluator, load_images(data, size, config.recalibrate), preprocess)
    own_loss = val_set.labelled or (val_set.boxes is not None and raw_ssd_metadata(original) is not None)
    teacher = config.teacher or (None if own_loss and not config.distill else model)
    say = (lambda text: print(f"[compress] {text}", flush=True)) if progress else (lambda text: None)
    report: dict = {"model": str(model), "output": str(out), "metric_name": evaluator.name, "stages": [],
                    "distilled": teacher is not None,
                    "teacher": None if teacher is None else str(teacher)}  # fmt: skip
    report["metric_before"] = evaluator(original)
    say(f"{evaluator.name} of the original: {report['metric_before']:.4f}")

    current, metric = Path(model), report["metric_before"]  # the model entering the next stage
    fold_bn = config.train.l1_groups == "channels" if config.fold_bn is None else config.fold_bn
    criteria_of = [Criteria(sf=config.sf, sf_low=config.sf_low, sg=config.sg, layers=layers, round_to=config.round_to,
                            fold_bn=fold_bn, relative=config.relative) for layers in config.phases]  # fmt: skip
    if budget is not None:  # before any training: a budget the phases cannot reach stops here
        measure, share = budget
        goals = phase_goals(analyze_channels(original), criteria_of, share, measure)
    epochs = 0  # the pipeline's training epochs, for the dense baseline
    if config.sparsify_epochs > 0:
        target = stages / "0_sparsified.onnx"
        if not target.exists():
            say(f"sparsify: {config.sparsify_epochs} epochs, L1 {config.l1:g}")
            # L1 on the layers the phases prune (all convs when a phase names none).
            globs = tuple(g for phase in config.phases for g in phase) if all(config.phases) else config.train.layers
            cfg = replace(config.train, epochs=config.sparsify_epochs, l1=config.l1, layers=globs, add_bn=False,
                          distill_features=False)
            train(current, target, data, teacher=teacher, config=cfg, val=val, val_limit=config.val_limit, judge=evaluator,
                  progress=progress)
        current, metric = target, evaluator(target)
        epochs += config.sparsify_epochs
        report["stages"].append({"stage": "sparsify", "model": str(target), "metric": metric})

    for k, (layers, criteria) in enumerate(zip(config.phases, criteria_of, strict=True), start=1):
        pruned, tuned = stages / f"{k}_pruned.onnx", stages / f"{k}_tuned.onnx"
        if budget is not None:
            goal = goals[k - 1]
            threshold = _budget_threshold(current, goal, criteria, stages / f"{k}_budget.json", measure)
            if threshold is None:
                say(f"phase {k}: the model already has at most the phase's {measure}; nothing pruned")
                report["stages"].append({"stage": f"phase {k}", "layers": list(layers), "stopped": f"{measure} at the target"})
                continue
            stage = {"stage": f"phase {k}", "layers": list(layers), "threshold": threshold, f"{measure}_goal": int(goal)}
        else:
            stage = None
            searched = stages / f"{k}_sweep.json"
            if searched.exists():  # resumed: the search is the slowest stage to repeat
                result = SweepResult.from_json(json.loads(searched.read_text()))
            else:
                result = sweep(current, judge, config.tolerance, layers=layers, progress=progress,
                               prune=criteria if config.sweep_pruned else None, fold_bn=fold_bn,
                               baseline=metric if judge is evaluator else None,
                               relative=config.relative)  # fmt: skip
                searched.write_text(json.dumps(result.to_json(), indent=1) + "\n")
                plot(result, stages / f"{k}_sweep.png")
            if result.chosen is None:
                say(f"phase {k}: no threshold within tolerance ({result.stopped}); nothing pruned")
                report["stages"].append({"stage": f"phase {k}", "layers": list(layers), "stopped": result.stopped})
                continue
            threshold = result.chosen.threshold
        if not pruned.exists():
            say(f"phase {k}: prune at threshold {threshold:.4g}")
            prune(current, pruned, threshold=threshold, sf=config.sf, sf_low=config.sf_low, sg=config.sg,
                  layers=layers, round_to=config.round_to, fold_bn=fold_bn, relative=config.relative)  # fmt: skip
            if isinstance(judge, Recalibrated):  # fine-tuning starts from the statistics it was judged with
                save_model(recalibrate_batchnorm(pruned, judge.images, preprocess), pruned)
        if stage is not None:  # pruned to a budget: judged now, as the sweep would have
            stage["metric_pruned"] = evaluator(pruned)
        if not tuned.exists():
            say(f"phase {k}: fine-tune {config.finetune_epochs} epochs")
            cfg = replace(config.train, epochs=config.finetune_epochs, l1=0.0)
            train(pruned, tuned, data, teacher=teacher, config=cfg, val=val, val_limit=config.val_limit, judge=evaluator,
                  progress=progress)
        current, metric = tuned, evaluator(tuned)
        epochs += config.finetune_epochs
        if stage is None:
            # A sweep that judged pruned models has measured this one already.
            metric_pruned = result.chosen.metric if result.judged == "pruned" else evaluator(pruned)
            stage = {"stage": f"phase {k}", "layers": list(layers), "threshold": threshold,
                     "sparsity": result.chosen.sparsity, "metric_pruned": metric_pruned,
                     "sweep": result.to_json(), "plot": str(stages / f"{k}_sweep.png")}  # fmt: skip
        report["stages"].append(stage | {"metric_tuned": metric, "batchnorm_recalibrated": judge is not evaluator})

    shutil.copyfile(current, out)
    report["metric_after"] = metric
    if config.dense_baseline:
        report |= _dense_baseline(model, stages, data, val, teacher, config, epochs, evaluator, say, progress)
    figures = bench([model, out], provider="cpu", runs=30, warmup=3)
    before, after = figures["models"]
    report |= {
        "params_before": before["params"], "params_after": after["params"],
        "flops_before": before["flops"], "flops_after": after["flops"],
        "size_bytes_before": before["size_bytes"], "size_bytes_after": after["size_bytes"],
        "latency_ms_before": before["latency_ms_median"], "latency_ms_after": after["latency_ms_median"],
        "speedup": after["speedup"],
    }  # fmt: skip
    report["channels"] = _channels(original, onnx.load(out))
    write_prune_report(out, report, f"Compression of {model}")
    say(f"wrote {out} and {out.name}.report.{{json,md,png}}")
    return report


def _check_teacher(original: onnx.ModelProto, teacher: str) -> None:
    """A teacher must read the model's images (fixed sizes that agree, batch aside) and give as many
    outputs (they are matched one by one)."""
    try:
        model = load_model(teacher)
    except InputError as err:
        raise InputError(f"--teacher {err}") from None
    if len(model.graph.output) != len(original.graph.output):
        raise InputError(f"--teacher {teacher}: it has {len(model.graph.output)} outputs and the model "
                         f"{len(original.graph.output)}; give a teacher with the model's outputs (e.g. the model fine-tuned)")  # fmt: skip
    theirs, ours = ([d.dim_value or None for d in m.graph.input[0].type.tensor_type.shape.dim] for m in (model, original))
    if len(theirs) != len(ours) or any(a and b and a != b for a, b in zip(theirs[1:], ours[1:])):
        raise InputError(f"--teacher {teacher}: its input {theirs} is not the model's {ours}; "
                         "give a teacher that reads the same images")  # fmt: skip


# Knobs that leave every stage file as it is: asking for the baseline, and where training runs.
_RESUMABLE_ACROSS = ("dense_baseline", "train.device")


def _settings(model, data: str, val: str | None, config: CompressConfig) -> dict:
    """What the stage files depend on, as plain JSON values; paths made absolute, so the same file
    typed another way (`./m.onnx`, `m.onnx`) is the same setting."""
    flat = {"model": _located(str(model)), "data": _located(data), "val": _located(val or data)}
    flat |= _flat(asdict(config))
    if flat.get("teacher") is not None:
        flat["teacher"] = _located(flat["teacher"])
    for key in _RESUMABLE_ACROSS:
        flat.pop(key)
    return flat


def _flat(fields: dict, prefix: str = "") -> dict:
    """Nested dataclass fields as one level of dotted keys (`train.lr`) with JSON values."""
    flat = {}
    for key, value in fields.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[prefix + key] = json.loads(json.dumps(value, default=str))
    return flat


def _located(spec: str) -> str:
    """A model path or data spec (`KIND:PATH`, `coco:ANNOTATIONS:IMAGES`) with each part that names
    an existing file or folder made absolute."""
    kind, sep, rest = spec.partition(":")
    parts = rest.split(":") if sep and not os.path.exists(spec) else None
    if parts is None:
        return os.path.abspath(spec) if os.path.exists(spec) else spec
    return ":".join([kind, *(os.path.abspath(p) if p and os.path.exists(p) else p for p in parts)])


def _claim_stages(stages: Path, settings: dict) -> None:
    """Refuse to resume from stages that other settings made (`settings.json` in the folder);
    otherwise record these settings (a folder with no stage in it yet is anyone's). A setting the
    record lacks (a knob added since) counts as unchanged when it is at its default."""
    record = stages / "settings.json"
    held = sorted(p.name for p in stages.iterdir() if not p.name.startswith(record.name))
    if record.is_file():
        try:
            made = json.loads(record.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(f"{record}: not a settings record ({err}); delete it to reuse the stages of "
                             f"{stages} as they are, or give another --output") from None  # fmt: skip
        if held:
            defaults = _flat(asdict(CompressConfig()))
            changed = [f"{key} {made.get(key, 'unset')} -> {value}" for key, value in sorted(settings.items())
                       if made.get(key, defaults.get(key)) != value]  # fmt: skip
            if changed:
                raise InputError(f"{stages} holds the stages of a run with other settings ({'; '.join(changed)}); "
                                 f"give another --output, or delete the folder (or its settings.json, to reuse "
                                 f"its stages on purpose)")  # fmt: skip
            if all(key in made for key in settings):
                return
    elif held:
        print(f"[compress] {stages} holds stage files ({', '.join(held[:4])}{', ...' if len(held) > 4 else ''}) "
              f"but no settings.json: using them as they are, under this run's settings", file=sys.stderr)  # fmt: skip
    tmp = record.with_name(record.name + ".tmp")
    tmp.write_text(json.dumps(settings, indent=1) + "\n")
    tmp.replace(record)


def _budget(config: CompressConfig) -> tuple[str, float] | None:
    """(measure, share to remove) of a budgeted run, None for metric sweeps; checked."""
    if config.flops_target is not None and config.params_target is not None:
        raise InputError("give one of --flops-target and --params-target")
    for measure in MEASURES:
        target = getattr(config, f"{measure}_target")
        if target is not None:
            check_target(target, measure)
            return measure, target
    return None


def _budget_threshold(current: Path, goal: float, criteria: Criteria, saved: Path, measure: str) -> float | None:
    """The threshold of one phase pruned to `goal` FLOPs or parameters (`measure`; kept in
    `saved` for a resumed run); None when the model entering the phase is already within it."""
    if saved.exists():
        return json.loads(saved.read_text())["threshold"]
    model = load_model(current)
    now = getattr(model_cost(model), measure)
    if now <= goal:
        return None
    threshold = threshold_for_budget(analyze_channels(model), 1 - goal / now, criteria, measure)
    saved.write_text(json.dumps({f"{measure}_goal": goal, "threshold": threshold}) + "\n")
    return threshold


def _dense_baseline(model, stages: Path, data: str, val: str | None, teacher, config: CompressConfig, epochs: int, evaluator, say,
                    progress) -> dict:  # fmt: skip
    """The fair reference for the compressed model's metric: the original model trained, with no
    L1, for as many epochs as the pipeline trained (`epochs`) on the same data (training alone can
    move the metric)."""
    epochs = max(epochs, 1)  # nothing trained: one epoch still shows what training alone does
    target = stages / f"dense_tuned_{epochs}ep.onnx"  # another epoch count is another baseline
    if not target.exists():
        say(f"dense baseline: the original model, {epochs} epochs without L1")
        train(model, target, data, teacher=teacher, config=replace(config.train, epochs=epochs, l1=0.0), val=val,
              val_limit=config.val_limit, judge=evaluator, progress=progress)
    return {"metric_dense_tuned": evaluator(target), "dense_tuned_epochs": epochs, "dense_tuned_model": str(target)}


def _channels(before: onnx.ModelProto, after: onnx.ModelProto) -> list[dict]:
    """Output channels of every conv, before and after (by node name)."""
    def counts(model):
        inits = {t.name: list(t.dims) for t in model.graph.initializer}
        return {n.name or n.output[0]: inits[n.input[1]][0] for n in model.graph.node
                if n.op_type == "Conv" and n.input[1] in inits}  # fmt: skip

    a, b = counts(before), counts(after)
    return [{"layer": name, "before": a[name], "after": b.get(name, a[name])} for name in a]
