"""BatchNorm statistics re-estimated after pruning. Removing channels changes what every later
BatchNorm sees, so its running mean and variance no longer fit and the pruned model looks far
worse than it is before any fine-tuning (ResNet-20, 30.5% fewer FLOPs: 18% test accuracy as cut,
50% once the statistics are re-estimated on 1,024 training images). Judging sweep candidates
after this (as EagleEye's adaptive BatchNorm does) measures what fine-tuning can start from.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from torch import nn

from onnxprune.datasets import ImageSet, Preprocess
from onnxprune.evaluate.metrics import Evaluator, ModelLike
from onnxprune.model_io import load_model
from onnxprune.train.roundtrip import to_torch, write_back

__all__ = ["STATISTICS_KEY", "Recalibrated", "recalibrate_batchnorm", "reestimate_batchnorm", "record_statistics",
           "statistics_record"]  # fmt: skip

# metadata_props key of a model whose BatchNorm statistics are those of unaugmented images, not the
# running averages of augmented training; its value is JSON: {"estimate": "precise" | "running", "images": N}.
STATISTICS_KEY = "onnxprune.batchnorm_statistics"


def statistics_record(model: onnx.ModelProto) -> dict | None:
    """What `model`'s metadata says about its BatchNorm statistics (None: running averages of augmented training,
    or a model not written by onnxprune)."""
    value = next((p.value for p in model.metadata_props if p.key == STATISTICS_KEY), None)
    return json.loads(value) if value is not None else None


def record_statistics(model: onnx.ModelProto, record: dict | None) -> onnx.ModelProto:
    """Set (or, for None, remove) `model`'s record of its BatchNorm statistics, in place; returns `model`."""
    kept = [p for p in model.metadata_props if p.key != STATISTICS_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    if record is not None:
        model.metadata_props.add(key=STATISTICS_KEY, value=json.dumps(record, sort_keys=True))
    return model


def recalibrate_batchnorm(model: ModelLike, images: ImageSet, preprocess: Preprocess, batch_size: int = 128) -> onnx.ModelProto:
    """`model` with every BatchNormalization's running mean and variance replaced by their
    averages over `images` (no gradients, nothing else changes); models without BatchNorm (or
    with it folded into the convs) come back as they are. The result's metadata records the estimate
    (`statistics_record`)."""
    proto = load_model(model)
    if not any(n.op_type == "BatchNormalization" for n in proto.graph.node) or len(images) == 0:
        return proto
    converted = to_torch(proto)
    reestimate_batchnorm(converted.module, images.images, preprocess, batch_size)
    out = write_back(converted, converted.module.eval())
    return record_statistics(out, {"estimate": "precise", "images": len(images)})


def reestimate_batchnorm(module: nn.Module, images: np.ndarray, preprocess: Preprocess, batch_size: int = 128,
                         index: np.ndarray | None = None,
                         transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> bool:  # fmt: skip
    """Replace the running mean and variance of every BatchNorm in `module` (in place) by their
    averages over `images` (uint8, N x H x W x 3; only those at `index` when given; each uint8 batch
    passed through `transform` first, e.g. augmentation), fed on the module's device without
    gradients; the module is left in eval mode. False (nothing changed)
    when it has no BatchNorm or `index` is empty. A last batch of one image joins the one before:
    BatchNorm after global pooling cannot take a batch of one in training mode."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    index = np.arange(len(images)) if index is None else index
    if not norms or len(index) == 0:
        return False
    device = next(module.parameters()).device
    momenta = [bn.momentum for bn in norms]
    module.eval()
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over all batches
        bn.train()
    bounds = [*range(0, len(index), batch_size), len(index)]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    with torch.no_grad():
        for start, stop in zip(bounds, bounds[1:]):
            batch = torch.from_numpy(np.ascontiguousarray(images[index[start:stop]]))
            if transform is not None:
                batch = transform(batch)
            module(preprocess(batch).to(device))
    for bn, momentum in zip(norms, momenta, strict=True):
        bn.momentum = momentum
    module.eval()
    return True


@dataclass
class Recalibrated:
    """An evaluator that judges each model after `recalibrate_batchnorm` on `images`."""

    evaluator: Evaluator
    images: ImageSet
    preprocess: Preprocess

    @property
    def name(self) -> str:
        return self.evaluator.name

    @property
    def higher_is_better(self) -> bool:
        return self.evaluator.higher_is_better

    def __call__(self, model: ModelLike) -> float:
        return self.evaluator(recalibrate_batchnorm(model, self.images, self.preprocess))
