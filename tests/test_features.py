"""Feature distillation: which residual-block outputs a pruned student shares with its teacher, and
that `finetune --distill-features` trains them towards the teacher's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import topologies as T

from onnxprune import cli, prune
from onnxprune.train.features import residual_outputs, shared_features, with_outputs

BLOCK_OUTPUTS = ["/block1/Relu_1_output_0", "/block2/Relu_1_output_0"]


@pytest.mark.parametrize(
    ("builder", "expected"),
    [
        ("resnet_blocks", BLOCK_OUTPUTS),  # Add -> Relu: the block's output is the Relu's
        ("fpn_resize_add", ["/Add_output_0"]),  # Add with no activation after it
        ("vgg_chain", []),
        ("inception_concat", []),
        ("onnx_chain_misc", []),  # its Adds add constants (per-channel biases), not branches
    ],
)
def test_residual_outputs_per_topology(builder, expected):
    topology = T.onnx_chain_misc() if builder == "onnx_chain_misc" else getattr(T, builder)("separate")
    assert residual_outputs(topology.model) == expected


@pytest.fixture(scope="module")
def resnet(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resnet") / "resnet.onnx"
    onnx.save(T.dynamic_batch(T.resnet_blocks("separate").model), path)
    return path


def _pruned(resnet: Path, zeroed: dict[str, list[int]], layers: tuple[str, ...]) -> onnx.ModelProto:
    model = onnx.load(resnet)
    for conv, channels in zeroed.items():
        model = T.zero_channels(model, conv, channels)
    return prune(model, threshold=1e-12, layers=layers)["model"]


def test_shared_features_leave_out_what_the_prune_changed(resnet):
    teacher = onnx.load(resnet)
    inner = _pruned(resnet, {"/block1/conv1/Conv": [0, 1, 2], "/block2/conv1/Conv": [3, 4]}, ("*/conv1/*",))
    assert shared_features(inner, teacher) == BLOCK_OUTPUTS
    # Cutting the residual chain of block 1 (the stem and block1/conv2 are tied) narrows its output.
    chain = _pruned(resnet, {"/stem/Conv": [0, 1], "/block1/conv2/Conv": [0, 1]}, ("/stem/*", "/block1/conv2/*"))
    assert shared_features(chain, teacher) == BLOCK_OUTPUTS[1:]
    assert shared_features(teacher, teacher) == BLOCK_OUTPUTS


def _feature_error(model: onnx.ModelProto, teacher: onnx.ModelProto, x: np.ndarray) -> float:
    """Mean squared error of the block outputs against the teacher's, relative to their mean square."""
    ours = T.run(with_outputs(model, BLOCK_OUTPUTS), x)[-2:]
    theirs = T.run(with_outputs(teacher, BLOCK_OUTPUTS), x)[-2:]
    return float(np.mean([np.mean((a - b) ** 2) / np.mean(b**2) for a, b in zip(ours, theirs, strict=True)]))


def test_finetune_distill_features_brings_the_blocks_closer_to_the_teacher(resnet, tmp_path, capsys):
    student = tmp_path / "student.onnx"
    onnx.save(_pruned(resnet, {"/block1/conv1/Conv": [0, 1, 2, 3], "/block2/conv1/Conv": list(range(8))},
                      ("*/conv1/*",)), student)  # fmt: skip
    data = T.labelled_npz(tmp_path / "train.npz", 64, 16, 16)
    errors = {}
    for features in (False, True):
        out = tmp_path / f"features_{features}.onnx"
        args = ["finetune", str(student), "-o", str(out), "--data", f"npz:{data}", "--teacher", str(resnet),
                "--epochs", "3", "--batch-size", "8", "--no-augment", "--json"]  # fmt: skip
        assert cli.main(args + ["--distill-features"] * features) == 0
        assert json.loads(capsys.readouterr().out)["epochs"] == 3
        trained = onnx.load(out)
        # The written model is the student's graph: no extra outputs.
        assert [o.name for o in trained.graph.output] == [o.name for o in onnx.load(student).graph.output]
        onnx.checker.check_model(trained, full_check=True)
        x = (np.load(data)["x"][:32].transpose(0, 3, 1, 2) / 255.0).astype(np.float32)
        errors[features] = _feature_error(trained, onnx.load(resnet), x)
    assert errors[True] < 0.7 * errors[False], errors


@pytest.mark.parametrize(
    ("teacher", "needle"),
    [(None, "--distill-features needs a teacher"), ("vgg", "share no residual-merge output")],
)
def test_distill_features_bad_input(resnet, tmp_path, capsys, teacher, needle):
    data = T.labelled_npz(tmp_path / "train.npz", 8, 16, 16)
    model = resnet
    args = []
    if teacher == "vgg":
        model = tmp_path / "vgg.onnx"
        onnx.save(T.dynamic_batch(T.vgg_chain("separate").model), model)
        args = ["--teacher", str(model)]
    out = tmp_path / "out.onnx"
    code = cli.main(["finetune", str(model), "-o", str(out), "--data", f"npz:{data}", "--epochs", "1",
                     "--distill-features", "-q", *args])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_compress_distill_features_teaches_the_stages_and_the_dense_baseline(resnet, tmp_path, capsys):
    data = T.labelled_npz(tmp_path / "train.npz", 32, 16, 16)
    x = (np.load(data)["x"].transpose(0, 3, 1, 2) / 255.0).astype(np.float32)
    errors = {}
    for features in (False, True):
        out = tmp_path / f"features_{features}.onnx"
        args = ["compress", str(resnet), "-o", str(out), "--data", f"npz:{data}", "--phases", "*/conv1/*",
                "--flops-target", "0.3", "--finetune-epochs", "2", "--batch-size", "8", "--no-augment", "--distill",
                "--json"]  # fmt: skip
        assert cli.main(args + ["--distill-features", "--dense-baseline"] * features) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["distilled"] and report["teacher"] == str(resnet)
        assert report["flops_after"] < report["flops_before"]
        trained = onnx.load(out)
        assert [o.name for o in trained.graph.output] == [o.name for o in onnx.load(resnet).graph.output]
        errors[features] = _feature_error(trained, onnx.load(resnet), x)
    assert report["dense_tuned_epochs"] == 2 and 0 <= report["metric_dense_tuned"] <= 1
    assert errors[True] < 0.7 * errors[False], errors
