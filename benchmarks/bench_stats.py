"""Zero-fraction sweep: onnxprune's native kernel against NumPy and torch, side by side in one run.

For the weights of two real architectures (VGG16-SSD300 conv layers, 26.3M weights; VGG16-ImageNet,
138M weights, its 3 fully connected layers included), with K = 1, 16 and 256 thresholds placed in
sparsity space (quantiles of |w|, as a threshold search places them), time the per-filter zero
fractions at all K thresholds:

- native:       onnxprune.stats.zero_fraction_sweep per layer (OpenMP, --threads), new result arrays;
- native (out=): the same, writing into result arrays allocated once before the timing;
- new outputs:  allocating and first touching the (K, F) float64 result arrays alone (np.ones);
- numpy loop:   (np.abs(w) <= t).mean(axis=1) per layer and threshold;
- numpy digitize: one np.searchsorted of |w| into the thresholds + np.bincount + cumsum;
- torch sort:   torch.sort of |w| per filter + batched torch.searchsorted (--threads);
- torch bucketize: torch.bucketize of |w| + bincount + cumsum (--threads);
- max:          one streaming read of the same weights, w.max() per layer (NumPy, one thread).

Every method's result is checked equal to the native one. Measurements are interleaved (one round
runs each method once) and the median over rounds is reported, so machine noise hits all alike;
native / max is also given per round (the two are timed milliseconds apart), median and range.
Writes benchmarks/results/bench_stats.{json,md}. Weights are random (He-scaled normal) with the
real layer shapes: the kernels' cost does not depend on trained values.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def vgg16_ssd300_shapes(num_classes: int = 21) -> list[tuple[int, ...]]:
    """Conv weight shapes of SSD300 with the VGG16 backbone (Liu et al. 2016; Table 1 of Singh et al.)."""
    backbone = [(64, 3), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256), (256, 256),
                (512, 256), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]  # fmt: skip
    shapes = [(o, i, 3, 3) for o, i in backbone]
    shapes += [(1024, 512, 3, 3), (1024, 1024, 1, 1)]  # fc6 (dilated), fc7
    extras = [(256, 1024, 1), (512, 256, 3), (128, 512, 1), (256, 128, 3), (128, 256, 1), (256, 128, 3),
              (128, 256, 1), (256, 128, 3)]  # fmt: skip
    shapes += [(o, i, k, k) for o, i, k in extras]
    for channels, boxes in [(512, 4), (1024, 6), (512, 6), (256, 6), (256, 4), (256, 4)]:
        shapes += [(boxes * 4, channels, 3, 3), (boxes * num_classes, channels, 3, 3)]
    return shapes


def vgg16_imagenet_shapes() -> list[tuple[int, ...]]:
    """Weight shapes of VGG16 for ImageNet: 13 convs and fc6, fc7, fc8 (as Gemm weights, out x in)."""
    convs = [(64, 3), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256), (256, 256),
             (512, 256), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]  # fmt: skip
    return [(o, i, 3, 3) for o, i in convs] + [(4096, 25088), (4096, 4096), (1000, 4096)]


def make_weights(shapes: list[tuple[int, ...]], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s, dtype=np.float32) * np.float32(np.sqrt(2.0 / np.prod(s[1:]))) for s in shapes]


def quantile_thresholds(weights: list[np.ndarray], k: int) -> np.ndarray:
    """K thresholds at evenly spaced sparsities in [0, 0.99] (the median for K = 1), read off the
    magnitudes of a 1-in-97 sample of the weights."""
    sample = np.concatenate([np.abs(w.ravel()[::97]) for w in weights]).astype(np.float64)
    return np.quantile(sample, [0.5] if k == 1 else np.linspace(0.0, 0.99, k))


# ---- the methods: each returns a list of (K, F) arrays, one per layer ----


def native(weights, t, threads):
    from onnxprune import stats

    return [stats.zero_fraction_sweep(w, t, threads=threads) for w in weights]


def numpy_loop(weights, t, threads):
    t = [np.float64(x) for x in t]
    return [np.stack([(np.abs(w) <= x).reshape(w.shape[0], -1).mean(axis=1) for x in t]) for w in weights]


def numpy_digitize(weights, t, threads):
    out = []
    for w in weights:
        rows, k = w.shape[0], len(t)
        j = np.searchsorted(t, np.abs(w).reshape(rows, -1), side="left")  # thresholds below |w|
        j += (np.arange(rows) * (k + 1))[:, None]
        counts = np.bincount(j.ravel(), minlength=rows * (k + 1)).reshape(rows, k + 1)
        out.append((np.cumsum(counts[:, :k], axis=1) / (w.size // rows)).T)
    return out


def torch_sort(weights, t, threads):
    import torch

    torch.set_num_threads(threads)
    tt = torch.from_numpy(t)
    out = []
    for w in weights:
        a = torch.from_numpy(w).reshape(w.shape[0], -1).abs().double()
        a, _ = torch.sort(a, dim=1)
        counts = torch.searchsorted(a, tt.expand(a.shape[0], -1).contiguous(), right=True)
        out.append((counts.double() / a.shape[1]).T.numpy())
    return out


def torch_bucketize(weights, t, threads):
    import torch

    torch.set_num_threads(threads)
    tt = torch.from_numpy(t)
    out = []
    for w in weights:
        rows, k = w.shape[0], len(t)
        a = torch.from_numpy(w).reshape(rows, -1).abs().double()
        j = torch.bucketize(a, tt, right=False) + (torch.arange(rows) * (k + 1))[:, None]
        counts = torch.bincount(j.reshape(-1), minlength=rows * (k + 1)).reshape(rows, k + 1)
        out.append((torch.cumsum(counts[:, :k], dim=1).double() / a.shape[1]).T.numpy())
    return out


def native_out(weights, t, threads, outs):
    from onnxprune import stats

    return [stats.zero_fraction_sweep(w, t, threads=threads, out=o) for w, o in zip(weights, outs, strict=True)]


def new_outputs(weights, t, threads):
    return [np.ones((len(t), w.shape[0])) for w in weights]


def streaming_max(weights, t, threads):
    return [w.max() for w in weights]


METHODS = {
    "native": native,
    "native (out=)": native_out,
    "new outputs": new_outputs,
    "numpy loop": numpy_loop,
    "numpy digitize": numpy_digitize,
    "torch sort": torch_sort,
    "torch bucketize": torch_bucketize,
    "max (one read)": streaming_max,
}
ALTERNATIVES = ["numpy digitize", "torch sort", "torch bucketize"]


def bench_case(weights, k, threads, rounds, slow_rounds):
    t = quantile_thresholds(weights, k)
    reference = native(weights, t, threads)
    outs = [np.empty_like(r) for r in reference]
    fast = ("native", "native (out=)", "new outputs", "max (one read)")
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    for r in range(rounds):
        for name, fn in METHODS.items():
            if r >= slow_rounds and name not in fast:
                continue
            start = time.perf_counter()
            result = fn(weights, t, threads, outs) if name == "native (out=)" else fn(weights, t, threads)
            times[name].append(time.perf_counter() - start)
            if r == 0 and name not in ("max (one read)", "new outputs"):
                for got, ref in zip(result, reference, strict=True):
                    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12, err_msg=f"{name} disagrees")
    med = {name: float(np.median(v)) for name, v in times.items()}
    best_alt = min(ALTERNATIVES, key=med.__getitem__)
    # Each round times native and max a few ms apart: their per-round ratio cancels the host's
    # speed drifting over the run, which the ratio of the two medians does not.
    paired = np.array(times["native"]) / np.array(times["max (one read)"])
    return {
        "k": k,
        "seconds": med,
        "rounds": {name: len(v) for name, v in times.items()},
        "best_alternative": best_alt,
        "numpy_loop_over_native": med["numpy loop"] / med["native"],
        "best_alternative_over_native": med[best_alt] / med["native"],
        "native_over_max": med["native"] / med["max (one read)"],
        "native_out_over_max": med["native (out=)"] / med["max (one read)"],
        "native_over_max_paired": float(np.median(paired)),
        "native_over_max_paired_range": [float(paired.min()), float(paired.max())],
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=11, help="rounds for native and max")
    parser.add_argument("--slow-rounds", type=int, default=3, help="rounds for the slower alternatives")
    parser.add_argument("--models", nargs="+", default=["vgg16_ssd300", "vgg16_imagenet"])
    parser.add_argument("--k", nargs="+", type=int, default=[1, 16, 256])
    args = parser.parse_args()

    shapes = {"vgg16_ssd300": vgg16_ssd300_shapes(), "vgg16_imagenet": vgg16_imagenet_shapes()}
    report = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                    "threads": args.threads, "python": platform.python_version(), "numpy": np.__version__},
        "cases": [],
    }  # fmt: skip
    for model in args.models:
        weights = make_weights(shapes[model])
        n = sum(w.size for w in weights)
        for k in args.k:
            case = bench_case(weights, k, args.threads, args.rounds, args.slow_rounds)
            case.update(model=model, weights=n, layers=len(weights))
            report["cases"].append(case)
            s = case["seconds"]
            print(
                f"{model:15s} {n / 1e6:6.1f}M K={k:<4d} native {s['native'] * 1e3:8.1f} ms | "
                f"numpy loop x{case['numpy_loop_over_native']:7.1f} | {case['best_alternative']} "
                f"x{case['best_alternative_over_native']:6.1f} | native / max {case['native_over_max']:.2f}"
                f" (paired {case['native_over_max_paired']:.2f})"
                f" | out= {s['native (out=)'] * 1e3:.1f} ms, / max {case['native_out_over_max']:.2f}"
                f" | new outputs alone {s['new outputs'] * 1e3:.1f} ms",
                flush=True,
            )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_stats.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "bench_stats.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = [
        "| weights | K | native ms | native (out=) ms | new outputs ms | numpy loop ms | numpy digitize ms "
        "| torch sort ms | torch bucketize ms | max ms | loop / native | best alt / native | native / max "
        "| native (out=) / max | native / max per round: median (range) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["cases"]:
        s = {k: v * 1e3 for k, v in c["seconds"].items()}
        lines.append(
            f"| {c['model']} ({c['weights'] / 1e6:.1f}M) | {c['k']} | {s['native']:.1f} | {s['native (out=)']:.1f} "
            f"| {s['new outputs']:.1f} | {s['numpy loop']:.0f} "
            f"| {s['numpy digitize']:.0f} | {s['torch sort']:.0f} | {s['torch bucketize']:.0f} "
            f"| {s['max (one read)']:.1f} | {c['numpy_loop_over_native']:.0f}x "
            f"| {c['best_alternative_over_native']:.1f}x ({c['best_alternative']}) | {c['native_over_max']:.2f} "
            f"| {c['native_out_over_max']:.2f} | {c['native_over_max_paired']:.2f} "
            f"({c['native_over_max_paired_range'][0]:.2f}-{c['native_over_max_paired_range'][1]:.2f}) |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
