"""BatchNorm statistics after training: the running averages a model was written with against the
statistics re-estimated on clean training images (`finetune --precise-bn`, the default since
2026-12-04), on the test set, for each model given. The spread of each estimate is measured too:
the running averages over `--batches` augmented batches of 32 (what training leaves: momentum 0.1
forgets all but the last few dozen), drawn `--repeats` times, against re-estimates on as many
disjoint sets of `--images` training images, each spread over the whole set.

    .venv/bin/python benchmarks/precise_bn.py build/resnet20-kd12/*.onnx     # about 40 s a model

Writes results/precise_bn.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from onnxprune.datasets import PRESETS, ImageSet, load_images
from onnxprune.evaluate.choice import choose_evaluator
from onnxprune.model_io import load_model
from onnxprune.train.augment import augment
from onnxprune.train.recalibrate import recalibrate_batchnorm
from onnxprune.train.roundtrip import to_torch, write_back

ROOT = Path(__file__).resolve().parent
ASSETS = ROOT.parent.parent / "shared" / "assets" / "data"


def running_averages(path: Path, train: ImageSet, batches: int, seed: int):
    """The model with its running statistics replaced by what `batches` augmented batches of 32
    leave at momentum 0.1 (starting from its own)."""
    converted = to_torch(load_model(path))
    module = converted.module.eval()
    for bn in module.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            bn.train()
    generator = torch.Generator().manual_seed(seed)
    preprocess = PRESETS["cifar"]
    with torch.no_grad():
        for _ in range(batches):
            index = torch.randint(0, len(train), (32,), generator=generator).numpy()
            batch, _ = augment(torch.from_numpy(train.images[index]), generator)
            module(preprocess(batch))
    return write_back(converted, module.eval())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--name", default="precise_bn")
    args = parser.parse_args()
    torch.set_num_threads(2)
    preprocess = PRESETS["cifar"]
    train = load_images(f"npz:{ASSETS / 'cifar10_train_jpeg.npz'}", (32, 32))
    test = load_images(f"npz:{ASSETS / 'cifar10_test_jpeg.npz'}", (32, 32))
    if not 1 <= args.images <= len(train):
        parser.error(f"--images must be 1 to {len(train)} (the training images)")
    stride = len(train) // args.images  # the sets are spread over the whole set (it is sorted by class)
    if not 1 <= args.repeats <= stride:
        parser.error(f"--repeats must be 1 to {stride} (disjoint sets of {args.images} images in {len(train)})")
    rows = []
    for path in args.models:
        model = load_model(path)
        evaluate = choose_evaluator("accuracy", model, test, preprocess, (32, 32))
        subsets = [np.arange(args.images) * stride + k for k in range(args.repeats)]
        precise = [evaluate(recalibrate_batchnorm(model, ImageSet(train.images[i], train.labels[i]), preprocess))
                   for i in subsets]  # fmt: skip
        running = [evaluate(running_averages(path, train, args.batches, seed)) for seed in range(args.repeats)]
        row = {"model": os.path.relpath(path, ROOT.parent), "as_written": evaluate(model), "precise": precise,
               "running": running}  # fmt: skip
        rows.append(row)
        print(f"{path}: as written {100 * row['as_written']:.2f}%, precise {100 * np.mean(precise):.2f}% "
              f"(range {100 * (max(precise) - min(precise)):.2f}), running averages {100 * np.mean(running):.2f}% "
              f"(range {100 * (max(running) - min(running)):.2f})", flush=True)  # fmt: skip
    out = ROOT / "results" / args.name
    out.with_suffix(".json").write_text(json.dumps({"images": args.images, "batches": args.batches, "repeats": args.repeats, "rows": rows}, indent=1) + "\n")
    lines = ["| model | as written | precise (mean, range) | running averages (mean, range) |", "|---|---|---|---|"]
    for r in rows:
        p, q = r["precise"], r["running"]
        lines.append(f"| {r['model']} | {100 * r['as_written']:.2f}% | {100 * np.mean(p):.2f}% ({100 * (max(p) - min(p)):.2f}) "
                     f"| {100 * np.mean(q):.2f}% ({100 * (max(q) - min(q)):.2f}) |")  # fmt: skip
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
