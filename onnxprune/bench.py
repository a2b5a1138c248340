"""Latency in onnxruntime, parameters, FLOPs and file size of models, side by side.

Models are timed in interleaved turns, so a slow phase of the machine hits every model alike: each
turn runs one model untimed for at least `warmup` runs and `WARM_MS`, then up to `TURN_RUNS` timed
runs. The untimed runs matter: a session whose thread pool has gone idle runs slowly until its
threads spin again (on 2 cores, a batch-32 ResNet-20 took 2-3x its steady time for the first three
runs after another model's turn, batch 1 about 1.7x for up to a dozen; interleaving single runs
measured only that). Spinning stays on, as in deployment, so the figures are steady-state latency.
The report gives the median, the 10th-90th percentile spread and each model's ratios against the
first. `provider="auto"` uses CUDA only when a session really starts on it, without onnxruntime's
error spam on CPU machines.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxprune.cost import model_cost
from onnxprune.model_io import InputError, load_model

__all__ = ["TURN_RUNS", "WARM_MS", "ModelBench", "bench", "format_bench", "session"]

TURN_RUNS = 10  # timed runs of one model before the next model's turn
WARM_MS = 200  # untimed running at the start of each turn, at the least

_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8}  # fmt: skip


@dataclass
class ModelBench:
    """One model's figures; latencies in milliseconds per batch."""

    model: str
    provider: str
    batch: int
    params: int
    flops: int
    size_bytes: int
    latency_ms_median: float
    latency_ms_p10: float
    latency_ms_p90: float
    runs: int


def session(path: str | os.PathLike, provider: str = "cpu", threads: int | None = None):
    """An onnxruntime session on `provider` ("cpu", "cuda" or "auto"), quiet unless it fails."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    if provider not in ("auto", "cpu", "cuda"):
        raise InputError(f"--provider must be auto, cpu or cuda; got {provider!r}")
    want_cuda = provider in ("auto", "cuda") and "CUDAExecutionProvider" in ort.get_available_providers()
    if want_cuda:
        try:
            s = ort.InferenceSession(str(path), options, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
            if s.get_providers()[0] == "CUDAExecutionProvider":
                return s
        except Exception:  # noqa: BLE001 - a CUDA provider that does not load is simply not there
            pass
    if provider == "cuda":
        raise InputError("--provider cuda: onnxruntime cannot run on a CUDA device here; use --provider cpu or auto")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _inputs(s, path: str, batch: int, shapes: dict[str, tuple[int, ...]], rng: np.random.Generator) -> dict:
    feeds = {}
    for i in s.get_inputs():
        if i.name in shapes:
            shape = shapes[i.name]
        else:
            shape = [batch if k == 0 and not isinstance(d, int) else d for k, d in enumerate(i.shape)]
            if any(not isinstance(d, int) for d in shape):
                raise InputError(f"{path}: input {i.name!r} has dynamic dims {i.shape}; give --shape {i.name}=1x3x224x224")
        dtype = _TYPES.get(i.type)
        if dtype is None:
            raise InputError(f"{path}: input {i.name!r} has type {i.type}, which bench cannot fill")
        feeds[i.name] = rng.standard_normal(shape).astype(dtype) if dtype in (np.float32, np.float16, np.float64) else \
            np.zeros(shape, dtype)  # fmt: skip
    return feeds


def bench(
    models: list[str | os.PathLike],
    *,
    provider: str = "auto",
    batch: int = 1,
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> dict:
    """Time every model (`runs` timed runs each, in interleaved turns: untimed runs for at least
    `warmup` runs and `WARM_MS`, then up to `TURN_RUNS` timed ones) and count its size; returns the
    JSON of `onnxprune bench`, with each model's ratios against the first."""
    if runs < 1 or warmup < 0 or batch < 1:
        raise InputError(f"--runs and --batch must be >= 1 and --warmup >= 0; got {runs}, {batch}, {warmup}")
    rng = np.random.default_rng(0)
    entries = []
    for m in models:
        proto = load_model(m)
        s = session(m, provider, threads)
        feeds = _inputs(s, str(m), batch, shapes or {}, rng)
        cost = model_cost(proto)
        entries.append({"path": str(m), "session": s, "feeds": feeds, "cost": cost, "times": []})
    for done in range(0, runs, TURN_RUNS):
        for e in entries:
            start, warm = time.perf_counter(), 0
            while warm < warmup or time.perf_counter() - start < WARM_MS / 1000:
                e["session"].run(None, e["feeds"])
                warm += 1
            for _ in range(min(TURN_RUNS, runs - done)):
                start = time.perf_counter()
                e["session"].run(None, e["feeds"])
                e["times"].append(1000 * (time.perf_counter() - start))
    results = []
    for e in entries:
        t = np.asarray(e["times"])
        results.append(ModelBench(
            e["path"], e["session"].get_providers()[0].replace("ExecutionProvider", "").lower(), batch,
            e["cost"].params, e["cost"].flops, _size(Path(e["path"])), float(np.median(t)),
            float(np.percentile(t, 10)), float(np.percentile(t, 90)), runs,
        ))  # fmt: skip
    first = results[0]
    return {
        "models": [asdict(r) | {
            "speedup": first.latency_ms_median / r.latency_ms_median,
            "params_ratio": r.params / max(first.params, 1),
            "flops_ratio": r.flops / max(first.flops, 1),
        } for r in results],  # fmt: skip
        "provider": first.provider,
        "batch": batch,
        "runs": runs,
    }


def _size(path: Path) -> int:
    """Bytes on disk, external data files included."""
    total = path.stat().st_size
    model = onnx.load(path, load_external_data=False)
    files = set()
    for t in model.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                files.add(entry.value)
    return total + sum((path.parent / f).stat().st_size for f in files if (path.parent / f).is_file())


def format_bench(report: dict) -> str:
    lines = [
        f"onnxruntime {report['provider']}, batch {report['batch']}, {report['runs']} timed runs a model in interleaved turns",
        "",
        f"{'model':40s} {'params':>11s} {'MFLOPs':>9s} {'MB':>7s} {'ms (median)':>12s} {'p10-p90':>15s} {'speed-up':>8s}",
    ]
    for m in report["models"]:
        name = m["model"] if len(m["model"]) <= 40 else "..." + m["model"][-37:]
        lines.append(
            f"{name:40s} {m['params']:11,d} {m['flops'] / 1e6:9.1f} {m['size_bytes'] / 1e6:7.2f} "
            f"{m['latency_ms_median']:12.3f} {m['latency_ms_p10']:7.3f}-{m['latency_ms_p90']:<7.3f} {m['speedup']:7.2f}x"
        )
    return "\n".join(lines)
