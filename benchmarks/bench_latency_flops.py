"""Latency against FLOPs: does removing filters make onnxruntime faster, and by how much?

For ResNet-20 (../shared/assets, BatchNorm folded), VGG16-CIFAR and the tiny SSD (both built by
onnxprune.zoo, random weights: latency does not depend on the values), every prunable channel
group loses 25%, 50% and 75% of its channels (uniform L1-norm selection, benchmarks/uniform_l1.py),
with channel counts as they fall and rounded up to multiples of 8 (`--round-to 8`). Each pruned
model is timed against its dense model in onnxruntime on the CPU, in interleaved turns
(`onnxprune.bench`), at batch 1 and 32.

    .venv/bin/python -P benchmarks/bench_latency_flops.py              # about a minute on 2 cores

Results: benchmarks/results/bench_latency_flops.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import onnx

from onnxprune import prune
from onnxprune.bench import bench
from onnxprune.channel_groups import analyze_channels
from onnxprune.zoo import export_onnx, export_ssd, tiny_ssd, vgg16_cifar

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run with -P: the benchmarks' own helpers
from uniform_l1 import uniform_l1_plan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("ONNXPRUNE_ASSETS", ROOT.parent / "shared" / "assets"))
RESULTS = ROOT / "benchmarks" / "results"


def dense_models(work: Path) -> dict[str, Path]:
    models = {}
    resnet = ASSETS / "models" / "akamaster_cifar10_resnet20.onnx"
    if resnet.exists():
        models["ResNet-20"] = resnet
    else:
        print(f"skipping ResNet-20: {resnet} not found")
    models["VGG16-CIFAR"] = export_onnx(vgg16_cifar(seed=0), work / "vgg16_cifar.onnx")
    models["tiny SSD"] = export_ssd(tiny_ssd(seed=0), work / "tiny_ssd.onnx")
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--runs", type=int, default=40, help="timed rounds at batch 1 (fewer at larger batches)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench-latency")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, dense in dense_models(args.work).items():
        analysis = analyze_channels(onnx.load(dense))
        for fraction in args.fractions:
            for round_to in (1, 8):
                out = args.work / f"{name.replace(' ', '_')}_{fraction}_{round_to}.onnx"
                plan = uniform_l1_plan(analysis, fraction, round_to)
                pruned = prune(dense, out, plan=plan)
                for batch in args.batches:
                    runs = max(5, args.runs // batch) if batch > 1 else args.runs
                    figures = bench([dense, out], provider="cpu", batch=batch, runs=runs, warmup=2)
                    before, after = figures["models"]
                    row = {
                        "model": name, "fraction": fraction, "round_to": round_to, "batch": batch,
                        "params_before": pruned["params_before"], "params_after": pruned["params_after"],
                        "flops_before": pruned["flops_before"], "flops_after": pruned["flops_after"],
                        "latency_ms_before": before["latency_ms_median"], "latency_ms_after": after["latency_ms_median"],
                    }  # fmt: skip
                    row["flops_reduction"] = 1 - row["flops_after"] / row["flops_before"]
                    row["speedup"] = row["latency_ms_before"] / row["latency_ms_after"]
                    rows.append(row)
                    print(f"{name:12s} -{100 * fraction:.0f}% channels, round-to {round_to}, batch {batch:2d}: "
                          f"FLOPs -{100 * row['flops_reduction']:.1f}%, latency {row['latency_ms_before']:.2f} -> "
                          f"{row['latency_ms_after']:.2f} ms ({row['speedup']:.2f}x; ideal "
                          f"{1 / (1 - row['flops_reduction']):.2f}x)", flush=True)  # fmt: skip
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_latency_flops.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
    lines = [f"# Latency vs FLOPs (onnxruntime CPU, {machine})", "",
             "| model | channels removed | round-to | batch | FLOPs | FLOPs fewer | latency ms dense -> pruned | speed-up | ideal |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['model']} | {100 * r['fraction']:.0f}% | {r['round_to']} | {r['batch']} | "
                     f"{r['flops_after'] / 1e6:,.1f}M | {100 * r['flops_reduction']:.1f}% | "
                     f"{r['latency_ms_before']:.2f} -> {r['latency_ms_after']:.2f} | {r['speedup']:.2f}x | "
                     f"{1 / (1 - r['flops_reduction']):.2f}x |")  # fmt: skip
    (RESULTS / "bench_latency_flops.md").write_text("\n".join(lines) + "\n")
    plot(rows, RESULTS / "bench_latency_flops.png")
    print("\n".join(lines))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch"] for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(5.5 * len(batches), 4.5), squeeze=False)
    for ax, batch in zip(axes[0], batches, strict=True):
        top = 1.0
        for model in dict.fromkeys(r["model"] for r in rows):
            for round_to, style in ((1, "o-"), (8, "s--")):
                pts = [(0.0, 1.0)] + [(r["flops_reduction"], r["speedup"]) for r in rows
                                      if r["model"] == model and r["batch"] == batch and r["round_to"] == round_to]  # fmt: skip
                ax.plot([100 * x for x, _ in pts], [y for _, y in pts], style, label=f"{model}, round-to {round_to}")
                top = max(top, *(y for _, y in pts))
        xs = [x / 100 for x in range(0, 95, 5)]
        ax.plot([100 * x for x in xs], [1 / (1 - x) for x in xs], ":", color="grey", label="ideal: 1 / (1 - FLOPs cut)")
        ax.set(xlabel="FLOPs removed (%)", ylabel="speed-up (dense / pruned latency)",
               title=f"onnxruntime CPU, batch {batch}", ylim=(0, max(4.5, top * 1.1)))  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
