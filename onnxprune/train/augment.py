"""Training-time augmentation of uint8 image batches (and of the boxes that go with them)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["augment", "box_targets"]


def augment(images: torch.Tensor, generator: torch.Generator, crop: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Random resized crop (area 60-100%; skipped for detection data, whose boxes would move),
    horizontal flip and brightness/contrast jitter of a uint8 (N, H, W, 3) batch, drawn from
    `generator` (deterministic for a seed). Returns the batch and which images were flipped."""
    n, h, w, _ = images.shape
    out = images.permute(0, 3, 1, 2).float()
    result = torch.empty_like(out)
    flipped = torch.zeros(n, dtype=torch.bool)
    for i in range(n):
        r = torch.rand(6, generator=generator)
        area = 0.6 + 0.4 * float(r[0]) if crop else 1.0
        ch, cw = max(1, int(h * area**0.5)), max(1, int(w * area**0.5))
        top, left = int(float(r[1]) * (h - ch + 1)), int(float(r[2]) * (w - cw + 1))
        image = out[i, :, top : top + ch, left : left + cw]
        if (ch, cw) != (h, w):
            image = F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        if r[3] < 0.5:
            image, flipped[i] = image.flip(-1), True
        brightness, contrast = 0.8 + 0.4 * float(r[4]), 0.8 + 0.4 * float(r[5])
        mean = image.mean()
        result[i] = ((image - mean) * contrast + mean) * brightness
    return result.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1), flipped


def box_targets(boxes: list[np.ndarray], index: np.ndarray, flipped: torch.Tensor | None) -> list[torch.Tensor]:
    """The batch's boxes [class, x1, y1, x2, y2] as tensors, mirrored where the image was flipped."""
    targets = []
    for k, i in enumerate(index):
        t = torch.from_numpy(boxes[i].copy())
        if flipped is not None and flipped[k]:
            t[:, [1, 3]] = 1.0 - t[:, [3, 1]]
        targets.append(t)
    return targets
