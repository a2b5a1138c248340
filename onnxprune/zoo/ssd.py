"""SSD with the VGG16 backbone (Liu et al. 2016) as pruned by Singh et al. (WACV 2019): SSD300,
SSD512 and a width- and input-scaled tiny SSD of the same shape that trains on 2 CPU cores.

Layers carry the paper's (Caffe) names, so pruning phases are globs over node names:
conv1_1 .. conv5_3, fc6 (the dilated conv6) and fc7 (conv7), the extra layers conv8_1 ..
conv11_2 (conv12_2 in SSD512), `conv4_3_norm` (L2Norm) and the multibox heads
`<source>_mbox_loc` / `<source>_mbox_conf`. The model returns `scores` (N, P, classes; softmax,
column 0 the background) and `loc` (N, P, 4): raw offsets against the prior boxes, or decoded
boxes (x1, y1, x2, y2, normalised) with `decode=True`. Exported models carry their prior boxes in
the ONNX metadata (`onnxprune.ssd`), which the evaluators and the multibox loss read.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from onnxprune.zoo.export import export_onnx

__all__ = [
    "METADATA_KEY", "SSD", "SSD300", "SSD512", "TINY_SSD", "PriorSpec", "SSDSpec", "decode_boxes", "export_ssd", "prior_boxes",
    "raw_ssd_metadata", "read_ssd_metadata", "tiny_ssd",
]

METADATA_KEY = "onnxprune.ssd"

# VGG16 conv1_1 .. conv5_3: (name, channels); "pool" a 2x2 max-pool, "pool_ceil" one in ceil mode.
VGG_BASE: tuple[tuple[str, int] | str, ...] = (
    ("conv1_1", 64), ("conv1_2", 64), "pool",
    ("conv2_1", 128), ("conv2_2", 128), "pool",
    ("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256), "pool_ceil",
    ("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512), "pool",
    ("conv5_1", 512), ("conv5_2", 512), ("conv5_3", 512),
)  # fmt: skip

# Extra layers: (name, channels, kernel, stride, padding).
EXTRAS_300 = (
    ("conv8_1", 256, 1, 1, 0), ("conv8_2", 512, 3, 2, 1),
    ("conv9_1", 128, 1, 1, 0), ("conv9_2", 256, 3, 2, 1),
    ("conv10_1", 128, 1, 1, 0), ("conv10_2", 256, 3, 1, 0),
    ("conv11_1", 128, 1, 1, 0), ("conv11_2", 256, 3, 1, 0),
)  # fmt: skip
EXTRAS_512 = EXTRAS_300[:5] + (
    ("conv10_2", 256, 3, 2, 1), ("conv11_1", 128, 1, 1, 0), ("conv11_2", 256, 3, 2, 1),
    ("conv12_1", 128, 1, 1, 0), ("conv12_2", 256, 4, 1, 1),
)  # fmt: skip
# A 160x160 input has feature maps 20, 10, 5, 3, 2, 1: conv10_2 strides and conv11_2 is 2x2.
EXTRAS_TINY = EXTRAS_300[:5] + (("conv10_2", 256, 3, 2, 1), ("conv11_1", 128, 1, 1, 0), ("conv11_2", 256, 2, 1, 0))


@dataclass(frozen=True)
class PriorSpec:
    """Default boxes: per feature map a min and max size (fractions of the input side), extra
    aspect ratios, and a step in pixels (None: input size / feature-map size)."""

    min_sizes: tuple[float, ...]
    max_sizes: tuple[float, ...]
    aspect_ratios: tuple[tuple[float, ...], ...]
    steps: tuple[float | None, ...] | None = None
    variances: tuple[float, float] = (0.1, 0.2)

    def per_location(self) -> list[int]:
        return [2 + 2 * len(r) for r in self.aspect_ratios]


@dataclass(frozen=True)
class SSDSpec:
    """An SSD's shape: input side, width multiplier of every layer, classes (with background),
    extra layers, which feature maps feed heads, prior boxes, BatchNorm after each conv."""

    size: int
    num_classes: int
    extras: tuple[tuple[str, int, int, int, int], ...]
    priors: PriorSpec
    width: float = 1.0
    batch_norm: bool = False
    sources: tuple[str, ...] = ("conv4_3", "fc7", "conv8_2", "conv9_2", "conv10_2", "conv11_2")

    def channels(self, c: int) -> int:
        return max(1, int(round(c * self.width)))


SSD300 = SSDSpec(
    size=300, num_classes=21, extras=EXTRAS_300,
    priors=PriorSpec((0.1, 0.2, 0.37, 0.54, 0.71, 0.88), (0.2, 0.37, 0.54, 0.71, 0.88, 1.05),
                     ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)), (8, 16, 32, 64, 100, 300)),
)  # fmt: skip
SSD512 = SSDSpec(
    size=512, num_classes=21, extras=EXTRAS_512,
    sources=("conv4_3", "fc7", "conv8_2", "conv9_2", "conv10_2", "conv11_2", "conv12_2"),
    priors=PriorSpec((0.07, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9), (0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.05),
                     ((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)), (8, 16, 32, 64, 128, 256, 512)),
)  # fmt: skip
# Every layer at 1/8 of the width and a 160x160 input: about 100 MFLOPs, trains in minutes on 2 cores.
TINY_SSD = SSDSpec(
    size=160, num_classes=4, extras=EXTRAS_TINY, width=0.125, batch_norm=True,
    priors=PriorSpec((0.1, 0.2, 0.37, 0.54, 0.71, 0.88), (0.2, 0.37, 0.54, 0.71, 0.88, 1.05),
                     ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))),
)  # fmt: skip


def prior_boxes(spec: PriorSpec, size: int, feature_maps: list[int]) -> np.ndarray:
    """(P, 4) default boxes (centre x, centre y, w, h; normalised, clipped to [0, 1]), row-major
    over each feature map: at each location the small square, the large square sqrt(min * max),
    then a pair per aspect ratio (the order the heads' channels follow)."""
    boxes = []
    for k, fm in enumerate(feature_maps):
        step = spec.steps[k] if spec.steps is not None and spec.steps[k] is not None else size / fm
        s, big = spec.min_sizes[k], math.sqrt(spec.min_sizes[k] * spec.max_sizes[k])
        for i, j in itertools.product(range(fm), repeat=2):
            cx, cy = (j + 0.5) * step / size, (i + 0.5) * step / size
            boxes += [[cx, cy, s, s], [cx, cy, big, big]]
            for r in spec.aspect_ratios[k]:
                boxes += [[cx, cy, s * math.sqrt(r), s / math.sqrt(r)], [cx, cy, s / math.sqrt(r), s * math.sqrt(r)]]
    return np.clip(np.asarray(boxes, dtype=np.float32), 0.0, 1.0)


class L2Norm(nn.Module):
    """x / ||x||_2 over channels, times a learned per-channel scale (initialised to 20)."""

    def __init__(self, channels: int, scale: float = 20.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10
        return self.weight.view(1, -1, 1, 1) * (x / norm)


class SSD(nn.Module):
    """SSD-VGG16 built from an `SSDSpec`; submodules are named as in the paper (module docstring)."""

    def __init__(self, spec: SSDSpec, decode: bool = False, seed: int | None = 0) -> None:
        super().__init__()
        if seed is not None:
            torch.manual_seed(seed)
        self.spec, self.decode = spec, decode
        self.layers: list[tuple[str, str]] = []  # (kind, name) in forward order
        channels, pools = 3, 0
        out_channels: dict[str, int] = {}
        for item in VGG_BASE:
            if isinstance(item, str):
                pools += 1
                self.add_module(f"pool{pools}", nn.MaxPool2d(2, 2, ceil_mode=item == "pool_ceil"))
                self.layers.append(("pool", f"pool{pools}"))
                continue
            name, c = item
            channels = out_channels[name] = self._conv(name, channels, spec.channels(c), 3, 1, 1)
        self.pool5 = nn.MaxPool2d(3, 1, 1)
        self.layers.append(("pool", "pool5"))
        channels = out_channels["fc6"] = self._conv("fc6", channels, spec.channels(1024), 3, 1, 6, dilation=6)
        channels = out_channels["fc7"] = self._conv("fc7", channels, spec.channels(1024), 1, 1, 0)
        for name, c, k, s, p in spec.extras:
            channels = out_channels[name] = self._conv(name, channels, spec.channels(c), k, s, p)
        self.conv4_3_norm = L2Norm(out_channels["conv4_3"])
        for source, boxes in zip(spec.sources, spec.priors.per_location(), strict=True):
            head = "conv4_3_norm" if source == "conv4_3" else source
            self.add_module(f"{head}_mbox_loc", nn.Conv2d(out_channels[source], boxes * 4, 3, padding=1))
            self.add_module(f"{head}_mbox_conf", nn.Conv2d(out_channels[source], boxes * spec.num_classes, 3, padding=1))
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d):
                if "_mbox_" in name:  # heads start near uniform scores and zero offsets
                    nn.init.normal_(m.weight, std=0.01)
                else:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.feature_maps = self._feature_maps()
        self.register_buffer("priors", torch.from_numpy(prior_boxes(spec.priors, spec.size, self.feature_maps)))

    def _conv(self, name: str, cin: int, cout: int, k: int, s: int, p: int, dilation: int = 1) -> int:
        self.add_module(name, nn.Conv2d(cin, cout, k, s, p, dilation=dilation, bias=not self.spec.batch_norm))
        if self.spec.batch_norm:
            self.add_module(f"{name}_bn", nn.BatchNorm2d(cout))
        self.layers.append(("conv", name))
        return cout

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        found = {}
        for kind, name in self.layers:
            x = getattr(self, name)(x)
            if kind == "conv":
                if self.spec.batch_norm:
                    x = getattr(self, f"{name}_bn")(x)
                x = F.relu(x)
                found[name] = x
        return [found[s] for s in self.spec.sources]

    def _feature_maps(self) -> list[int]:
        with torch.no_grad():
            was = self.training
            maps = [f.shape[-1] for f in self.eval()._features(torch.zeros(1, 3, self.spec.size, self.spec.size))]
            self.train(was)
        return maps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, k = x.shape[0], self.spec.num_classes
        scores, locs = [], []
        for source, feature in zip(self.spec.sources, self._features(x), strict=True):
            head = "conv4_3_norm" if source == "conv4_3" else source
            if source == "conv4_3":
                feature = self.conv4_3_norm(feature)
            scores.append(getattr(self, f"{head}_mbox_conf")(feature).permute(0, 2, 3, 1).flatten(1))
            locs.append(getattr(self, f"{head}_mbox_loc")(feature).permute(0, 2, 3, 1).flatten(1))
        scores_t = F.softmax(torch.cat(scores, 1).reshape(n, -1, k), dim=-1)
        loc = torch.cat(locs, 1).reshape(n, -1, 4)
        if self.decode:
            loc = decode_boxes(loc, self.priors, self.spec.priors.variances)
        return scores_t, loc

    def metadata(self) -> dict:
        """What an exported model records about its boxes (read by `ssd_metadata`)."""
        return {
            "size": self.spec.size, "feature_maps": self.feature_maps, "priors": asdict(self.spec.priors),
            "decoded": self.decode, "num_classes": self.spec.num_classes, "background": 0,
        }  # fmt: skip


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor, variances: tuple[float, float]) -> torch.Tensor:
    """Offsets (..., P, 4) against priors (P, 4; centre-size) -> boxes (x1, y1, x2, y2)."""
    centre = priors[:, :2] + loc[..., :2] * variances[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[..., 2:] * variances[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def export_ssd(model: SSD, path: str | Path, decode: bool | None = None) -> Path:
    """Export to ONNX (outputs `scores`, `loc`; BatchNorm folded) with the prior boxes in the
    metadata; `decode` overrides the model's (decoded boxes inside the graph)."""
    if decode is not None and decode != model.decode:
        model = _with_decode(model, decode)
    size = model.spec.size
    return export_onnx(model, path, (1, 3, size, size), output_names=("scores", "loc"),
                       metadata={METADATA_KEY: model.metadata()})  # fmt: skip


def _with_decode(model: SSD, decode: bool) -> SSD:
    twin = SSD(model.spec, decode=decode, seed=None)
    twin.load_state_dict(model.state_dict())
    return twin


def tiny_ssd(num_classes: int = 4, width: float | None = None, size: int | None = None, seed: int = 0) -> SSD:
    """The tiny SSD (TINY_SSD), optionally with another class count, width or input side."""
    spec = replace(TINY_SSD, num_classes=num_classes)
    if width is not None:
        spec = replace(spec, width=width)
    if size is not None:
        spec = replace(spec, size=size)
    return SSD(spec, seed=seed)


@dataclass(frozen=True)
class SSDBoxes:
    """What an exported SSD says about its outputs (from the ONNX metadata `onnxprune.ssd`)."""

    priors: np.ndarray  # (P, 4) centre-size, normalised
    variances: tuple[float, float]
    decoded: bool
    num_classes: int


def read_ssd_metadata(model) -> SSDBoxes | None:
    """The prior boxes recorded by `export_ssd` in an ONNX model (None when it has none)."""
    import json

    entry = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
    if entry is None:
        return None
    meta = json.loads(entry)
    spec = PriorSpec(**{k: _tuples(v) for k, v in meta["priors"].items()})
    return SSDBoxes(prior_boxes(spec, meta["size"], meta["feature_maps"]), spec.variances, meta["decoded"],
                    meta["num_classes"])  # fmt: skip


def raw_ssd_metadata(model) -> SSDBoxes | None:
    """The priors of an exported SSD with raw outputs (offsets), which the multibox loss trains;
    None for other models and for SSDs exported with the decoding inside."""
    meta = read_ssd_metadata(model)
    return meta if meta is not None and not meta.decoded else None


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
