"""How the ResNet-20 peers benchmark's cut-offs for the relative row were chosen, without the test
set: for each candidate (s_F, s'_F, s_G) and view (BatchNorm folded or not), Algorithm 1 with
`--relative` at the smallest threshold that removes half of the FLOPs, then top-1 accuracy on
2,000 held-out *training* images (not among the 10,000 the benchmark fine-tunes on) with
BatchNorm statistics re-estimated on 1,024 others (EagleEye's adaptive BatchNorm), no fine-tuning.

    .venv/bin/python -P benchmarks/cutoffs_proxy.py     # about 3 minutes on 2 cores
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from onnxprune import prune
from onnxprune.datasets import PRESETS, ImageSet, load_images
from onnxprune.evaluate import Accuracy
from onnxprune.train.recalibrate import Recalibrated

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run with -P: the benchmarks' own helpers
from bench_resnet20_peers import ASSETS, INNER, MODEL  # noqa: E402

CANDIDATES = [
    {"fold_bn": True},
    {"fold_bn": False},
    {"fold_bn": False, "sf": 1.0, "sf_low": 0.0, "sg": 0.5},
    {"fold_bn": False, "sf": 1.0, "sf_low": 0.0, "sg": 0.7},
    {"fold_bn": False, "sf": 0.7, "sf_low": 0.3, "sg": 0.7},
    {"fold_bn": False, "sf": 0.5, "sf_low": 0.5, "sg": 0.5},
]


def main() -> None:
    train = load_images(f"npz:{ASSETS / 'data' / 'cifar10_train_jpeg.npz'}", (32, 32))
    index = np.arange(len(train))  # the benchmark's 10,000 are (about) every fifth image from 0
    val, calibration = index[index % 5 == 2][::5][:2000], index[index % 5 == 3][::10][:1024]
    preprocess = PRESETS["cifar"]
    judge = Recalibrated(Accuracy(ImageSet(train.images[val], train.labels[val]), preprocess),
                         ImageSet(train.images[calibration], train.labels[calibration]), preprocess)  # fmt: skip
    for criteria in CANDIDATES:
        result = prune(MODEL, flops_target=0.5, layers=(INNER,), relative=True, **criteria)
        kept = [g["channels_after"] for g in result["groups"] if g["channels_after"] != g["channels_before"]]
        print(f"{criteria}: FLOPs -{100 * (1 - result['flops_after'] / result['flops_before']):.1f}%, "
              f"accuracy {judge(result['model']):.4f}, channels kept {kept}", flush=True)


if __name__ == "__main__":
    main()
