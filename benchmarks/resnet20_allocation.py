"""ResNet-20 cut to a given number of channels in each block's first conv, filters ranked by L1 norm
(Li et al. 2017), BatchNorm re-estimated on 1,024 training images as `compress --recalibrate-bn
1024` does: the start of a fine-tuning that tests where the cut falls, against the allocation
Algorithm 1 chooses (benchmarks/README.md, issue 7's gap).

    .venv/bin/python -P benchmarks/resnet20_allocation.py --keep 8 8 8 16 16 16 32 32 32 -o build/uniform.onnx
    .venv/bin/onnxprune finetune build/uniform.onnx -o build/uniform_8ep.onnx --teacher T ...

It prints the FLOPs removed, so counts can be matched to a FLOPs level before training.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import onnx

from onnxprune import prune
from onnxprune.channel_groups import ChannelAnalysis, analyze_channels
from onnxprune.cost import model_cost
from onnxprune.datasets import PRESETS, load_images
from onnxprune.model_io import save_model
from onnxprune.selection import PrunePlan
from onnxprune.train.recalibrate import recalibrate_batchnorm

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run with -P: the benchmarks' own helpers
from uniform_l1 import filter_l1_norms, largest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("ONNXPRUNE_ASSETS", ROOT.parent / "shared" / "assets"))
MODEL = ASSETS / "models" / "akamaster_cifar10_resnet20_bn.onnx"
DATA = f"npz:{ASSETS / 'data' / 'cifar10_train_jpeg.npz'}"


def l1_plan(analysis: ChannelAnalysis, keep: list[int]) -> PrunePlan:
    """Keep masks: in each of the nine block conv1s (graph order), the `keep[i]` filters of largest
    L1 norm."""
    groups = [g for g in analysis.groups
              if len(g.producer_nodes) == 1 and "layer" in g.producer_nodes[0] and "/conv1/" in g.producer_nodes[0]]  # fmt: skip
    if len(groups) != 9:
        raise SystemExit(f"{MODEL}: expected nine block conv1 groups, found {len(groups)}")
    masks = {}
    for group, k in zip(groups, keep, strict=True):
        if not 1 <= k <= group.size:
            raise SystemExit(f"--keep: {group.producer_nodes[0]} has {group.size} filters; got {k}")
        masks[group.name] = largest(filter_l1_norms(analysis, group), k)
    return PrunePlan(0.0, {"method": "L1 norm per filter (Li et al. 2017)", "keep": keep}, masks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=int, nargs=9, required=True, help="filters kept in the nine block conv1s")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--recalibrate", type=int, default=1024, help="training images for BatchNorm (0: none)")
    args = parser.parse_args()
    original = onnx.load(MODEL)
    cut = prune(original, plan=l1_plan(analyze_channels(original), args.keep))["model"]
    if args.recalibrate:
        cut = recalibrate_batchnorm(cut, load_images(DATA, (32, 32), args.recalibrate), PRESETS["cifar"])
    before, after = model_cost(original), model_cost(cut)
    save_model(cut, args.output)
    print(f"{args.output}: FLOPs {before.flops:,} -> {after.flops:,} ({100 * (1 - after.flops / before.flops):.1f}% fewer), "
          f"parameters {before.params:,} -> {after.params:,}")


if __name__ == "__main__":
    main()
