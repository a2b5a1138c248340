"""benchmarks/reproduce_ssd.py (the paper-scale SSD300 run) builds, trains a step on a VOC-format
folder and exports; the full run needs VOC and a GPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
from PIL import Image

from onnxprune.datasets.shapes import SHAPE_CLASSES, render_shapes
from onnxprune.zoo.ssd import read_ssd_metadata

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce_ssd.py"


def _voc_folder(root: Path, count: int) -> set[str]:
    """A VOC-format copy of the first `count` shapes images (JPEGImages + Annotations); returns
    the class names that occur."""
    names = set()
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    for i in range(count):
        image, boxes = render_shapes(i, "train", (200, 150))
        names |= {SHAPE_CLASSES[int(c)] for c in boxes[:, 0]}
        Image.fromarray(image).save(root / "JPEGImages" / f"{i:06d}.jpg")
        objects = "".join(
            f"<object><name>{SHAPE_CLASSES[int(c)]}</name><difficult>0</difficult><bndbox><xmin>{x1 * 200 + 1:.0f}</xmin>"
            f"<ymin>{y1 * 150 + 1:.0f}</ymin><xmax>{x2 * 200:.0f}</xmax><ymax>{y2 * 150:.0f}</ymax></bndbox></object>"
            for c, x1, y1, x2, y2 in boxes
        )
        (root / "Annotations" / f"{i:06d}.xml").write_text(
            f"<annotation><size><width>200</width><height>150</height></size>{objects}</annotation>"
        )
    return names


def test_ssd300_trains_a_step_on_a_voc_folder_and_exports(tmp_path):
    names = _voc_folder(tmp_path / "voc", 2)
    spec = importlib.util.spec_from_file_location("reproduce_ssd", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "run"
    code = script.main([
        "--train", f"voc:{tmp_path / 'voc'}", "--val", f"voc:{tmp_path / 'voc'}", "--size", "300", "--out", str(out),
        "--device", "cpu", "--epochs", "1", "--batch-size", "2", "--max-steps", "1", "--stop-after", "export",
    ])  # fmt: skip
    assert code == 0
    model = onnx.load(out / "ssd300.onnx")
    meta = read_ssd_metadata(model)
    assert meta.num_classes == len(names) + 1 and meta.priors.shape == (8732, 4)
    loss = np.asarray(json.loads((out / "dense_training.json").read_text())["loss"])
    assert loss.shape == (1,) and np.isfinite(loss).all() and loss[0] > 0
