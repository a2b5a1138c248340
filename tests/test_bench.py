"""`onnxprune bench`: figures of several models side by side (no timing goals here: those live
in benchmarks/)."""

from __future__ import annotations

import itertools
import json

import onnx
import pytest
import topologies as T

import onnxprune
from onnxprune import cli


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    topo = T.vgg_chain("folded")
    dense, pruned = folder / "dense.onnx", folder / "pruned.onnx"
    onnx.save(topo.model, dense)
    zeroed = T.zero_channels(T.zero_channels(topo.model, "/conv2/Conv", range(5)), "/conv3/Conv", range(10))
    onnxprune.prune(zeroed, pruned, threshold=0.0, sf=1.0, sf_low=1.0, sg=1.0)
    return dense, pruned


def test_bench_reports_every_model_against_the_first(models, capsys):
    dense, pruned = models
    assert cli.main(["bench", str(dense), str(pruned), "--runs", "5", "--warmup", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    first, second = report["models"]
    assert report["provider"] == "cpu" and report["runs"] == 5
    assert first["speedup"] == 1.0 and first["flops_ratio"] == 1.0
    assert second["params"] < first["params"] and second["flops"] < first["flops"]
    assert second["flops_ratio"] == pytest.approx(second["flops"] / first["flops"])
    assert second["size_bytes"] < first["size_bytes"]
    for m in report["models"]:
        assert 0 < m["latency_ms_p10"] <= m["latency_ms_median"] <= m["latency_ms_p90"]


def test_bench_table(models, capsys):
    assert cli.main(["bench", str(models[0]), "--runs", "3"]) == 0
    out = capsys.readouterr().out
    assert "speed-up" in out and "1.00x" in out


def test_dynamic_inputs_need_a_shape(tmp_path, capsys):
    model = T.vgg_chain("folded").model
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    path = tmp_path / "dyn.onnx"
    onnx.save(model, path)
    assert cli.main(["bench", str(path), "--runs", "2"]) == 2
    assert "give --shape" in capsys.readouterr().err
    h, w = T.vgg_chain("folded").input_shape[2:]
    assert cli.main(["bench", str(path), "--runs", "2", "--shape", f"input=1x3x{h}x{w}", "--json"]) == 0


def test_cuda_without_a_gpu_is_one_clear_line(models, capsys):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
    assert cli.main(["bench", str(models[0]), "--provider", "cuda", "--runs", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot run on a CUDA device" in err and len(err.splitlines()) == 1


def test_models_are_timed_in_turns_each_opened_by_untimed_runs(models, monkeypatch):
    """A turn of up to TURN_RUNS timed runs per model, each after `warmup` untimed runs and WARM_MS:
    a session whose threads went idle in another model's turn must not be what is timed."""
    from onnxprune import bench as bench_module

    calls = []

    class Recorder:
        def __init__(self, inner, tag):
            self.inner, self.tag = inner, tag

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def run(self, *args):
            calls.append(self.tag)
            return self.inner.run(*args)

    real = bench_module.session
    tags = itertools.cycle("AB")
    monkeypatch.setattr(bench_module, "session", lambda *a, **k: Recorder(real(*a, **k), next(tags)))
    monkeypatch.setattr(bench_module, "WARM_MS", 0)
    report = bench_module.bench(list(models), provider="cpu", runs=13, warmup=2)
    turns = [(tag, sum(1 for _ in group)) for tag, group in itertools.groupby(calls)]
    n = bench_module.TURN_RUNS
    assert turns == [("A", 2 + n), ("B", 2 + n), ("A", 2 + 13 - n), ("B", 2 + 13 - n)]
    assert [m["runs"] for m in report["models"]] == [13, 13] and report["runs"] == 13
    calls.clear()
    monkeypatch.setattr(bench_module, "WARM_MS", 50)
    bench_module.bench([models[0]], provider="cpu", runs=1, warmup=0)
    assert len(calls) > 2  # a tiny model runs many times in 50 ms
