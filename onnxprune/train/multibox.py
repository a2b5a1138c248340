"""SSD's multibox loss (Liu et al. 2016): priors matched to ground-truth boxes by IoU, smooth-L1
on the encoded offsets of the matched priors, and cross-entropy on them plus the hardest
background priors (3 negatives per positive)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

__all__ = ["MultiboxLoss", "encode_boxes"]


def _corners(priors: torch.Tensor) -> torch.Tensor:
    return torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], dim=1)


def encode_boxes(boxes: torch.Tensor, priors: torch.Tensor, variances: tuple[float, float]) -> torch.Tensor:
    """Boxes (P, 4; x1, y1, x2, y2) -> offsets against priors (P, 4; centre-size): the inverse of
    `onnxprune.zoo.ssd.decode_boxes`."""
    centre, size = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]).clamp_min(1e-6)
    return torch.cat([
        (centre - priors[:, :2]) / (variances[0] * priors[:, 2:]),
        torch.log(size / priors[:, 2:]) / variances[1],
    ], dim=1)  # fmt: skip


class MultiboxLoss:
    """`loss(outputs, targets)` for outputs [scores (N, P, C) softmax with background 0, loc (N, P,
    4) raw offsets] and targets: per image a (K, 5) tensor [class, x1, y1, x2, y2] (class 0-based,
    without the background). The signature matches `train(loss_fn=...)` (the teacher is unused)."""

    def __init__(self, priors: np.ndarray | torch.Tensor, variances: tuple[float, float] = (0.1, 0.2),
                 iou_threshold: float = 0.5, negatives_per_positive: int = 3) -> None:  # fmt: skip
        self.priors = torch.as_tensor(priors, dtype=torch.float32)
        self.corners = _corners(self.priors)
        self.variances, self.iou_threshold, self.ratio = variances, iou_threshold, negatives_per_positive

    def match(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P,) class per prior (0 background, else class + 1) and (P, 4) offsets to its box."""
        p = len(self.priors)
        if len(target) == 0:
            return torch.zeros(p, dtype=torch.long), torch.zeros(p, 4)
        iou = box_iou(target[:, 1:], self.corners)  # (K, P)
        best_iou, best_box = iou.max(dim=0)
        best_prior = iou.argmax(dim=1)  # every box keeps at least its best prior
        best_iou[best_prior] = 2.0
        best_box[best_prior] = torch.arange(len(target))
        classes = target[best_box, 0].long() + 1
        classes[best_iou < self.iou_threshold] = 0
        return classes, encode_boxes(target[best_box, 1:], self.priors, self.variances)

    def __call__(self, outputs: list[torch.Tensor], targets: list[torch.Tensor], teacher=None) -> torch.Tensor:
        scores, loc = outputs[0], outputs[1]
        if self.priors.device != scores.device:
            self.priors, self.corners = self.priors.to(scores.device), self.corners.to(scores.device)
        matched = [self.match(t.to(scores.device).float()) for t in targets]
        classes = torch.stack([m[0] for m in matched])
        offsets = torch.stack([m[1] for m in matched])
        positive = classes > 0
        positives = int(positive.sum())
        log_p = scores.float().clamp_min(1e-7).log()
        background = -log_p[..., 0].detach().clone()
        background[positive] = 0.0
        rank = background.argsort(dim=1, descending=True).argsort(dim=1)
        limit = (self.ratio * positive.sum(dim=1, keepdim=True)).clamp(max=classes.shape[1] - 1)
        chosen = positive | (rank < limit)
        confidence = F.nll_loss(log_p[chosen], classes[chosen], reduction="sum")
        localisation = F.smooth_l1_loss(loc[positive].float(), offsets[positive], reduction="sum")
        return (confidence + localisation) / max(positives, 1)
