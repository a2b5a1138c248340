"""`--kd-temperature`: Hinton's distillation loss on a classifier's logits, checked against a NumPy
reference, shown to pull the student's softened outputs towards the teacher's in `finetune` and
`compress`, and refused where it cannot apply."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import topologies as T
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxprune import cli
from onnxprune.train.loop import _kd_loss


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _kd_reference(student: np.ndarray, teacher: np.ndarray, temperature: float) -> float:
    """T^2 * mean over the batch of KL(softmax(teacher / T) || softmax(student / T))."""
    log_p, log_q = _log_softmax(teacher / temperature), _log_softmax(student / temperature)
    return float(temperature**2 * np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=1)))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), batch=st.integers(1, 6), classes=st.integers(2, 12),
       temperature=st.floats(0.5, 8.0), scale=st.floats(0.1, 20.0))  # fmt: skip
def test_kd_loss_matches_numpy(seed, batch, classes, temperature, scale):
    rng = np.random.default_rng(seed)
    student, teacher = (scale * rng.standard_normal((2, batch, classes))).astype(np.float64)
    got = float(_kd_loss(torch.from_numpy(student), torch.from_numpy(teacher), temperature))
    # _kd_loss works in float32: its log-probabilities carry ~1e-7 absolute error, which T^2 scales
    # (seed 0, batch 1, 2 classes, T = 7: 0.0096319 against 0.0096289).
    assert got == pytest.approx(_kd_reference(student, teacher, temperature), rel=1e-4, abs=1e-6 * temperature**2)
    assert float(_kd_loss(torch.from_numpy(teacher), torch.from_numpy(teacher), temperature)) == pytest.approx(0, abs=1e-5)


@pytest.fixture(scope="module")
def vgg(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vgg") / "vgg.onnx"
    onnx.save(T.dynamic_batch(T.vgg_chain("separate").model), path)
    return path


@pytest.fixture(scope="module")
def teacher(vgg, tmp_path_factory) -> Path:
    """vgg trained on random labels until its logits are confident: a teacher worth matching (the
    untrained graph's logits are all near zero)."""
    folder = tmp_path_factory.mktemp("teacher")
    data = T.labelled_npz(folder / "train.npz", 48, *_hw(vgg), seed=1)
    path = folder / "teacher.onnx"
    assert cli.main(["finetune", str(vgg), "-o", str(path), "--data", f"npz:{data}", "--epochs", "6",
                     "--batch-size", "8", "--no-augment", "--lr", "0.05", "-q"]) == 0  # fmt: skip
    return path


def _hw(model: Path) -> tuple[int, int]:
    h, w = (d.dim_value for d in onnx.load(model).graph.input[0].type.tensor_type.shape.dim[2:])
    return h, w


def _soft_gap(model: Path, teacher: Path, x: np.ndarray) -> float:
    """KL(teacher || model) of the two models' class probabilities on `x` (T = 1), in onnxruntime."""
    return _kd_reference(T.run(onnx.load(model), x)[0], T.run(onnx.load(teacher), x)[0], 1.0)


def _images(data: Path) -> np.ndarray:
    return (np.load(data)["x"].transpose(0, 3, 1, 2) / 255.0).astype(np.float32)


def test_finetune_kd_pulls_the_student_towards_the_teacher(vgg, teacher, tmp_path, capsys):
    data = T.labelled_npz(tmp_path / "train.npz", 48, *_hw(vgg), seed=2)  # other random labels than the teacher's
    x = _images(data)  # the gap measured on the images the student trains on
    runs = {"labels": [], "mse": ["--teacher", str(teacher)], "kd": ["--teacher", str(teacher), "--kd-temperature", "1"]}
    gaps = {"start": _soft_gap(vgg, teacher, x)}
    for name, extra in runs.items():
        out = tmp_path / f"{name}.onnx"
        code = cli.main(["finetune", str(vgg), "-o", str(out), "--data", f"npz:{data}", "--epochs", "6",
                         "--batch-size", "8", "--no-augment", "--lr", "0.05", "-q", *extra])  # fmt: skip
        assert code == 0, capsys.readouterr().err
        onnx.checker.check_model(onnx.load(out), full_check=True)
        gaps[name] = _soft_gap(out, teacher, x)
    assert gaps["kd"] < 0.5 * gaps["start"] and gaps["kd"] < 0.5 * gaps["labels"], gaps
    assert gaps["kd"] != pytest.approx(gaps["mse"], rel=1e-3), gaps  # the option changes the loss


def test_finetune_kd_without_labels(vgg, teacher, tmp_path, capsys):
    from PIL import Image

    h, w = _hw(vgg)
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, (48, h, w, 3), dtype=np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{i}.png")
    x = (pixels.transpose(0, 3, 1, 2) / 255.0).astype(np.float32)
    out = tmp_path / "kd.onnx"
    code = cli.main(["finetune", str(vgg), "-o", str(out), "--data", f"images:{folder}", "--teacher", str(teacher),
                     "--kd-temperature", "1", "--epochs", "6", "--batch-size", "8", "--no-augment", "--lr", "0.05",
                     "-q"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    gaps = _soft_gap(out, teacher, x), _soft_gap(vgg, teacher, x)
    assert gaps[0] < 0.6 * gaps[1], gaps


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--kd-temperature", "4"], "--kd-temperature needs a teacher"),
        (["--teacher", "SELF", "--kd-temperature", "0"], "--kd-temperature must be > 0"),
        (["--teacher", "SELF", "--kd-temperature", "-1"], "--kd-temperature must be > 0"),
    ],
)
def test_kd_bad_arguments(vgg, tmp_path, capsys, extra, needle):
    data = T.labelled_npz(tmp_path / "train.npz", 8, 16, 16)
    out = tmp_path / "out.onnx"
    extra = [str(vgg) if a == "SELF" else a for a in extra]
    code = cli.main(["finetune", str(vgg), "-o", str(out), "--data", f"npz:{data}", "--epochs", "1", "-q", *extra])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_kd_refuses_a_detector(tmp_path, capsys):
    from onnxprune.zoo import export_ssd, tiny_ssd

    ssd = tmp_path / "ssd.onnx"
    export_ssd(tiny_ssd(seed=0), ssd)
    out = tmp_path / "out.onnx"
    code = cli.main(["finetune", str(ssd), "-o", str(out), "--data", "shapes:train:8", "--teacher", str(ssd),
                     "--kd-temperature", "4", "--epochs", "1", "-q"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "distils a classifier's logits" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_compress_kd_implies_distillation_from_the_original(tmp_path, capsys):
    """compress with --kd-temperature alone distils from the model it compresses (here one trained
    on other labels, whose logits are confident): its result stays closer to it than labels alone."""
    resnet, trained = tmp_path / "resnet.onnx", tmp_path / "trained.onnx"
    onnx.save(T.dynamic_batch(T.resnet_blocks("separate").model), resnet)
    own = T.labelled_npz(tmp_path / "own.npz", 48, 16, 16, seed=1)
    assert cli.main(["finetune", str(resnet), "-o", str(trained), "--data", f"npz:{own}", "--epochs", "6",
                     "--batch-size", "8", "--no-augment", "--lr", "0.05", "-q"]) == 0  # fmt: skip
    data = T.labelled_npz(tmp_path / "train.npz", 32, 16, 16, seed=2)
    x = _images(data)
    gaps = {}
    for name, extra in {"labels": [], "kd": ["--kd-temperature", "1"]}.items():
        out = tmp_path / f"{name}.onnx"
        args = ["compress", str(trained), "-o", str(out), "--data", f"npz:{data}", "--phases", "*/conv1/*",
                "--flops-target", "0.3", "--finetune-epochs", "3", "--batch-size", "8", "--no-augment", "--json"]  # fmt: skip
        assert cli.main(args + extra) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["distilled"] == (name == "kd") and report["flops_after"] < report["flops_before"]
        gaps[name] = _soft_gap(out, trained, x)
    assert report["teacher"] == str(trained)
    assert gaps["kd"] < 0.5 * gaps["labels"], gaps
