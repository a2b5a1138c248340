"""Benchmark: `analyze` + `prune` of VGG16 (ImageNet, 138M weights) against `onnx.load` +
`onnx.save` of the same model, measured side by side in one run. Goal: at most 3x, for the
surgery (`--no-verify`); prune's default check in onnxruntime (both models run on two probes) is
timed beside it.

Each step runs in a fresh process (imports not timed), as a user runs the command; the steps are
interleaved over the runs and the medians compared. The model is torchvision's VGG16 with random weights, exported once (cached under build/) and
then given 30% zero filters per conv so the prune really cuts. Results go to
benchmarks/results/bench_prune.{json,md}.

    .venv/bin/python -P benchmarks/bench_prune.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

import onnxprune

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "bench-models"
RESULTS = ROOT / "benchmarks" / "results"


def vgg16_model() -> Path:
    """VGG16 with 30% of each conv's filters zero (weights and bias), exported once."""
    path = CACHE / "vgg16_zero30.onnx"
    if path.exists():
        return path
    import torch
    import torchvision

    CACHE.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = torchvision.models.vgg16().eval()
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                gone = torch.from_numpy(rng.uniform(size=m.out_channels) < 0.3)
                m.weight[gone] = 0
                m.bias[gone] = 0
    raw = CACHE / "vgg16_raw.onnx"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(raw), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"])  # fmt: skip
    raw.rename(path)
    return path


STEPS = {
    "load_save": "import onnx\nonnx.save(onnx.load(MODEL), OUT)",
    "analyze": "import onnxprune\nonnxprune.analyze(MODEL)",
    "prune": "import onnxprune\nonnxprune.prune(MODEL, OUT, threshold=0.0, sf=1.0, sf_low=1.0, sg=1.0, verify=False)",
    "prune_verified": "import onnxprune\nonnxprune.prune(MODEL, OUT, threshold=0.0, sf=1.0, sf_low=1.0, sg=1.0)",
}


def timed(step: str, model: Path, out: Path, runs: int) -> list[float]:
    """Seconds of `step` (imports excluded), each run in a fresh process as a user would run it,
    so no run inherits another's memory."""
    code = (
        f"import time\nMODEL, OUT = {str(model)!r}, {str(out)!r}\n"
        + STEPS[step].split("\n")[0]
        + "\nstart = time.perf_counter()\n"
        + "\n".join(STEPS[step].split("\n")[1:])
        + "\nprint(time.perf_counter() - start)"
    )
    times = []
    for _ in range(runs):
        result = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True)
        times.append(float(result.stdout.strip().splitlines()[-1]))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    path = vgg16_model()
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        out = Path(tmp) / "out.onnx"
        results = {step: [] for step in STEPS}
        for _ in range(args.runs):  # interleaved, so a slow phase of the machine hits every step
            for step in STEPS:
                results[step] += timed(step, path, out, 1)
        report = onnxprune.prune(path, None, threshold=0.0, sf=1.0, sf_low=1.0, sg=1.0)
    med = {k: statistics.median(v) for k, v in results.items()}
    summary = {
        "model": "torchvision VGG16, 30% zero conv filters",
        "weights": report["params_before"],
        "params_after": report["params_after"],
        "flops_before": report["flops_before"],
        "flops_after": report["flops_after"],
        "runs": args.runs,
        "seconds": results,
        "median_seconds": med,
        "ratio_prune": med["prune"] / med["load_save"],
        "ratio_analyze_plus_prune": (med["analyze"] + med["prune"]) / med["load_save"],
        "ratio_prune_verified": med["prune_verified"] / med["load_save"],
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_prune.json").write_text(json.dumps(summary, indent=1) + "\n")
    md = [
        "| step (VGG16, 138M weights) | median s | / load+save |",
        "|---|---:|---:|",
        f"| onnx.load + onnx.save | {med['load_save']:.2f} | 1.00 |",
        f"| onnxprune analyze (from file) | {med['analyze']:.2f} | {med['analyze'] / med['load_save']:.2f} |",
        f"| onnxprune prune --no-verify (from file, writes the model) | {med['prune']:.2f} | {summary['ratio_prune']:.2f} |",
        f"| analyze + prune --no-verify | {med['analyze'] + med['prune']:.2f} | {summary['ratio_analyze_plus_prune']:.2f} |",
        f"| onnxprune prune (verified in onnxruntime: the default) | {med['prune_verified']:.2f} | "
        f"{summary['ratio_prune_verified']:.2f} |",
    ]
    (RESULTS / "bench_prune.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"parameters {report['params_before']:,} -> {report['params_after']:,}")


if __name__ == "__main__":
    main()
