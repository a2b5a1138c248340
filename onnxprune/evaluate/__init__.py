"""Evaluators: one number per model, measured in onnxruntime on the model as it would ship.

An evaluator is any callable `evaluator(model) -> float` (a path or an `onnx.ModelProto`) with a
`name` and `higher_is_better`; `Accuracy` and `OutputFidelity` are the built-in ones, and users
plug in their own (mAP of their detector, a business metric) through the same protocol.
"""

from onnxprune.evaluate.metrics import Accuracy, Evaluator, OutputFidelity, run_model

__all__ = ["Accuracy", "Evaluator", "OutputFidelity", "run_model"]
