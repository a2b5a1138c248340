"""The project's own reference models (built here, never downloaded)."""

from onnxprune.zoo.vgg import VGG16_CIFAR_CONVS, export_onnx, vgg16_cifar

__all__ = ["VGG16_CIFAR_CONVS", "export_onnx", "vgg16_cifar"]
