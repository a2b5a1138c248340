"""The paper's SSD experiment at full scale: SSD300 (or SSD512) with the VGG16 backbone, trained on
a VOC-format data set, then compressed with the paper's 4 phases (L1 sparsity training, one
global threshold per phase chosen on validation mAP@0.5, Algorithm 1, removal, fine-tuning with
the multibox loss), and reported in the paper's Table 1 layout.

For users with PASCAL VOC and a GPU (hours to days):

    python benchmarks/reproduce_ssd.py --train voc:VOCdevkit/VOC2007 --val voc:VOCdevkit/VOC2007test \\
        --size 300 --device cuda --epochs 120 --sparsify-epochs 20 --finetune-epochs 10 --out runs/ssd300

`--init STATE.pt` starts from a torch state dict of `onnxprune.zoo.SSD` (the paper starts from an
ImageNet VGG16); `--dense MODEL.onnx` skips training and compresses that export. `--max-steps N`
and `--stop-after export` make the smoke test that runs in the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from onnxprune.compress import CompressConfig, compress
from onnxprune.datasets import Preprocess, load_images
from onnxprune.demo import PAPER_PHASES
from onnxprune.train.loop import TrainConfig
from onnxprune.zoo import SSD, SSD300, SSD512, export_ssd
from onnxprune.zoo.fit import fit_ssd

# Images as the paper's VGG16 saw them: RGB, ImageNet mean and standard deviation.
VGG_PREPROCESS = {"scale": 1 / 255, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, metavar="SPEC", help="training data with boxes (voc:DIR, coco:JSON:DIR)")
    parser.add_argument("--val", required=True, metavar="SPEC", help="validation data with boxes")
    parser.add_argument("--size", type=int, choices=(300, 512), default=300)
    parser.add_argument("--out", default="runs/ssd", help="output folder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=120, help="dense training epochs")
    parser.add_argument("--sparsify-epochs", type=int, default=20)
    parser.add_argument("--finetune-epochs", type=int, default=10, help="per phase")
    parser.add_argument("--l1", type=float, default=1e-4, metavar="LAMBDA")
    parser.add_argument("--tolerance", type=float, default=0.01, help="mAP drop allowed in each phase's sweep")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="dense training (AdamW)")
    parser.add_argument("--finetune-lr", type=float, default=1e-3, help="sparsify and fine-tune (SGD)")
    parser.add_argument("--limit", type=int, help="use N images of each split")
    parser.add_argument("--init", metavar="STATE.pt", help="start dense training from this state dict")
    parser.add_argument("--dense", metavar="MODEL.onnx", help="compress this exported SSD instead of training one")
    parser.add_argument("--max-steps", type=int, help="stop dense training after N steps (smoke test)")
    parser.add_argument("--stop-after", choices=("export", "compress"), default="compress")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    preprocess = Preprocess((args.size, args.size), **VGG_PREPROCESS)
    started = time.perf_counter()
    dense = Path(args.dense) if args.dense else out / f"ssd{args.size}.onnx"
    if not args.dense:
        data = load_images(args.train, (args.size, args.size), args.limit)
        if data.boxes is None:
            parser.error(f"--train {args.train} has no boxes")
        spec = SSD300 if args.size == 300 else SSD512
        spec = replace(spec, num_classes=len(data.classes) + 1)
        model = SSD(spec)
        if args.init:
            model.load_state_dict(torch.load(args.init, map_location="cpu"))
        print(f"training SSD{args.size} ({sum(p.numel() for p in model.parameters()):,} parameters, "
              f"{len(data.classes)} classes) on {len(data)} images", file=sys.stderr)  # fmt: skip
        history = fit_ssd(model, data, preprocess, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          device=args.device, max_steps=args.max_steps)  # fmt: skip
        torch.save(model.state_dict(), out / f"ssd{args.size}.pt")
        export_ssd(model, dense)
        (out / "dense_training.json").write_text(json.dumps({"loss": history}, indent=1) + "\n")
    if args.stop_after == "export":
        print(f"wrote {dense}")
        return 0
    train = TrainConfig(batch_size=args.batch_size, lr=args.finetune_lr, device=args.device, limit=args.limit,
                        preprocess=preprocess)  # fmt: skip
    config = CompressConfig(phases=PAPER_PHASES, sparsify_epochs=args.sparsify_epochs,
                            finetune_epochs=args.finetune_epochs, l1=args.l1, tolerance=args.tolerance,
                            metric="map", val_limit=args.limit, train=train)  # fmt: skip
    report = compress(dense, out / f"ssd{args.size}_pruned.onnx", args.train, val=args.val, config=config)
    report["seconds"] = time.perf_counter() - started
    (out / "reproduce_ssd.json").write_text(json.dumps(report, indent=1) + "\n")
    print(Path(str(report["output"]) + ".report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
