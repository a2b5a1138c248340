"""Small ONNX CNNs of the graph topologies the pruner must handle, with ground truth about them.

Each builder returns a `Topology`: the model (valid under `onnx.checker` full check, runnable in
onnxruntime on CPU) and which Conv nodes can lose output channels (`prunable`), which cannot
(`pinned`), which Conv nodes read each prunable conv's channels (`consumers`) and which convs are
tied by residual Adds (`tied`). The torch-built topologies are exported with the TorchScript
exporter like `onnxprune.zoo.vgg.export_onnx` (opset 17), with static shapes and batch 1, so node
names follow the module names: "/conv1/Conv", "/block1/conv2/Conv", ...

`bn="folded"` exports in eval mode with constant folding, which folds each BatchNorm into the
preceding Conv (the conv gets a bias). `bn="separate"` keeps the BatchNormalization nodes: the
module is in eval mode but exported with `training=TrainingMode.PRESERVE`, which skips the
exporter's eval-mode Conv+BN fusion while constant folding stays on for everything else. Every
BatchNorm gets random affine parameters and running statistics, so folding changes the weights.

Conventions of the ground truth:
- Convs tied by a residual Add are in `prunable` and together in one `tied` group (their channels
  can only be removed together).
- `consumers` lists a prunable conv only when every path from its output reaches Conv nodes
  through channel-wise, zero-preserving ops (BatchNorm, activations, pooling, a per-channel
  constant bias Add or a scalar Mul); convs whose channels reach a Gemm/MatMul, Concat, Split,
  residual Add, L2Norm or a depthwise conv are left out.
- Depthwise convs are in neither `prunable` nor `pinned`: their channels follow the conv before.

Helpers that edit a deep copy of a model: `zero_channels`, `constant_channels`,
`zero_consumer_slices`, `with_outputs`; `channel_tensor` names the tensor where a conv's zeroed
channels are visible, and `run` runs a model in onnxruntime on CPU.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

__all__ = [
    "BN_MODES",
    "BUILDERS",
    "TORCH_MODULES",
    "Topology",
    "all_topologies",
    "channel_tensor",
    "constant_channels",
    "inception_concat",
    "mobilenet_dw",
    "fpn_resize_add",
    "onnx_chain_misc",
    "resnet_blocks",
    "run",
    "ssd_heads",
    "torch_module",
    "vgg_chain",
    "with_outputs",
    "zero_channels",
    "zero_consumer_slices",
]

OPSET = 17
BN_MODES = ("folded", "separate")
SEED = 0


@dataclass
class Topology:
    name: str
    model: onnx.ModelProto  # passes onnx.checker.check_model(full_check=True), runs in onnxruntime CPU
    input_shape: tuple[int, ...]  # static shape of the single graph input
    prunable: dict[str, int]  # Conv node name -> out channels, for convs whose output channels can be removed
    pinned: list[str]  # Conv node names whose output channels must stay (head convs feeding graph outputs)
    consumers: dict[str, list[str]] = field(default_factory=dict)  # prunable conv -> Conv nodes reading it
    tied: list[list[str]] = field(default_factory=list)  # groups of convs tied by residual Add


# ---------------------------------------------------------------------------------------------
# torch modules
# ---------------------------------------------------------------------------------------------


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """A bias-free kxk conv with "same" padding and the BatchNorm after it."""
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False)
    return conv, nn.BatchNorm2d(cout)


def _check_bn(bn: str) -> None:
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {BN_MODES}, not {bn!r}")


class VggChain(nn.Module):
    """conv-BN-ReLU x4 (a MaxPool after the second), Flatten -> Gemm -> ReLU -> Gemm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(3, 8)
        self.conv2, self.bn2 = _conv_bn(8, 8)
        self.pool = nn.MaxPool2d(2)
        self.conv3, self.bn3 = _conv_bn(8, 16)
        self.conv4, self.bn4 = _conv_bn(16, 12)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(12 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.relu(self.bn4(self.conv4(x)))
        return self.fc2(F.relu(self.fc1(self.flatten(x))))


class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU. The shortcut is the identity,
    or a 1x1 conv + BN ("down") when the stride or the width changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, cout, stride=stride)
        self.conv2, self.bn2 = _conv_bn(cout, cout)
        self.down: nn.Module | None = None
        self.down_bn: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.down, self.down_bn = _conv_bn(cin, cout, k=1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.down is None else self.down_bn(self.down(x))
        return F.relu(y + shortcut)


class ResnetBlocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.stem_bn = _conv_bn(3, 8)
        self.block1 = BasicBlock(8, 8)
        self.block2 = BasicBlock(8, 16, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(x)))
        x = self.block2(self.block1(x))
        return self.fc(self.flatten(self.pool(x)))


