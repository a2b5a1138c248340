"""Export a zoo model (a torch module) to ONNX the way every test and benchmark expects."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from onnxprune.model_io import save_model

__all__ = ["export_onnx"]


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_shape: tuple[int, ...] = (1, 3, 32, 32),
    *,
    output_names: tuple[str, ...] = ("logits",),
    keep_bn: bool = False,
    metadata: dict[str, object] | None = None,
) -> Path:
    """Export `model` (eval mode) to ONNX at `path`: input `input`, dynamic batch, opset 17.

    Uses the TorchScript exporter: it needs no extra dependency (the torch.export-based one needs
    onnxscript) and keeps module names in initializer names; each top-level conv node is named after
    its module (`conv4_3`, not `/conv4_3/Conv`), so layer globs read like the paper. BatchNorm is
    folded into the convs unless `keep_bn`. `metadata` values are stored as JSON in the model's metadata_props
    (how a detector carries its prior boxes to the evaluators)."""
    path = Path(path)
    model.eval()
    dynamic = {name: {0: "batch"} for name in ("input", *output_names)}
    mode = torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL
    tmp = path.with_name(path.name + ".export.tmp")
    with warnings.catch_warnings():
        # The TorchScript exporter announces its own deprecation (several warnings); nothing else.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model, (torch.zeros(input_shape),), str(tmp), dynamo=False, input_names=["input"],
            output_names=list(output_names), dynamic_axes=dynamic, opset_version=17, training=mode,
        )  # fmt: skip
    exported = onnx.load(str(tmp))
    tmp.unlink()
    _unshare_constants(exported.graph)
    for node in exported.graph.node:
        parts = node.name.split("/")
        if node.op_type == "Conv" and len(parts) == 3 and parts[0] == "" and parts[2] == "Conv":
            node.name = parts[1]
    for key, value in (metadata or {}).items():
        entry = exported.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    save_model(exported, path)
    return path


def _unshare_constants(graph: onnx.GraphProto) -> None:
    """The exporter stores equal initializers once and reads the copies through Identity nodes
    (all-zero biases of a fresh model, for one); give each reader its own initializer again, so
    that pruning one layer's channels does not touch another's (shared tensors are pinned)."""
    inits = {t.name: t for t in graph.initializer}
    for node in [n for n in graph.node if n.op_type == "Identity" and n.input[0] in inits]:
        copy = onnx.TensorProto()
        copy.CopyFrom(inits[node.input[0]])
        copy.name = node.output[0]
        graph.initializer.append(copy)
        graph.node.remove(node)
