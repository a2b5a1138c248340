"""The L1 sparsity regulariser and its sparsity report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from onnxprune.model_io import InputError
from onnxprune.train.l1 import L1Sparsity


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4),
    )  # fmt: skip


def test_penalty_is_lambda_times_the_l1_norm_of_the_chosen_convs():
    net = _net()
    l1 = L1Sparsity(net, 1e-3, layers=["3"])
    assert list(l1.weights) == ["3"]
    expected = 1e-3 * net[3].weight.abs().sum()
    torch.testing.assert_close(l1(), expected)
    l1().backward()
    torch.testing.assert_close(net[3].weight.grad, 1e-3 * torch.sign(net[3].weight))
    assert net[0].weight.grad is None and net[3].bias.grad is None


def test_default_layers_are_every_conv():
    assert list(L1Sparsity(_net(), 0.1).weights) == ["0", "3"]


@pytest.mark.parametrize("threshold", [0.0, 0.05, 0.2])
def test_sparsity_matches_numpy(threshold):
    net = _net()
    with torch.no_grad():
        net[0].weight[:3] = 0
    report = L1Sparsity(net, 0.1).sparsity(threshold)
    weights = [net[0].weight.detach().numpy(), net[3].weight.detach().numpy()]
    zero = sum(int((np.abs(w.astype(np.float64)) <= threshold).sum()) for w in weights)
    assert report.overall == pytest.approx(zero / sum(w.size for w in weights))
    filters = sum(int((np.abs(w) <= threshold).reshape(len(w), -1).all(axis=1).sum()) for w in weights)
    assert report.zero_filters == filters >= 3
    assert "filters all zero" in report.line()


def test_training_with_l1_makes_weights_sparse():
    net = _net()
    l1 = L1Sparsity(net, 0.05)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    x = torch.randn(16, 3, 8, 8)
    before = l1.sparsity(1e-3).overall
    for _ in range(60):
        optimizer.zero_grad()
        loss = net(x).pow(2).mean() + l1()
        loss.backward()
        optimizer.step()
    assert l1.sparsity(1e-3).overall > before + 0.2


@pytest.mark.parametrize(("lam", "layers", "needle"), [(-1.0, ("*",), "--l1 must be >= 0"), (0.1, ("head*",), "matches no conv")])
def test_bad_arguments(lam, layers, needle):
    with pytest.raises(InputError, match=needle):
        L1Sparsity(_net(), lam, layers)


def test_the_proximal_step_makes_exact_zeros_and_solves_the_same_objective():
    net = _net()
    l1 = L1Sparsity(net, 0.05)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    x = torch.randn(16, 3, 8, 8)
    for _ in range(60):
        optimizer.zero_grad()
        net(x).pow(2).mean().backward()
        optimizer.step()
        l1.prox(0.05)
    report = l1.sparsity(0.0)  # exact zeros
    assert report.overall > 0.5 and report.zero_filters > 0
    w = torch.tensor([-1.0, -0.01, 0.0, 0.02, 0.5])
    net2 = nn.Sequential(nn.Conv2d(1, 5, 1, bias=False))
    with torch.no_grad():
        net2[0].weight.copy_(w.view(5, 1, 1, 1))
    L1Sparsity(net2, 1.0).prox(0.015)
    torch.testing.assert_close(net2[0].weight.view(-1), torch.tensor([-0.985, 0.0, 0.0, 0.005, 0.485]))


def test_filter_groups_shrink_whole_filters_and_match_their_penalty():
    net = nn.Sequential(nn.Conv2d(1, 3, 2, bias=False))
    w = torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.1, 0.0, 0.0, 0.0], [0.0, 0.0, 0.6, 0.8]]).view(3, 1, 2, 2)
    with torch.no_grad():
        net[0].weight.copy_(w)
    l1 = L1Sparsity(net, 0.5, groups="filters")
    # lambda * sqrt(4) * (5 + 0.1 + 1)
    assert float(l1().detach()) == pytest.approx(0.5 * 2 * 6.1)
    l1.prox(0.2)  # each filter norm shrinks by 0.2 * 0.5 * 2 = 0.2, and stops at 0
    got = net[0].weight.detach().view(3, 4)
    torch.testing.assert_close(got[0], torch.tensor([3.0, 4.0, 0.0, 0.0]) * (4.8 / 5))
    assert float(got[1].abs().sum()) == 0.0  # a whole filter, not single weights
    torch.testing.assert_close(got[2], torch.tensor([0.0, 0.0, 0.6, 0.8]) * 0.8)
    assert l1.sparsity(0.0).zero_filters == 1
    with pytest.raises(InputError, match="--l1-groups"):
        L1Sparsity(net, 0.5, groups="rows")


def _bn_net() -> nn.Sequential:
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 2, 1),
    )  # fmt: skip
    with torch.no_grad():  # channel pairs (scale, shift) with norms 5, 0.1, 1, 0.05
        net[1].weight.copy_(torch.tensor([3.0, 0.06, 0.6, 0.0]))
        net[1].bias.copy_(torch.tensor([4.0, 0.08, -0.8, 0.05]))
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    return net


def test_channel_groups_pair_each_conv_with_its_batchnorm_and_kill_whole_channels():
    net = _bn_net()
    l1 = L1Sparsity(net, 0.5, groups="channels")
    assert {n: norm for n, (norm, _) in l1.norms.items()} == {"0": net[1]}  # "3" and "5" have no BatchNorm
    conv3 = net[3].weight.detach().flatten(1).norm(dim=1)
    conv5 = net[5].weight.detach().flatten(1).norm(dim=1)
    expected = 0.5 * (2**0.5 * (5 + 0.1 + 1 + 0.05) + 36**0.5 * float(conv3.sum()) + 5**0.5 * float(conv5.sum()))
    assert float(l1().detach()) == pytest.approx(expected, rel=1e-6)
    x = torch.randn(2, 3, 6, 6)
    l1.prox(0.2)  # each pair's norm shrinks by 0.2 * 0.5 * sqrt(2) = 0.1414 and stops at 0
    torch.testing.assert_close(net[1].weight.detach(), torch.tensor([3.0 * (1 - 0.1414214 / 5), 0, 0.6 * (1 - 0.1414214), 0]))
    torch.testing.assert_close(net[1].bias.detach(), torch.tensor([4.0 * (1 - 0.1414214 / 5), 0, -0.8 * (1 - 0.1414214), 0]))
    dead = [1, 3]
    w, b = net[0].weight.detach(), net[0].bias.detach()
    assert float(w[dead].abs().sum()) == 0.0 and float(b[dead].abs().sum()) == 0.0
    assert float(w[[0, 2]].abs().sum()) > 0
    net.eval()
    with torch.no_grad():
        assert float(net[:3](x)[:, dead].abs().max()) == 0.0  # dead channels output exactly zero
    assert l1.sparsity(0.0).layers["0"] == 0.5  # the two dead filters, nothing else


def test_channel_groups_fall_back_to_filters_without_batchnorm_or_a_graph():
    class Opaque(nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)

        def forward(self, x):
            return self.bn(self.conv(x)) if float(x.sum()) > 0 else x

    assert L1Sparsity(Opaque(), 0.1, groups="channels").norms == {}
    net = nn.Sequential(nn.Conv2d(1, 3, 2, bias=False))
    assert float(L1Sparsity(net, 0.5, groups="channels")().detach()) == pytest.approx(
        float(L1Sparsity(net, 0.5, groups="filters")().detach())
    )


def test_cli_offers_the_same_group_names():
    from onnxprune import cli
    from onnxprune.train import l1

    assert cli.L1_GROUPS == l1.GROUPS
