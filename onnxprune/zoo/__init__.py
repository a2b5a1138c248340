"""The project's own reference models (built here, never downloaded): VGG16 for CIFAR-size inputs,
SSD300 / SSD512 with the VGG16 backbone and a tiny SSD of the same shape."""

from onnxprune.zoo.export import export_onnx
from onnxprune.zoo.ssd import SSD, SSD300, SSD512, TINY_SSD, SSDSpec, export_ssd, tiny_ssd
from onnxprune.zoo.vgg import VGG16_CIFAR_CONVS, vgg16_cifar

__all__ = [
    "SSD", "SSD300", "SSD512", "TINY_SSD", "VGG16_CIFAR_CONVS", "SSDSpec", "export_onnx", "export_ssd", "tiny_ssd",
    "vgg16_cifar",
]  # fmt: skip
