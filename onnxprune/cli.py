"""The `onnxprune` command. Exit codes: 0 success, 2 bad usage or input, 1 internal error."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys


PRESET_NAMES = ("cifar", "imagenet", "ulfd", "yunet")  # onnxprune.datasets.PRESETS, without importing torch

# The --metric names of onnxprune.evaluate.choice (not imported here: it loads torch).
_METRICS = ("auto", "accuracy", "map", "coco-map", "fidelity", "detection")
# onnxprune.train.l1.GROUPS and onnxprune.train.loop.OPTIMIZERS, likewise.
L1_GROUPS = ("weights", "filters", "channels")
_OPTIMIZERS = ("sgd", "adamw")
_OPTIMIZER_HELP = ("sgd: SGD with Nesterov momentum (default); adamw: AdamW (weight decay 1e-4), which trains "
                   "detectors far faster")
_WEIGHT_DECAY_HELP = "weight decay on every parameter (default: 0 with sgd, 1e-4 with adamw)"
_CLIP_HELP = ("limit on the gradient norm per step; 0: none (default: 1 for a model without BatchNorm, whose "
              "folded weights have gradients orders of magnitude apart; none with BatchNorm, which --add-bn "
              "gives every conv)")
_FOLD_BN_HELP = ("judge a conv followed by BatchNorm by its filters as deployed (BatchNorm's scale folded in) "
                 "instead of its raw weights")
_RELATIVE_HELP = ("the threshold in units of each layer's RMS weight (each layer cut relative to its own scale) "
                  "instead of one absolute threshold, which empties layers with small weights first")
_PAD_NORMS_HELP = ("let channels pass a LayerNormalization over them (ConvNeXt's): the removed ones' constant values are "
                   "padded back in before the norm and sliced off after (a Pad and a Slice per norm; default: such norms "
                   "pin their channels)")
_ADD_BN_HELP = ("train with a BatchNorm after every conv that has none (exported models have theirs folded), folded "
                "back into the conv when written: heavily pruned models recover far better")
_PRECISE_BN_HELP = ("after training, re-estimate BatchNorm's running statistics on N training images (spread over "
                    "the set, unaugmented) instead of keeping the averages of the last augmented batches (1.3 to 2.1 "
                    "points for most ResNet-20s on CIFAR-10, 4.7 and 5.7 fewer for two); the better of the two is kept, by "
                    "compress's metric or, in finetune, by accuracy on labelled --val data (without, unjudged); 0: keep "
                    "the averages (default 4096; nothing with --freeze-bn)")
_FEATURES_HELP = ("with a teacher, also train the outputs of the residual blocks (the tensors after each residual Add "
                  "that the prune left whole) to match the teacher's; with --kd-temperature 4 it narrowed a pruned "
                  "ResNet-20's gap to the dense model from 1.33 to 0.98 points (all 50,000 images, 8 epochs; "
                  "benchmarks/README.md)")
_KD_HELP = ("with a teacher, distil a classifier's logits by Hinton's loss (KL divergence of the outputs softened "
            "at temperature T, 0.9 of the loss against 0.1 for the labels) instead of their MSE; 4 is usual. A pruned "
            "ResNet-20 (4 epochs, 10,000 images) gained 1.4 points with a teacher better than itself, lost 2.9 with one "
            "worse (benchmarks/README.md)")
_L1_GROUPS_HELP = ("weights: the paper's L1 (default); filters: group lasso on each filter's norm; channels: for "
                   "convs followed by BatchNorm, group lasso on its (scale, shift) pair, zeroing the filter with it")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onnxprune", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    analyze = sub.add_parser("analyze", help="list the channel groups of a model: layers, channels, zero filters, pins")
    analyze.add_argument("model", help="the ONNX model")
    analyze.add_argument("--threshold", type=float, default=0.0, help="weights with |w| <= T count as zero (default 0)")
    analyze.add_argument("--layers", nargs="+", default=(), metavar="GLOB", help="globs over node or output names")
    analyze.add_argument("--fold-bn", action="store_true", help=_FOLD_BN_HELP)
    analyze.add_argument("--relative", action="store_true", help=_RELATIVE_HELP)
    analyze.add_argument("--pad-layer-norms", action="store_true", help=_PAD_NORMS_HELP)

    prune = sub.add_parser("prune", help="remove the filters Algorithm 1 selects (or a saved plan's)")
    prune.add_argument("model", help="the ONNX model (never modified)")
    prune.add_argument("-o", "--output", required=True, help="path of the pruned model")
    how = prune.add_mutually_exclusive_group()
    how.add_argument("--threshold", type=float, help="global weight threshold T: |w| <= T counts as zero (default 0)")
    how.add_argument("--sparsity", type=float, help="choose T so that this fraction of the pruned layers' weights is zero")
    how.add_argument("--flops-target", type=float, metavar="F",
                     help="choose the smallest T at which the pruned model has this share of the FLOPs fewer (0.5: half)")
    how.add_argument("--params-target", type=float, metavar="P",
                     help="choose the smallest T at which the pruned model has this share of the parameters fewer")
    how.add_argument("--plan", help="apply a plan written by --plan-out instead of selecting")
    prune.add_argument("--sf", type=float, default=0.9, help="s_F: remove a filter at least this zero (default 0.9)")
    prune.add_argument("--sf-low", type=float, default=0.5, help="s'_F: ... or this zero when its readers are (default 0.5)")
    prune.add_argument("--sg", type=float, default=0.9, help="s_G: ... at least this zero (default 0.9)")
    prune.add_argument("--layers", nargs="+", default=(), metavar="GLOB",
                       help="the pruned set L: globs over node or output names (default: every conv)")  # fmt: skip
    prune.add_argument("--round-to", type=int, default=1, metavar="N", help="keep channel counts multiples of N")
    prune.add_argument("--fold-bn", action="store_true", help=_FOLD_BN_HELP)
    prune.add_argument("--relative", action="store_true", help=_RELATIVE_HELP)
    prune.add_argument("--plan-out", help="also write the selection as a JSON plan")
    prune.add_argument("--no-verify", action="store_true",
                       help="do not run both models in onnxruntime on probe inputs to check the pruned one computes the same")
    prune.add_argument("--shape", nargs="+", default=(), metavar="NAME=1x3xHxW",
                       help="probe shapes of dynamic inputs (default: batch 1, 224 for a dynamic height or width)")
    prune.add_argument("--exact-borders", action="store_true",
                       help="fold constant channels behind zero padding exactly, adding a small constant map after "
                            "each reader that needs one (default: the interior value into the bias, exact except at borders)")
    prune.add_argument("--pad-layer-norms", action="store_true", help=_PAD_NORMS_HELP)

    finetune = sub.add_parser("finetune", help="train a (pruned) model: labels, or distillation from --teacher")
    sparsify = sub.add_parser("sparsify", help="L1 sparsity training (the paper's step 1), with labels or --teacher")
    for p, l1_default in ((finetune, 0.0), (sparsify, 1e-4)):
        p.add_argument("model", help="the ONNX model to train (never modified)")
        p.add_argument("-o", "--output", required=True, help="path of the trained model")
        p.add_argument("--data", required=True, metavar="SPEC",
                       help="imagefolder:DIR, images:DIR, npz:FILE, voc:DIR or coco:ANN.json:DIR")  # fmt: skip
        p.add_argument("--teacher", help="the unpruned ONNX model: distil its outputs (needed without labels); one whose BatchNorm "
                       "statistics --precise-bn re-estimated gets them re-estimated on augmented images first")
        p.add_argument("--val", metavar="SPEC", help="labelled data to report accuracy on after each epoch")
        p.add_argument("--epochs", type=int, default=3)
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--lr", type=float, default=0.01, help="learning rate, cosine schedule (default 0.01)")
        p.add_argument("--optimizer", choices=_OPTIMIZERS, default="sgd", help=_OPTIMIZER_HELP)
        p.add_argument("--weight-decay", type=float, metavar="WD", help=_WEIGHT_DECAY_HELP)
        p.add_argument("--clip-grad", type=float, metavar="NORM", help=_CLIP_HELP)
        p.add_argument("--l1", type=float, default=l1_default, metavar="LAMBDA",
                       help=f"weight of the L1 penalty on conv weights (default {l1_default:g})")  # fmt: skip
        p.add_argument("--layers", nargs="+", default=("*",), metavar="GLOB",
                       help="convs the L1 penalty covers: globs over ONNX node or output names (as prune takes them) "
                            "or the torch module names onnx2torch gives them")  # fmt: skip
        p.add_argument("--l1-in-loss", action="store_true",
                       help="add lambda*|W| to the loss (plain subgradient) instead of the proximal step")  # fmt: skip
        p.add_argument("--l1-groups", choices=L1_GROUPS, default="weights", help=_L1_GROUPS_HELP)
        p.add_argument("--report-threshold", type=float, default=1e-3, help="threshold of the sparsity reported")
        p.add_argument("--limit", type=int, help="use N training images spread over the set (a quick try)")
        p.add_argument("--no-augment", action="store_true", help="no random crop, flip or colour jitter")
        p.add_argument("--freeze-bn", action="store_true",
                       help="keep BatchNorm running statistics (small or unlabelled data sets)")  # fmt: skip
        p.add_argument("--add-bn", action="store_true", help=_ADD_BN_HELP)
        p.add_argument("--precise-bn", type=int, default=4096, metavar="N", help=_PRECISE_BN_HELP)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
        p.add_argument("--resume", action="store_true", help="continue from OUTPUT.ckpt")
        _add_preprocess_options(p)
    finetune.add_argument("--distill-features", action="store_true", help=_FEATURES_HELP)
    finetune.add_argument("--kd-temperature", type=float, metavar="T", help=_KD_HELP)

    sweep = sub.add_parser("sweep", help="find the largest global threshold within a metric tolerance")
    sweep.add_argument("model", help="the ONNX model (after sparsify)")
    sweep.add_argument("--data", required=True, metavar="SPEC", help="validation data (see finetune --help)")
    sweep.add_argument("--metric", choices=_METRICS, default="auto",
                       help="auto (default): map with boxes, accuracy with labels, else fidelity; map (mAP@0.5 "
                            "against labelled boxes), coco-map (mAP over IoU 0.5:0.95), accuracy, fidelity of the outputs, or detection: agreement "
                            "of the detections with the model itself (no labels)")  # fmt: skip
    sweep.add_argument("--decoder", default="auto",
                       help="map/detection: auto (the priors an onnxprune.zoo SSD records, else decoded outputs), "
                            "boxes (decoded outputs) or ulfd (raw SSD offsets)")  # fmt: skip
    sweep.add_argument("--score-threshold", type=float, help="map/detection: detection score cut-off (0.05 / 0.5)")
    sweep.add_argument("--tolerance", type=float, default=0.005, help="allowed metric drop (default 0.005)")
    sweep.add_argument("--layers", nargs="+", default=(), metavar="GLOB", help="the pruned set L")
    sweep.add_argument("--limit", type=int, help="use N validation images spread over the set")
    sweep.add_argument("--refine", type=int, default=4, help="refinement rounds after the grid (default 4)")
    sweep.add_argument("--workers", type=int, default=1, help="evaluate candidates in N processes (default 1)")
    sweep.add_argument("--plot", metavar="PNG", help="write metric vs sparsity here")
    sweep.add_argument("--judge", choices=("thresholded", "pruned"), default="thresholded",
                       help="evaluate at each threshold the thresholded model (the paper, default) or the model "
                            "Algorithm 1 prunes there (with --sf, --sf-low, --sg, --round-to)")  # fmt: skip
    sweep.add_argument("--sf", type=float, default=0.9)
    sweep.add_argument("--sf-low", type=float, default=0.5)
    sweep.add_argument("--sg", type=float, default=0.9)
    sweep.add_argument("--round-to", type=int, default=1, metavar="N")
    sweep.add_argument("--fold-bn", action="store_true", help=_FOLD_BN_HELP)
    sweep.add_argument("--relative", action="store_true", help=_RELATIVE_HELP)
    _add_preprocess_options(sweep)

    comp = sub.add_parser("compress", help="the whole pipeline: sparsify, sweep, prune, fine-tune, bench, report")
    comp.add_argument("model", help="the ONNX model (never modified)")
    comp.add_argument("-o", "--output", required=True, help="path of the compressed model (stages in OUTPUT.stages/)")
    comp.add_argument("--data", required=True, metavar="SPEC", help="training data; labels optional")
    comp.add_argument("--val", metavar="SPEC", help="validation data (default: --data)")
    comp.add_argument("--phases", nargs="+", default=("",), metavar="GLOBS",
                      help="comma-separated layer globs per phase, pruned one after another (default: one phase, every conv)")  # fmt: skip
    comp.add_argument("--metric", choices=_METRICS, default="auto",
                      help="auto: map with boxes, accuracy with labels, else fidelity to the original (see sweep)")  # fmt: skip
    comp.add_argument("--decoder", default="auto", help="map/detection: auto, boxes or ulfd (see sweep)")
    comp.add_argument("--score-threshold", type=float, help="map/detection: detection score cut-off (0.05 / 0.5)")
    comp.add_argument("--sparsify-epochs", type=int, default=0, help="L1 training before the first phase (default 0)")
    comp.add_argument("--finetune-epochs", type=int, default=1, help="fine-tuning after each phase (default 1)")
    comp.add_argument("--l1", type=float, default=1e-4, metavar="LAMBDA")
    comp.add_argument("--l1-groups", choices=L1_GROUPS, default="weights", help=_L1_GROUPS_HELP)
    comp.add_argument("--judge", choices=("pruned", "thresholded"), default="pruned",
                      help="what each sweep evaluates at a threshold: the pruned model (default) or the thresholded one")  # fmt: skip
    comp.add_argument("--distill", action="store_true",
                      help="with labels (classes, or boxes for an onnxprune.zoo SSD), also train every stage (and the dense "
                           "baseline) to match the original's outputs (knowledge distillation; without labels compress "
                           "always does)")  # fmt: skip
    comp.add_argument("--teacher", metavar="MODEL",
                      help="distil from this ONNX model instead of the original (implies --distill), e.g. the original "
                           "fine-tuned on --data: a better teacher when the data differ from its own; the dense "
                           "baseline learns from it too")  # fmt: skip
    comp.add_argument("--distill-features", action="store_true", help=_FEATURES_HELP + " (implies --distill)")
    comp.add_argument("--kd-temperature", type=float, metavar="T", help=_KD_HELP + " (implies --distill)")
    comp.add_argument("--dense-baseline", action="store_true",
                      help="also train the original model, without L1, for the pipeline's epochs and report its metric")
    comp.add_argument("--tolerance", type=float, default=0.01, help="allowed metric drop in each sweep (default 0.01)")
    comp.add_argument("--sf", type=float, default=0.9)
    comp.add_argument("--sf-low", type=float, default=0.5)
    comp.add_argument("--sg", type=float, default=0.9)
    comp.add_argument("--round-to", type=int, default=1, metavar="N")
    comp.add_argument("--relative", action="store_true", help=_RELATIVE_HELP)
    comp.add_argument("--recalibrate-bn", type=int, default=0, metavar="N",
                      help="re-estimate BatchNorm statistics on N training images before judging each pruned "
                           "candidate (and in the pruned model): channels removed upstream make the old ones wrong")  # fmt: skip
    comp.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=None,
                      help=_FOLD_BN_HELP + " (default: with --l1-groups channels)")
    budget = comp.add_mutually_exclusive_group()
    budget.add_argument("--flops-target", type=float, metavar="F",
                        help="instead of sweeping on the metric, prune each phase at the smallest threshold that "
                             "brings the model to its part of this share of the FLOPs fewer (0.5: half); each phase "
                             "takes the same share of what its layers can remove")  # fmt: skip
    budget.add_argument("--params-target", type=float, metavar="P",
                        help="the same for a share of the parameters (0.67: 3x fewer)")
    comp.add_argument("--batch-size", type=int, default=32)
    comp.add_argument("--lr", type=float, default=0.01)
    comp.add_argument("--optimizer", choices=_OPTIMIZERS, default="sgd", help=_OPTIMIZER_HELP)
    comp.add_argument("--weight-decay", type=float, metavar="WD", help=_WEIGHT_DECAY_HELP)
    comp.add_argument("--clip-grad", type=float, metavar="NORM", help=_CLIP_HELP)
    comp.add_argument("--limit", type=int, help="use N training images spread over the set")
    comp.add_argument("--val-limit", type=int, help="use N validation images spread over the set")
    comp.add_argument("--freeze-bn", action="store_true")
    comp.add_argument("--add-bn", action="store_true", help=_ADD_BN_HELP + " (the fine-tuning stages)")
    comp.add_argument("--precise-bn", type=int, default=4096, metavar="N", help=_PRECISE_BN_HELP + " (every stage)")
    comp.add_argument("--no-augment", action="store_true")
    comp.add_argument("--seed", type=int, default=0)
    comp.add_argument("--device", default="auto")
    _add_preprocess_options(comp)

    bench = sub.add_parser("bench", help="onnxruntime latency, parameters, FLOPs and size of models, side by side")
    bench.add_argument("models", nargs="+", metavar="MODEL", help="ONNX models; ratios are against the first")
    bench.add_argument("--provider", default="auto", choices=("auto", "cpu", "cuda"),
                       help="auto: CUDA when a session really starts on it, else CPU")  # fmt: skip
    bench.add_argument("--batch", type=int, default=1, help="batch size for a dynamic batch dim (default 1)")
    bench.add_argument("--runs", type=int, default=50, help="timed runs per model, in interleaved turns (default 50)")
    bench.add_argument("--warmup", type=int, default=5,
                       help="untimed runs (and 200 ms at the least) opening each model's turn of up to 10 timed "
                            "ones (default 5)")
    bench.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: its own)")
    bench.add_argument("--shape", nargs="+", default=(), metavar="NAME=1x3xHxW", help="shapes of dynamic inputs")

    demo = sub.add_parser("demo", help="train a tiny SSD here and compress it with the paper's 4 phases")
    demo.add_argument("--out", default="demo-out", help="folder for the models, stages and reports (default: demo-out)")
    demo.add_argument("--quick", action="store_true", help="the same pipeline on little data (about a minute)")
    for p in (analyze, prune, finetune, sparsify, sweep, comp, bench, demo):
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        p.add_argument("-v", "--verbose", action="store_true", help="progress with timings; tracebacks on errors")
        p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return parser


def _analyze(args: argparse.Namespace) -> int:
    from onnxprune import commands

    report = commands.analyze(args.model, args.threshold, layers=tuple(args.layers), fold_bn=args.fold_bn,
                              relative=args.relative, pad_layer_norms=args.pad_layer_norms, progress=args.verbose)  # fmt: skip
    if args.json:
        print(json.dumps(report))
    elif not args.quiet:
        print(commands.format_analysis(report))
    return 0


def _prune(args: argparse.Namespace) -> int:
    from onnxprune import commands

    report = commands.prune(
        args.model, args.output, threshold=args.threshold, sparsity=args.sparsity, flops_target=args.flops_target,
        params_target=args.params_target, sf=args.sf, sf_low=args.sf_low,
        sg=args.sg, layers=tuple(args.layers), round_to=args.round_to, fold_bn=args.fold_bn, relative=args.relative,
        plan=args.plan, plan_out=args.plan_out, verify=not args.no_verify, shapes=_shapes(args.shape),
        exact_borders=args.exact_borders, pad_layer_norms=args.pad_layer_norms, progress=not args.quiet and not args.json,
    )  # fmt: skip
    report.pop("model")
    if args.json:
        print(json.dumps(report))
    elif not args.quiet:
        print(commands.format_prune(report))
    return 0


def _add_preprocess_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESET_NAMES), help="preprocessing of a known model family")
    p.add_argument("--size", metavar="WxH", help="input size (default: the model's)")
    p.add_argument("--scale", type=float, help="pixel scale before mean/std (default 1/255)")
    p.add_argument("--mean", metavar="M,M,M", help="per-channel mean (after scaling)")
    p.add_argument("--std", metavar="S,S,S", help="per-channel std (after scaling)")
    p.add_argument("--bgr", action="store_true", help="the model reads BGR")
    p.add_argument("--nhwc", action="store_true", help="the model reads N,H,W,C")


def _preprocess(args: argparse.Namespace):
    from onnxprune.datasets import PRESETS, Preprocess

    base = PRESETS[args.preset] if args.preset else Preprocess()
    changes = {}
    if args.size:
        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            raise ValueError(f"--size must look like 320x240; got {args.size!r}") from None
        changes["size"] = (w, h)
    for name in ("mean", "std"):
        text = getattr(args, name)
        if text:
            try:
                values = tuple(float(v) for v in text.split(","))
            except ValueError:
                raise ValueError(f"--{name} must be comma-separated numbers; got {text!r}") from None
            changes[name] = values if len(values) == 3 else values * 3
    if args.scale is not None:
        changes["scale"] = args.scale
    if args.bgr:
        changes["bgr"] = True
    if args.nhwc:
        changes["nhwc"] = True
    return dataclasses.replace(base, **changes)


def _train(args: argparse.Namespace) -> int:
    from onnxprune.train.loop import TrainConfig, train

    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, l1=args.l1, layers=tuple(args.layers),
        threshold=args.report_threshold, augment=not args.no_augment, seed=args.seed, limit=args.limit,
        device=args.device, preprocess=_preprocess(args), prox=not args.l1_in_loss, l1_groups=args.l1_groups,
        freeze_bn=args.freeze_bn, add_bn=args.add_bn, precise_bn=args.precise_bn, optimizer=args.optimizer, clip=args.clip_grad,
        weight_decay=args.weight_decay, distill_features=getattr(args, "distill_features", False),
        kd_temperature=getattr(args, "kd_temperature", None),
    )  # fmt: skip
    result = train(args.model, args.output, args.data, teacher=args.teacher, config=config, val=args.val,
                   resume=args.resume, progress=not args.quiet and not args.json)  # fmt: skip
    if args.json:
        print(json.dumps(result))
    elif not args.quiet:
        print(f"wrote {result['output']} after {result['epochs']} epochs")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from onnxprune.datasets import load_images
    from onnxprune.evaluate.choice import choose_evaluator
    from onnxprune.model_io import load_model
    from onnxprune.selection import Criteria
    from onnxprune.threshold_search import plot, sweep
    from onnxprune.train.loop import model_input_size

    preprocess = _preprocess(args)
    model = load_model(args.model)
    size = model_input_size(model, preprocess)
    data = load_images(args.data, size, args.limit)
    evaluator = choose_evaluator(args.metric, model, data, preprocess, size, args.decoder, args.score_threshold)
    criteria = Criteria(sf=args.sf, sf_low=args.sf_low, sg=args.sg, round_to=args.round_to)
    result = sweep(model, evaluator, args.tolerance, layers=tuple(args.layers), refine=args.refine,
                   workers=args.workers, prune=criteria if args.judge == "pruned" else None, fold_bn=args.fold_bn,
                   relative=args.relative, progress=not args.quiet and not args.json)  # fmt: skip
    report = result.to_json() | {"model": args.model, "plot": args.plot}
    if args.plot:
        plot(result, args.plot)
    if args.json:
        print(json.dumps(report))
    elif not args.quiet:
        chosen = result.chosen
        print(f"{result.metric_name} of the model: {result.baseline:.4f}; tolerance {result.tolerance:g}; {result.stopped}")
        print(f"{'sparsity':>9s} {'threshold':>11s} {result.metric_name:>10s}")
        for c in result.candidates:
            mark = " <- chosen" if c is chosen else ""
            print(f"{100 * c.sparsity:8.1f}% {c.threshold:11.4g} {c.metric:10.4f}{mark}")
        if chosen is not None:
            print(f"\nuse: onnxprune prune {args.model} -o OUT --threshold {chosen.threshold:.6g}")
    return 0


def _compress(args: argparse.Namespace) -> int:
    from onnxprune.compress import CompressConfig, compress
    from onnxprune.train.loop import TrainConfig

    train = TrainConfig(batch_size=args.batch_size, lr=args.lr, augment=not args.no_augment, seed=args.seed,
                        limit=args.limit, device=args.device, preprocess=_preprocess(args), freeze_bn=args.freeze_bn,
                        l1_groups=args.l1_groups, add_bn=args.add_bn, precise_bn=args.precise_bn, optimizer=args.optimizer,
                        clip=args.clip_grad, weight_decay=args.weight_decay,
                        distill_features=args.distill_features, kd_temperature=args.kd_temperature)  # fmt: skip
    phases = tuple(tuple(g for g in phase.split(",") if g) for phase in args.phases)
    config = CompressConfig(
        phases=phases, sparsify_epochs=args.sparsify_epochs, finetune_epochs=args.finetune_epochs, l1=args.l1,
        tolerance=args.tolerance, sf=args.sf, sf_low=args.sf_low, sg=args.sg, round_to=args.round_to,
        sweep_pruned=args.judge == "pruned", dense_baseline=args.dense_baseline, fold_bn=args.fold_bn,
        relative=args.relative, recalibrate=args.recalibrate_bn, flops_target=args.flops_target,
        params_target=args.params_target, val_limit=args.val_limit, metric=args.metric, decoder=args.decoder,
        score_threshold=args.score_threshold, teacher=args.teacher, train=train,
        distill=args.distill or args.distill_features or args.kd_temperature is not None,
    )  # fmt: skip
    report = compress(args.model, args.output, args.data, val=args.val, config=config,
                      progress=not args.quiet and not args.json)  # fmt: skip
    if args.json:
        print(json.dumps(report))
    elif not args.quiet:
        print(open(str(args.output) + ".report.md").read())
    return 0


def _shapes(items) -> dict[str, tuple[int, ...]]:
    """`--shape input=1x3x224x224 ...` as {name: dims}."""
    shapes = {}
    for item in items:
        name, _, dims = item.partition("=")
        try:
            shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise ValueError(f"--shape must look like input=1x3x224x224; got {item!r}") from None
    return shapes


def _bench(args: argparse.Namespace) -> int:
    from onnxprune.bench import bench, format_bench

    report = bench(args.models, provider=args.provider, batch=args.batch, runs=args.runs, warmup=args.warmup,
                   threads=args.threads, shapes=_shapes(args.shape))  # fmt: skip
    if args.json:
        print(json.dumps(report))
    elif not args.quiet:
        print(format_bench(report))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from onnxprune import demo

    result = demo.run(args.out, demo.QUICK if args.quick else demo.DemoConfig(), progress=not args.quiet and not args.json)
    if args.json:
        print(json.dumps(result))
    elif not args.quiet:
        print(demo.format_report(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        commands = {"analyze": _analyze, "prune": _prune, "finetune": _train, "sparsify": _train, "sweep": _sweep,
                    "compress": _compress, "bench": _bench,
                    "demo": _demo}
        return commands[args.command](args)
    except (ValueError, FileNotFoundError) as err:
        if args.verbose:
            raise
        print(f"onnxprune {args.command}: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `onnxprune analyze m.onnx | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
