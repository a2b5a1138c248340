"""Which inner tensors a pruned student matches to its teacher's (feature distillation), and the
model copies that return them. Pruning a residual network's inner block channels leaves the
residual stream's shape unchanged, so the student can be taught what each block should output,
not only the final logits: on ResNet-20 at half the FLOPs, taught by the original fine-tuned on the
data, this added 2.5 points after 4 epochs on 10,000 CIFAR-10 images, but nothing after 8 epochs on
all 50,000 (benchmarks/README.md).
"""

from __future__ import annotations

import onnx

__all__ = ["residual_outputs", "shared_features", "with_outputs"]

# Activations that may follow a residual merge; the block's output is then the activation's.
_ACTIVATIONS = {"Relu", "LeakyRelu", "PRelu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Elu", "Selu"}


def residual_outputs(model: onnx.ModelProto) -> list[str]:
    """The output of every residual merge (an Add or Sum of two or more computed tensors), taken
    after the activation that follows it when that activation is its only reader."""
    graph = model.graph
    constants = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = []
    for node in graph.node:
        if node.op_type not in ("Add", "Sum") or sum(1 for i in node.input if i and i not in constants) < 2:
            continue
        name = node.output[0]
        after = readers.get(name, [])
        if len(after) == 1 and after[0].op_type in _ACTIVATIONS and after[0].input[0] == name:
            name = after[0].output[0]
        outputs.append(name)
    return outputs


def _shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    """Inferred shape of every inner tensor (dims as ints, or names for symbolic ones)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims)
    return shapes


def shared_features(student: onnx.ModelProto, teacher: onnx.ModelProto) -> list[str]:
    """The student's residual-merge outputs that the teacher computes too, under the same name and
    with the same shape (the batch axis aside): those a prune left whole."""
    theirs, ours = _shapes(teacher), _shapes(student)
    outputs = {o.name for o in student.graph.output}
    return [name for name in residual_outputs(student)
            if name not in outputs and name in ours and name in theirs and ours[name][1:] == theirs[name][1:]
            and all(isinstance(d, int) and d > 0 for d in ours[name][1:])]  # fmt: skip


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of `model` that also returns the tensors `names` (after its own outputs)."""
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for name in names:
        out.graph.output.append(inferred[name])
    return out
