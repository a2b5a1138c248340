"""Seconds per training step of `onnxprune finetune --teacher` on a device, measured the way the
training loop steps (augment, preprocess, student forward and backward, teacher forward, SGD),
so that a script can size a cosine schedule to the device time it has (gpu_resnet20_gap.sh).

    python benchmarks/gpu_step_time.py MODEL.onnx TEACHER.onnx [--steps 150] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from onnxprune.datasets import PRESETS
from onnxprune.train.augment import augment
from onnxprune.train.loop import _distill_loss, _outputs
from onnxprune.train.roundtrip import to_torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("teacher")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    device = torch.device(args.device)
    student = to_torch(args.model).module.to(device).train()
    teacher = to_torch(args.teacher).module.to(device).eval()
    # The loop's SGD (no weight decay by default).
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.0)
    preprocess, generator = PRESETS["cifar"], torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (args.batch_size, 32, 32, 3), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, 10, args.batch_size))
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            start = time.perf_counter()
        batch, _ = augment(images, generator)
        x, y = preprocess(batch).to(device), labels.to(device)
        out = _outputs(student, x)
        with torch.no_grad():
            target = _outputs(teacher, x)
        loss = F.cross_entropy(out[0], y) + _distill_loss(out, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        float(loss.detach())  # the loop reads the loss every step, which waits for the device
    seconds = (time.perf_counter() - start) / args.steps
    print(json.dumps({"model": args.model, "device": str(device), "seconds_per_step": seconds}))


if __name__ == "__main__":
    main()
