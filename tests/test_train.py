"""finetune / sparsify on small models: labels, distillation, L1, determinism, resume,
bad input, and a 2-process torchrun run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import topologies as T
import torch
from PIL import Image

from onnxprune import cli
from onnxprune.datasets import Preprocess, load_images, spread
from onnxprune.train.recalibrate import recalibrate_batchnorm, statistics_record

FAST = ["--epochs", "1", "--batch-size", "8", "--no-augment", "-q"]


@pytest.fixture(scope="module")
def vgg(tmp_path_factory) -> Path:
    """vgg_chain (BatchNorm kept, input 1x3x16x16 exported with batch 1: re-exported here with a
    dynamic batch so training batches fit)."""
    folder = tmp_path_factory.mktemp("vgg")
    model = T.dynamic_batch(T.vgg_chain("separate").model)
    path = folder / "vgg.onnx"
    onnx.save(model, path)
    return path


def _input_hw(path: Path) -> tuple[int, int]:
    dims = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    return dims[2].dim_value, dims[3].dim_value


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, vgg) -> Path:
    h, w = _input_hw(vgg)
    return T.labelled_npz(tmp_path_factory.mktemp("data") / "train.npz", 48, h, w)


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_finetune_with_labels_writes_the_trained_model(vgg, labelled, tmp_path, capsys):
    out = tmp_path / "ft.onnx"
    code, stdout, err = _run(["finetune", str(vgg), "-o", str(out), "--data", f"npz:{labelled}", "--epochs", "2",
                              "--batch-size", "8", "--val", f"npz:{labelled}", "--json"], capsys)  # fmt: skip
    assert code == 0, err
    report = json.loads(stdout)
    assert report["output"] == str(out) and len(report["history"]) == 2
    assert report["metric_name"] == "accuracy" and 0 <= report["metric_after"] <= 1
    trained, source = onnx.load(out), onnx.load(vgg)
    onnx.checker.check_model(trained, full_check=True)
    assert [n.name for n in trained.graph.node] == [n.name for n in source.graph.node]
    assert any(
        not np.array_equal(onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b))
        for a, b in zip(trained.graph.initializer, source.graph.initializer, strict=True)
    )
    assert (tmp_path / "ft.onnx.ckpt").is_file()
    assert "| epoch | loss | accuracy |" in (tmp_path / "ft.onnx.report.md").read_text()
    assert (tmp_path / "ft.onnx.report.png").stat().st_size > 10_000


def test_the_same_seed_gives_the_same_model(vgg, labelled, tmp_path, capsys):
    outs = []
    for i in range(2):
        out = tmp_path / f"run{i}.onnx"
        assert _run(["finetune", str(vgg), "-o", str(out), "--data", f"npz:{labelled}", "--epochs", "1",
                     "--batch-size", "8", "-q"], capsys)[0] == 0  # fmt: skip
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_distillation_needs_no_labels(vgg, unlabelled, tmp_path, capsys):
    out = tmp_path / "distilled.onnx"
    code, stdout, err = _run(["finetune", str(vgg), "-o", str(out), "--data", f"images:{unlabelled}", "--teacher",
                              str(vgg), *FAST[:-1], "--json"], capsys)  # fmt: skip
    assert code == 0, err
    assert np.isfinite(json.loads(stdout)["history"][0]["loss"])
    x = np.random.default_rng(0).standard_normal((1, 3, *_input_hw(vgg))).astype(np.float32)
    assert np.isfinite(T.run(onnx.load(out), x)[0]).all()


def test_an_ssd_with_boxes_and_a_teacher_learns_from_both(tmp_path, capsys):
    """An onnxprune.zoo SSD on box data with --teacher trains on the multibox loss plus
    distillation: its weights differ from boxes alone and from the teacher alone (what a detector
    without SSD priors in its metadata gets)."""
    from onnxprune.zoo import export_ssd, tiny_ssd

    zoo, teacher, plain = tmp_path / "zoo.onnx", tmp_path / "teacher.onnx", tmp_path / "plain.onnx"
    export_ssd(tiny_ssd(seed=0), zoo)
    export_ssd(tiny_ssd(seed=1), teacher)
    stripped = onnx.load(zoo)
    del stripped.metadata_props[:]
    onnx.save(stripped, plain)
    runs = {"boxes": (zoo, []), "boxes + teacher": (zoo, ["--teacher", str(teacher)]),
            "teacher": (plain, ["--teacher", str(teacher)])}  # fmt: skip
    weights = {}
    for name, (student, extra) in runs.items():
        out = tmp_path / f"{name.replace(' + ', '_')}.onnx"
        code, _, err = _run(["finetune", str(student), "-o", str(out), "--data", "shapes:train:16", *extra, *FAST], capsys)
        assert code == 0, err
        weights[name] = [onnx.numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer]

    def differ(a, b):
        return any(not np.allclose(x, y) for x, y in zip(weights[a], weights[b], strict=True))

    assert differ("boxes + teacher", "boxes") and differ("boxes + teacher", "teacher")
    code, _, err = _run(["finetune", str(plain), "-o", str(tmp_path / "x.onnx"), "--data", "shapes:train:16", *FAST], capsys)
    assert code == 2 and "give --teacher" in err


def test_sparsify_makes_conv_weights_sparse(vgg, labelled, tmp_path, capsys):
    out = tmp_path / "sparse.onnx"
    code, stdout, err = _run(["sparsify", str(vgg), "-o", str(out), "--data", f"npz:{labelled}", "--l1", "0.05",
                              "--lr", "0.05", "--epochs", "4", "--batch-size", "8", "--report-threshold", "0.01",
                              "--json"], capsys)  # fmt: skip
    assert code == 0, err
    history = json.loads(stdout)["history"]
    assert history[-1]["sparsity"] > 0.3

    def zero_share(model):
        ws = [onnx.numpy_helper.to_array(t) for t in model.graph.initializer if len(t.dims) == 4]
        return sum(int((np.abs(w) <= 0.01).sum()) for w in ws) / sum(w.size for w in ws)

    assert zero_share(onnx.load(out)) == pytest.approx(history[-1]["sparsity"], abs=1e-6)
    assert zero_share(onnx.load(out)) > zero_share(onnx.load(vgg)) + 0.2


@pytest.mark.parametrize("glob", ["/conv2/*", "*/conv2/Conv_output_0", "conv2*"])
def test_sparsify_layers_match_onnx_node_and_output_names(vgg, labelled, tmp_path, capsys, glob):
    """--layers globs written for the ONNX graph (node or output names, as prune takes them) select
    the same conv as the torch module name does."""
    code, stdout, err = _run(["sparsify", str(vgg), "-o", str(tmp_path / "s.onnx"), "--data", f"npz:{labelled}",
                              "--l1", "0.01", "--layers", glob, *FAST[:-1], "--json"], capsys)  # fmt: skip
    assert code == 0, err
    assert list(json.loads(stdout)["history"][-1]["layer_sparsity"]) == ["conv2/Conv"]


def test_resume_continues_from_the_checkpoint(vgg, labelled, tmp_path, capsys):
    out = tmp_path / "resumed.onnx"
    base = ["finetune", str(vgg), "-o", str(out), "--data", f"npz:{labelled}", "--batch-size", "8", "--json"]
    assert _run([*base, "--epochs", "2"], capsys)[0] == 0
    code, stdout, _ = _run([*base, "--epochs", "3", "--resume"], capsys)
    assert code == 0
    assert [h["epoch"] for h in json.loads(stdout)["history"]] == [1, 2, 3]


def test_adamw_trains_resumes_and_differs_from_sgd(vgg, labelled, tmp_path, capsys):
    from onnxprune.train.loop import OPTIMIZERS, TrainConfig
    from onnxprune.model_io import InputError

    assert cli._OPTIMIZERS == OPTIMIZERS
    with pytest.raises(InputError, match="--optimizer must be one of sgd, adamw"):
        TrainConfig(optimizer="adam")
    outs = {}
    for name in OPTIMIZERS:
        out = tmp_path / f"{name}.onnx"
        base = ["finetune", str(vgg), "-o", str(out), "--data", f"npz:{labelled}", "--batch-size", "8", "--optimizer",
                name, "--lr", "0.003", "--json"]  # fmt: skip
        assert _run([*base, "--epochs", "1"], capsys)[0] == 0
        code, stdout, _ = _run([*base, "--epochs", "2", "--resume"], capsys)
        assert code == 0 and [h["epoch"] for h in json.loads(stdout)["history"]] == [1, 2]
        assert all(np.isfinite(h["loss"]) for h in json.loads(stdout)["history"])
        outs[name] = [onnx.numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer]
    assert any(not np.array_equal(a, b) for a, b in zip(outs["sgd"], outs["adamw"], strict=True))
    code, _, err = _run([*base[:-1], "--optimizer", "sgd", "--epochs", "3", "--resume"], capsys)
    assert code == 2 and "was trained with --optimizer adamw" in err


def test_gradient_clipping_auto_and_given(vgg, labelled, tmp_path, capsys):
    """Auto: no limit with BatchNorm, 1 without (folded weights); a given limit bounds each step."""
    from onnxprune.train.loop import auto_clip
    from onnxprune.train.roundtrip import to_torch

    assert auto_clip(to_torch(str(vgg)).module) == 0.0
    assert auto_clip(to_torch(T.vgg_chain("folded").model).module) == 1.0

    def conv_weights(path):
        return [onnx.numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer if len(t.dims) == 4]

    moved = {}
    for clip in ("1e-9", "0"):
        out = tmp_path / f"clip{clip}.onnx"
        code, _, err = _run(["finetune", str(vgg), "-o", str(out), "--data", f"npz:{labelled}", *FAST, "--clip-grad", clip],
                            capsys)  # fmt: skip
        assert code == 0, err
        moved[clip] = max(float(np.abs(a - b).max()) for a, b in zip(conv_weights(out), conv_weights(vgg), strict=True))
    assert moved["1e-9"] < 1e-8 < moved["0"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--l1", "0.1", "--layers", "nothing*"], "matches no conv layer"),
        (["--l1", "-1"], "--l1 must be >= 0"),
        (["--size", "64x64"], "does not match the model's input"),
        (["--resume"], "no checkpoint"),
        (["--epochs", "0"], "--epochs and --batch-size must be >= 1"),
        (["--clip-grad", "-1"], "--clip-grad must be >= 0"),
        (["--precise-bn", "-1"], "--precise-bn must be >= 0"),
    ],
)
def test_bad_arguments(vgg, labelled, tmp_path, capsys, extra, needle):
    out = tmp_path / "bad.onnx"
    code, _, err = _run(["finetune", str(vgg), "-o", str(out), "--data", f"npz:{labelled}", *FAST, *extra], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_bad_data(vgg, tmp_path, capsys, unlabelled):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "bad.onnx"
    cases = [
        (f"images:{empty}", "no images found"),
        (f"imagefolder:{empty}", "no class sub-folders"),
        (f"npz:{tmp_path / 'missing.npz'}", "no such file"),
        ("folder:/x", "unknown kind"),
        (f"images:{unlabelled}", "give --teacher"),
    ]
    h, w = _input_hw(vgg)
    bad_labels = tmp_path / "labels.npz"
    np.savez(bad_labels, x=np.zeros((4, h, w, 3), np.uint8), y=np.array([0, 1, 2, 10]))
    cases.append((f"npz:{bad_labels}", "label 10 is outside the model's 10 classes"))
    for spec, needle in cases:
        code, _, err = _run(["finetune", str(vgg), "-o", str(out), "--data", spec, *FAST], capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (spec, err)
        assert not out.exists()


def test_torchrun_two_processes_write_one_model(vgg, labelled, tmp_path):
    out = tmp_path / "ddp.onnx"
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", "29517", "-m", "onnxprune.cli", "finetune", str(vgg),
         "-o", str(out), "--data", f"npz:{labelled}", "--epochs", "1", "--batch-size", "8", "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.is_file()
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["ddp.onnx", "ddp.onnx.ckpt", "ddp.onnx.report.json", "ddp.onnx.report.md", "ddp.onnx.report.png"]
    onnx.checker.check_model(onnx.load(out), full_check=True)


def test_weight_decay_shrinks_the_weights(vgg, labelled, tmp_path, capsys):
    """--weight-decay reaches the optimizer: a large decay ends with smaller conv weights than none."""
    from onnxprune.model_io import InputError
    from onnxprune.train.loop import TrainConfig

    with pytest.raises(InputError, match="--weight-decay must be >= 0"):
        TrainConfig(weight_decay=-1e-4)
    norms = {}
    for decay in ("0", "0.5"):
        out = tmp_path / f"wd{decay}.onnx"
        code, _, err = _run(["finetune", str(vgg), "-o", str(out), "--data", f"npz:{labelled}", *FAST,
                             "--lr", "0.05", "--weight-decay", decay], capsys)  # fmt: skip
        assert code == 0, err
        norms[decay] = sum(float(np.abs(onnx.numpy_helper.to_array(t)).sum())
                           for t in onnx.load(out).graph.initializer if len(t.dims) == 4)  # fmt: skip
    assert norms["0.5"] < 0.9 * norms["0"], norms
    code, _, err = _run(["finetune", str(vgg), "-o", str(tmp_path / "wd0.5.onnx"), "--data", f"npz:{labelled}",
                         *FAST, "--lr", "0.05", "--epochs", "2", "--resume"], capsys)  # fmt: skip
    assert code == 2 and "was trained with --weight-decay 0.5" in err, err
    code, _, err = _run(["finetune", str(vgg), "-o", str(tmp_path / "wd0.onnx"), "--data", f"npz:{labelled}",
                         *FAST, "--lr", "0.05", "--epochs", "2", "--resume"], capsys)  # fmt: skip
    assert code == 0, err  # no --weight-decay is SGD's default, 0: the same as the checkpoint's


def _bn_stats(model) -> dict[str, np.ndarray]:
    """The running means and variances of a model (or of the file at a path), by name."""
    model = model if isinstance(model, onnx.ModelProto) else onnx.load(model)
    names = {name for n in model.graph.node if n.op_type == "BatchNormalization" for name in n.input[3:5]}
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name in names}


def test_precise_bn_gives_batchnorm_the_clean_training_images_statistics(vgg, labelled, tmp_path, capsys):
    """With augmentation the running averages are those of the last augmented batches; --precise-bn N
    replaces them by the statistics of N training images as they are (spread over the set; for the
    first BatchNorm computed here from its input, for all as recalibrate_batchnorm does on the same
    weights), and changes nothing else; the accuracy reported is the written model's; --freeze-bn
    keeps the model's own statistics."""
    base = ["finetune", str(vgg), "--data", f"npz:{labelled}", "--epochs", "1", "--batch-size", "8"]
    runs = {n: tmp_path / f"precise{n}.onnx" for n in (0, 32)}
    for n, out in runs.items():
        assert _run([*base, "-o", str(out), "--precise-bn", str(n), "-q"], capsys)[0] == 0
    raw = np.load(labelled)["x"][spread(48, 32)]
    first = next(n for n in onnx.load(runs[0]).graph.node if n.op_type == "BatchNormalization")
    x = Preprocess()(torch.from_numpy(raw)).numpy()
    seen = T.run(T.with_outputs(onnx.load(runs[0]), [first.input[0]]), x)[-1]
    got, kept = _bn_stats(runs[32]), _bn_stats(runs[0])
    np.testing.assert_allclose(got[first.input[3]], seen.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[first.input[4]], seen.var(axis=(0, 2, 3), ddof=1), rtol=1e-4, atol=1e-5)
    images = load_images(f"npz:{labelled}", _input_hw(vgg)[::-1], 32)
    recalibrated = recalibrate_batchnorm(onnx.load(runs[0]), images, Preprocess())
    assert statistics_record(recalibrated) == {"estimate": "precise", "images": 32}
    expected = _bn_stats(recalibrated)
    assert got.keys() == expected.keys() and len(got) >= 2
    for name in got:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-5)
    assert any(not np.allclose(kept[name], expected[name], rtol=1e-2, atol=1e-3) for name in got)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(runs[0]).graph.initializer if t.name not in got}
    for t in onnx.load(runs[32]).graph.initializer:
        if t.name not in got:
            np.testing.assert_array_equal(onnx.numpy_helper.to_array(t), weights[t.name])
    code, out, err = _run([*base, "-o", str(tmp_path / "val.onnx"), "--val", f"npz:{labelled}", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    val = load_images(f"npz:{labelled}", _input_hw(vgg)[::-1])
    written = onnx.load(tmp_path / "val.onnx")
    accuracy = np.mean(np.argmax(T.run(written, Preprocess()(torch.from_numpy(val.images)).numpy())[0], 1) == val.labels)
    assert report["precise_bn"] == 48 and report["metric_after"] == pytest.approx(accuracy, abs=1e-9)
    assert "re-estimated on 48 unaugmented training images" in (tmp_path / "val.onnx.report.md").read_text()
    frozen = tmp_path / "frozen.onnx"
    assert _run([*base, "-o", str(frozen), "--freeze-bn", "-q"], capsys)[0] == 0
    original = _bn_stats(vgg)
    for name, value in _bn_stats(frozen).items():
        np.testing.assert_array_equal(value, original[name])


@pytest.mark.parametrize("better", ["reestimated", "running"])
def test_precise_bn_keeps_the_statistics_that_score_higher_on_validation(vgg, labelled, tmp_path, capsys, monkeypatch,
                                                                         better):  # fmt: skip
    """With labelled --val data, the re-estimated statistics are kept only when they score at least as
    high as the running averages; otherwise the running averages are restored (the written model is
    then the --precise-bn 0 one). The statistics re-estimated here are a marker the scorer sees."""
    from onnxprune.train import loop

    def mark(module, *args, **kwargs):
        for name, buf in module.named_buffers():
            if name.endswith("running_mean"):
                buf.fill_(1e3)
        return True

    def score(module, *args, **kwargs):
        marked = any(bool((buf == 1e3).all()) for name, buf in module.named_buffers() if name.endswith("running_mean"))
        return (0.9 if better == "reestimated" else 0.1) if marked else 0.5

    base = ["finetune", str(vgg), "--data", f"npz:{labelled}", "--epochs", "1", "--batch-size", "8"]
    plain = tmp_path / "plain.onnx"
    assert _run([*base, "-o", str(plain), "--precise-bn", "0", "-q"], capsys)[0] == 0
    monkeypatch.setattr(loop, "reestimate_batchnorm", mark)
    monkeypatch.setattr(loop, "_accuracy", score)
    out = tmp_path / "chosen.onnx"
    code, stdout, err = _run([*base, "-o", str(out), "--val", f"npz:{labelled}", "--json"], capsys)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["bn_scores"] == {"metric": "accuracy", "running": 0.5, "reestimated": 0.9 if better == "reestimated" else 0.1}
    assert report["metric_after"] == max(report["bn_scores"]["running"], report["bn_scores"]["reestimated"])
    assert report["precise_bn_kept"] == (better == "reestimated") and report["precise_bn"] == 48
    got, plain_stats = _bn_stats(out), _bn_stats(plain)
    means = [name for name in got if (got[name] == 1e3).all()]
    if better == "reestimated":
        assert len(means) == len(got) // 2
    else:
        assert not means
        for name in got:
            np.testing.assert_array_equal(got[name], plain_stats[name])
    kept = "re-estimated statistics were kept" if better == "reestimated" else "running averages were kept"
    assert kept in (tmp_path / "chosen.onnx.report.md").read_text()


def test_a_teacher_with_clean_image_statistics_gets_them_from_augmented_images(vgg, labelled, tmp_path, capsys,
                                                                               monkeypatch):  # fmt: skip
    """A model written with re-estimated statistics says so in its metadata (one trained with running averages of
    augmented batches does not, --freeze-bn keeps its source's record); as a teacher of an augmented run it gets its
    statistics re-estimated on augmented training images, the inputs it is fed (checked for the first BatchNorm
    against its input computed in onnxruntime), and the report says so; a teacher without the record, or a run
    without augmentation, uses the teacher as it is."""
    from onnxprune.train import loop

    base = ["finetune", "--data", f"npz:{labelled}", "--epochs", "1", "--batch-size", "8", "-q"]
    clean, running, frozen = tmp_path / "clean.onnx", tmp_path / "running.onnx", tmp_path / "frozen.onnx"
    assert _run([*base, str(vgg), "-o", str(clean), "--precise-bn", "32"], capsys)[0] == 0
    assert _run([*base, str(vgg), "-o", str(running), "--precise-bn", "0"], capsys)[0] == 0
    assert _run([*base, str(clean), "-o", str(frozen), "--freeze-bn"], capsys)[0] == 0
    assert statistics_record(onnx.load(clean)) == {"estimate": "precise", "images": 32}
    assert statistics_record(onnx.load(running)) is None
    assert statistics_record(onnx.load(frozen)) == {"estimate": "precise", "images": 32}
    assert _run([*base, str(clean), "-o", str(tmp_path / "plain.onnx"), "--no-augment", "--precise-bn", "0"], capsys)[0] == 0
    assert statistics_record(onnx.load(tmp_path / "plain.onnx")) == {"estimate": "running", "images": 48}

    real, fed = loop.reestimate_batchnorm, []

    def spy(module, images, preprocess, batch_size=128, index=None, transform=None):
        def keep(batch):
            out = transform(batch)
            fed.append((batch.clone(), out.clone()))
            return out

        changed = real(module, images, preprocess, batch_size, index, keep if transform is not None else None)
        if transform is not None:
            fed.append(module)
        return changed

    monkeypatch.setattr(loop, "reestimate_batchnorm", spy)
    reports = {}
    for name, teacher, extra in [("clean", clean, []), ("running", running, []), ("no_augment", clean, ["--no-augment"])]:
        out = tmp_path / f"student_{name}.onnx"
        code, stdout, err = _run([*base[:-1], str(vgg), "-o", str(out), "--teacher", str(teacher), "--json", *extra], capsys)
        assert code == 0, err
        reports[name] = json.loads(stdout)
    assert reports["clean"]["teacher_bn_augmented"] == 48
    assert reports["running"]["teacher_bn_augmented"] == 0 and reports["no_augment"]["teacher_bn_augmented"] == 0
    assert "re-estimated on 48 augmented training images" in (tmp_path / "student_clean.onnx.report.md").read_text()
    *batches, teacher_module = fed
    raw = torch.cat([b for b, _ in batches])
    augmented = torch.cat([a for _, a in batches])
    np.testing.assert_array_equal(raw.numpy(), np.load(labelled)["x"])
    assert (augmented != raw).float().mean() > 0.5
    first = next(n for n in onnx.load(clean).graph.node if n.op_type == "BatchNormalization")
    seen = T.run(T.with_outputs(onnx.load(clean), [first.input[0]]), Preprocess()(augmented).numpy())[-1]
    means = [m.running_mean.numpy() for m in teacher_module.modules()
             if isinstance(m, torch.nn.BatchNorm2d) and m.num_features == seen.shape[1]]  # fmt: skip
    assert any(np.allclose(m, seen.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-5) for m in means)
    stored = _bn_stats(clean)[first.input[3]]
    assert not any(np.allclose(m, stored, rtol=1e-3, atol=1e-4) for m in means)


@pytest.mark.parametrize(("higher_is_better", "kept"), [(True, True), (True, False), (False, True), (False, False)])
def test_a_judge_decides_the_statistics_without_labels(vgg, unlabelled, tmp_path, monkeypatch, higher_is_better, kept):
    """Label-free (distillation from a teacher, no labelled --val), a `judge` evaluator of the written ONNX model
    (compress passes its metric: fidelity to the original, or mAP) decides whether the re-estimated statistics are
    kept, in its own direction; the report names its metric. The re-estimated statistics are a marker it sees."""
    from onnxprune.train import loop

    def mark(module, *args, **kwargs):
        for name, buf in module.named_buffers():
            if name.endswith("running_mean"):
                buf.fill_(1e3)
        return True

    class Judge:
        name = "fidelity"

        def __init__(self):
            self.higher_is_better = higher_is_better
            self.calls = 0

        def __call__(self, model):
            self.calls += 1
            marked = any((v == 1e3).all() for v in _bn_stats(model).values())
            good, bad = (0.8, 0.2) if higher_is_better else (0.2, 0.8)
            return (good if kept else bad) if marked else 0.5

    monkeypatch.setattr(loop, "reestimate_batchnorm", mark)
    judge = Judge()
    out = tmp_path / "judged.onnx"
    config = loop.TrainConfig(epochs=1, batch_size=4, augment=False)
    report = loop.train(vgg, out, f"images:{unlabelled}", teacher=vgg, config=config, judge=judge, progress=False)
    assert judge.calls == 2 and report["precise_bn"] == 12 and report["precise_bn_kept"] is kept
    assert report["bn_scores"]["metric"] == "fidelity" and "metric_after" not in report
    means = [v for name, v in _bn_stats(out).items() if (v == 1e3).all()]
    assert bool(means) is kept
    assert "fidelity" in (tmp_path / "judged.onnx.report.md").read_text()