class InceptionConcat(nn.Module):
    """stem; branches 1x1 | 1x1->3x3 | maxpool3x3->1x1, Concat; 1x1 conv; 3x3 conv; GAP; Gemm."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.stem_bn = _conv_bn(3, 8)
        self.branch1, self.branch1_bn = _conv_bn(8, 4, k=1)
        self.branch2a, self.branch2a_bn = _conv_bn(8, 4, k=1)
        self.branch2b, self.branch2b_bn = _conv_bn(4, 6)
        self.branch3_pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.branch3, self.branch3_bn = _conv_bn(8, 5, k=1)
        self.mix, self.mix_bn = _conv_bn(4 + 6 + 5, 8, k=1)
        self.conv, self.conv_bn = _conv_bn(8, 12)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(x)))
        b1 = F.relu(self.branch1_bn(self.branch1(x)))
        b2 = F.relu(self.branch2a_bn(self.branch2a(x)))
        b2 = F.relu(self.branch2b_bn(self.branch2b(b2)))
        b3 = F.relu(self.branch3_bn(self.branch3(self.branch3_pool(x))))
        x = torch.cat([b1, b2, b3], dim=1)
        x = F.relu(self.mix_bn(self.mix(x)))
        x = F.relu(self.conv_bn(self.conv(x)))
        return self.fc(self.flatten(self.pool(x)))


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv (groups = channels) + BN + ReLU, 1x1 pointwise conv + BN + ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.dw, self.dw_bn = _conv_bn(cin, cin, stride=stride, groups=cin)
        self.pw, self.pw_bn = _conv_bn(cin, cout, k=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.dw_bn(self.dw(x)))
        return F.relu(self.pw_bn(self.pw(x)))


class MobilenetDw(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.stem_bn = _conv_bn(3, 8, stride=2)
        self.block1 = DepthwiseSeparable(8, 12)
        self.block2 = DepthwiseSeparable(12, 16, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(x)))
        x = self.block2(self.block1(x))
        return self.fc(self.flatten(self.pool(x)))


class FpnResizeAdd(nn.Module):
    """Backbone C3 (stride 2) and C4 (stride 4); 1x1 laterals to 8 channels; P4 = lat4(C4),
    P3 = lat3(C3) + nearest-upsample(P4); a 3x3 output conv on each, the graph outputs p3 and p4."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(3, 8, stride=2)
        self.conv2, self.bn2 = _conv_bn(8, 16, stride=2)
        self.lateral3 = nn.Conv2d(8, 8, 1)
        self.lateral4 = nn.Conv2d(16, 8, 1)
        self.output3 = nn.Conv2d(8, 6, 3, padding=1)
        self.output4 = nn.Conv2d(8, 6, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c3 = F.relu(self.bn1(self.conv1(x)))
        c4 = F.relu(self.bn2(self.conv2(c3)))
        p4 = self.lateral4(c4)
        p3 = self.lateral3(c3) + F.interpolate(p4, scale_factor=2, mode="nearest")
        return self.output3(p3), self.output4(p4)


class L2Norm(nn.Module):
    """SSD's L2Norm: x / (sqrt(sum over channels of x^2) + eps), times a learnable per-channel scale."""

    def __init__(self, channels: int, scale: float = 20.0) -> None:
        super().__init__()
        self.eps = 1e-10
        self.weight = nn.Parameter(torch.full((channels,), scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        x = torch.div(x, norm)
        return self.weight.unsqueeze(0).unsqueeze(2).unsqueeze(3).expand_as(x) * x


class SsdHeads(nn.Module):
    """Backbone conv1 (stride 2), conv2 -> feature A (16x16 for 32x32 input), conv3 (stride 2), conv4
    -> feature B (8x8). A goes through L2Norm to its heads and on to conv3. Each scale has a cls head
    (anchors x classes) and a loc head (anchors x 4), permuted to NHWC, reshaped to (1, -1, k) and
    concatenated across scales into the outputs `scores` and `boxes`."""

    NUM_CLASSES = 3
    ANCHORS = (2, 3)

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(3, 8, stride=2)
        self.conv2, self.bn2 = _conv_bn(8, 8)
        self.l2norm = L2Norm(8)
        self.conv3, self.bn3 = _conv_bn(8, 16, stride=2)
        self.conv4, self.bn4 = _conv_bn(16, 12)
        a, b = self.ANCHORS
        self.cls_a = nn.Conv2d(8, a * self.NUM_CLASSES, 3, padding=1)
        self.loc_a = nn.Conv2d(8, a * 4, 3, padding=1)
        self.cls_b = nn.Conv2d(12, b * self.NUM_CLASSES, 3, padding=1)
        self.loc_b = nn.Conv2d(12, b * 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        feat_a = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(feat_a)))
        feat_b = F.relu(self.bn4(self.conv4(x)))
        norm_a = self.l2norm(feat_a)
        k = self.NUM_CLASSES
        scores = [
            self.cls_a(norm_a).permute(0, 2, 3, 1).reshape(1, -1, k),
            self.cls_b(feat_b).permute(0, 2, 3, 1).reshape(1, -1, k),
        ]
        boxes = [
            self.loc_a(norm_a).permute(0, 2, 3, 1).reshape(1, -1, 4),
            self.loc_b(feat_b).permute(0, 2, 3, 1).reshape(1, -1, 4),
        ]
        return torch.cat(scores, dim=1), torch.cat(boxes, dim=1)


def _randomize(module: nn.Module) -> None:
    """Non-trivial BatchNorm affine parameters and running statistics, and L2Norm scales (draws
    from the torch generator; call under a fixed seed)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
            elif isinstance(m, L2Norm):
                m.weight.uniform_(5.0, 20.0)


def _module(cls: type[nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = cls()
        _randomize(module)
    return module.eval()


# (module class, input shape, output names) of each torch-built topology
_TORCH_SPECS: dict[str, tuple[type[nn.Module], tuple[int, ...], tuple[str, ...]]] = {
    "vgg_chain": (VggChain, (1, 3, 16, 16), ("logits",)),
    "resnet_blocks": (ResnetBlocks, (1, 3, 16, 16), ("logits",)),
    "inception_concat": (InceptionConcat, (1, 3, 16, 16), ("logits",)),
    "mobilenet_dw": (MobilenetDw, (1, 3, 32, 32), ("logits",)),
    "fpn_resize_add": (FpnResizeAdd, (1, 3, 32, 32), ("p3", "p4")),
    "ssd_heads": (SsdHeads, (1, 3, 32, 32), ("scores", "boxes")),
}


def torch_module(name: str, seed: int = SEED) -> tuple[nn.Module, tuple[int, ...]]:
    """The eval-mode torch module that builder `name` exports (same seed), and its input shape."""
    cls, shape, _ = _TORCH_SPECS[name]
    return _module(cls, seed), shape


TORCH_MODULES = tuple(_TORCH_SPECS)  # names of the torch-built topologies


def _export(name: str, bn: str, seed: int) -> onnx.ModelProto:
    """Export like onnxprune.zoo.vgg.export_onnx (TorchScript exporter, opset 17), but with static
    shapes, the topology's output names, and BatchNorm kept when bn == "separate"."""
    _check_bn(bn)
    module, shape = torch_module(name, seed)
    model = export_module(module, shape, _TORCH_SPECS[name][2], bn)
    has_bn = any(n.op_type == "BatchNormalization" for n in model.graph.node)
    if has_bn != (bn == "separate"):
        raise AssertionError(f"{name}: bn={bn!r} export has BatchNormalization nodes: {has_bn}")
    return model


def export_module(module: nn.Module, shape: tuple[int, ...], outputs: tuple[str, ...], bn: str = "folded") -> onnx.ModelProto:
    """An eval-mode module exported with the TorchScript exporter at opset 17, static shapes, input
    "input" and the given output names; BatchNorm kept as its own node when bn == "separate"."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter announces its own deprecation (several warnings).
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        # PRESERVE on an eval-mode module exports it in inference mode; the exporter warns about
        # constant folding in training-amenable mode, which does not apply to eval mode.
        warnings.filterwarnings("ignore", message="It is recommended that constant folding be turned off")
        torch.onnx.export(
            module,
            (torch.zeros(shape),),
            buffer,
            dynamo=False,
            input_names=["input"],
            output_names=list(outputs),
            opset_version=OPSET,
            training=torch.onnx.TrainingMode.PRESERVE if bn == "separate" else torch.onnx.TrainingMode.EVAL,
        )
    return onnx.load_from_string(buffer.getvalue())


def _conv(*parts: str) -> str:
    """The TorchScript exporter's name of the Conv node of module path `parts`."""
    return "/" + "/".join(parts) + "/Conv"


# ---------------------------------------------------------------------------------------------
# builders
# ---------------------------------------------------------------------------------------------


def vgg_chain(bn: str = "folded", seed: int = SEED) -> Topology:
    """conv1(3->8)-conv2(8->8)-MaxPool-conv3(8->16)-conv4(16->12), each + BN + ReLU; Flatten, Gemm,
    ReLU, Gemm -> logits (1, 10). Input (1, 3, 16, 16). conv4's channels reach the first Gemm."""
    c1, c2, c3, c4 = (_conv(f"conv{i}") for i in range(1, 5))
    return Topology(
        name=f"vgg_chain[{bn}]",
        model=_export("vgg_chain", bn, seed),
        input_shape=_TORCH_SPECS["vgg_chain"][1],
        prunable={c1: 8, c2: 8, c3: 16, c4: 12},
        pinned=[],
        consumers={c1: [c2], c2: [c3], c3: [c4]},
        tied=[],
    )


def resnet_blocks(bn: str = "folded", seed: int = SEED) -> Topology:
    """stem(3->8); block1: 8->8 with identity shortcut; block2: 8->16 stride 2 with a 1x1 stride-2
    conv + BN shortcut ("down"); GlobalAveragePool, Flatten, Gemm -> logits (1, 10). Input
    (1, 3, 16, 16). The stem is tied to block1.conv2, block2.conv2 to block2.down."""
    stem = _conv("stem")
    b1c1, b1c2 = _conv("block1", "conv1"), _conv("block1", "conv2")
    b2c1, b2c2, b2d = _conv("block2", "conv1"), _conv("block2", "conv2"), _conv("block2", "down")
    return Topology(
        name=f"resnet_blocks[{bn}]",
        model=_export("resnet_blocks", bn, seed),
        input_shape=_TORCH_SPECS["resnet_blocks"][1],
        prunable={stem: 8, b1c1: 8, b1c2: 8, b2c1: 16, b2c2: 16, b2d: 16},
        pinned=[],
        consumers={b1c1: [b1c2], b2c1: [b2c2]},
        tied=[[stem, b1c2], [b2c2, b2d]],
    )


def inception_concat(bn: str = "folded", seed: int = SEED) -> Topology:
    """stem(3->8); branches branch1 (1x1, 4) | branch2a (1x1, 4) -> branch2b (3x3, 6) |
    branch3_pool (3x3 MaxPool, stride 1) -> branch3 (1x1, 5), Concat (15 channels); mix (1x1, 8);
    conv (3x3, 12); GAP, Flatten, Gemm -> logits (1, 10). Input (1, 3, 16, 16)."""
    stem, b1, b2a, b2b, b3 = (_conv(n) for n in ("stem", "branch1", "branch2a", "branch2b", "branch3"))
    mix, conv = _conv("mix"), _conv("conv")
    return Topology(
        name=f"inception_concat[{bn}]",
        model=_export("inception_concat", bn, seed),
        input_shape=_TORCH_SPECS["inception_concat"][1],
        prunable={stem: 8, b1: 4, b2a: 4, b2b: 6, b3: 5, mix: 8, conv: 12},
        pinned=[],
        consumers={stem: [b1, b2a, b3], b2a: [b2b], mix: [conv]},
        tied=[],
    )


def mobilenet_dw(bn: str = "folded", seed: int = SEED) -> Topology:
    """stem (3->8, stride 2); block1: dw 3x3 (8, groups 8) + pw 1x1 (8->12); block2: dw 3x3 stride 2
    (12, groups 12) + pw 1x1 (12->16); each conv + BN + ReLU; GAP, Flatten, Gemm -> logits (1, 10).
    Input (1, 3, 32, 32). The depthwise convs are neither prunable nor pinned, and the stem and
    block1.pw have no `consumers` entry (their channels go through a depthwise conv)."""
    stem, pw1, pw2 = _conv("stem"), _conv("block1", "pw"), _conv("block2", "pw")
    return Topology(
        name=f"mobilenet_dw[{bn}]",
        model=_export("mobilenet_dw", bn, seed),
        input_shape=_TORCH_SPECS["mobilenet_dw"][1],
        prunable={stem: 8, pw1: 12, pw2: 16},
        pinned=[],
        consumers={},
        tied=[],
    )


def fpn_resize_add(bn: str = "folded", seed: int = SEED) -> Topology:
    """conv1 (3->8, stride 2) = C3, conv2 (8->16, stride 2) = C4, each + BN + ReLU; lateral3 (1x1,
    8->8), lateral4 (1x1, 16->8); P3 = lateral3 + Resize(nearest, x2)(P4); output3/output4 (3x3, 6
    channels, with bias) are the graph outputs p3 (1, 6, 16, 16) and p4 (1, 6, 8, 8). Input
    (1, 3, 32, 32). The laterals are tied; the output convs are pinned."""
    c1, c2 = _conv("conv1"), _conv("conv2")
    l3, l4 = _conv("lateral3"), _conv("lateral4")
    return Topology(
        name=f"fpn_resize_add[{bn}]",
        model=_export("fpn_resize_add", bn, seed),
        input_shape=_TORCH_SPECS["fpn_resize_add"][1],
        prunable={c1: 8, c2: 16, l3: 8, l4: 8},
        pinned=[_conv("output3"), _conv("output4")],
        consumers={c1: [c2, l3], c2: [l4]},
        tied=[[l3, l4]],
    )


def ssd_heads(bn: str = "folded", seed: int = SEED) -> Topology:
    """conv1 (3->8, stride 2), conv2 (8->8) = feature A (16x16), conv3 (8->16, stride 2), conv4
    (16->12) = feature B (8x8), each + BN + ReLU; L2Norm(A) feeds cls_a (2 anchors x 3 classes) and
    loc_a (2 x 4); B feeds cls_b (3 x 3) and loc_b (3 x 4). Outputs scores (1, 704, 3) and boxes
    (1, 704, 4). Input (1, 3, 32, 32). conv2 is prunable (the L2Norm scale is per channel, and zero
    channels do not change the norm) but has no `consumers` entry: its channels reach the heads
    through the L2Norm."""
    c1, c2, c3, c4 = (_conv(f"conv{i}") for i in range(1, 5))
    heads = [_conv(n) for n in ("cls_a", "loc_a", "cls_b", "loc_b")]
    return Topology(
        name=f"ssd_heads[{bn}]",
        model=_export("ssd_heads", bn, seed),
        input_shape=_TORCH_SPECS["ssd_heads"][1],
        prunable={c1: 8, c2: 8, c3: 16, c4: 12},
        pinned=heads,
        consumers={c1: [c2], c3: [c4], c4: [_conv("cls_b"), _conv("loc_b")]},
        tied=[],
    )


def onnx_chain_misc(seed: int = SEED) -> Topology:
    """Built with onnx.helper (opset 17), input (1, 3, 16, 16):
    conv_a (3->8, SAME_UPPER, no bias) -> add_a (+ constant (8,1,1)) -> prelu_a (slope (8,1,1))
    -> conv_b (8->8, no bias) -> mul_b (x scalar 0.5) -> clip_b (0, 6)
    -> conv_c (8->8, bias) -> hardswish_c -> split_c (axis 1, [4, 4])
    -> conv_d0 (1x1, 4->4) | conv_d1 (3x3, 4->4) -> concat_d (axis 1)
    -> conv_e (8->6, stride 2) -> flatten_e -> matmul_fc (384, 10) -> add_fc (+ (10,)) -> logits (1, 10).
    conv_c is prunable (its Split sizes change with it); conv_d0/conv_d1 reach the Concat, conv_e
    the MatMul. The per-channel bias Add, PRelu, scalar Mul and Clip keep zero channels zero."""
    rng = np.random.default_rng(seed)

    def init(name: str, shape: tuple[int, ...], scale: float = 0.3) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    initializers = [
        init("conv_a.weight", (8, 3, 3, 3)),
        init("add_a.bias", (8, 1, 1)),
        numpy_helper.from_array(rng.uniform(0.05, 0.3, (8, 1, 1)).astype(np.float32), "prelu_a.slope"),
        init("conv_b.weight", (8, 8, 3, 3)),
        numpy_helper.from_array(np.array(0.5, np.float32), "mul_b.scale"),
        numpy_helper.from_array(np.array(0.0, np.float32), "clip_b.min"),
        numpy_helper.from_array(np.array(6.0, np.float32), "clip_b.max"),
        init("conv_c.weight", (8, 8, 3, 3)),
        init("conv_c.bias", (8,)),
        numpy_helper.from_array(np.array([4, 4], np.int64), "split_c.split"),
        init("conv_d0.weight", (4, 4, 1, 1)),
        init("conv_d0.bias", (4,)),
        init("conv_d1.weight", (4, 4, 3, 3)),
        init("conv_d1.bias", (4,)),
        init("conv_e.weight", (6, 8, 3, 3)),
        init("conv_e.bias", (6,)),
        init("fc.weight", (6 * 8 * 8, 10), 0.1),
        init("fc.bias", (10,)),
    ]
    node = helper.make_node
    nodes = [
        node("Conv", ["input", "conv_a.weight"], ["a"], name="conv_a", auto_pad="SAME_UPPER", kernel_shape=[3, 3]),
        node("Add", ["a", "add_a.bias"], ["a_bias"], name="add_a"),
        node("PRelu", ["a_bias", "prelu_a.slope"], ["a_act"], name="prelu_a"),
        node("Conv", ["a_act", "conv_b.weight"], ["b"], name="conv_b", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        node("Mul", ["b", "mul_b.scale"], ["b_scaled"], name="mul_b"),
        node("Clip", ["b_scaled", "clip_b.min", "clip_b.max"], ["b_act"], name="clip_b"),
        node("Conv", ["b_act", "conv_c.weight", "conv_c.bias"], ["c"], name="conv_c", kernel_shape=[3, 3],
             pads=[1, 1, 1, 1]),
        node("HardSwish", ["c"], ["c_act"], name="hardswish_c"),
        node("Split", ["c_act", "split_c.split"], ["c_half0", "c_half1"], name="split_c", axis=1),
        node("Conv", ["c_half0", "conv_d0.weight", "conv_d0.bias"], ["d0"], name="conv_d0", kernel_shape=[1, 1]),
        node("Conv", ["c_half1", "conv_d1.weight", "conv_d1.bias"], ["d1"], name="conv_d1", kernel_shape=[3, 3],
             pads=[1, 1, 1, 1]),
        node("Concat", ["d0", "d1"], ["d"], name="concat_d", axis=1),
        node("Conv", ["d", "conv_e.weight", "conv_e.bias"], ["e"], name="conv_e", kernel_shape=[3, 3],
             pads=[1, 1, 1, 1], strides=[2, 2]),
        node("Flatten", ["e"], ["e_flat"], name="flatten_e", axis=1),
        node("MatMul", ["e_flat", "fc.weight"], ["fc_out"], name="matmul_fc"),
        node("Add", ["fc_out", "fc.bias"], ["logits"], name="add_fc"),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "onnx_chain_misc",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    return Topology(
        name="onnx_chain_misc",
        model=model,
        input_shape=(1, 3, 16, 16),
        prunable={"conv_a": 8, "conv_b": 8, "conv_c": 8, "conv_d0": 4, "conv_d1": 4, "conv_e": 6},
        pinned=[],
        consumers={"conv_a": ["conv_b"], "conv_b": ["conv_c"]},
        tied=[],
    )


# name -> (builder, whether it takes bn)
BUILDERS: dict[str, tuple[Callable[..., Topology], bool]] = {
    "vgg_chain": (vgg_chain, True),
    "resnet_blocks": (resnet_blocks, True),
    "inception_concat": (inception_concat, True),
    "mobilenet_dw": (mobilenet_dw, True),
    "fpn_resize_add": (fpn_resize_add, True),
    "ssd_heads": (ssd_heads, True),
    "onnx_chain_misc": (onnx_chain_misc, False),
}


def all_topologies() -> list[Topology]:
    """Every builder, with each bn mode where it applies."""
    out = []
    for build, takes_bn in BUILDERS.values():
        out.extend([build(bn) for bn in BN_MODES] if takes_bn else [build()])
    return out


# ---------------------------------------------------------------------------------------------
# model edits
# ---------------------------------------------------------------------------------------------


def _node(graph: onnx.GraphProto, name: str, op_type: str | None = "Conv") -> onnx.NodeProto:
    found = [n for n in graph.node if n.name == name]
    if len(found) != 1:
        raise ValueError(f"{len(found)} nodes named {name!r} (expected one)")
    if op_type is not None and found[0].op_type != op_type:
        raise ValueError(f"node {name!r} is a {found[0].op_type}, not a {op_type}")
    return found[0]


def _uses(graph: onnx.GraphProto, tensor: str) -> int:
    """How many node inputs and graph outputs read `tensor`."""
    return sum(list(n.input).count(tensor) for n in graph.node) + sum(o.name == tensor for o in graph.output)


def _consumers(graph: onnx.GraphProto, tensor: str) -> list[onnx.NodeProto]:
    return [n for n in graph.node if tensor in n.input]


class _Initializers:
    """Read-modify-write access to a graph's initializers, refusing tensors read more than once."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.index = {t.name: i for i, t in enumerate(graph.initializer)}

    def get(self, name: str, owner: str) -> np.ndarray:
        if name not in self.index:
            raise ValueError(f"{owner}: input {name!r} is not an initializer")
        if _uses(self.graph, name) != 1:
            raise ValueError(f"{owner}: initializer {name!r} is shared with another node")
        return numpy_helper.to_array(self.graph.initializer[self.index[name]]).copy()

    def set(self, name: str, array: np.ndarray) -> None:
        self.graph.initializer[self.index[name]].CopyFrom(numpy_helper.from_array(array, name))

    def add(self, name: str, array: np.ndarray) -> None:
        self.index[name] = len(self.graph.initializer)
        self.graph.initializer.append(numpy_helper.from_array(array, name))


def _channel_list(channels: Iterable[int], count: int, owner: str) -> list[int]:
    out = [int(c) for c in channels]
    bad = [c for c in out if not 0 <= c < count]
    if bad:
        raise ValueError(f"{owner}: channels {bad} out of range for {count} output channels")
    return out


def _per_channel_constant(graph: onnx.GraphProto, add: onnx.NodeProto, tensor: str, channels: int) -> str | None:
    """The other input of Add `add` if it is an initializer of shape (C,1,1) or (1,C,1,1)."""
    others = [i for i in add.input if i != tensor]
    if len(others) != 1:
        return None
    init = next((t for t in graph.initializer if t.name == others[0]), None)
    if init is None:
        return None
    dims = list(init.dims)
    return others[0] if dims in ([channels, 1, 1], [1, channels, 1, 1]) else None


def _zero_filters(model: onnx.ModelProto, conv_name: str, channels: Iterable[int], bias_value: float | None):
    """Shared part of zero_channels / constant_channels: weight[c] = 0; bias[c] = 0 (bias_value None)
    or bias_value (adding a bias input if needed). Returns (copy, inits, conv node, channel list)."""
    model = copy.deepcopy(model)
    graph = model.graph
    conv = _node(graph, conv_name)
    inits = _Initializers(graph)
    weight = inits.get(conv.input[1], conv_name)
    chans = _channel_list(channels, weight.shape[0], conv_name)
    weight[chans] = 0
    inits.set(conv.input[1], weight)
    has_bias = len(conv.input) > 2 and conv.input[2] != ""
    if has_bias:
        bias = inits.get(conv.input[2], conv_name)
        bias[chans] = 0 if bias_value is None else bias_value
        inits.set(conv.input[2], bias)
    elif bias_value is not None:
        name, k = f"{conv_name}.bias", 0
        existing = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
        while name in existing:
            k += 1
            name = f"{conv_name}.bias_{k}"
        bias = np.zeros(weight.shape[0], weight.dtype)
        bias[chans] = bias_value
        inits.add(name, bias)
        if len(conv.input) > 2:
            conv.input[2] = name
        else:
            conv.input.append(name)
    return model, inits, conv, chans


def zero_channels(model: onnx.ModelProto, conv_name: str, channels: Iterable[int]) -> onnx.ModelProto:
    """A copy of `model` in which output channels `channels` of Conv `conv_name` are exactly 0:
    weight[c] = 0 and bias[c] = 0; if the conv's only consumer is a BatchNormalization, its scale[c]
    and B[c] = 0 too; if it is an Add of a per-channel constant (C,1,1), that constant[c] = 0. So the
    channels are 0 at `channel_tensor(model, conv_name)`. ValueError if a tensor to change is not an
    initializer or is shared with another node."""
    model, inits, conv, chans = _zero_filters(model, conv_name, channels, None)
    graph = model.graph
    count = int(numpy_helper.to_array(graph.initializer[inits.index[conv.input[1]]]).shape[0])
    readers = _consumers(graph, conv.output[0])
    if len(readers) == 1 and _uses(graph, conv.output[0]) == 1:
        reader = readers[0]
        if reader.op_type == "BatchNormalization" and reader.input[0] == conv.output[0]:
            for name in reader.input[1:3]:  # scale, B
                array = inits.get(name, reader.name)
                array[chans] = 0
                inits.set(name, array)
        elif reader.op_type == "Add":
            const = _per_channel_constant(graph, reader, conv.output[0], count)
            if const is not None:
                array = inits.get(const, reader.name)
                array.reshape(count)[chans] = 0
                inits.set(const, array)
    return model


def constant_channels(
    model: onnx.ModelProto, conv_name: str, channels: Iterable[int], value: float
) -> onnx.ModelProto:
    """A copy of `model` in which output channels `channels` of Conv `conv_name` equal `value`
    everywhere at the conv's output: weight[c] = 0 and bias[c] = value (a bias input is added if
    the conv has none). Following BatchNorm / bias Add nodes are left as they are, so the channels
    stay constant (but not `value`) after them. ValueError as in `zero_channels`."""
    return _zero_filters(model, conv_name, channels, float(value))[0]


def zero_consumer_slices(
    model: onnx.ModelProto, conv_name: str, channels: Iterable[int], consumers: Iterable[str]
) -> onnx.ModelProto:
    """A copy of `model` in which every Conv in `consumers` (e.g. `topology.consumers[conv_name]`)
    ignores input channels `channels`: weight[:, c] = 0. The consumers must have group=1 and as many
    input channels as `conv_name` has output channels (ValueError otherwise, and for shared weights)."""
    model = copy.deepcopy(model)
    graph = model.graph
    producer = _node(graph, conv_name)
    inits = _Initializers(graph)
    if producer.input[1] not in inits.index:
        raise ValueError(f"{conv_name}: weight {producer.input[1]!r} is not an initializer")
    count = int(graph.initializer[inits.index[producer.input[1]]].dims[0])
    chans = _channel_list(channels, count, conv_name)
    for name in consumers:
        conv = _node(graph, name)
        group = next((a.i for a in conv.attribute if a.name == "group"), 1)
        if group != 1:
            raise ValueError(f"consumer {name!r} has group={group}; only group=1 convs can be sliced")
        weight = inits.get(conv.input[1], name)
        if weight.shape[1] != count:
            raise ValueError(f"consumer {name!r} reads {weight.shape[1]} channels, {conv_name} makes {count}")
        weight[:, chans] = 0
        inits.set(conv.input[1], weight)
    return model


def channel_tensor(model: onnx.ModelProto, conv_name: str) -> str:
    """Where `zero_channels(model, conv_name, ...)` makes the channels 0 after the conv's affine
    follower: the output of its only consumer if that is a BatchNormalization or a per-channel
    constant Add, else the conv's output."""
    graph = model.graph
    conv = _node(graph, conv_name)
    out = conv.output[0]
    readers = _consumers(graph, out)
    if len(readers) != 1 or _uses(graph, out) != 1:
        return out
    reader = readers[0]
    if reader.op_type == "BatchNormalization" and reader.input[0] == out:
        return reader.output[0]
    if reader.op_type == "Add":
        init = next((t for t in graph.initializer if t.name == conv.input[1]), None)
        if init is not None and _per_channel_constant(graph, reader, out, int(init.dims[0])) is not None:
            return reader.output[0]
    return out


def dynamic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` (changed in place) with a symbolic batch dimension on its first input and output and
    no stale value_info, so training batches fit a model exported with batch 1."""
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    del model.graph.value_info[:]
    return model


def labelled_npz(path, count: int, height: int = 16, width: int = 16, classes: int = 10, seed: int = 0):
    """Random uint8 images with random labels in an `npz:` data file (`x`, `y`); returns the path."""
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8), y=rng.integers(0, classes, count))
    return path


def with_outputs(model: onnx.ModelProto, tensors: Iterable[str]) -> onnx.ModelProto:
    """A copy of `model` that also outputs the float tensors `tensors` (after the existing outputs)."""
    model = copy.deepcopy(model)
    present = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in present:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
            present.add(name)
    return model


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    """The outputs of `model` for input `x` (float32), in onnxruntime on CPU."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f"expected one graph input, got {inputs}")
    return session.run(None, {inputs[0]: np.ascontiguousarray(x, dtype=np.float32)})


def with_small_weights(model: onnx.ModelProto, seed: int = 0, scale: float = 0.05) -> onnx.ModelProto:
    """`model` (edited in place and returned) with a random share of each conv filter's weights
    scaled down by `scale`: thresholds then zero a spread of filters, as after sparsity training."""
    rng = np.random.default_rng(seed)
    for t in model.graph.initializer:
        w = numpy_helper.to_array(t)
        if w.ndim == 4:
            mask = rng.uniform(size=w.shape) < rng.uniform(0.2, 1.0, size=(w.shape[0], 1, 1, 1))
            t.CopyFrom(numpy_helper.from_array(np.where(mask, w * scale, w).astype(np.float32), t.name))
    return model


def random_images(folder, count: int, height: int, width: int, seed: int = 0) -> None:
    """`count` random RGB PNG files of the given size in `folder` (created)."""
    from pathlib import Path

    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / f"{i}.png")



def saved_with_images(model: onnx.ModelProto, folder, count: int) -> tuple:
    """`model` saved as `folder/model.onnx` and `count` random images of its input size in
    `folder/images`: (model path, images folder, (W, H))."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save(model, path)
    h, w = (d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[2:])
    random_images(folder / "images", count, h, w)
    return path, folder / "images", (w, h)
