"""The `onnxprune` command line: demo output and exit codes."""

import json
import subprocess
import sys

import numpy as np
import onnx

from onnxprune import cli, stats
from onnxprune.demo import conv_weights


def test_demo_quick_writes_model_json_and_plot(tmp_path, capsys):
    assert cli.main(["demo", "--quick", "--json", "--out", str(tmp_path), "--sparsity", "0.4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (tmp_path / "vgg16_cifar.onnx").is_file() and (tmp_path / "sparsity_curve.png").is_file()
    assert json.loads((tmp_path / "demo.json").read_text()) == result
    weights = [w for _, w in conv_weights(onnx.load(result["model"]))]
    assert len(weights) == 13 == len(result["layers"])
    # The reported threshold reaches the target sparsity on the exported weights, independently checked.
    mags = np.concatenate([np.abs(w.astype(np.float64)).ravel() for w in weights])
    assert (mags <= result["threshold"]).mean() >= 0.4 > (mags < result["threshold"]).mean()
    assert result["layers"][0]["shape"] == [64, 3, 3, 3]
    assert np.isclose(result["layers"][-1]["zero_fraction"], stats.sparsity_curve([weights[-1]], [result["threshold"]])[0])


def test_bad_argument_exits_2_with_one_line(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "onnxprune.cli", "demo", "--sparsity", "1.5", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == ["onnxprune demo: --sparsity must be in [0, 1]; got 1.5"]
