"""Detection decoders and the label-free detection agreement, on the real ULFD detectors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from onnxprune.datasets import PRESETS, load_images
from onnxprune.evaluate import BoxesDecoder, DetectionAgreement, SSDPriorsDecoder, run_model, ssd_priors
from onnxprune.threshold_search import _layer_weights, thresholded

ULFD_PRIORS = dict(width=320, height=240, strides=[8, 16, 32, 64], min_sizes=[[10, 16, 24], [32, 48], [64, 96], [128, 192, 256]])


@pytest.fixture(scope="module")
def faces(assets):
    return load_images(f"images:{assets / 'data' / 'dlib_faces'}", (320, 240))


def test_ulfd_priors_have_the_documented_count():
    assert ssd_priors(**ULFD_PRIORS).shape == (4420, 4)


def test_raw_ssd_decoding_matches_the_decode_inside_the_graph(assets, faces):
    x = PRESETS["ulfd"](torch.from_numpy(faces.images[:3])).numpy()
    raw = run_model(assets / "models" / "ulfd_version-slim-320_without_postprocessing.onnx", x, batch=1)
    decoded = run_model(assets / "models" / "ulfd_version-slim-320.onnx", x, batch=1)
    ours = SSDPriorsDecoder(priors=ssd_priors(**ULFD_PRIORS))
    for i in range(3):
        np.testing.assert_allclose(ours.boxes(raw, i), decoded[1][i], rtol=1e-4, atol=1e-4)
    found = ours(raw)
    reference = BoxesDecoder()(decoded)
    for a, b in zip(found, reference, strict=True):
        assert len(a["boxes"]) == len(b["boxes"]) > 0
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-4, atol=1e-4)


def test_agreement_is_one_with_itself_and_falls_when_weights_are_cut(assets, faces):
    path = assets / "models" / "ulfd_version-slim-320.onnx"
    agreement = DetectionAgreement(path, faces, PRESETS["ulfd"], BoxesDecoder(score_threshold=0.7))
    assert agreement(path) == pytest.approx(1.0)
    model = onnx.load(path)
    weights = _layer_weights(model, ())
    magnitudes = np.abs(np.concatenate([w.ravel() for w in weights.values()]))
    mild, harsh = (agreement(thresholded(model, weights, float(np.quantile(magnitudes, q)))) for q in (0.9, 0.98))
    assert harsh < mild < 1.0


def test_sweep_by_detection_agreement_on_the_decode_inside_detector(assets, capsys):
    import json

    from onnxprune import cli

    model = assets / "models" / "ulfd_version-slim-320.onnx"
    assert cli.main(["sweep", str(model), "--data", f"images:{assets / 'data' / 'ulfd_imgs'}", "--limit", "6",
                     "--preset", "ulfd", "--metric", "detection", "--decoder", "boxes", "--score-threshold", "0.7",
                     "--tolerance", "0.05", "--refine", "2", "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["metric_name"] == "detection agreement" and report["baseline"] == pytest.approx(1.0)
    assert report["chosen"]["metric"] >= 0.95 > report["next_above"]["metric"]
