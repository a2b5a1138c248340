"""ONNX -> torch -> ONNX: untouched weights written back give the original outputs; after a
training step the written-back ONNX model computes what the torch module computes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import topologies as T
import torch

from onnxprune.model_io import InputError
from onnxprune.train import to_torch, write_back

CONVERTIBLE = [
    "akamaster_cifar10_resnet20.onnx",
    "akamaster_cifar10_resnet20_bn.onnx",
    "ulfd_version-slim-320_without_postprocessing.onnx",
    "yunet_n_320_320.onnx",
]
NOT_CONVERTIBLE = {
    "ulfd_version-slim-320.onnx": "Slice",
    "ulfd_version-RFB-320.onnx": "Slice",
    "onnxzoo_mnist_opset13_rebuilt.onnx": "auto_pad",
}


def _input(model: onnx.ModelProto, seed: int = 0) -> np.ndarray:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else 2 for d in dims)
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _torch_outputs(module: torch.nn.Module, x: np.ndarray) -> list[np.ndarray]:
    module.eval()
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    return [o.numpy() for o in (out if isinstance(out, (tuple, list)) else [out])]


@pytest.mark.parametrize("name", CONVERTIBLE)
def test_untouched_weights_round_trip_exactly(assets, name):
    source = onnx.load(assets / "models" / name)
    tm = to_torch(source)
    back = write_back(tm)
    assert [n.SerializeToString() for n in back.graph.node] == [n.SerializeToString() for n in source.graph.node]
    x = _input(source)
    for a, b in zip(T.run(source, x), T.run(back, x), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    for a, b in zip(T.run(source, x), _torch_outputs(tm.module, x), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", CONVERTIBLE)
def test_after_a_training_step_onnx_equals_torch(assets, name):
    source = onnx.load(assets / "models" / name)
    tm = to_torch(source)
    module = tm.module
    module.train()
    x = torch.from_numpy(_input(source, seed=1))
    optimizer = torch.optim.SGD(module.parameters(), lr=0.05)
    out = module(x)
    loss = sum(o.float().pow(2).mean() for o in (out if isinstance(out, (tuple, list)) else [out]))
    loss.backward()
    optimizer.step()
    back = write_back(tm)
    changed = sum(
        not np.array_equal(onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b))
        for a, b in zip(source.graph.initializer, back.graph.initializer, strict=True)
    )
    assert changed >= len(tm.trainable_links()) // 2, "training changed the weights and they were written"
    xe = _input(source, seed=2)
    for a, b in zip(_torch_outputs(module, xe), T.run(back, xe), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(a).max())))


def test_links_name_every_trainable_tensor_and_its_initializer(assets):
    source = onnx.load(assets / "models" / "akamaster_cifar10_resnet20_bn.onnx")
    tm = to_torch(source)
    params = dict(tm.module.named_parameters())
    linked = {link.torch_name: link for link in tm.links}
    assert set(params) <= set(linked)
    inits = {t.name: t for t in source.graph.initializer}
    for name, link in linked.items():
        value = tm.module.state_dict()[name].numpy()
        expected = onnx.numpy_helper.to_array(inits[link.initializer]) * link.scale
        np.testing.assert_array_equal(value.T if link.transpose else value, expected.astype(value.dtype))
    # BatchNorm running statistics are linked too, so they are written back after training.
    assert any(name.endswith("running_var") for name in linked)


def test_gemm_without_transpose_links_the_transposed_weight():
    topo = T.vgg_chain("folded")
    tm = to_torch(topo.model)
    gemms = [link for link in tm.links if link.torch_name.endswith(".weight") and "Gemm" in link.torch_name]
    assert gemms
    back = write_back(tm)
    x = np.random.default_rng(0).standard_normal(topo.input_shape).astype(np.float32)
    np.testing.assert_allclose(T.run(back, x)[0], T.run(topo.model, x)[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("name", "needle"), sorted(NOT_CONVERTIBLE.items()))
def test_models_onnx2torch_cannot_convert_give_one_clear_error(assets, name, needle):
    with pytest.raises(InputError, match="onnx2torch cannot convert") as info:
        to_torch(assets / "models" / name)
    assert "\n" not in str(info.value)
