"""The CUDA path of onnxprune.stats gives the CPU path's results on torch CUDA tensors."""

import numpy as np
import pytest

from onnxprune import stats

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not (stats.cuda_available() and torch.cuda.is_available()),
        reason="needs a CUDA device and onnxprune._native built with CUDA",
    ),
]


def _weights(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g, dtype=dtype) * 0.05
    w[torch.rand(shape, generator=g) < 0.3] = 0
    w.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), -0.0], dtype=dtype)
    return w


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(64, 32, 3, 3), (10,), (3, 70_000)], ids=str)
@pytest.mark.parametrize("k", [1, 5, 256, 3000])
def test_sweep_and_curve_match_cpu(dtype, shape, k):
    w = _weights(shape, dtype, seed=k)
    mags = w.abs().double().flatten()
    t = np.sort(np.concatenate([mags[torch.isfinite(mags)][: k // 2].numpy(), np.linspace(0, 0.2, k - k // 2)]))
    cpu = stats.zero_fraction_sweep(w, t)
    np.testing.assert_array_equal(stats.zero_fraction_sweep(w.cuda(), t), cpu)
    np.testing.assert_array_equal(stats.sparsity_curve([w.cuda(), w.cuda()], t), stats.sparsity_curve([w, w], t))


@pytest.mark.parametrize("groups", [1, 2, 64])
def test_input_channels_match_cpu(groups):
    w = _weights((64, 64 // groups, 3, 3), torch.float32)
    for t in [0.0, 0.03]:
        np.testing.assert_array_equal(
            stats.input_channel_zero_fractions(w.cuda(), t, groups), stats.input_channel_zero_fractions(w, t, groups)
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_threshold_for_sparsity_matches_cpu(dtype):
    ws = [_weights((256, 128, 3, 3), dtype, 1), _weights((1000,), dtype, 2)]
    for s in [0.0, 0.25, 0.5, 0.9]:
        assert stats.threshold_for_sparsity([w.cuda() for w in ws], s) == stats.threshold_for_sparsity(ws, s)


def test_non_contiguous_cuda_tensor_is_copied_on_the_device():
    w = _weights((32, 16, 3, 3), torch.float32).cuda()
    view = w.transpose(0, 1)
    np.testing.assert_array_equal(stats.filter_zero_fractions(view, 0.02), stats.filter_zero_fractions(view.cpu(), 0.02))
