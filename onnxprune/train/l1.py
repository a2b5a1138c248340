"""Sparsity induction: `lambda * sum |W|` over the conv weights of a chosen layer set (the paper's
step 1), and the sparsity those weights reach at a threshold, measured by `onnxprune.stats` (on
the GPU, without a copy, when the weights live there).

One line in any training loop::

    l1 = L1Sparsity(model, lam=1e-4, layers=["features.*"])
    loss = criterion(model(x), y) + l1()

or, for weights that become exactly zero, the proximal step after each update::

    optimizer.step(); l1.prox(lr)

`groups="filters"` penalises each filter's L2 norm instead (group lasso, Wen et al. 2016, weighted
by the square root of the filter's size so that lambda means about the same): whole filters reach
zero together, which Algorithm 1 then removes exactly. The paper's penalty is the default.

`groups="channels"` is for networks that keep BatchNorm: BatchNorm divides a filter's scale away,
so shrinking the filter changes nothing and the loss's gradient grows it back. There the group of
output channel c is the BatchNorm's (scale_c, shift_c) pair (network slimming, Liu et al. 2017,
with the shift in the group so that a dead channel outputs exactly zero, not a constant); when the
pair reaches zero the conv's filter c (and bias) are set to zero as well, which changes nothing
the network computes and makes the filter all zero for Algorithm 1. Convs with no BatchNorm of
their own are grouped by filter, as with "filters".
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx, nn

from onnxprune import stats
from onnxprune.model_io import InputError

__all__ = ["L1Sparsity", "SparsityReport", "batchnorm_after"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
GROUPS = ("weights", "filters", "channels")


@dataclass(frozen=True)
class SparsityReport:
    """Zero shares at one threshold: per layer, over all chosen layers, and all-zero filters."""

    threshold: float
    layers: dict[str, float]
    overall: float
    zero_filters: int
    filters: int

    def line(self) -> str:
        return (f"sparsity {100 * self.overall:.1f}% at |w| <= {self.threshold:g}; "
                f"{self.zero_filters}/{self.filters} filters all zero")  # fmt: skip


class L1Sparsity:
    """The L1 penalty over the weights of the convs whose module names match `layers` (globs;
    default every conv), or whose other names in `aliases` (module name -> names, e.g. the ONNX
    node's, `TorchModel.onnx_names`) do. Biases and BatchNorm are not penalised, as in the paper."""

    def __init__(self, model: nn.Module, lam: float, layers: Sequence[str] = ("*",), groups: str = "weights",
                 aliases: Mapping[str, Sequence[str]] | None = None) -> None:  # fmt: skip
        if not lam >= 0.0:
            raise InputError(f"--l1 must be >= 0; got {lam}")
        if groups not in GROUPS:
            raise InputError(f"--l1-groups must be one of {', '.join(GROUPS)}; got {groups!r}")
        self.lam, self.groups = float(lam), groups
        convs = {name: m for name, m in model.named_modules() if isinstance(m, _CONVS)}
        aliases = aliases or {}
        self.weights = {
            name: m.weight for name, m in convs.items()
            if any(fnmatch.fnmatchcase(n, g) for n in (name, *aliases.get(name, ())) for g in layers)
        }  # fmt: skip
        if groups != "weights":  # ConvTranspose filters are columns of (in, out, ...) weights: not grouped here
            self.weights = {n: w for n, w in self.weights.items() if not isinstance(convs[n], _CONVS[3:])}
        # conv name -> (the BatchNorm that alone reads it, the conv): the channel groups' owners.
        self.norms: dict[str, tuple[nn.Module, nn.Module]] = {}
        if groups == "channels":
            after = batchnorm_after(model)
            self.norms = {n: (after[n], convs[n]) for n in self.weights if n in after}
        if not self.weights:
            shown = [aliases[n][0] if n in aliases else n for n in convs]
            names = ", ".join(shown[:5]) + (", ..." if len(shown) > 5 else "")
            raise InputError(f"--layers {' '.join(layers)} matches no conv layer (the convs are: {names or 'none'})")

    def __call__(self) -> torch.Tensor:
        """lambda * sum |W|; for groups, lambda * sum over groups of sqrt(group size) * the group's
        L2 norm (filters, or BatchNorm (scale, shift) pairs). A differentiable scalar tensor on the
        weights' device."""
        if self.groups != "weights":
            total = sum(
                _pair_norms(self.norms[n][0]).sum() * 2**0.5 if n in self.norms else _filter_norms(w).sum() * w[0].numel() ** 0.5
                for n, w in self.weights.items()
            )
        else:
            total = sum(w.abs().sum() for w in self.weights.values())
        return self.lam * total

    @torch.no_grad()
    def prox(self, lr: float) -> None:
        """The proximal step of the same objective: shrink each weight towards 0 by lr * lambda
        and stop at 0 (soft-thresholding). Call after `optimizer.step()` instead of adding the
        penalty to the loss: plain SGD on |w| only oscillates around 0, this lands on it, so
        whole filters become exactly zero."""
        step = lr * self.lam
        for name, w in self.weights.items():
            if name in self.norms:  # shrink each (scale, shift) pair's norm by step * sqrt(2)
                norm, conv = self.norms[name]
                keep = torch.clamp(1.0 - step * 2**0.5 / _pair_norms(norm).clamp_min(1e-12), min=0.0)
                norm.weight.mul_(keep)
                norm.bias.mul_(keep)
                dead = keep == 0
                w[dead] = 0.0  # the channel outputs 0 whatever the filter: make the filter say so
                if conv.bias is not None:
                    conv.bias[dead] = 0.0
            elif self.groups != "weights":  # shrink each filter's norm by step * sqrt(size), stop at 0
                norms = _filter_norms(w).view(-1, *[1] * (w.dim() - 1))
                w.mul_(torch.clamp(1.0 - step * w[0].numel() ** 0.5 / norms.clamp_min(1e-12), min=0.0))
            else:
                w.copy_(torch.sign(w) * torch.clamp(w.abs() - step, min=0.0))

    @torch.no_grad()
    def sparsity(self, threshold: float) -> SparsityReport:
        """Zero shares at `threshold`, computed by the native kernels where the weights are."""
        per_layer, zeros, total, zero_filters, filters = {}, 0.0, 0, 0, 0
        for name, w in self.weights.items():
            data = w.detach()
            data = data if data.is_cuda and stats.cuda_available() else data.cpu()
            fractions = np.asarray(stats.filter_zero_fractions(data.contiguous(), threshold))
            per_filter = int(np.prod(w.shape[1:]))
            layer_zeros = float(np.nansum(fractions) * per_filter)
            per_layer[name] = layer_zeros / max(w.numel(), 1)
            zeros += layer_zeros
            total += w.numel()
            zero_filters += int((fractions >= 1.0).sum())
            filters += len(fractions)
        return SparsityReport(threshold, per_layer, zeros / max(total, 1), zero_filters, filters)


def _pair_norms(norm: nn.Module) -> torch.Tensor:
    """L2 norm of each channel's (scale, shift) pair of a BatchNorm."""
    return torch.sqrt(norm.weight.square() + norm.bias.square())


def batchnorm_after(model: nn.Module) -> dict[str, nn.Module]:
    """conv module name -> the affine BatchNorm that is the only reader of its output, read from
    the model's torch.fx graph (onnx2torch's GraphModule; other models are traced). A model that
    cannot be traced gets no pairs (L1 then groups its convs by filter; `--add-bn` wraps them all)."""
    if not isinstance(model, fx.GraphModule):
        try:
            model = fx.symbolic_trace(model)
        except Exception:  # noqa: BLE001 - untraceable user code: fall back to filter groups
            return {}
    modules = dict(model.named_modules())
    pairs = {}
    for node in model.graph.nodes:
        norm = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(norm, _NORMS) or not norm.affine or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        source = node.args[0]
        conv = modules.get(source.target) if source.op == "call_module" else None
        if isinstance(conv, _CONVS[:3]) and len(source.users) == 1 and conv.out_channels == norm.num_features:
            pairs[str(source.target)] = norm
    return pairs


def _filter_norms(w: torch.Tensor) -> torch.Tensor:
    """L2 norm of each output filter (dim 0 of a Conv weight)."""
    return w.flatten(1).norm(dim=1)
