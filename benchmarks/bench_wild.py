"""Surgery on models in the wild: how much of each architecture can be pruned, and exactly?

Exports torchvision classifiers, detectors and segmenters, timm's GhostNet and ultralytics YOLOs
(random init, BatchNorm statistics and LayerNorm scales and biases drawn at random so folds are not
trivially zero; TorchScript exporter, opset 17), plants all-zero filters in a quarter of the
classes of every prunable conv (or pointwise MatMul) group, prunes at threshold 0 and reports, per
model:

- share: the conv output channels whose groups can be pruned (a depthwise conv's channels are
  its input's, and a conv whose channels are a graph output is not counted: they are the model's
  outputs);
- linear features: the output features of Linear layers on channels-last feature maps
  (pointwise MatMuls: ConvNeXt's MLP) and the share of them that can be pruned; planted too;
- removed/planted: planted classes the prune removed; each model is planted twice, with the
  filters' biases zeroed (removals are exact) and kept (the channel holds its bias, the
  BatchNorm shift folded into it, as a zero filter after sparsity training does: folds);
- removal: exact / folded / border folds / approximate;
- maps: the constant maps that exact folds behind zero padding added to readers' outputs, and
  the numbers they store;
- verification: prune's own check in onnxruntime (passed, deviates, skipped) and its deviation;
- crash: any error (a VerificationError is an inexact removal called exact).

Prunes with `exact_borders` (`--borders bias`: prune's default, border folds into the bias) and
`pad_layer_norms` (`--norms pin`: prune's default, a LayerNormalization over channels pins them).
A planted channel that passes such a norm has the norm's scale zeroed there too, as sparsity
training on the norm's scale makes it: only then is the norm's output for it a constant (its bias)
that the next layer's bias can take; with the scale kept it varies with the other channels.

    .venv/bin/pip install -c constraints.txt '.[bench]'      # timm and ultralytics (optional)
    .venv/bin/python -P benchmarks/bench_wild.py               # all models, about 10 minutes on 2 cores
    .venv/bin/python -P benchmarks/bench_wild.py --models resnet18 yolov8n

Models whose library is not installed are listed as skipped. Results:
benchmarks/results/bench_wild.{json,md}. Goal: 0 crashes, 0 inexact, share >= 0.9 on every
plain classifier and >= 0.8 on every YOLO.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PLANT_SHARE = 0.25


def _tv(name, **kw):
    def build():
        import torchvision

        return torchvision.models.get_model(name, weights=None, **kw)

    return build


def _timm(name):
    def build():
        import timm

        return timm.create_model(name, pretrained=False)

    return build


def _yolo(cfg):
    def build():
        from ultralytics import YOLO

        net = YOLO(cfg).model.eval()
        for m in net.modules():
            if hasattr(m, "export"):  # the Detect/Segment/Pose heads' export-friendly outputs
                m.export, m.format = True, "onnx"
        return net

    return build


# name -> (builder, input shape, kind); kind "classifier" is held to share >= 0.9, "yolo" to 0.8.
MODELS = {
    "resnet18": (_tv("resnet18"), 224, "classifier"),
    "resnet50": (_tv("resnet50"), 224, "classifier"),
    "mobilenet_v2": (_tv("mobilenet_v2"), 224, "classifier"),
    "mobilenet_v3_large": (_tv("mobilenet_v3_large"), 224, "classifier"),
    "efficientnet_b0": (_tv("efficientnet_b0"), 224, "classifier"),
    "regnet_y_400mf": (_tv("regnet_y_400mf"), 224, "classifier"),
    "resnext50_32x4d": (_tv("resnext50_32x4d"), 224, "classifier"),
    "shufflenet_v2_x1_0": (_tv("shufflenet_v2_x1_0"), 224, "classifier"),
    "squeezenet1_1": (_tv("squeezenet1_1"), 224, "classifier"),
    "densenet121": (_tv("densenet121"), 224, "classifier"),
    "convnext_tiny": (_tv("convnext_tiny"), 224, "classifier"),
    "ghostnet_100": (_timm("ghostnet_100"), 224, "classifier"),
    "ssd300_vgg16": (_tv("ssd300_vgg16", weights_backbone=None), 300, "detector"),
    "ssdlite320_mobilenet_v3_large": (_tv("ssdlite320_mobilenet_v3_large", weights_backbone=None), 320, "detector"),
    "retinanet_resnet50_fpn": (_tv("retinanet_resnet50_fpn", weights_backbone=None), 320, "detector"),
    "fcos_resnet50_fpn": (_tv("fcos_resnet50_fpn", weights_backbone=None), 320, "detector"),
    "fasterrcnn_mobilenet_v3_large_320_fpn": (_tv("fasterrcnn_mobilenet_v3_large_320_fpn", weights_backbone=None), 320,
                                              "detector"),  # fmt: skip
    "deeplabv3_mobilenet_v3_large": (_tv("deeplabv3_mobilenet_v3_large", weights_backbone=None), 224, "segmenter"),
    "lraspp_mobilenet_v3_large": (_tv("lraspp_mobilenet_v3_large", weights_backbone=None), 224, "segmenter"),
    "yolov8n": (_yolo("yolov8n.yaml"), 320, "yolo"),
    "yolo11n": (_yolo("yolo11n.yaml"), 320, "yolo"),
    "yolov8n-seg": (_yolo("yolov8n-seg.yaml"), 320, "yolo"),
    "yolov8n-pose": (_yolo("yolov8n-pose.yaml"), 320, "yolo"),
    "yolov5nu": (_yolo("yolov5nu.yaml"), 320, "yolo"),
}
GOALS = {"classifier": 0.9, "yolo": 0.8}


@dataclass
class Row:
    model: str
    kind: str
    status: str  # ok, crash, inexact, export failed, skipped
    conv_channels: int = 0
    share: float | None = None
    planted: int = 0
    removed: int = 0
    removal: dict | None = None
    verification: str | None = None
    max_deviation: float | None = None
    seconds: float = 0.0
    pins: list | None = None  # the commonest pin reasons, by conv channels
    error: str | None = None
    linear_features: int = 0  # output features of pointwise MatMuls (Linear layers on feature maps)
    linear_share: float | None = None
    maps: tuple[int, int] = (0, 0)  # constant maps the folds added to readers' outputs: count, numbers stored


def export(module, size: int) -> onnx.ModelProto:
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
            elif isinstance(m, torch.nn.LayerNorm) and m.elementwise_affine:  # ConvNeXt's: not ones and zeros either
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    module.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(1, 3, size, size),), buffer, dynamo=False, opset_version=17)
    return onnx.load_from_string(buffer.getvalue())


def layer_share(analysis, linear: bool = False) -> tuple[int, int, list]:
    """(output channels of the convs, or with `linear` of the pointwise MatMuls, those in prunable
    groups, commonest pin reasons by channels). The channels of a layer that is itself a graph
    output (a classifier's 1x1 prediction conv, a YOLO's box and class convs) are the model's
    outputs: no pruner may remove them, so they are not counted."""
    from collections import Counter

    from onnxprune.selection import is_pointwise_matmul

    layers = {n.name: n for n in analysis.graph.nodes if (is_pointwise_matmul(analysis, n) if linear else n.op == "Conv")}
    pinned_by: dict[str, str] = {}
    for g in analysis.groups:
        output_only = g.pinned and all(r.startswith("feeds graph output") for r in g.pinned_by)
        for node in g.producer_nodes:
            if node in layers and not output_only:
                pinned_by[node] = g.pinned_by[0] if g.pinned else ""
    total = prunable = 0
    reasons: Counter = Counter()
    for name, node in layers.items():
        if name not in pinned_by:
            continue  # a depthwise conv (its channels are its input's) or an output layer
        channels = int(analysis.constant(node.inputs[1]).shape[1 if linear else 0])
        total += channels
        if pinned_by[name]:
            reasons[pinned_by[name].split(" (")[0][:90]] += channels
        else:
            prunable += channels
    return total, prunable, reasons.most_common(3)


def plant(model: onnx.ModelProto, analysis, rng: np.random.Generator, bias: str) -> int:
    """Zero every producer filter (a conv's weight axis 0, a pointwise MatMul's weight axis 1) of a
    random PLANT_SHARE of the classes of each prunable group such layers make (in place), and with
    `bias` "zero" their biases too ("kept": the channel holds its bias, the BatchNorm shift the
    exporter folded into it, as a zero filter after sparsity training does); the scale of every
    LayerNormalization the classes pass is zeroed there (its bias follows `bias`); returns the
    classes planted."""
    from onnxprune.index_maps import removed_positions
    from onnxprune.selection import is_pointwise_matmul

    inits = {t.name: t for t in model.graph.initializer}
    planted = 0

    def axis(node) -> int | None:
        return 0 if node.op == "Conv" else 1 if is_pointwise_matmul(analysis, node) else None

    for g in analysis.groups:
        if g.pinned or g.size < 2 or not any(axis(analysis.node(p)) is not None for p in g.producer_nodes):
            continue
        chosen = rng.choice(g.size, max(1, int(PLANT_SHARE * g.size)), replace=False)
        keep = np.ones(g.size, dtype=bool)
        keep[chosen] = False
        for sl in g.producers:
            node = analysis.node(sl.node)
            if sl.tensor not in inits or sl.axis != axis(node) or (bias == "kept" and sl.tensor != node.inputs[1].name):
                continue
            w = numpy_helper.to_array(inits[sl.tensor]).copy()
            index = [slice(None)] * w.ndim
            index[sl.axis] = removed_positions(sl.index_map, keep)
            w[tuple(index)] = 0.0
            inits[sl.tensor].CopyFrom(numpy_helper.from_array(w, sl.tensor))
        for sl in g.followers:
            node = analysis.node(sl.node)
            if node.op != "LayerNormalization" or sl.tensor not in inits or (bias == "kept" and sl.tensor != node.inputs[1].name):
                continue
            value = numpy_helper.to_array(inits[sl.tensor]).copy()
            value[removed_positions(sl.index_map, keep)] = 0.0
            inits[sl.tensor].CopyFrom(numpy_helper.from_array(value, sl.tensor))
        planted += len(chosen)
    return planted


def run(name: str, bias: str, exact_borders: bool = True, pad_layer_norms: bool = True) -> Row:
    import onnxprune
    from onnxprune.channel_groups import analyze_channels
    from onnxprune.verify import VerificationError

    build, size, kind = MODELS[name]
    label = f"{name} ({bias} bias)"
    start = time.perf_counter()
    try:
        import torch

        torch.manual_seed(0)  # the random init: the same model in every run
        model = export(build(), size)
    except ImportError as err:
        return Row(label, kind, "skipped", error=f"{err.name or err} is not installed: pip install '.[bench]'")
    except Exception as err:  # noqa: BLE001 - an exporter failure is the exporter's, reported as such
        return Row(label, kind, "export failed", error=f"{type(err).__name__}: {str(err)[:300]}")
    try:
        analysis = analyze_channels(model, pad_layer_norms=pad_layer_norms)
        total, prunable, pins = layer_share(analysis)
        linear_total, linear_prunable, _ = layer_share(analysis, linear=True)
        planted = plant(model, analysis, np.random.default_rng(0), bias)
        report = onnxprune.prune(model, threshold=0.0, sf=1.0, sf_low=1.0, sg=1.0, exact_borders=exact_borders,
                                  pad_layer_norms=pad_layer_norms)
        onnx.checker.check_model(report["model"], full_check=True)
    except VerificationError as err:
        return Row(label, kind, "inexact", error=str(err)[:600], seconds=time.perf_counter() - start)
    except Exception as err:  # noqa: BLE001 - what the table is for
        return Row(label, kind, "crash", error="".join(traceback.format_exception_only(err))[-600:],
                   seconds=time.perf_counter() - start)  # fmt: skip
    removal = {s: sum(g["removal"][s] for g in report["groups"]) for s in ("exact", "folded", "folded_border", "approximate")}
    grids = [t for t in report["model"].graph.initializer if "_constant_map" in t.name and "_index" not in t.name]
    v = report["verification"]
    return Row(label, kind, "ok", total, prunable / max(total, 1), planted,
               sum(g["channels_before"] - g["channels_after"] for g in report["groups"]), removal, v["status"],
               v["max_deviation"], time.perf_counter() - start, pins, linear_features=linear_total,
               linear_share=linear_prunable / linear_total if linear_total else None,
               maps=(len(grids), sum(int(np.prod(t.dims)) for t in grids)))  # fmt: skip


def table(rows: list[Row]) -> str:
    lines = ["| model | kind | status | conv channels | share | linear features (share) | removed/planted | "
             "exact/folded/border/approx | maps (numbers) | verification | max deviation | s | main pin |",
             "|---|---|---|---:|---:|---:|---:|---|---:|---|---:|---:|---|"]  # fmt: skip
    for r in rows:
        goal = GOALS.get(r.kind)
        share = "" if r.share is None else f"{r.share:.2f}" + (" (below goal)" if goal and r.share < goal else "")
        removal = "/".join(str(r.removal[s]) for s in ("exact", "folded", "folded_border", "approximate")) if r.removal else ""
        dev = "" if r.max_deviation is None else f"{r.max_deviation:.1e}"
        linear = f"{r.linear_features} ({r.linear_share:.2f})" if r.linear_share is not None else ""
        pin = f"{r.pins[0][0]} ({r.pins[0][1]})" if r.pins else (r.error or "")
        lines.append(f"| {r.model} | {r.kind} | {r.status} | {r.conv_channels} | {share} | {linear} | {r.removed}/{r.planted} | "
                     f"{removal} | {r.maps[0]} ({r.maps[1]}) | {r.verification or ''} | {dev} | {r.seconds:.0f} | {pin.replace('|', '/')} |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), metavar="NAME")
    parser.add_argument("--bias", nargs="+", default=["zero", "kept"], choices=["zero", "kept"],
                        help="planted filters with their biases zeroed, or kept (constant channels: folds)")
    parser.add_argument("--borders", choices=["exact", "bias"], default="exact",
                        help="prune --exact-borders (constant maps after readers), or prune's default (interior into the bias)")
    parser.add_argument("--norms", choices=["pad", "pin"], default="pad",
                        help="prune --pad-layer-norms (channels pass LayerNorms over them), or prune's default (they pin)")
    parser.add_argument("--out", default=str(RESULTS / "bench_wild"), help="results path without extension")
    args = parser.parse_args()
    rows = []
    for name, bias in ((n, b) for n in args.models for b in args.bias):
        row = run(name, bias, args.borders == "exact", args.norms == "pad")
        rows.append(row)
        print(f"{row.model:52s} {row.status:8s} share {row.share if row.share is None else round(row.share, 3)} "
              f"removed {row.removed}/{row.planted} {row.removal} {row.verification} {row.max_deviation} "
              f"{row.seconds:.0f}s {row.error or ''}", flush=True)  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "python": platform.python_version(), "plant_share": PLANT_SHARE,
            "borders": args.borders, "norms": args.norms}  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=1) + "\n")
    out.with_suffix(".md").write_text(table(rows) + "\n")
    print(table(rows))
    bad = [r for r in rows if r.status in ("crash", "inexact")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
