"""Top-1 accuracy and label-free output fidelity, through onnxruntime."""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

import numpy as np
import onnx
import torch

from onnxprune.datasets import ImageSet, Preprocess

__all__ = ["Accuracy", "Evaluator", "OutputFidelity", "run_model"]

ModelLike = str | os.PathLike | onnx.ModelProto


@runtime_checkable
class Evaluator(Protocol):
    """What threshold search and `compress` need from a metric."""

    name: str
    higher_is_better: bool

    def __call__(self, model: ModelLike) -> float: ...


def run_model(model: ModelLike, inputs: np.ndarray, batch: int = 256, provider: str = "cpu") -> list[np.ndarray]:
    """All outputs of `model` for `inputs` (the first input), in batches when the batch dim is
    dynamic and one image at a time when it is fixed."""
    from onnxprune.bench import session

    s = _session_bytes(model.SerializeToString()) if isinstance(model, onnx.ModelProto) else session(model, provider)
    first = s.get_inputs()[0]
    step = batch if not isinstance(first.shape[0], int) else first.shape[0]
    chunks = [s.run(None, {first.name: inputs[i : i + step]}) for i in range(0, len(inputs), step)]
    return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]


def _session_bytes(data: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


class Accuracy:
    """Top-1 accuracy of the first output (N x classes) on labelled images."""

    name = "accuracy"
    higher_is_better = True

    def __init__(self, data: ImageSet, preprocess: Preprocess) -> None:
        if not data.labelled:
            raise ValueError(f"accuracy needs labelled data; {data.source} has no labels")
        self.labels = data.labels
        self.inputs = preprocess(torch.from_numpy(data.images)).numpy()

    def __call__(self, model: ModelLike) -> float:
        logits = run_model(model, self.inputs)[0]
        return float((logits.reshape(len(logits), -1).argmax(1) == self.labels).mean())


class OutputFidelity:
    """How close a model's outputs stay to a reference model's on the same images, without
    labels: the mean over outputs of `1 - |y - y_ref|^2 / |y_ref|^2` (1 = identical, clipped at
    0); for a classifier's first output, top-1 agreement instead."""

    name = "fidelity"
    higher_is_better = True

    def __init__(self, reference: ModelLike, data: ImageSet, preprocess: Preprocess) -> None:
        self.inputs = preprocess(torch.from_numpy(data.images)).numpy()
        self.reference = run_model(reference, self.inputs)

    def __call__(self, model: ModelLike) -> float:
        outputs = run_model(model, self.inputs)
        scores = []
        for y, ref in zip(outputs, self.reference, strict=True):
            if ref.ndim == 2 and ref.shape[1] > 1 and len(self.reference) == 1:
                scores.append(float((y.argmax(1) == ref.argmax(1)).mean()))
            else:
                err = float(np.sum((y.astype(np.float64) - ref) ** 2)) / max(float(np.sum(ref.astype(np.float64) ** 2)), 1e-12)
                scores.append(max(0.0, 1.0 - err))
        return float(np.mean(scores))
