"""The CUDA path of the zero-fraction statistics: parity with the CPU path and timings.

Needs a CUDA GPU, torch with CUDA and onnxprune built with CUDA (see gpu_check.sh). For the
VGG16-SSD300 conv weights (26.3M) on the GPU, checks every function against the CPU path and times,
side by side, the native CUDA sweep (results copied to the host, into new arrays and into `out=`
arrays), torch.bucketize + bincount on the GPU, the native CPU sweep of host copies (`out=`), and one
streaming read on the GPU (torch amax).
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from bench_stats import make_weights, quantile_thresholds, vgg16_ssd300_shapes
from onnxprune import stats


def timed(fn, rounds=11):
    times = []
    for _ in range(rounds):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def torch_bucketize(weights, t):
    tt = torch.as_tensor(t, device="cuda")
    out = []
    for w in weights:
        rows, k = w.shape[0], len(t)
        j = torch.bucketize(w.reshape(rows, -1).abs().double(), tt) + (torch.arange(rows, device="cuda") * (k + 1))[:, None]
        counts = torch.bincount(j.reshape(-1), minlength=rows * (k + 1)).reshape(rows, k + 1)
        out.append((torch.cumsum(counts[:, :k], dim=1).double() / j.shape[1]).T.cpu())
    return out


def main() -> None:
    assert stats.cuda_available(), "onnxprune was built without CUDA or no GPU is visible"
    host = make_weights(vgg16_ssd300_shapes())
    gpu = [torch.from_numpy(w).cuda() for w in host]
    print(f"device: {torch.cuda.get_device_name()}")
    for k in (1, 16, 256):
        t = quantile_thresholds(host, k)
        for w, g in zip(host, gpu, strict=True):
            np.testing.assert_array_equal(stats.zero_fraction_sweep(g, t), stats.zero_fraction_sweep(w, t))
        np.testing.assert_array_equal(stats.sparsity_curve(gpu, t), stats.sparsity_curve(host, t))
        outs = [np.empty((k, w.shape[0])) for w in host]
        cuda_ms = timed(lambda t=t: [stats.zero_fraction_sweep(g, t) for g in gpu])
        cuda_out_ms = timed(lambda t=t, outs=outs: [stats.zero_fraction_sweep(g, t, out=o) for g, o in zip(gpu, outs, strict=True)])
        torch_ms = timed(lambda t=t: torch_bucketize(gpu, t), rounds=3)
        cpu_ms = timed(lambda t=t, outs=outs: [stats.zero_fraction_sweep(w, t, out=o) for w, o in zip(host, outs, strict=True)])
        read_ms = timed(lambda: [g.amax() for g in gpu])
        print(f"K={k:<4d} cuda sweep {cuda_ms:7.2f} ms, out= {cuda_out_ms:7.2f} ms | torch bucketize "
              f"{torch_ms:7.2f} ms (x{torch_ms / cuda_out_ms:.1f}) | cpu sweep out= {cpu_ms:7.2f} ms "
              f"({os.cpu_count()} cores) | gpu amax {read_ms:5.2f} ms")
    for s in (0.1, 0.5, 0.9):
        assert stats.threshold_for_sparsity(gpu, s) == stats.threshold_for_sparsity(host, s)
    print("parity: sweep, curve and threshold_for_sparsity equal on GPU and CPU")


if __name__ == "__main__":
    main()
