"""Bad input to `onnxprune prune` / `analyze`: exit code 2 with one clear line (or a pinned
group with its reason), the input untouched, and no partial output file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import topologies as T
from onnx import TensorProto, helper, numpy_helper

from onnxprune import cli

ZERO = ["--threshold", "0", "--sf", "1", "--sf-low", "1", "--sg", "1"]


def _chain(input_shape=(1, 3, 8, 8), middle: list[onnx.NodeProto] | None = None, inits=(), opset=17, head="gap"):
    """input -> conv_a (8) -> [middle ops from "a" to "m"] -> conv_b (6) -> head -> output."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "wa"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "ba"),
        numpy_helper.from_array(rng.standard_normal((6, 8, 3, 3)).astype(np.float32), "wb"),
        numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "wfc"),
        *inits,
    ]
    nodes = [helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a", pads=[1, 1, 1, 1])]
    nodes += middle if middle is not None else [helper.make_node("Relu", ["a"], ["m"], name="relu")]
    nodes.append(helper.make_node("Conv", ["m", "wb"], ["b"], name="conv_b", pads=[1, 1, 1, 1]))
    if head == "gap":
        nodes += [helper.make_node("GlobalAveragePool", ["b"], ["g"], name="gap"),
                  helper.make_node("Flatten", ["g"], ["f"], name="flatten")]  # fmt: skip
    else:
        weights[3] = numpy_helper.from_array(rng.standard_normal((4, 6 * 64)).astype(np.float32), "wfc")
        nodes.append(helper.make_node("Flatten", ["b"], ["f"], name="flatten"))
    nodes.append(helper.make_node("Gemm", ["f", "wfc"], ["y"], name="fc", transB=1))
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [input_shape[0], 4])], weights,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _run_file(path: Path, x: np.ndarray) -> list[np.ndarray]:
    """onnxruntime outputs of the model file at `path` (reads its external data itself)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def _run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line.startswith("[")]  # progress lines start with [
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _assert_refused(args: list[str], out: Path, capsys, *needles: str) -> None:
    code, _, err = _run_cli(args, capsys)
    line = _one_line_error(err)
    assert code == 2
    for needle in needles:
        assert needle in line, line
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")], "a temporary file was left"


def test_missing_file(tmp_path, capsys):
    out = tmp_path / "out.onnx"
    _assert_refused(["prune", str(tmp_path / "nope.onnx"), "-o", str(out)], out, capsys, "nope.onnx", "no such file")


def test_not_onnx(tmp_path, capsys):
    src, out = tmp_path / "notes.onnx", tmp_path / "out.onnx"
    src.write_text("this is not a model\n" * 20)
    _assert_refused(["prune", str(src), "-o", str(out)], out, capsys, "notes.onnx")
    assert src.read_text() == "this is not a model\n" * 20


def test_truncated_file(tmp_path, capsys):
    src, out = tmp_path / "cut.onnx", tmp_path / "out.onnx"
    data = _chain().SerializeToString()
    src.write_bytes(data[: len(data) // 2])
    _assert_refused(["prune", str(src), "-o", str(out)], out, capsys, "cut.onnx")
    assert src.read_bytes() == data[: len(data) // 2]


def test_opset_too_old(tmp_path, capsys):
    src, out = tmp_path / "old.onnx", tmp_path / "out.onnx"
    model = _chain(opset=6)
    model.ir_version = 3
    onnx.save(model, src)
    _assert_refused(["prune", str(src), "-o", str(out)], out, capsys, "opset 6 is too old")


def test_output_equal_to_input(tmp_path, capsys):
    src = tmp_path / "model.onnx"
    onnx.save(_chain(), src)
    before = src.read_bytes()
    code, _, err = _run_cli(["prune", str(src), "-o", str(src)], capsys)
    assert code == 2 and "output path is the input" in _one_line_error(err)
    assert src.read_bytes() == before


def test_missing_output_folder(tmp_path, capsys):
    src, out = tmp_path / "model.onnx", tmp_path / "no" / "out.onnx"
    onnx.save(_chain(), src)
    code, _, err = _run_cli(["prune", str(src), "-o", str(out)], capsys)
    assert code == 2 and "does not exist" in _one_line_error(err)


def test_external_data_outside_the_model_folder(tmp_path, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    model = _chain()
    onnx.save(model, folder / "m.onnx", save_as_external_data=True, location="m.data", size_threshold=0)
    (folder / "m.data").rename(tmp_path / "m.data")
    reloaded = onnx.load(folder / "m.onnx", load_external_data=False)
    for t in reloaded.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = "../m.data"
    onnx.save(reloaded, folder / "m.onnx")
    out = tmp_path / "out.onnx"
    _assert_refused(["prune", str(folder / "m.onnx"), "-o", str(out)], out, capsys, "outside the model's folder")


def test_unknown_op_pins_its_groups(tmp_path, capsys):
    middle = [helper.make_node("LRN", ["a"], ["m"], name="lrn", size=3)]
    src, out = tmp_path / "lrn.onnx", tmp_path / "out.onnx"
    onnx.save(T.zero_channels(_chain(middle=middle), "conv_a", [1]), src)
    code, stdout, _ = _run_cli(["prune", str(src), "-o", str(out), *ZERO, "--json"], capsys)
    assert code == 0
    group = next(g for g in json.loads(stdout)["groups"] if g["name"] == "conv_a")
    assert group["pinned_by"] == ["no rule for op LRN (node lrn)"]
    assert group["channels_after"] == group["channels_before"]


def test_quantized_weights_pin_their_groups(tmp_path, capsys):
    rng = np.random.default_rng(0)
    q = numpy_helper.from_array(rng.integers(-100, 100, (8, 8, 1, 1)).astype(np.int8), "wq")
    scale = numpy_helper.from_array(np.float32(0.01), "wq_scale")
    middle = [
        helper.make_node("DequantizeLinear", ["wq", "wq_scale"], ["wdq"], name="dequant"),
        helper.make_node("Conv", ["a", "wdq"], ["m"], name="conv_q"),
    ]
    src, out = tmp_path / "q.onnx", tmp_path / "out.onnx"
    onnx.save(T.zero_channels(_chain(middle=middle, inits=[q, scale]), "conv_a", [1]), src)
    code, stdout, _ = _run_cli(["prune", str(src), "-o", str(out), *ZERO, "--json"], capsys)
    assert code == 0
    groups = {g["name"]: g for g in json.loads(stdout)["groups"]}
    assert "quantized weights" in groups["conv_a"]["pinned_by"][0]
    assert groups["conv_a"]["channels_after"] == 8


def test_integer_weights_in_a_float_conv_are_refused(tmp_path, capsys):
    model = _chain()
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((8, 3, 3, 3), dtype=np.int32), "wa"))
    src, out = tmp_path / "int.onnx", tmp_path / "out.onnx"
    onnx.save(model, src)
    _assert_refused(["prune", str(src), "-o", str(out)], out, capsys, "invalid ONNX model")


def test_dynamic_batch_and_spatial_dims(tmp_path, capsys):
    model = T.zero_channels(_chain(input_shape=("N", 3, "H", "W")), "conv_a", [1, 4])
    src, out = tmp_path / "dyn.onnx", tmp_path / "out.onnx"
    onnx.save(model, src)
    code, stdout, _ = _run_cli(["prune", str(src), "-o", str(out), *ZERO, "--json"], capsys)
    assert code == 0
    group = next(g for g in json.loads(stdout)["groups"] if g["name"] == "conv_a")
    assert group["channels_after"] == 6
    pruned = onnx.load(out)
    for shape in ((1, 3, 8, 8), (2, 3, 12, 16)):
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(T.run(pruned, x)[0], T.run(model, x)[0], rtol=1e-5, atol=1e-5)


def test_dynamic_spatial_dims_before_flatten_pin(tmp_path, capsys):
    model = _chain(input_shape=(1, 3, "H", "W"), head="flatten")
    src, out = tmp_path / "dyn.onnx", tmp_path / "out.onnx"
    onnx.save(T.zero_channels(model, "conv_b", [1]), src)
    code, stdout, _ = _run_cli(["prune", str(src), "-o", str(out), *ZERO, "--json"], capsys)
    assert code == 0
    group = next(g for g in json.loads(stdout)["groups"] if g["name"] == "conv_b")
    assert "spatial size is not known" in group["pinned_by"][0]
    assert group["channels_after"] == 6


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--sf", "1.5"], "--sf must be in [0, 1]"),
        (["--sf", "0.4", "--sf-low", "0.5"], "--sf-low (0.5) must not exceed --sf (0.4)"),
        (["--threshold", "-1"], "--threshold must be"),
        (["--sparsity", "2"], "--sparsity must be in [0, 1]"),
        (["--round-to", "0"], "--round-to must be >= 1"),
        (["--layers", "nothing*"], "matches no layer"),
        (["--plan", "missing-plan.json"], "not a readable plan"),
    ],
)
def test_bad_arguments(flags, needle, tmp_path, capsys):
    src, out = tmp_path / "model.onnx", tmp_path / "out.onnx"
    onnx.save(_chain(), src)
    _assert_refused(["prune", str(src), "-o", str(out), *flags], out, capsys, needle)


def test_a_plan_for_another_model_is_refused(tmp_path, capsys):
    first, second, out = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "out.onnx"
    onnx.save(_chain(), first)
    onnx.save(_chain(middle=[helper.make_node("Relu", ["a"], ["r"], name="r"),
                             helper.make_node("Conv", ["r", "wa2"], ["m"], name="conv_extra")],
                     inits=[numpy_helper.from_array(np.ones((8, 8, 1, 1), np.float32), "wa2")]), second)  # fmt: skip
    plan = tmp_path / "plan.json"
    assert cli.main(["prune", str(second), "-o", str(tmp_path / "x.onnx"), "--plan-out", str(plan), "-q"]) == 0
    _assert_refused(["prune", str(first), "-o", str(out), "--plan", str(plan)], out, capsys, "conv_extra")


@pytest.mark.slow
def test_a_model_over_2gb_is_pruned_and_saved_with_external_data(tmp_path, capsys):
    """2.2 GB of weights in a branch the prune does not touch: read from external data, written
    back with external data (protobuf cannot hold 2 GiB), outputs unchanged."""
    model = T.zero_channels(_chain(), "conv_a", [1, 4])
    columns = 2_900_000  # 192 x 2.9M float32 = 2.2 GB
    g = model.graph
    g.node.extend([helper.make_node("Flatten", ["x"], ["xf"], name="flatten_x"),
                   helper.make_node("MatMul", ["xf", "big"], ["y2"], name="big_matmul")])  # fmt: skip
    g.output.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, columns]))
    big = g.initializer.add()  # filled in place: protobuf cannot copy a message this big
    big.name, big.data_type = "big", TensorProto.FLOAT
    big.dims.extend([192, columns])
    big.raw_data = np.full(192 * columns, 0.5, np.float32).tobytes()
    src, out = tmp_path / "big.onnx", tmp_path / "out.onnx"
    onnx.save(model, src, save_as_external_data=True, location="big.onnx.data", size_threshold=1024)
    del model, big
    code, stdout, _ = _run_cli(["prune", str(src), "-o", str(out), *ZERO, "--json"], capsys)
    assert code == 0
    group = next(g for g in json.loads(stdout)["groups"] if g["name"] == "conv_a")
    assert group["channels_after"] == 6
    assert (tmp_path / "out.onnx.data").stat().st_size > 2**31
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    y_in, y2_in = _run_file(src, x)
    y_out, y2_out = _run_file(out, x)
    np.testing.assert_allclose(y_out, y_in, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y2_out, y2_in)
