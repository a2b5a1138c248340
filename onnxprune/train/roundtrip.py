"""ONNX -> torch -> ONNX: train an ONNX model's weights in PyTorch and write them back into the
original graph (same nodes, names and metadata), instead of re-exporting a different graph.

onnx2torch builds the trainable module. Its layers absorb their weights (Conv, ConvTranspose,
BatchNorm with running statistics, Gemm as `nn.Linear`, Instance/LayerNorm); the other constants
become buffers under `initializers.` that the fx graph reads by name. `TensorLink` names, for each
torch tensor, the ONNX initializer it holds and how (Gemm: transposed when transB=0, scaled by
alpha or beta), so writing back is the exact inverse of the conversion.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from torch import fx, nn

from onnxprune.model_io import InputError, load_model

__all__ = ["TensorLink", "TorchModel", "to_torch", "write_back"]

# onnx2torch's Slice indexes tensors with a list, which torch warns about on every forward pass;
# the warning is about onnx2torch's code and says nothing to our users.
warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning, module="onnx2torch")


@dataclass(frozen=True)
class TensorLink:
    """torch tensor `torch_name` (a state_dict key) holds ONNX initializer `initializer`, as
    `value.T if transpose else value`, times `scale`."""

    initializer: str
    torch_name: str
    transpose: bool = False
    scale: float = 1.0


@dataclass
class TorchModel:
    """A trainable module made from an ONNX model, and how its tensors map back."""

    module: fx.GraphModule
    links: list[TensorLink]
    source: onnx.ModelProto

    def onnx_names(self) -> dict[str, tuple[str, ...]]:
        """torch module name -> the name and output names of the ONNX node it was made from, so
        that layer globs written for the ONNX graph (as `prune --layers` takes them) also select
        torch modules, whose names onnx2torch rewrites ('/layer1/layer1.0/conv1/Conv' becomes
        'layer1/layer1/0/conv1/Conv')."""
        nodes = {n.output[0]: n for n in self.source.graph.node if n.output}
        names = {}
        for name, sub in self.module.named_modules():
            mapping = getattr(sub, "onnx_mapping", None)
            if mapping is not None and mapping.outputs and mapping.outputs[0] in nodes:
                node = nodes[mapping.outputs[0]]
                names[name] = (node.name, *node.output)
        return names

    def trainable_links(self) -> list[TensorLink]:
        params = dict(self.module.named_parameters())
        return [link for link in self.links if link.torch_name in params]


# Inputs of each ONNX op that onnx2torch folds into the layer it builds: (torch attribute, input index).
_ABSORBED = {
    "Conv": (("weight", 1), ("bias", 2)),
    "ConvTranspose": (("weight", 1), ("bias", 2)),
    "BatchNormalization": (("weight", 1), ("bias", 2), ("running_mean", 3), ("running_var", 4)),
    "InstanceNormalization": (("weight", 1), ("bias", 2)),
    "LayerNormalization": (("weight", 1), ("bias", 2)),
    "Gemm": (("weight", 1), ("bias", 2)),
}


def to_torch(model: onnx.ModelProto | str | os.PathLike) -> TorchModel:
    """A trainable torch module equal to `model`, with the links back to its initializers.
    Raises InputError (one line) when onnx2torch cannot convert the model."""
    import onnx2torch

    source = load_model(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # onnx2torch warns about ops it converts loosely
            module = onnx2torch.convert(source, attach_onnx_mapping=True)
    except (NotImplementedError, KeyError, ValueError, RuntimeError) as err:
        name = model if not isinstance(model, onnx.ModelProto) else "the model"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{name}: onnx2torch cannot convert it to a trainable module ({first})") from err
    links = _links(source, module)
    return TorchModel(module, links, source)


def _links(source: onnx.ModelProto, module: fx.GraphModule) -> list[TensorLink]:
    nodes_by_output = {n.output[0]: n for n in source.graph.node if n.output}
    initializers = {t.name for t in source.graph.initializer}
    links: list[TensorLink] = []
    modules = dict(module.named_modules())
    for name, sub in modules.items():
        mapping = getattr(sub, "onnx_mapping", None)
        if mapping is None or not mapping.outputs:
            continue
        node = nodes_by_output.get(mapping.outputs[0])
        own = dict(sub.named_parameters(recurse=False)) | {
            k: v for k, v in sub.named_buffers(recurse=False) if k != "num_batches_tracked"
        }
        if not own:
            continue
        if node is None or node.op_type not in _ABSORBED:
            continue  # e.g. a Constant node's value: not an initializer (checked below for parameters)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        for attr, index in _ABSORBED[node.op_type]:
            if attr not in own:
                continue
            if index >= len(node.input) or node.input[index] not in initializers:
                raise AssertionError(f"{node.name}: torch holds {attr} but input {index} is not an initializer")
            transpose, scale = False, 1.0
            if node.op_type == "Gemm":
                transpose = attr == "weight" and not attrs.get("transB", 0)
                scale = float(attrs.get("alpha", 1.0)) if attr == "weight" else float(attrs.get("beta", 1.0))
            links.append(TensorLink(node.input[index], f"{name}.{attr}", transpose, scale))
            own.pop(attr)
        if own:
            raise AssertionError(f"{node.name}: torch tensors {sorted(own)} have no ONNX initializer")
    # Constants passed to modules as arguments: fx get_attr nodes named initializers.onnx_initializer_k.
    for fx_node in module.graph.nodes:
        if fx_node.op != "call_module":
            continue
        mapping = getattr(modules[fx_node.target], "onnx_mapping", None)
        if mapping is None:
            continue
        args = list(fx_node.args) + list(fx_node.kwargs.values())
        for arg, value_name in zip(args, mapping.inputs, strict=False):
            if isinstance(arg, fx.Node) and arg.op == "get_attr" and value_name in initializers:
                links.append(TensorLink(value_name, str(arg.target)))
    unlinked = set(dict(module.named_parameters())) - {link.torch_name for link in links}
    if unlinked:
        raise AssertionError(f"trainable tensors without an ONNX initializer: {sorted(unlinked)}")
    return links


def write_back(torch_model: TorchModel, module: nn.Module | None = None) -> onnx.ModelProto:
    """A copy of the source ONNX model whose initializers hold the (trained) tensors of `module`
    (default: the converted module). Nodes, names, opset and metadata are the source's."""
    module = module if module is not None else torch_model.module
    state = module.state_dict()
    out = onnx.ModelProto()
    out.CopyFrom(torch_model.source)
    tensors = {t.name: t for t in out.graph.initializer}
    written: set[str] = set()
    for link in torch_model.links:
        if link.initializer in written:
            continue  # one initializer read by several modules: the first holds it
        value = state[link.torch_name].detach().to("cpu", torch.float64).numpy()
        if link.scale != 1.0:
            value = value / link.scale
        if link.transpose:
            value = value.T
        target = tensors[link.initializer]
        old_dtype = onnx.helper.tensor_dtype_to_np_dtype(target.data_type)
        if tuple(value.shape) != tuple(target.dims):
            raise AssertionError(f"{link.torch_name} has shape {value.shape}; {link.initializer} has {tuple(target.dims)}")
        target.CopyFrom(onnx.numpy_helper.from_array(np.ascontiguousarray(value.astype(old_dtype)), link.initializer))
        written.add(link.initializer)
    return out
