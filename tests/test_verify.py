"""`prune` checks its own contract: both models run in onnxruntime on seeded probe inputs; the
measured deviation is reported; where every removal was called exact, a deviation is an internal
error that names the output and the node that caused it, and nothing is written."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import topologies as T
from onnx import TensorProto, helper, numpy_helper

from onnxprune import cli, surgery
from onnxprune.verify import VerificationError, probe_reference, verify_pruned

ZERO = ["--threshold", "0", "--sf", "1", "--sf-low", "1", "--sg", "1"]


def _run(tmp_path, model, flags, capsys):
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(model, src)
    code = cli.main(["prune", str(src), "-o", str(out), *flags])
    return code, out, capsys.readouterr()


def test_report_holds_the_measured_deviation(tmp_path, capsys):
    # The stem's constant channels reach 1x1 convs only: folded into their biases exactly.
    model = T.constant_channels(T.inception_concat("separate").model, "/stem/Conv", [0, 3], 0.75)
    code, out, captured = _run(tmp_path, model, [*ZERO, "--json"], capsys)
    assert code == 0, captured.err
    v = json.loads(captured.out)["verification"]
    assert v["status"] == "passed" and v["probes"] == 2
    assert 0 <= v["max_deviation"] <= v["tolerance"]
    assert v["worst_output"] == "logits" and set(v["outputs"]) == {"logits"}
    assert json.loads((tmp_path / "out.onnx.report.json").read_text())["verification"] == v


def test_text_report_says_it_verified(tmp_path, capsys):
    model = T.zero_channels(T.vgg_chain().model, "/conv2/Conv", [1])
    code, _, captured = _run(tmp_path, model, ZERO, capsys)
    assert code == 0, captured.err
    assert "verified on 2 probe inputs in onnxruntime" in captured.out


def _corrupt_folds(monkeypatch):
    """A surgery bug on purpose: every constant a removed channel holds is taken 0.5 too large."""
    step = surgery._Surgery._step_layer

    def wrong(self, node, detail):
        step(self, node, detail)
        v = self.values[node.outputs[0].name]
        self.values[node.outputs[0].name] = np.where(np.isfinite(v), v + 0.5, v)

    monkeypatch.setattr(surgery._Surgery, "_step_layer", wrong)


def test_a_wrong_fold_is_an_internal_error_and_nothing_is_written(tmp_path, capsys, monkeypatch):
    model = T.constant_channels(T.inception_concat().model, "/stem/Conv", [0, 3], 0.75)
    _corrupt_folds(monkeypatch)
    with pytest.raises(VerificationError) as err:
        _run(tmp_path, model, ZERO, capsys)
    message = str(err.value)
    assert "'logits'" in message and "nothing was written" in message
    # The stem's removed channels go through ReLU into 1x1 convs: their biases got wrong constants.
    assert "'/branch1/Conv'" in message and "folded" in message
    assert not (tmp_path / "out.onnx").exists() and not (tmp_path / "out.onnx.report.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in.onnx"]


def test_no_verify_writes_the_model_anyway(tmp_path, capsys, monkeypatch):
    model = T.constant_channels(T.inception_concat().model, "/stem/Conv", [0, 3], 0.75)
    _corrupt_folds(monkeypatch)
    code, out, captured = _run(tmp_path, model, [*ZERO, "--no-verify", "--json"], capsys)
    assert code == 0, captured.err
    assert out.exists() and json.loads(captured.out)["verification"] is None


def test_approximate_removals_report_their_deviation_without_error(tmp_path, capsys):
    topo = T.vgg_chain()
    model = T.with_small_weights(topo.model)
    code, _, captured = _run(tmp_path, model, ["--threshold", "0.05", "--sf", "0.5", "--sf-low", "0.5", "--sg", "0.5",
                                               "--json"], capsys)  # fmt: skip
    assert code == 0, captured.err
    report = json.loads(captured.out)
    approximate = sum(g["removal"]["approximate"] for g in report["groups"])
    assert approximate > 0
    v = report["verification"]
    assert v["status"] == "deviates" and v["max_deviation"] > v["tolerance"]


def _nms_model() -> onnx.ModelProto:
    """conv -> scores (1, 4, 8) -> NonMaxSuppression; outputs the raw boxes and the selected indices."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Reshape", ["c", "shape"], ["boxes"], name="reshape"),
        helper.make_node("ReduceMean", ["c"], ["s"], name="mean", axes=[1], keepdims=0),
        helper.make_node("Reshape", ["s", "shape2"], ["scores"], name="reshape2"),
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "k"], ["selected"], name="nms"),
    ]
    inits = [w, numpy_helper.from_array(np.array([1, 4, 4], np.int64), "shape"),
             numpy_helper.from_array(np.array([1, 1, 4], np.int64), "shape2"),
             numpy_helper.from_array(np.array([2], np.int64), "k")]  # fmt: skip
    graph = helper.make_graph(
        nodes, "nms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, None),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 4, 2, 2])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_outputs_behind_nms_are_left_out_and_its_inputs_compared():
    model = _nms_model()
    reference = probe_reference(model)
    assert reference.skipped is None
    assert reference.not_compared == ["selected"]
    assert set(reference.compare) == {"c", "boxes", "scores"}
    v = verify_pruned(reference, model, keep={}, expect_exact=True)
    assert v.status == "passed" and v.max_deviation == 0.0


def test_a_model_onnxruntime_cannot_run_is_skipped_with_a_reason():
    model = T.vgg_chain().model
    model.graph.node[0].domain = "com.example"  # an op nobody implements
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    v = verify_pruned(probe_reference(model), model, keep={}, expect_exact=True)
    assert v.status == "skipped" and "cannot run the input model" in v.reason
