"""The PyTorch side on real models, with the figures issue 4 asks for:

A. ResNet-20 (../shared/assets, BatchNorm kept) on CIFAR-10: `sparsify` for a few epochs, the
   share of all-zero filters and the test accuracy before/after; `prune` of the result; `finetune`
   of the pruned model.
B. The ULFD face detector: label-free `sparsify --teacher` on the 24 ulfd_imgs; recall of the
   dlib_faces boxes (IoU 0.3, score 0.7, NMS 0.3) before and after.

    .venv/bin/python -P benchmarks/bench_train.py [--train-images 10000] [--epochs 3]

Results: benchmarks/results/bench_train.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import torch
from torchvision.ops import box_iou

import onnxprune
from onnxprune.datasets import PRESETS, load_images
from onnxprune.evaluate import Accuracy, make_decoder, run_model
from onnxprune.train.l1 import GROUPS
from onnxprune.train.loop import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("ONNXPRUNE_ASSETS", ROOT.parent / "shared" / "assets"))
RESULTS = ROOT / "benchmarks" / "results"
ULFD_DECODER = make_decoder("ulfd", (320, 240), score_threshold=0.7)  # NMS at IoU 0.3


def accuracy(path: Path, test) -> float:
    return Accuracy(test, PRESETS["cifar"])(path)


def zero_filters(path: Path, threshold: float, at_least: float = 1.0) -> tuple[int, int, float]:
    """Conv filters with at least `at_least` of their weights zero at `threshold`, all conv
    filters, and the zero share of all conv weights."""
    model = onnx.load(path)
    weights = [onnx.numpy_helper.to_array(t) for t in model.graph.initializer if len(t.dims) == 4]
    zero = sum(int(((np.abs(w) <= threshold).reshape(len(w), -1).mean(axis=1) >= at_least).sum()) for w in weights)
    share = sum(int((np.abs(w) <= threshold).sum()) for w in weights) / sum(w.size for w in weights)
    return zero, sum(len(w) for w in weights), share


def part_a(args, tmp: Path) -> dict:
    model = ASSETS / "models" / args.resnet
    train_spec = f"npz:{ASSETS / 'data' / 'cifar10_train_jpeg.npz'}"
    test_spec = f"npz:{ASSETS / 'data' / 'cifar10_test_jpeg.npz'}"
    test = load_images(test_spec, (32, 32))
    result = {"accuracy_start": accuracy(model, test)}
    config = TrainConfig(epochs=args.epochs, batch_size=64, lr=args.lr, l1=args.l1, limit=args.train_images,
                         preprocess=PRESETS["cifar"], threshold=1e-3, l1_groups=args.l1_groups,
                         layers=tuple(args.layers))  # fmt: skip
    start = time.perf_counter()
    sparse = tmp / "r20_sparse.onnx"
    history = train(model, sparse, train_spec, config=config, progress=args.progress)["history"]
    result["sparsify_seconds"] = time.perf_counter() - start
    result["sparsify_history"] = history
    result["accuracy_sparsified"] = accuracy(sparse, test)
    for t in (0.0, 1e-3, 1e-2):
        zero, total, share = zero_filters(sparse, t)
        result[f"zero_filters_at_{t:g}"] = zero
        result["filters"] = total
        result[f"zero_weight_share_at_{t:g}"] = share
        result[f"filters_90pct_zero_at_{t:g}"] = zero_filters(sparse, t, 0.9)[0]
    exact = tmp / "r20_pruned_zero.onnx"
    report = onnxprune.prune(sparse, exact, threshold=1e-3, sf=1.0, sf_low=1.0, sg=1.0)
    result["zero_filter_prune"] = {k: report[k] for k in ("params_after", "flops_after")} | {
        "accuracy": accuracy(exact, test)}
    pruned = tmp / "r20_pruned.onnx"
    report = onnxprune.prune(sparse, pruned, sparsity=args.prune_sparsity, sf=0.9, sf_low=0.5, sg=0.9)
    result |= {k: report[k] for k in ("threshold", "params_before", "params_after", "flops_before", "flops_after")}
    result["accuracy_pruned"] = accuracy(pruned, test)
    tuned = tmp / "r20_tuned.onnx"
    ft = TrainConfig(epochs=1, batch_size=64, lr=args.lr / 2, limit=args.train_images, preprocess=PRESETS["cifar"])
    train(pruned, tuned, train_spec, config=ft, progress=args.progress)
    result["accuracy_finetuned"] = accuracy(tuned, test)
    return result


def detections(path: Path, image: np.ndarray) -> torch.Tensor:
    """Face boxes (x1, y1, x2, y2, normalised) of the raw-output ULFD model on one image."""
    x = PRESETS["ulfd"](torch.from_numpy(image[None].copy())).numpy()
    return ULFD_DECODER(run_model(path, x))[0]["boxes"]


def recall(path: Path) -> tuple[int, int]:
    from PIL import Image

    found = total = 0
    for xml in ("training.xml", "testing.xml"):
        root = ET.parse(ASSETS / "data" / "dlib_faces" / xml).getroot()
        for img in root.iter("image"):
            file = ASSETS / "data" / "dlib_faces" / img.get("file")
            with Image.open(file) as im:
                w, h = im.size
                pixels = np.asarray(im.convert("RGB").resize((320, 240), Image.BILINEAR), dtype=np.uint8)
            truth = torch.tensor([[int(b.get("left")) / w, int(b.get("top")) / h,
                                   (int(b.get("left")) + int(b.get("width"))) / w,
                                   (int(b.get("top")) + int(b.get("height"))) / h] for b in img.iter("box")])  # fmt: skip
            found_boxes = detections(path, pixels)
            total += len(truth)
            if len(found_boxes):
                found += int((box_iou(truth, found_boxes).max(dim=1).values >= 0.3).sum())
    return found, total


def part_b(args, tmp: Path) -> dict:
    model = ASSETS / "models" / "ulfd_version-slim-320_without_postprocessing.onnx"
    found, total = recall(model)
    result = {"faces": total, "recall_start": found / total}
    out = tmp / "ulfd_sparse.onnx"
    config = TrainConfig(epochs=args.ulfd_epochs, batch_size=8, lr=args.ulfd_lr, l1=args.ulfd_l1,
                         preprocess=PRESETS["ulfd"], freeze_bn=True)  # fmt: skip
    start = time.perf_counter()
    history = train(model, out, f"images:{ASSETS / 'data' / 'ulfd_imgs'}", teacher=model, config=config,
                    progress=args.progress)["history"]  # fmt: skip
    result["sparsify_seconds"] = time.perf_counter() - start
    result["distill_loss_last"] = history[-1]["loss"]
    result["zero_weight_share_at_0.001"] = zero_filters(out, 1e-3)[2]
    found, _ = recall(out)
    result["recall_sparsified"] = found / total
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-images", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--l1", type=float, default=2e-3)
    parser.add_argument("--l1-groups", choices=GROUPS, default="weights")
    parser.add_argument("--layers", nargs="+", default=["*"],
                        help="the convs the penalty covers (globs over ONNX node or output names, or torch module names)")
    parser.add_argument("--ulfd-epochs", type=int, default=20)
    parser.add_argument("--ulfd-l1", type=float, default=0.05)
    parser.add_argument("--ulfd-lr", type=float, default=0.002)
    parser.add_argument("--resnet", default="akamaster_cifar10_resnet20_bn.onnx", help="which ResNet-20 file")
    parser.add_argument("--prune-sparsity", type=float, default=0.6, help="prune at the threshold of this sparsity")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--only", choices=["a", "b"])
    args = parser.parse_args()
    summary = {"args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "a"):
            summary["resnet20_cifar"] = part_a(args, Path(tmp))
        if args.only in (None, "b"):
            summary["ulfd_label_free"] = part_b(args, Path(tmp))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_train.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
