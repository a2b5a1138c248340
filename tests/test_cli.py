"""The `onnxprune` command line: the demo end to end, and exit codes."""

import json
import subprocess
import sys

import onnx
import pytest

from onnxprune import cli, demo
from onnxprune.zoo.ssd import read_ssd_metadata


def test_demo_quick_runs_the_whole_pipeline_and_reports(tmp_path, capsys):
    assert cli.main(["demo", "--quick", "--json", "--out", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "demo.json").read_text()) == result
    pruned = onnx.load(result["output"])
    assert read_ssd_metadata(pruned) is not None, "the pruned model keeps its priors"
    assert result["metric_name"] == "mAP@0.5" and 0.0 <= result["metric_after"] <= 1.0
    assert result["params_after"] < result["params_before"] and result["flops_after"] < result["flops_before"]
    stages = [s["stage"] for s in result["stages"]]
    assert stages == ["sparsify", "phase 1", "phase 2", "phase 3", "phase 4"]
    layers = {c["layer"]: c for c in result["channels"]}
    assert {"conv1_1", "conv4_3", "fc7", "conv11_2"} <= set(layers)
    assert all(c["after"] == c["before"] for name, c in layers.items() if "_mbox_" in name), "heads keep their outputs"
    assert result["params_after"] <= (1 - demo.QUICK.params_target) * result["params_before"], "the budget is met"
    assert layers["conv11_2"]["after"] == layers["conv11_2"]["before"], "outside the demo's phases"
    for suffix in (".report.md", ".report.png", ".report.json"):
        assert (tmp_path / ("tiny_ssd_pruned.onnx" + suffix)).is_file()
    assert "conv4_3" in (tmp_path / "tiny_ssd_pruned.onnx.report.md").read_text()


def test_bad_argument_exits_2_with_one_line(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "onnxprune.cli", "prune", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o.onnx"), "-q"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1 and "missing.onnx" in run.stderr


def test_demo_starts_over_when_its_folder_holds_another_configuration(tmp_path, monkeypatch):
    (tmp_path / "demo_config.json").write_text(json.dumps({"train_images": 1}))
    (tmp_path / "tiny_ssd.onnx").write_text("a model trained with other settings")
    (tmp_path / "tiny_ssd_pruned.onnx.stages").mkdir()
    seen = {}
    monkeypatch.setattr("onnxprune.zoo.fit.fit_ssd", lambda *a, **k: seen.setdefault("trained", True))
    monkeypatch.setattr("onnxprune.zoo.export_ssd", lambda model, path: seen.setdefault("exported", path))

    def stop(*args, **kwargs):
        raise RuntimeError("stop before compress")

    monkeypatch.setattr("onnxprune.compress.compress", stop)
    with pytest.raises(RuntimeError, match="stop before compress"):
        demo.run(tmp_path, demo.QUICK, progress=False)
    assert seen == {"trained": True, "exported": tmp_path / "tiny_ssd.onnx"}, "the old dense model was not reused"
    assert not (tmp_path / "tiny_ssd_pruned.onnx.stages").exists()
    assert json.loads((tmp_path / "demo_config.json").read_text())["train_images"] == demo.QUICK.train_images
