"""What exactness through LayerNorm costs and what it buys: ConvNeXt-tiny pruned with
`pad_layer_norms`, against the same channel counts with each LayerNorm shrunk to its kept
channels (what a pruner that cuts the norm's weight and normalized shape writes: Torch-Pruning,
NNI), and against the unpruned model.

ConvNeXt-tiny from torchvision (random init, BatchNorm-free; LayerNorm scales and biases drawn at
random, as `bench_wild.py` does), a share of the classes of every prunable group planted with
all-zero filters (biases kept, so removed channels hold constants) and zero norm scales, pruned
at threshold 0 with `pad_layer_norms` and `exact_borders`. The shrunk variant is that model with
each norm's Pad, Add, Gathers and Slice taken out and its scale and bias cut to the kept
channels. Reports each variant's deviation from the unpruned model as prune's verification
measures it (seeded probe inputs, relative to each output's magnitude) and their latency in
onnxruntime, timed side by side (`onnxprune.bench`).

    .venv/bin/pip install -c constraints.txt --no-build-isolation '.[bench]'
    .venv/bin/python -P benchmarks/bench_layer_norm_pad.py [--share 0.25] [--runs 50]

Results: benchmarks/results/bench_layer_norm_pad.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_wild  # noqa: E402 - the export and planting of the wild benchmark

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
_PAD_NODES = ("_pad_removed", "_fill_removed")  # what the surgery names the nodes before a padded norm


def shrink_norms(padded: onnx.ModelProto) -> onnx.ModelProto:
    """`padded` with every padded LayerNorm normalizing over its kept channels only: the Pad,
    Add and Gathers before it and the Slice after it removed, its scale and bias cut."""
    graph = gs.import_onnx(padded)
    for norm in [n for n in graph.nodes if n.op == "LayerNormalization"]:
        source = norm.inputs[0]
        while source.inputs and source.inputs[0].name.endswith(_PAD_NODES):
            source = source.inputs[0].inputs[0]
        if source is norm.inputs[0]:
            continue  # not padded
        kept = source.shape[-1]
        norm.inputs[0] = source
        for index in (1, 2):
            if len(norm.inputs) > index and norm.inputs[index].name:
                norm.inputs[index] = gs.Constant(f"{norm.name}_shrunk_{index}", np.ascontiguousarray(norm.inputs[index].values[:kept]))
        cut = norm.outputs[0].outputs[0]
        norm.outputs[0] = cut.outputs[0]
        cut.outputs.clear()
    graph.cleanup().toposort()
    model = gs.export_onnx(graph)
    del model.opset_import[:]
    model.opset_import.extend(padded.opset_import)
    model.ir_version = padded.ir_version
    return model


def main() -> int:
    import torch

    import onnxprune
    from onnxprune.bench import bench, format_bench
    from onnxprune.channel_groups import analyze_channels
    from onnxprune.verify import probe_reference, verify_pruned

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--share", type=float, default=0.25, help="share of each prunable group's classes planted")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--out", default=str(RESULTS / "bench_layer_norm_pad.json"))
    args = parser.parse_args()
    bench_wild.PLANT_SHARE = args.share
    build, size, _ = bench_wild.MODELS["convnext_tiny"]
    torch.manual_seed(0)
    model = bench_wild.export(build(), size)
    analysis = analyze_channels(model, pad_layer_norms=True)
    planted = bench_wild.plant(model, analysis, np.random.default_rng(0), "kept")
    report = onnxprune.prune(model, threshold=0.0, sf=1.0, sf_low=1.0, sg=1.0, exact_borders=True, pad_layer_norms=True)
    removal = {s: sum(g["removal"][s] for g in report["groups"]) for s in ("exact", "folded", "folded_border", "approximate")}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: str(Path(tmp) / f"{name}.onnx") for name in ("unpruned", "padded", "shrunk")}
        onnx.save(model, paths["unpruned"])
        onnx.save(report["model"], paths["padded"])
        shrunk = shrink_norms(report["model"])
        onnx.checker.check_model(shrunk, full_check=True)
        onnx.save(shrunk, paths["shrunk"])
        reference = probe_reference(model)  # prune's own check: seeded probes, relative deviation
        deviations = {name: verify_pruned(reference, onnx.load(p), keep={}, expect_exact=False).max_deviation
                      for name, p in paths.items() if name != "unpruned"}  # fmt: skip
        timing = bench(list(paths.values()), provider="cpu", runs=args.runs)
    print(f"planted {planted} classes ({args.share:g} of each group), removed {removal}")
    print(format_bench(timing))
    for (name, _), row in zip(paths.items(), timing["models"], strict=True):
        row["variant"] = name
        row["deviation"] = deviations.get(name, 0.0)
        print(f"{name:9s} deviation {row['deviation']:.2e}  latency {row['latency_ms_median']:.1f} ms  "
              f"speedup {row['speedup']:.2f}x  FLOPs {row['flops_ratio']:.3f}")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "python": platform.python_version(), "share": args.share, "planted": planted,
            "removal": removal}  # fmt: skip
    out.write_text(json.dumps({"meta": meta, "models": timing["models"]}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
