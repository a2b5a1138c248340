"""Evaluators: one number per model, measured in onnxruntime on the model as it would ship.

An evaluator is any callable `evaluator(model) -> float` (a path or an `onnx.ModelProto`) with a
`name` and `higher_is_better`; `Accuracy`, `OutputFidelity`, `DetectionMAP` (against labelled
boxes) and `DetectionAgreement` (against the original model's detections) are the built-in ones,
and users plug in their own (a business metric) through the same protocol.
"""

from onnxprune.evaluate.detection import (
    PRIOR_SPECS, BoxesDecoder, DetectionAgreement, DetectionMAP, SSDPriorsDecoder, make_decoder, ssd_priors,
)  # fmt: skip
from onnxprune.evaluate.metrics import Accuracy, Evaluator, OutputFidelity, run_model

__all__ = [
    "PRIOR_SPECS", "Accuracy", "BoxesDecoder", "DetectionAgreement", "DetectionMAP", "Evaluator", "OutputFidelity",
    "SSDPriorsDecoder", "make_decoder", "run_model", "ssd_priors",
]  # fmt: skip
