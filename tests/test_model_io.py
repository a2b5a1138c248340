"""model_io: clear errors for bad model files, atomic saves, external data kept inside the folder."""

import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.model_io import MIN_OPSET, InputError, load_model, save_model


def conv_model(opset: int = 13, channels: int = 4, seed: int = 0) -> onnx.ModelProto:
    """input (1,3,8,8) -> Conv(3->channels, 3x3, pad 1) -> Relu -> output (1,channels,8,8)"""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(channels, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["output"], name="relu")],
        "conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, channels, 8, 8])],
        [w, b],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def write(model: onnx.ModelProto, path) -> None:
    path.write_bytes(model.SerializeToString())


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---- loading ----


def test_load_round_trip(tmp_path):
    write(conv_model(), tmp_path / "m.onnx")
    model = load_model(tmp_path / "m.onnx")
    assert [n.name for n in model.graph.node] == ["conv", "relu"]
    assert load_model(model) is model


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "it is a folder"),
        (lambda p: p.write_bytes(b"this is not a model\n" * 10), "not"),
        (lambda p: p.write_bytes(conv_model().SerializeToString()[:150]), "not"),
        (lambda p: p.write_bytes(b""), "not an ONNX model"),
        (lambda p: write(conv_model(opset=1), p), f"opset 1 is too old for onnxruntime .*{MIN_OPSET}"),
    ],
    ids=["missing", "folder", "text", "truncated", "empty", "old-opset"],
)
def test_bad_files_give_one_clear_line(tmp_path, make, message):
    path = tmp_path / "m.onnx"
    make(path)
    with pytest.raises(InputError, match=message) as info:
        load_model(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_invalid_graph_is_reported(tmp_path):
    model = conv_model()
    model.graph.node[1].input[0] = "nowhere"  # reads a tensor nothing produces
    write(model, tmp_path / "m.onnx")
    with pytest.raises(InputError, match="invalid ONNX model"):
        load_model(tmp_path / "m.onnx")
    assert load_model(tmp_path / "m.onnx", check=False).graph.node[1].input[0] == "nowhere"


def _with_external_location(model: onnx.ModelProto, location: str) -> onnx.ModelProto:
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value=location)
    return model


def test_external_data_outside_the_folder_is_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(4 * 3 * 3 * 3, np.float32).tobytes())
    (tmp_path / "models").mkdir()
    path = tmp_path / "models" / "m.onnx"
    write(_with_external_location(conv_model(), "../secret.bin"), path)
    with pytest.raises(InputError, match="outside the model's folder"):
        load_model(path)
    write(_with_external_location(conv_model(), str(secret)), path)
    with pytest.raises(InputError, match="outside the model's folder"):
        load_model(path)


def test_missing_external_data_is_reported(tmp_path):
    write(_with_external_location(conv_model(), "weights.bin"), tmp_path / "m.onnx")
    with pytest.raises(InputError, match="external data file 'weights.bin', which is missing"):
        load_model(tmp_path / "m.onnx")


# ---- saving ----


def test_save_is_atomic_and_leaves_nothing_behind(tmp_path):
    out = save_model(conv_model(), tmp_path / "out.onnx")
    assert out == tmp_path / "out.onnx" and leftovers(tmp_path) == []
    assert load_model(out).graph.node[0].name == "conv"


def test_failed_save_leaves_no_partial_file(tmp_path, monkeypatch):
    original = onnx.save_model
    def broken(model, path, **kwargs):  # writes part of the output, then fails
        original(model, path, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save_model", broken)
    model = conv_model()
    with pytest.raises(OSError, match="disk full"):
        save_model(model, tmp_path / "out.onnx", external_data_threshold=0)
    assert list(tmp_path.iterdir()) == []
    assert model.graph.initializer[0].HasField("raw_data")  # the caller's tensors are back


def test_output_equal_to_input_is_refused_and_input_untouched(tmp_path):
    path = tmp_path / "m.onnx"
    write(conv_model(), path)
    before = path.read_bytes()
    for same in (path, tmp_path / "." / "m.onnx"):
        with pytest.raises(InputError, match="the output path is the input model"):
            save_model(conv_model(channels=2), same, input_path=path)
    assert path.read_bytes() == before


def test_bad_output_locations(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        save_model(conv_model(), tmp_path / "nowhere" / "out.onnx")
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        save_model(conv_model(), tmp_path / "d")


def test_external_data_round_trip_keeps_the_callers_proto(tmp_path):
    model = conv_model()
    out = save_model(model, tmp_path / "out.onnx", external_data_threshold=0)
    assert (tmp_path / "out.onnx.data").is_file() and leftovers(tmp_path) == []
    assert model.graph.initializer[0].HasField("raw_data")  # not converted in place
    loaded = load_model(out)
    for a, b in zip(model.graph.initializer, loaded.graph.initializer, strict=True):
        np.testing.assert_array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))


@pytest.mark.slow
def test_model_over_2gb_is_saved_with_external_data_and_loads(tmp_path):
    model = conv_model()
    big = model.graph.initializer.add()  # filled in place: protobuf cannot copy a message this big
    big.name, big.data_type = "big", TensorProto.FLOAT
    big.dims.append(560_000_000)  # 2.24 GB, over 2 GiB
    big.raw_data = np.ones(560_000_000, np.float32).tobytes()
    out = save_model(model, tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").stat().st_size > 2**31
    assert (tmp_path / "big.onnx").stat().st_size < 2**20
    loaded = load_model(out)
    assert numpy_helper.to_array(loaded.graph.initializer[-1]).shape == (560_000_000,)


# ---- the real models of ../shared/assets ----


def test_shared_models_load_and_the_legacy_one_is_refused(assets):
    models = sorted((assets / "models").glob("*.onnx"))
    assert models
    for path in models:
        before = hashlib.sha256(path.read_bytes()).hexdigest()
        if path.name == "onnxzoo_mnist_legacy.onnx":
            with pytest.raises(InputError, match="opset 1 is too old"):
                load_model(path)
        else:
            assert len(load_model(path).graph.node) > 0
        assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # the input is never written
