"""The paper's classification result on VGG16 / CIFAR-10 (Singh et al., WACV 2019: 125x fewer
parameters, 90.5% fewer FLOPs, no accuracy loss), reproduced with onnxprune end to end:

    dense training (torch, this script) -> export to ONNX (BatchNorm folded, as the paper's VGG
    has none at inference) -> `onnxprune.compress`: L1 sparsify -> per phase: sweep (Algorithm 1,
    the pruned model judged on validation accuracy) -> prune -> fine-tune, and the dense model
    trained for the same epochs without L1 as the fair reference.

Schedules: `gpu` (the paper's scale: all 50,000 training images, 60 dense epochs; not run yet,
estimated under an hour on one H100), `h100` (what fits a few minutes of one H100), `cpu` (5,000 images, a few epochs: about
23 minutes on 2 cores). Any field can be overridden:

    .venv/bin/python -P benchmarks/bench_vgg16_cifar.py --schedule cpu
    python benchmarks/bench_vgg16_cifar.py --schedule gpu --device cuda --data-dir DIR

Results: benchmarks/results/bench_vgg16_cifar_<schedule>.{json,md} (or --results DIR).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from onnxprune.compress import CompressConfig, compress
from onnxprune.datasets import PRESETS, load_images
from onnxprune.evaluate import Accuracy
from onnxprune.train.loop import TrainConfig
from onnxprune.zoo import export_onnx, vgg16_cifar

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("ONNXPRUNE_ASSETS", ROOT.parent / "shared" / "assets"))
PAPER = {"params_ratio": 125.0, "flops_reduction": 0.905, "accuracy_change": 0.0}


@dataclass(frozen=True)
class Schedule:
    train_images: int | None  # None: all 50,000
    dense_epochs: int
    dense_lr: float
    sparsify_epochs: int
    l1: float
    finetune_epochs: int
    tolerance: float
    val_limit: int
    batch_size: int
    phases: tuple[str, ...] = ("conv1_*,conv2_*", "conv3_*", "conv4_*", "conv5_*")


SCHEDULES = {
    "gpu": Schedule(None, 60, 0.05, 20, 2e-4, 10, 0.005, 5000, 128),
    "h100": Schedule(None, 15, 0.05, 3, 2e-3, 2, 0.01, 1000, 256, phases=("conv*",)),
    "cpu": Schedule(5000, 5, 0.05, 2, 5e-3, 1, 0.02, 1000, 64, phases=("conv*",)),
}


def fit(model: nn.Module, images: np.ndarray, labels: np.ndarray, epochs: int, lr: float, batch: int,
        device: str, seed: int = 0) -> list[float]:  # fmt: skip
    """Dense training: SGD + Nesterov, one-cycle, random crop (pad 4) and flip on the device."""
    preprocess = PRESETS["cifar"]
    model.to(device).train()
    x_all = torch.from_numpy(images).to(device)
    y_all = torch.from_numpy(labels.astype(np.int64)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = epochs * -(-len(images) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 10), pct_start=0.2)
    generator = torch.Generator(device=device).manual_seed(seed)
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator, device=device)
        total = 0.0
        for start in range(0, len(images), batch):
            idx = order[start : start + batch]
            x = preprocess(x_all[idx]).contiguous()  # (N, 3, 32, 32) float
            padded = nn.functional.pad(x, (4, 4, 4, 4))
            dx, dy = (int(v) for v in torch.randint(0, 9, (2,), generator=generator, device=device))
            x = padded[:, :, dy : dy + 32, dx : dx + 32]
            flip = torch.rand(len(idx), generator=generator, device=device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = nn.functional.cross_entropy(model(x), y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(images))
        print(f"dense epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}", flush=True)
    model.eval().cpu()
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default="cpu")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-dir", type=Path, default=ASSETS / "data", help="holds cifar10_{train,test}_jpeg.npz")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench-vgg16-cifar", help="models and stages")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    for field in dataclasses.fields(Schedule):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=str, help="override the schedule's value")
    args = parser.parse_args()
    base = SCHEDULES[args.schedule]
    overrides = {}
    for field in dataclasses.fields(Schedule):
        value = getattr(args, field.name)
        if value is not None:
            current = getattr(base, field.name)
            overrides[field.name] = tuple(value.split()) if isinstance(current, tuple) else type(current or 0)(value)
    schedule = dataclasses.replace(base, **overrides)
    train_spec = f"npz:{args.data_dir / 'cifar10_train_jpeg.npz'}"
    test_spec = f"npz:{args.data_dir / 'cifar10_test_jpeg.npz'}"
    work = args.work / args.schedule
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    dense_path = work / "dense.onnx"
    if not dense_path.exists():
        data = load_images(train_spec, (32, 32), schedule.train_images)
        model = vgg16_cifar(seed=0)
        fit(model, data.images, data.labels, schedule.dense_epochs, schedule.dense_lr, schedule.batch_size, args.device)
        export_onnx(model, dense_path)  # BatchNorm folded
    dense_seconds = time.perf_counter() - started
    test = load_images(test_spec, (32, 32))
    dense_accuracy = Accuracy(test, PRESETS["cifar"])(dense_path)
    print(f"dense: test accuracy {dense_accuracy:.4f} ({dense_seconds:.0f} s)", flush=True)

    train = TrainConfig(batch_size=schedule.batch_size, lr=0.01, limit=schedule.train_images, device=args.device,
                        preprocess=PRESETS["cifar"])  # fmt: skip
    config = CompressConfig(
        phases=tuple(tuple(g for g in p.split(",") if g) for p in schedule.phases),
        sparsify_epochs=schedule.sparsify_epochs, finetune_epochs=schedule.finetune_epochs, l1=schedule.l1,
        tolerance=schedule.tolerance, val_limit=schedule.val_limit, dense_baseline=True, train=train,
    )  # fmt: skip
    report = compress(dense_path, work / "compressed.onnx", train_spec, val=test_spec, config=config)
    final = {name: Accuracy(test, PRESETS["cifar"])(path) for name, path in
             (("compressed", work / "compressed.onnx"), ("dense_tuned", Path(report["dense_tuned_model"])))}  # fmt: skip
    result = {
        "schedule": args.schedule, "settings": dataclasses.asdict(schedule), "device": args.device,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores"
        + (f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""),
        "seconds": round(time.perf_counter() - started, 1), "dense_accuracy": dense_accuracy,
        "compressed_accuracy": final["compressed"], "dense_tuned_accuracy": final["dense_tuned"],
        "params_before": report["params_before"], "params_after": report["params_after"],
        "flops_before": report["flops_before"], "flops_after": report["flops_after"],
        "latency_ms_before": report["latency_ms_before"], "latency_ms_after": report["latency_ms_after"],
        "paper": PAPER,
    }  # fmt: skip
    result["params_ratio"] = result["params_before"] / result["params_after"]
    result["flops_reduction"] = 1 - result["flops_after"] / result["flops_before"]
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"bench_vgg16_cifar_{args.schedule}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    rows = [
        f"# VGG16 / CIFAR-10, schedule `{args.schedule}` ({result['machine']}, {result['seconds']:.0f} s)", "",
        "| | dense | dense trained alike | compressed | paper |", "|---|---:|---:|---:|---:|",
        f"| test accuracy (10,000) | {dense_accuracy:.4f} | {final['dense_tuned']:.4f} | {final['compressed']:.4f} | no loss |",
        f"| parameters | {result['params_before']:,} | | {result['params_after']:,} ({result['params_ratio']:.1f}x fewer) | 125x fewer |",
        f"| FLOPs | {result['flops_before']:,} | | {result['flops_after']:,} ({100 * result['flops_reduction']:.1f}% fewer) | 90.5% fewer |",
        f"| latency ms (CPU, batch 1) | {result['latency_ms_before']:.2f} | | {result['latency_ms_after']:.2f} | |",
        "", f"Settings: `{json.dumps(result['settings'])}`",
    ]  # fmt: skip
    stem.with_suffix(".md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
