"""Data for training and evaluation: the `--data` specs and preprocessing."""

from onnxprune.datasets.specs import PRESETS, ImageSet, Preprocess, check_labels, load_images, spread

__all__ = ["PRESETS", "ImageSet", "Preprocess", "check_labels", "load_images", "spread"]
