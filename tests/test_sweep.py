"""`onnxprune sweep`: the chosen global threshold keeps the metric within tolerance, measured
again independently, and the next candidate above it does not."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import topologies as T

from onnxprune import cli
from onnxprune.datasets import Preprocess, load_images
from onnxprune.evaluate import OutputFidelity
from onnxprune.threshold_search import _layer_weights, thresholded


def _sparse_ssd(seed: int = 0, scale: float = 0.05) -> onnx.ModelProto:
    """ssd_heads (raw scores and boxes: fidelity is an output error, not a top-1 agreement) with
    many small conv weights, so thresholds change the outputs gradually."""
    return T.with_small_weights(T.ssd_heads("separate").model, seed, scale)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return T.saved_with_images(_sparse_ssd(), tmp_path_factory.mktemp("sweep"), 16)


def test_the_chosen_threshold_is_within_tolerance_and_the_next_is_not(setup, tmp_path, capsys):
    path, images, size = setup
    png = tmp_path / "sweep.png"
    assert cli.main(["sweep", str(path), "--data", f"images:{images}", "--metric", "fidelity", "--tolerance", "0.02",
                     "--plot", str(png), "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    chosen, above = report["chosen"], report["next_above"]
    assert chosen is not None and above is not None, report["stopped"]
    assert chosen["threshold"] < above["threshold"]
    # Measured again, independently of the search's cache.
    model = onnx.load(path)
    evaluator = OutputFidelity(model, load_images(f"images:{images}", size), Preprocess())
    weights = _layer_weights(model, ())
    assert evaluator(thresholded(model, weights, chosen["threshold"])) >= report["baseline"] - 0.02
    assert evaluator(thresholded(model, weights, above["threshold"])) < report["baseline"] - 0.02
    sparsities = [c["sparsity"] for c in report["candidates"]]
    assert sparsities == sorted(sparsities)
    assert png.stat().st_size > 10_000


def test_thresholded_zeroes_exactly_the_small_weights():
    model = _sparse_ssd()
    weights = _layer_weights(model, ())
    out = thresholded(model, weights, 0.05)
    for t in out.graph.initializer:
        if t.name in weights:
            w, new = weights[t.name], onnx.numpy_helper.to_array(t)
            np.testing.assert_array_equal(new, np.where(np.abs(w) <= 0.05, 0, w))


def test_fidelity_of_a_model_to_itself_is_one(setup):
    path, images, size = setup
    model = onnx.load(path)
    assert OutputFidelity(model, load_images(f"images:{images}", size), Preprocess())(model) == 1.0


@pytest.mark.parametrize(("extra", "needle"), [(["--metric", "accuracy"], "accuracy needs class labels"),
                                               (["--metric", "fidelity", "--tolerance", "-1"], "--tolerance must be >= 0")])  # fmt: skip
def test_bad_arguments(setup, capsys, extra, needle):
    path, images, _ = setup
    assert cli.main(["sweep", str(path), "--data", f"images:{images}", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1




def test_parallel_workers_keep_the_guarantee(setup, capsys):
    path, images, size = setup
    assert cli.main(["sweep", str(path), "--data", f"images:{images}", "--metric", "fidelity", "--tolerance", "0.02",
                     "--workers", "2", "--refine", "2", "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    chosen, above = report["chosen"], report["next_above"]
    assert chosen["within"] and not above["within"] and chosen["sparsity"] < above["sparsity"]
    # Two rounds of thirds narrow the interval to a ninth of a grid step (0.1).
    assert above["sparsity"] - chosen["sparsity"] <= 0.1 / 9 + 1e-9
    model = onnx.load(path)
    evaluator = OutputFidelity(model, load_images(f"images:{images}", size), Preprocess())
    weights = _layer_weights(model, ())
    assert evaluator(thresholded(model, weights, chosen["threshold"])) == pytest.approx(chosen["metric"])


def test_judging_pruned_models_keeps_the_shipped_model_within_tolerance(setup, tmp_path, capsys):
    """--judge pruned: the model `prune` writes at the chosen threshold is within tolerance."""
    path, images, size = setup
    assert cli.main(["sweep", str(path), "--data", f"images:{images}", "--metric", "fidelity", "--tolerance", "0.02",
                     "--judge", "pruned", "--sf-low", "0.3", "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    chosen = report["chosen"]
    assert chosen is not None and chosen["params"] is not None
    assert {c["params"] for c in report["candidates"]} != {chosen["params"]}, "candidates prune different amounts"
    out = tmp_path / "pruned.onnx"
    assert cli.main(["prune", str(path), "-o", str(out), "--threshold", str(chosen["threshold"]), "--sf-low", "0.3",
                     "--json"]) == 0  # fmt: skip
    pruned_report = json.loads(capsys.readouterr().out)
    assert pruned_report["params_after"] == chosen["params"]
    model = onnx.load(path)
    evaluator = OutputFidelity(model, load_images(f"images:{images}", size), Preprocess())
    assert evaluator(onnx.load(out)) == pytest.approx(chosen["metric"])
    assert chosen["metric"] >= report["baseline"] - 0.02
