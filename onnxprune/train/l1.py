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
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from onnxprune import stats
from onnxprune.model_io import InputError

__all__ = ["L1Sparsity", "SparsityReport"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


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
    default every conv). Biases and BatchNorm are not penalised, as in the paper."""

    def __init__(self, model: nn.Module, lam: float, layers: Sequence[str] = ("*",), groups: str = "weights") -> None:
        if not lam >= 0.0:
            raise InputError(f"--l1 must be >= 0; got {lam}")
        if groups not in ("weights", "filters"):
            raise InputError(f"--l1-groups must be weights or filters; got {groups!r}")
        self.lam, self.groups = float(lam), groups
        convs = {name: m for name, m in model.named_modules() if isinstance(m, _CONVS)}
        self.weights = {
            name: m.weight for name, m in convs.items() if any(fnmatch.fnmatchcase(name, g) for g in layers)
        }
        if groups == "filters":  # ConvTranspose filters are columns of (in, out, ...) weights: not grouped here
            self.weights = {n: w for n, w in self.weights.items() if not isinstance(convs[n], _CONVS[3:])}
        if not self.weights:
            names = ", ".join(list(convs)[:5]) + (", ..." if len(convs) > 5 else "")
            raise InputError(f"--layers {' '.join(layers)} matches no conv layer (the convs are: {names or 'none'})")

    def __call__(self) -> torch.Tensor:
        """lambda * sum |W|, or lambda * sum over filters of sqrt(size) * ||W_f||_2 (a scalar
        tensor on the weights' device, differentiable)."""
        if self.groups == "filters":
            total = sum(_filter_norms(w).sum() * w[0].numel() ** 0.5 for w in self.weights.values())
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
        for w in self.weights.values():
            if self.groups == "filters":  # shrink each filter's norm by step * sqrt(size), stop at 0
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


def _filter_norms(w: torch.Tensor) -> torch.Tensor:
    """L2 norm of each output filter (dim 0 of a Conv weight)."""
    return w.flatten(1).norm(dim=1)
