"""`--add-bn`: BatchNorm put after the convs of a BatchNorm-folded model for training, starting as
the identity, and folded back exactly; convs that keep their own BatchNorm are left alone."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import topologies as T
import torch

from onnxprune import cli
from onnxprune.train.add_bn import ConvBN, add_batchnorm, fold_batchnorm
from onnxprune.train.roundtrip import to_torch


@pytest.mark.parametrize("builder", [T.vgg_chain, T.resnet_blocks, T.mobilenet_dw])
def test_starts_as_the_conv_alone_and_folds_back_exactly(builder):
    topo = builder("folded")
    module = to_torch(T.dynamic_batch(topo.model)).module
    convs = sorted(name for name, m in module.named_modules() if isinstance(m, torch.nn.Conv2d))
    x = torch.randn(6, *topo.input_shape[1:], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = module(x)
    assert sorted(add_batchnorm(module)) == convs
    with torch.no_grad():
        assert torch.allclose(module.eval()(x), before)  # eval before any training batch: the conv alone
        assert torch.allclose(module.train()(x), before, atol=1e-4)  # first batch: scale = std, shift = mean
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    for step in range(3):
        loss = module(torch.randn(6, *topo.input_shape[1:], generator=torch.Generator().manual_seed(step + 1))).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        trained = module.eval()(x)
        assert not torch.allclose(trained, before, atol=1e-3)  # training moved it
        assert fold_batchnorm(module) == len(convs)
        assert not any(isinstance(m, ConvBN) for m in module.modules())
        torch.testing.assert_close(module(x), trained, rtol=1e-4, atol=1e-5)


def test_convs_with_their_own_batchnorm_are_left_alone():
    module = to_torch(T.vgg_chain("separate").model).module
    assert add_batchnorm(module) == []


def test_finetune_add_bn_writes_the_graph_unchanged_but_for_values(tmp_path, capsys):
    model = T.dynamic_batch(T.vgg_chain("folded").model)
    source = tmp_path / "folded.onnx"
    onnx.save(model, source)
    data = T.labelled_npz(tmp_path / "train.npz", 32)
    out = tmp_path / "ft.onnx"
    code = cli.main(["finetune", str(source), "-o", str(out), "--data", f"npz:{data}", "--epochs", "2",
                     "--batch-size", "8", "--add-bn", "--json"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert len(json.loads(captured.out)["history"]) == 2
    trained = onnx.load(out)
    onnx.checker.check_model(trained, full_check=True)
    assert [(n.name, n.op_type) for n in trained.graph.node] == [(n.name, n.op_type) for n in model.graph.node]
    assert [tuple(t.dims) for t in trained.graph.initializer] == [tuple(t.dims) for t in model.graph.initializer]
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    assert not np.allclose(T.run(trained, x)[0], T.run(model, x)[0], atol=1e-3)


def test_add_bn_with_l1_is_refused(tmp_path, capsys):
    source = tmp_path / "folded.onnx"
    onnx.save(T.dynamic_batch(T.vgg_chain("folded").model), source)
    out = tmp_path / "bad.onnx"
    code = cli.main(["sparsify", str(source), "-o", str(out), "--data", f"images:{tmp_path}", "--add-bn", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "--add-bn is for fine-tuning" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
