"""Detection metrics through torchmetrics' mean average precision, with decoders that turn a
detector's outputs into boxes: decoded boxes + scores (the ULFD files with the decode inside),
or raw SSD offsets + scores with a priors spec.

`DetectionMAP` scores detections against labelled boxes (mAP@0.5, VOC's measure).
`DetectionAgreement` needs no labels: it scores a (pruned) model's detections against the
original model's detections on the same images (mAP@0.5 with the original as ground truth).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch
from torchvision.ops import batched_nms

from onnxprune.datasets import ImageSet, Preprocess
from onnxprune.evaluate.metrics import ModelLike, run_model

__all__ = [
    "PRIOR_SPECS", "BoxesDecoder", "DetectionAgreement", "DetectionMAP", "SSDPriorsDecoder", "make_decoder", "ssd_priors",
]  # fmt: skip

# Anchor layouts by name: strides and min sizes per feature map (the image size comes from the model).
PRIOR_SPECS = {"ulfd": {"strides": [8, 16, 32, 64], "min_sizes": [[10, 16, 24], [32, 48], [64, 96], [128, 192, 256]]}}


def ssd_priors(
    width: int, height: int, strides: list[int], min_sizes: list[list[float]], clip: bool = True
) -> np.ndarray:
    """SSD priors (centre x, centre y, w, h; normalised), row-major over each feature map, one per
    min size: the layout of the ULFD detectors (strides 8, 16, 32, 64). Centres divide by the
    feature map's size (ceil(W / stride)), as the ULFD code does: for 240 / 64 that is 4, not 3.75."""
    priors = []
    for stride, sizes in zip(strides, min_sizes, strict=True):
        fw, fh = int(np.ceil(width / stride)), int(np.ceil(height / stride))
        for j in range(fh):
            for i in range(fw):
                for s in sizes:
                    priors.append([(i + 0.5) / fw, (j + 0.5) / fh, s / width, s / height])
    out = np.asarray(priors, dtype=np.float32)
    return np.clip(out, 0, 1) if clip else out


