"""Which evaluator a `--metric` names, given the model and the validation data (one rule for
`sweep` and `compress`)."""

from __future__ import annotations

import onnx

from onnxprune.datasets import ImageSet, Preprocess
from onnxprune.evaluate.detection import DetectionAgreement, DetectionMAP, make_decoder
from onnxprune.evaluate.metrics import Accuracy, Evaluator, OutputFidelity
from onnxprune.model_io import InputError

__all__ = ["METRICS", "choose_evaluator"]

METRICS = ("auto", "accuracy", "map", "coco-map", "fidelity", "detection")


def choose_evaluator(
    metric: str,
    model: onnx.ModelProto,
    data: ImageSet,
    preprocess: Preprocess,
    size: tuple[int, int],
    decoder: str = "auto",
    score_threshold: float | None = None,
) -> Evaluator:
    """`auto`: mAP@0.5 when the data has boxes, accuracy with class labels, else fidelity to
    `model`; `map`, `coco-map` (IoU 0.5:0.95), `accuracy`, `fidelity`, or `detection` (agreement
    with `model`'s detections).
    Detections are kept from score 0.05 for mAP and 0.5 for agreement unless told."""
    if metric not in METRICS:
        raise InputError(f"--metric must be one of {', '.join(METRICS)}; got {metric!r}")
    if metric in ("map", "coco-map") or (metric == "auto" and data.boxes is not None):
        if data.boxes is None:
            raise InputError(f"--metric {metric} needs labelled boxes; {data.source} has none (use --metric detection)")
        cut = 0.05 if score_threshold is None else score_threshold
        return DetectionMAP(data, preprocess, _decoder(decoder, size, cut, model), coco=metric == "coco-map")
    if metric == "detection":
        cut = 0.5 if score_threshold is None else score_threshold
        return DetectionAgreement(model, data, preprocess, _decoder(decoder, size, cut, model))
    if metric == "accuracy" or (metric == "auto" and data.labelled):
        if not data.labelled:
            raise InputError(f"--metric accuracy needs class labels; {data.source} has none")
        return Accuracy(data, preprocess)
    return OutputFidelity(model, data, preprocess)


def _decoder(name: str, size: tuple[int, int], cut: float, model: onnx.ModelProto):
    try:
        return make_decoder(name, size, cut, model=model)
    except ValueError as err:
        raise InputError(str(err)) from err
