"""VGG16 for 32x32 inputs, the classification model of Singh et al. (WACV 2019), with the paper's
layer names (conv1_1 .. conv5_3) so that pruning phases can be written as globs."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

# (name, out_channels) of each 3x3 conv; "pool" marks a 2x2 max-pool.
VGG16_CIFAR_CONVS: tuple[tuple[str, int] | str, ...] = (
    ("conv1_1", 64), ("conv1_2", 64), "pool",
    ("conv2_1", 128), ("conv2_2", 128), "pool",
    ("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256), "pool",
    ("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512), "pool",
    ("conv5_1", 512), ("conv5_2", 512), ("conv5_3", 512), "pool",
)  # fmt: skip


def vgg16_cifar(num_classes: int = 10, batch_norm: bool = True, seed: int | None = 0) -> nn.Sequential:
    """VGG16 for CIFAR-size inputs: 13 convs (each + BatchNorm + ReLU), then fc1 (512) and fc2."""
    if seed is not None:
        torch.manual_seed(seed)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels, pools = 3, 0
    for item in VGG16_CIFAR_CONVS:
        if item == "pool":
            pools += 1
            layers[f"pool{pools}"] = nn.MaxPool2d(2)
            continue
        name, out = item
        layers[name] = nn.Conv2d(channels, out, 3, padding=1, bias=not batch_norm)
        if batch_norm:
            layers[f"{name}_bn"] = nn.BatchNorm2d(out)
        layers[f"{name}_relu"] = nn.ReLU(inplace=True)
        channels = out
    layers["flatten"] = nn.Flatten()
    layers["fc1"] = nn.Linear(channels, 512)
    layers["fc1_relu"] = nn.ReLU(inplace=True)
    layers["fc2"] = nn.Linear(512, num_classes)
    model = nn.Sequential(layers)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model