@dataclass(frozen=True)
class BoxesDecoder:
    """Outputs that are already boxes (x1, y1, x2, y2) and per-class scores (column 0 is the
    background when `background` is True)."""

    scores_output: int = 0
    boxes_output: int = 1
    score_threshold: float = 0.5
    nms_iou: float = 0.3
    background: bool = True
    max_detections: int | None = None  # keep the best N per image after NMS (SSD's evaluation keeps 200)

    def boxes(self, outputs: list[np.ndarray], i: int) -> np.ndarray:
        return outputs[self.boxes_output][i]

    def __call__(self, outputs: list[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        """Per image: {"boxes", "scores", "labels"} after the score threshold and per-class NMS."""
        results = []
        for i in range(len(outputs[self.scores_output])):
            scores = torch.from_numpy(np.asarray(outputs[self.scores_output][i], dtype=np.float32))
            boxes = torch.from_numpy(np.asarray(self.boxes(outputs, i), dtype=np.float32))
            if self.background:
                scores = scores[:, 1:]
            best, labels = scores.max(dim=1)
            keep = best > self.score_threshold
            boxes, best, labels = boxes[keep], best[keep], labels[keep]
            if self.max_detections is not None and len(best) > 2 * self.max_detections:
                top = best.topk(2 * self.max_detections).indices  # NMS on the best candidates only
                boxes, best, labels = boxes[top], best[top], labels[top]
            kept = batched_nms(boxes, best, labels, self.nms_iou)[: self.max_detections]
            results.append({"boxes": boxes[kept], "scores": best[kept], "labels": labels[kept]})
        return results


@dataclass(frozen=True)
class SSDPriorsDecoder(BoxesDecoder):
    """Raw SSD outputs: box offsets against `priors` (centre-size, normalised) with the usual
    variances (0.1 for centres, 0.2 for sizes)."""

    priors: np.ndarray | None = None
    center_variance: float = 0.1
    size_variance: float = 0.2

    def boxes(self, outputs: list[np.ndarray], i: int) -> np.ndarray:
        loc, p = np.asarray(outputs[self.boxes_output][i], dtype=np.float32), self.priors
        centre = p[:, :2] + loc[:, :2] * self.center_variance * p[:, 2:]
        size = p[:, 2:] * np.exp(loc[:, 2:] * self.size_variance)
        return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def _mean_ap(found: list[dict[str, torch.Tensor]], targets: list[dict[str, torch.Tensor]], coco: bool = False) -> float:
    """mAP@0.5, or with `coco` the COCO mAP averaged over IoU 0.5:0.95 (torchmetrics, pycocotools
    backend), counting up to 1000 detections per image for mAP@0.5 (crowd photos hold hundreds of
    faces) and 100 for the COCO mAP.
    1.0 when there is nothing to find and nothing found."""
    from torchmetrics.detection import MeanAveragePrecision

    # pycocotools' summary reads the averaged mAP at 100 detections per image (COCO's rule).
    ious, most = (None, 100) if coco else ([0.5], 1000)
    metric = MeanAveragePrecision(iou_thresholds=ious, max_detection_thresholds=[1, 10, most], backend="pycocotools")
    metric.warn_on_many_detections = False
    metric.update(found, targets)
    value = float(metric.compute()["map" if coco else "map_50"])
    if value < 0 and all(len(t["boxes"]) == 0 for t in targets):
        return 1.0 if all(len(f["boxes"]) == 0 for f in found) else 0.0
    return max(value, 0.0)


class DetectionAgreement:
    """mAP@0.5 of a model's detections against a reference model's (no labels needed): 1.0 when
    the pruned detector finds what the original found."""

    name = "detection agreement"
    higher_is_better = True

    def __init__(self, reference: ModelLike, data: ImageSet, preprocess: Preprocess, decoder: BoxesDecoder) -> None:
        self.inputs = preprocess(torch.from_numpy(data.images)).numpy()
        self.decoder = decoder
        self.reference = decoder(run_model(reference, self.inputs))

    def __call__(self, model: ModelLike) -> float:
        found = self.decoder(run_model(model, self.inputs))
        return _mean_ap(found, [{"boxes": r["boxes"], "labels": r["labels"]} for r in self.reference])


class DetectionMAP:
    """mAP@0.5 (or with `coco` the COCO mAP over IoU 0.5:0.95) of a model's detections against the
    labelled boxes of `data` (boxes normalised, as the decoders give them)."""

    higher_is_better = True

    def __init__(self, data: ImageSet, preprocess: Preprocess, decoder: BoxesDecoder, coco: bool = False) -> None:
        self.coco = coco
        self.name = "mAP@[.5:.95]" if coco else "mAP@0.5"
        if data.boxes is None:
            raise ValueError(f"{data.source}: mAP needs labelled boxes (voc with Annotations/, coco, shapes)")
        self.inputs = preprocess(torch.from_numpy(data.images)).numpy()
        self.decoder = decoder
        self.targets = [
            {"boxes": torch.from_numpy(b[:, 1:].copy()), "labels": torch.from_numpy(b[:, 0].astype(np.int64))}
            for b in data.boxes
        ]

    def __call__(self, model: ModelLike) -> float:
        return _mean_ap(self.decoder(run_model(model, self.inputs)), self.targets, self.coco)


def make_decoder(
    name: str, size: tuple[int, int], score_threshold: float = 0.5, model: onnx.ModelProto | None = None
) -> BoxesDecoder:
    """`--decoder auto` (the prior boxes an `onnxprune.zoo` SSD records in its metadata, else
    decoded outputs; NMS at IoU 0.45 and the best 200 detections per image, as SSD's evaluation), `boxes` (outputs are scores and decoded boxes) or the name of a prior layout
    (`ulfd`: raw offsets against that layout's priors for an input of `size` (W, H))."""
    if name == "auto":
        from onnxprune.zoo.ssd import read_ssd_metadata

        meta = read_ssd_metadata(model) if model is not None else None
        if meta is None or meta.decoded:
            return BoxesDecoder(score_threshold=score_threshold, nms_iou=0.45, max_detections=200)
        return SSDPriorsDecoder(score_threshold=score_threshold, nms_iou=0.45, max_detections=200, priors=meta.priors,
                                center_variance=meta.variances[0], size_variance=meta.variances[1])  # fmt: skip
    if name == "boxes":
        return BoxesDecoder(score_threshold=score_threshold)
    if name in PRIOR_SPECS:
        return SSDPriorsDecoder(score_threshold=score_threshold, priors=ssd_priors(size[0], size[1], **PRIOR_SPECS[name]))
    raise ValueError(f"--decoder must be auto, boxes or one of {', '.join(PRIOR_SPECS)}; got {name!r}")
