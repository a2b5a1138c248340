"""The PyTorch side: sparsity induction (L1), the ONNX <-> torch round trip, fine-tuning and
distillation."""

from onnxprune.train.roundtrip import TensorLink, TorchModel, to_torch, write_back

__all__ = ["TensorLink", "TorchModel", "to_torch", "write_back"]
