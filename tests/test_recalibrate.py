"""BatchNorm statistics re-estimated after pruning (`compress --recalibrate-bn`): the running mean
and variance become those of the data, checked against onnxruntime's view of the conv outputs;
models without BatchNorm come back as they were; the evaluator wrapper and the compress stage."""

from __future__ import annotations

import json

import numpy as np
import onnx
import topologies as T
import torch
from torch import nn

from onnxprune import cli
from onnxprune.datasets import ImageSet, Preprocess, load_images
from onnxprune.train.recalibrate import Recalibrated, recalibrate_batchnorm, reestimate_batchnorm


def _images(count: int, seed: int = 0) -> ImageSet:
    rng = np.random.default_rng(seed)
    return ImageSet(rng.integers(0, 256, (count, 16, 16, 3), dtype=np.uint8), np.full(count, -1), source="random")


def _batchnorms(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "BatchNormalization"]


def test_statistics_become_those_of_the_data():
    model = T.dynamic_batch(T.vgg_chain("separate").model)
    inits = {t.name: t for t in model.graph.initializer}
    for bn in _batchnorms(model):  # statistics that fit nothing
        for name, value in ((bn.input[3], 5.0), (bn.input[4], 9.0)):
            shape = onnx.numpy_helper.to_array(inits[name]).shape
            inits[name].CopyFrom(onnx.numpy_helper.from_array(np.full(shape, value, np.float32), name))
    images, preprocess = _images(24), Preprocess()
    fixed = recalibrate_batchnorm(model, images, preprocess, batch_size=64)  # one batch: plain mean and variance
    first = _batchnorms(model)[0]
    conv_out = T.run(T.with_outputs(model, [first.input[0]]), _as_input(images.images))[-1].astype(np.float64)
    values = {t.name: onnx.numpy_helper.to_array(t) for t in fixed.graph.initializer}
    np.testing.assert_allclose(values[first.input[3]], conv_out.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(values[first.input[4]], conv_out.var(axis=(0, 2, 3), ddof=1), rtol=1e-4, atol=1e-5)
    # Nothing else moved: weights, scales and the graph are the model's own.
    for t in model.graph.initializer:
        if t.name not in {n for bn in _batchnorms(model) for n in bn.input[3:5]}:
            np.testing.assert_array_equal(values[t.name], onnx.numpy_helper.to_array(t))
    assert [n.name for n in fixed.graph.node] == [n.name for n in model.graph.node]


def _as_input(images: np.ndarray) -> np.ndarray:
    """Preprocess() as NumPy: NHWC uint8 -> NCHW float in [0, 1]."""
    return (images.astype(np.float32) / 255).transpose(0, 3, 1, 2).copy()


def test_models_without_batchnorm_come_back_unchanged():
    model = T.vgg_chain("folded").model
    assert not _batchnorms(model)
    assert recalibrate_batchnorm(model, _images(8), Preprocess()).SerializeToString() == model.SerializeToString()


def test_the_evaluator_judges_the_recalibrated_model():
    seen = []

    class Spy:
        name, higher_is_better = "spy", False

        def __call__(self, model):
            seen.append(model)
            return 0.5

    judge = Recalibrated(Spy(), _images(16), Preprocess())
    assert (judge.name, judge.higher_is_better) == ("spy", False)
    model = T.vgg_chain("separate").model
    assert judge(model) == 0.5
    mean = _batchnorms(model)[0].input[3]
    before = next(t for t in model.graph.initializer if t.name == mean)
    after = next(t for t in seen[0].graph.initializer if t.name == mean)
    assert not np.allclose(onnx.numpy_helper.to_array(before), onnx.numpy_helper.to_array(after))


def test_compress_judges_and_writes_recalibrated_pruned_models(tmp_path, capsys):
    model = T.dynamic_batch(T.with_small_weights(T.vgg_chain("separate").model, 0, 0.05))
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    data = T.labelled_npz(tmp_path / "train.npz", 32)
    out = tmp_path / "small.onnx"
    code = cli.main(["compress", str(src), "-o", str(out), "--data", f"npz:{data}", "--finetune-epochs", "1",
                     "--tolerance", "1", "--batch-size", "8", "--no-augment", "--recalibrate-bn", "16", "--json",
                     "--val", f"npz:{data}", "--val-limit", "24"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (stage,) = json.loads(captured.out)["stages"]
    assert stage["batchnorm_recalibrated"] is True
    # Its fine-tuning was judged on the same 24 validation images: per epoch, and for --precise-bn.
    tuned = json.loads((tmp_path / "small.onnx.stages" / "1_tuned.onnx.report.json").read_text())
    scores = tuned["bn_scores"]  # judged by compress's metric, in onnxruntime
    assert scores.keys() == {"metric", "running", "reestimated"} and scores["metric"] == "accuracy"
    assert tuned["metric_after"] == max(scores["running"], scores["reestimated"]) == stage["metric_tuned"]
    assert all(float(24 * h["accuracy"]).is_integer() for h in tuned["history"])
    # The stage's pruned model holds the statistics of the 16 images compress took: estimating
    # them again on those images changes nothing, and they are not the source's.
    pruned = onnx.load(tmp_path / "small.onnx.stages" / "1_pruned.onnx")
    again = recalibrate_batchnorm(pruned, load_images(f"npz:{data}", (16, 16), 16), Preprocess())
    mean = _batchnorms(pruned)[0].input[3]

    def value(m):
        return onnx.numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == mean))

    np.testing.assert_allclose(value(again), value(pruned), rtol=1e-4, atol=1e-6)
    kept = len(value(pruned))
    assert kept <= len(value(model)) and not np.allclose(value(pruned), value(model)[:kept])


def test_compress_distill_adds_the_original_or_a_given_teacher_to_labels(tmp_path, capsys):
    """--distill: the labelled pipeline also matches the original's outputs, so it trains differently;
    --teacher: it matches another model's instead (differently again); the report names the teacher.
    A teacher with other outputs or another input size, or none at the path, is refused before any work."""
    model = T.dynamic_batch(T.with_small_weights(T.vgg_chain("separate").model, 0, 0.05))
    src, other = tmp_path / "m.onnx", tmp_path / "other.onnx"
    onnx.save(model, src)
    onnx.save(T.dynamic_batch(T.vgg_chain("separate", seed=7).model), other)
    data = T.labelled_npz(tmp_path / "train.npz", 32)
    base = ["--data", f"npz:{data}", "--finetune-epochs", "1", "--tolerance", "1", "--batch-size", "8", "--no-augment"]
    weights = {}
    for extra, teacher in (([], None), (["--distill"], src), (["--teacher", str(other)], other)):
        out = tmp_path / f"c{len(weights)}.onnx"
        code = cli.main(["compress", str(src), "-o", str(out), *base, "--json", *extra])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        report = json.loads(captured.out)
        assert report["distilled"] is (teacher is not None) and report["teacher"] == (teacher and str(teacher))
        weights[teacher] = [onnx.numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer]
    runs = list(weights.values())
    for i in range(3):
        for j in range(i):
            assert len(runs[i]) == len(runs[j])
            assert any(a.shape == b.shape and not np.allclose(a, b) for a, b in zip(runs[i], runs[j], strict=True))

    two_outputs, larger_input = tmp_path / "ssd.onnx", tmp_path / "32x32.onnx"
    onnx.save(T.ssd_heads("separate").model, two_outputs)
    onnx.save(T.mobilenet_dw("separate").model, larger_input)
    for teacher, says in ((two_outputs, "it has 2 outputs and the model 1"),
                          (larger_input, "its input [1, 3, 32, 32] is not the model's [None, 3, 16, 16]"),
                          (tmp_path / "missing.onnx", "no such file")):  # fmt: skip
        out = tmp_path / "refused.onnx"
        code = cli.main(["compress", str(src), "-o", str(out), *base, "--teacher", str(teacher)])
        err = capsys.readouterr().err
        assert code == 2 and f"--teacher {teacher}" in err and says in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists() and not (tmp_path / "refused.onnx.stages" / "1_pruned.onnx").exists()


def test_a_last_batch_of_one_image_joins_the_one_before():
    """BatchNorm after global pooling sees one value per channel per image: a batch of one cannot be
    normalised in training mode, so 9 images in batches of 4 go as 4 + 5, each batch counting once in
    the cumulative average."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.BatchNorm1d(4))
    images = _images(9).images
    assert reestimate_batchnorm(module, images, Preprocess(), batch_size=4)
    assert not module.training
    with torch.no_grad():
        pooled = module[:3](torch.from_numpy(_as_input(images))).numpy().astype(np.float64)
    np.testing.assert_allclose(module[3].running_mean.numpy(), (pooled[:4].mean(0) + pooled[4:].mean(0)) / 2, rtol=1e-5)
    np.testing.assert_allclose(module[3].running_var.numpy(),
                               (pooled[:4].var(0, ddof=1) + pooled[4:].var(0, ddof=1)) / 2, rtol=1e-4)  # fmt: skip
    assert module[3].momentum == 0.1, "the module's own momentum is restored"
    assert not reestimate_batchnorm(module, images, Preprocess(), index=np.arange(0)), "no images: nothing changed"
