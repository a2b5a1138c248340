"""`onnxprune compress`: the whole pipeline on a small model, its report and its stages."""

from __future__ import annotations

import json

import onnx
import pytest
import topologies as T
from test_sweep import _sparse_ssd

from onnxprune import cli
from onnxprune.model_io import InputError


def test_label_free_compress_writes_the_model_the_report_and_resumes(tmp_path, capsys):
    model = _sparse_ssd()
    src, images, _ = T.saved_with_images(model, tmp_path, 8)
    out = tmp_path / "small.onnx"
    args = ["compress", str(src), "-o", str(out), "--data", f"images:{images}", "--sparsify-epochs", "1",
            "--finetune-epochs", "1", "--l1", "0.01", "--tolerance", "0.05", "--batch-size", "1", "--freeze-bn",
            "--no-augment", "--json"]  # fmt: skip
    assert cli.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metric_name"] == "fidelity" and report["metric_before"] == 1.0
    assert report["params_after"] < report["params_before"]
    assert report["flops_after"] < report["flops_before"]
    assert report["latency_ms_before"] > 0 and report["latency_ms_after"] > 0
    for ext in ("json", "md", "png"):
        assert (tmp_path / f"small.onnx.report.{ext}").stat().st_size > 100
    folder = tmp_path / "small.onnx.stages"
    stages = sorted(p.name for p in folder.iterdir() if p.suffix == ".onnx" or p.name.endswith("_sweep.png"))
    assert stages == ["0_sparsified.onnx", "1_pruned.onnx", "1_sweep.png", "1_tuned.onnx"]
    assert (folder / "1_sweep.json").is_file(), "a resumed run reuses the search"
    for stage in ("0_sparsified", "1_pruned", "1_tuned"):
        assert (folder / f"{stage}.onnx.report.md").is_file(), "every model written has its report"
    onnx.checker.check_model(onnx.load(out), full_check=True)
    assert {n.name for n in onnx.load(out).graph.node} <= {n.name for n in model.graph.node}
    first = out.read_bytes()
    # A second run finds every stage done and gives the same model; asked for the dense baseline,
    # it trains the original for the pipeline's 2 epochs and reports it beside the result.
    assert cli.main([*args, "--dense-baseline"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert out.read_bytes() == first
    assert again["dense_tuned_epochs"] == 2 and (folder / "dense_tuned_2ep.onnx").is_file()
    assert 0 < again["metric_dense_tuned"] <= 1 and again["metric_after"] == report["metric_after"]
    assert "dense model trained 2 epochs alike" in (tmp_path / "small.onnx.report.md").read_text()
    # Other settings are not resumed from these stages: refused, naming what changed, nothing touched.
    made = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert cli.main([*args, "--finetune-epochs", "2", "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "finetune_epochs 1 -> 2" in err and "train.lr 0.01 -> 0.5" in err
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == made
    # Without the record the stages are used as they are (as when put there by hand), and the record is renewed.
    (folder / "settings.json").unlink()
    assert cli.main([*args, "--finetune-epochs", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["metric_after"] == report["metric_after"]
    assert json.loads((folder / "settings.json").read_text())["finetune_epochs"] == 2


def _claim(folder, settings):
    from onnxprune.compress import _claim_stages

    _claim_stages(folder, settings)
    return json.loads((folder / "settings.json").read_text())


def test_stage_records_compare_paths_by_file_and_new_knobs_by_default(tmp_path, monkeypatch):
    from dataclasses import replace

    from onnxprune.compress import CompressConfig, _settings
    from onnxprune.train.loop import TrainConfig

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.onnx").write_bytes(b"")
    (tmp_path / "train.npz").write_bytes(b"")
    config = CompressConfig(teacher="m.onnx")
    typed = _settings("m.onnx", "npz:train.npz", None, config)
    assert typed == _settings(tmp_path / "m.onnx", f"npz:{tmp_path}/./train.npz", None,
                              replace(config, teacher=str(tmp_path / "m.onnx")))  # fmt: skip
    assert typed["data"] == typed["val"] == f"npz:{tmp_path / 'train.npz'}" and typed["teacher"] == str(tmp_path / "m.onnx")
    assert _settings("m.onnx", "shapes:64", None, config)["data"] == "shapes:64", "a count is not a path"
    assert _settings("m.onnx", "npz:a", None, replace(config, train=TrainConfig(lr=0.5)))["train.lr"] == 0.5

    folder = tmp_path / "out.stages"
    folder.mkdir()
    (folder / "1_pruned.onnx").write_bytes(b"cut")
    old = {key: value for key, value in typed.items() if key != "train.precise_bn"}  # made before that knob
    (folder / "settings.json").write_text(json.dumps(old))
    assert _claim(folder, typed) == typed, "a knob the record lacks, at its default, is no change; the record is renewed"
    (folder / "settings.json").write_text(json.dumps(old))
    with pytest.raises(InputError, match=r"train\.precise_bn unset -> 0\b"):
        _claim(folder, typed | {"train.precise_bn": 0})
    (folder / "settings.json").write_text("{ half-written")
    with pytest.raises(InputError, match="settings.json: not a settings record"):
        _claim(folder, typed)


def test_stages_without_a_record_are_used_with_a_warning(tmp_path, capsys):
    folder = tmp_path / "out.stages"
    folder.mkdir()
    assert _claim(folder, {"model": "m"}) == {"model": "m"} and capsys.readouterr().err == "", "an empty folder is anyone's"
    (folder / "settings.json").unlink()
    (folder / "1_pruned.onnx").write_bytes(b"cut")
    assert _claim(folder, {"model": "m"}) == {"model": "m"}
    assert "holds stage files (1_pruned.onnx) but no settings.json" in capsys.readouterr().err
