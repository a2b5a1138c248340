"""Training a zoo SSD from scratch in PyTorch (before it is exported): the dense model that the
demo then compresses. Compression itself trains the exported ONNX model (`onnxprune.train`)."""

from __future__ import annotations

import sys

import torch
from torch import nn

from onnxprune.datasets import ImageSet, Preprocess
from onnxprune.train.augment import augment, box_targets
from onnxprune.train.multibox import MultiboxLoss
from onnxprune.zoo.ssd import SSD

__all__ = ["fit_ssd"]


def fit_ssd(
    model: SSD,
    data: ImageSet,
    preprocess: Preprocess,
    *,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 0.05,
    seed: int = 0,
    device: str = "cpu",
    max_steps: int | None = None,
    progress: bool = True,
) -> list[float]:
    """Train `model` in place on a detection set with the multibox loss (AdamW, one-cycle
    schedule, flips and colour jitter) on `device`; returns the mean loss of each epoch.
    `max_steps` stops early (a smoke test of a paper-scale run)."""
    if data.boxes is None:
        raise ValueError(f"{data.source}: training an SSD needs labelled boxes")
    from tqdm import tqdm

    model.to(device)
    loss_fn = MultiboxLoss(model.priors, model.spec.priors.variances)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * -(-len(data) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    generator = torch.Generator().manual_seed(seed)
    history, step = [], 0
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(data), generator=generator).numpy()
        total, batches = 0.0, 0
        bar = tqdm(range(0, len(order), batch_size), desc=f"train {epoch + 1}/{epochs}", disable=not progress,
                   file=sys.stderr, leave=False)  # fmt: skip
        for start in bar:
            index = order[start : start + batch_size]
            batch, flipped = augment(torch.from_numpy(data.images[index]), generator, crop=False)
            loss = loss_fn(list(model(preprocess(batch).to(device))), box_targets(data.boxes, index, flipped))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            schedule.step()
            total, batches = total + float(loss.detach()), batches + 1
            bar.set_postfix(loss=f"{total / batches:.3f}")
            step += 1
            if max_steps is not None and step >= max_steps:
                break
        history.append(total / max(batches, 1))
        if max_steps is not None and step >= max_steps:
            break
    _recalibrate_batch_norm(model, data, preprocess, batch_size)
    model.eval().cpu()
    return history


@torch.no_grad()
def _recalibrate_batch_norm(model: nn.Module, data: ImageSet, preprocess: Preprocess, batch_size: int,
                            images: int = 1024) -> None:  # fmt: skip
    """Replace BatchNorm running statistics by their plain average over `images` training images:
    the running averages lag behind weights that moved fast, and the exported model (BatchNorm
    folded) would not be the model that was trained."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for start in range(0, min(images, len(data)), batch_size):
        model(preprocess(torch.from_numpy(data.images[start : start + batch_size])).to(next(model.parameters()).device))
    for m in norms:
        m.momentum = 0.1
