"""ResNet-20 on CIFAR-10: onnxprune against Torch-Pruning and uniform L1-norm pruning (Li et al.
2017) at the same FLOPs and the same training budget (issue 7).

Every method prunes the output channels of the nine blocks' first convs (the others are tied by
the residual chain's channel-padding shortcut), then every model gets the same fine-tuning
(`finetune` below: SGD + Nesterov, cosine, flips and crops, on the same images) and the same
evaluation: each model written as the original ONNX graph cut to its widths (`as_onnx`), scored
in onnxruntime on all 10,000 test images and timed there at batch 1 and 32 against the original,
all in interleaved turns (`onnxprune.bench`); FLOPs by Torch-Pruning's counter:

- dense: the original trained for the same epochs without pruning (the fair reference);
- uniform L1 (Li et al.): each layer keeps the filters of largest L1 norm; `epochs` fine-tuning;
- Torch-Pruning magnitude: `MetaPruner` + `MagnitudeImportance(p=1)`, global ranking;
- Torch-Pruning BN scale: `BNScalePruner` with its sparse training (`regularize` each step) for
  `sparse_epochs`, then pruning and fine-tuning for the rest;
- onnxprune: `sparsify --l1-groups channels` for `sparse_epochs` (ONNX in, ONNX out), Algorithm 1
  with `--fold-bn` at the threshold that gives the level's FLOPs, then fine-tuning for the rest;
- onnxprune without sparsity training: Algorithm 1 on the trained weights with `--relative` (the
  threshold in units of each layer's RMS weight) and s_F, s'_F, s_G = 0.7, 0.3, 0.7 at the
  level's FLOPs (`--flops-target`), then fine-tuning for all `epochs`. Those cut-offs were chosen
  among six on held-out *training* images (accuracy with BatchNorm statistics re-estimated, no
  fine-tuning), never on the test set;
- the same with `--round-to 8` (channel counts in multiples of 8, which onnxruntime's kernels run
  faster at the same FLOPs).

Torch-Pruning is only needed here: `pip install --target /tmp/tp torch-pruning` and run with
`PYTHONPATH=/tmp/tp`. NVIDIA ModelOpt's published row is quoted beside the results.

    PYTHONPATH=/tmp/tp .venv/bin/python -P benchmarks/bench_resnet20_peers.py   # about 22 minutes on 2 cores (three levels)

Results: benchmarks/results/bench_resnet20_peers.{json,md,png}.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx2torch
import torch
from torch import nn

from onnxprune import prune
from onnxprune.bench import bench, session
from onnxprune.channel_groups import analyze_channels
from onnxprune.datasets import PRESETS, load_images
from onnxprune.model_io import InputError
from onnxprune.selection import PrunePlan
from onnxprune.train.roundtrip import to_torch, write_back
from onnxprune.train.augment import augment
from onnxprune.train.loop import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("ONNXPRUNE_ASSETS", ROOT.parent / "shared" / "assets"))
MODEL = ASSETS / "models" / "akamaster_cifar10_resnet20_bn.onnx"
INNER = "*layer*/conv1/*"  # the blocks' first convs (not the stem conv1), as ONNX or onnx2torch names them
MODELOPT = "NVIDIA ModelOpt (published): 268k -> 174k parameters, 81.2M -> 59.2M FLOPs, 90.9% -> 90.3%"


def outer_layers(model: nn.Module) -> list[nn.Module]:
    """Torch-Pruning's ignored_layers: every conv and linear layer but the blocks' first convs."""
    return [m for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and not ("/conv1/" in n and "layer" in n)]  # fmt: skip


def finetune(model: nn.Module, data, epochs: int, lr: float, batch: int, seed: int = 0, step_hook=None) -> nn.Module:
    """The one fine-tuning every method gets (and the sparse training, with `step_hook`)."""
    preprocess = PRESETS["cifar"]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4)
    steps = epochs * -(-len(data) // batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    gen = torch.Generator().manual_seed(seed)
    images, labels = torch.from_numpy(data.images), torch.from_numpy(data.labels.astype(np.int64))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        for start in range(0, len(data), batch):
            idx = order[start : start + batch]
            x, _ = augment(images[idx], gen)
            loss = nn.functional.cross_entropy(model(preprocess(x)), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if step_hook is not None:
                step_hook(model)
            optimizer.step()
            schedule.step()
    return model.eval()


def prune_to_flops(model: Path, target: float, macs0: float, out: Path, **criteria) -> Path:
    """Algorithm 1 on the inner convs at the smallest threshold whose pruned model has at most
    `target` FLOPs (Torch-Pruning's count; ours differs by a constant factor, so the share of
    FLOPs removed is what carries over)."""
    prune(model, out, flops_target=1 - target / (2 * macs0), layers=(INNER,), **criteria)
    return out


@functools.cache
def original_graph() -> tuple[dict[str, str], list]:
    """The original's torch module name -> ONNX node name, and its channel groups (read once)."""
    node_of = {name: names[0] for name, names in to_torch(MODEL).onnx_names().items()}
    return node_of, analyze_channels(onnx.load(MODEL)).groups


def as_onnx(model: nn.Module, out: Path, test) -> Path:
    """`model` (onnx2torch's module of the original graph, pruned in torch or not) written as the
    original ONNX graph with each block conv1's channel group cut by onnxprune's surgery to the
    model's width (which channels is immaterial: every weight is then the model's). So every
    method's model is scored and timed as the same kind of ONNX model; checked equal to `model`
    on 500 test images."""
    node_of, groups = original_graph()
    width = {node_of[n]: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n in node_of}
    keep = {}
    for group in groups:
        kept = width.get(group.producer_nodes[0], group.size) if len(group.producer_nodes) == 1 else group.size
        if kept < group.size:
            keep[group.name] = np.arange(group.size) < kept
    shaped = prune(MODEL, plan=PrunePlan(0.0, {"method": "the torch model's widths"}, keep))["model"]
    target = to_torch(shaped)
    state, theirs = target.module.state_dict(), model.state_dict()
    lacking = [link.torch_name for link in target.trainable_links() if link.torch_name not in theirs]
    if lacking:
        raise AssertionError(f"the torch model lacks {lacking[:3]}")
    # Constants the surgery rewrote (a Pad's pads) stay the shaped graph's own.
    target.module.load_state_dict(state | {k: v for k, v in theirs.items() if k in state})
    proto = write_back(target)
    onnx.save(proto, out)
    x = PRESETS["cifar"](torch.from_numpy(test.images[:500]))
    with torch.no_grad():
        expected = model(x).numpy()
    got = session(out, "cpu").run(None, {proto.graph.input[0].name: x.numpy()})[0]
    if not np.allclose(got, expected, rtol=1e-3, atol=1e-3):
        raise AssertionError(f"{out}: onnxruntime differs from torch by {np.abs(got - expected).max():.3g}")
    return out


def accuracy(path: Path, test) -> float:
    """Top-1 accuracy of an ONNX classifier in onnxruntime on every test image."""
    s, correct = session(path, "cpu"), 0
    name = s.get_inputs()[0].name
    for start in range(0, len(test), 500):
        x = PRESETS["cifar"](torch.from_numpy(test.images[start : start + 500])).numpy()
        correct += int((s.run(None, {name: x})[0].argmax(1) == test.labels[start : start + 500]).sum())
    return correct / len(test)


def plot(rows: list[dict], path: Path) -> None:
    """Accuracy and onnxruntime speed-up (batch 1 and 32) against the share of FLOPs removed, one
    line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    pruned = [r for r in rows if r["ratio"] > 0]
    for method in dict.fromkeys(r["method"] for r in pruned):
        pts = sorted((100 * r["flops_reduction"], r) for r in pruned if r["method"] == method)
        xs = [x for x, _ in pts]
        axes[0].plot(xs, [100 * r["accuracy"] for _, r in pts], "o-", label=method)
        for ax, batch in zip(axes[1:], (1, 32), strict=True):
            ax.plot(xs, [r[f"speedup_b{batch}"] for _, r in pts], "o-", label=method)
    for r, style in zip(rows[:2], (":", "--"), strict=True):
        axes[0].axhline(100 * r["accuracy"], color="grey", linestyle=style, label=r["method"])
    axes[0].set(xlabel="FLOPs removed (%)", ylabel="test accuracy (%)", title="ResNet-20 / CIFAR-10, same budget")
    top = max(x for r in pruned for x in (r["speedup_b1"], r["speedup_b32"]))
    for ax, batch in zip(axes[1:], (1, 32), strict=True):
        xs = np.linspace(0, 75, 16)
        ax.plot(xs, 1 / (1 - xs / 100), ":", color="grey", label="ideal: 1 / (1 - FLOPs cut)")
        ax.set(xlabel="FLOPs removed (%)", ylabel="speed-up over the original", ylim=(0.8, max(2.5, 1.1 * top)),
               title=f"onnxruntime CPU latency, batch {batch}")  # fmt: skip
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    import torch_pruning as tp

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-images", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=4, help="training epochs per method after the dense model")
    parser.add_argument("--sparse-epochs", type=int, default=2, help="of those, sparse training (BN scale, onnxprune)")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7], help="channels removed per level")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--onnxprune-l1", type=float, default=0.1)
    parser.add_argument("--sf", type=float, default=0.7, help="Algorithm 1's s_F for the relative row")
    parser.add_argument("--sf-low", type=float, default=0.3, help="s'_F for the relative row")
    parser.add_argument("--sg", type=float, default=0.7, help="s_G for the relative row")
    parser.add_argument("--tp-reg", type=float, default=1e-4, help="Torch-Pruning BNScalePruner's reg")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench-resnet20-peers")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.manual_seed(0)
    args.work.mkdir(parents=True, exist_ok=True)
    train_spec = f"npz:{ASSETS / 'data' / 'cifar10_train_jpeg.npz'}"
    data = load_images(train_spec, (32, 32), args.train_images)
    test = load_images(f"npz:{ASSETS / 'data' / 'cifar10_test_jpeg.npz'}", (32, 32))
    x = torch.randn(1, 3, 32, 32)
    original = onnx2torch.convert(str(MODEL)).eval()
    macs0, params0 = tp.utils.count_ops_and_params(original, x)
    rows, started = [], time.perf_counter()

    def record(method: str, ratio: float, model: nn.Module) -> None:
        macs, params = tp.utils.count_ops_and_params(model, x)
        slug = "".join(c if c.isalnum() else "_" for c in method)
        path = as_onnx(model, args.work / f"final_{slug}_{ratio}.onnx", test)
        rows.append({"method": method, "ratio": ratio, "params": int(params), "flops": int(2 * macs),
                     "flops_reduction": 1 - macs / macs0, "accuracy": accuracy(path, test), "onnx": str(path)})  # fmt: skip
        print(f"{method:28s} ratio {ratio:.2f}: FLOPs -{100 * rows[-1]['flops_reduction']:.1f}%, "
              f"{int(params):,} parameters, accuracy {rows[-1]['accuracy']:.4f} ({time.perf_counter() - started:.0f} s)", flush=True)

    record("original", 0.0, original)
    record("dense, trained alike", 0.0, finetune(copy.deepcopy(original), data, args.epochs, args.lr, args.batch))

    # onnxprune: channel-group sparsity on the ONNX model, once for every level (trained on every
    # run: a model left by an earlier run would measure earlier code).
    sparse = args.work / "onnxprune_sparse.onnx"
    cfg = TrainConfig(epochs=args.sparse_epochs, batch_size=args.batch, lr=args.lr, l1=args.onnxprune_l1,
                      layers=(INNER,), l1_groups="channels", limit=args.train_images, preprocess=PRESETS["cifar"])  # fmt: skip
    train(MODEL, sparse, train_spec, config=cfg, progress=False)

    for ratio in args.ratios:
        # uniform L1 (Li et al.): per layer, the filters of largest L1 norm.
        model = copy.deepcopy(original)
        tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
                             ignored_layers=outer_layers(model)).step()  # fmt: skip
        record("uniform L1 (Li et al.)", ratio, finetune(model, data, args.epochs, args.lr, args.batch))

        # Torch-Pruning, magnitude with global ranking.
        model = copy.deepcopy(original)
        tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
                             ignored_layers=outer_layers(model), global_pruning=True).step()  # fmt: skip
        record("Torch-Pruning magnitude", ratio, finetune(model, data, args.epochs, args.lr, args.batch))

        # Torch-Pruning, BatchNorm scale with its sparse training.
        model = copy.deepcopy(original)
        pruner = tp.pruner.BNScalePruner(model, x, importance=tp.importance.BNScaleImportance(), pruning_ratio=ratio,
                                         ignored_layers=outer_layers(model), reg=args.tp_reg, global_pruning=True)  # fmt: skip
        finetune(model, data, args.sparse_epochs, args.lr, args.batch, step_hook=pruner.regularize)
        pruner.step()
        record("Torch-Pruning BN scale", ratio, finetune(model, data, args.epochs - args.sparse_epochs, args.lr, args.batch))

        # onnxprune: Algorithm 1 (--fold-bn) at the threshold giving uniform L1's FLOPs at this ratio.
        target = next(r["flops"] for r in reversed(rows) if r["method"] == "uniform L1 (Li et al.)")
        out = prune_to_flops(sparse, target, macs0, args.work / f"onnxprune_{ratio}.onnx", fold_bn=True)
        model = onnx2torch.convert(str(out))
        record("onnxprune (channels, fold-bn)", ratio, finetune(model, data, args.epochs - args.sparse_epochs, args.lr, args.batch))

        # onnxprune on the trained weights, relative thresholds, every epoch for fine-tuning.
        out = prune_to_flops(MODEL, target, macs0, args.work / f"onnxprune_relative_{ratio}.onnx", relative=True,
                             sf=args.sf, sf_low=args.sf_low, sg=args.sg)  # fmt: skip
        model = onnx2torch.convert(str(out))
        record("onnxprune (relative, no sparsity training)", ratio, finetune(model, data, args.epochs, args.lr, args.batch))

        # The same with channel counts in multiples of 8 (`--round-to 8`), for onnxruntime's kernels;
        # keeping 8 channels at least, it cannot reach every level.
        try:
            out = prune_to_flops(MODEL, target, macs0, args.work / f"onnxprune_relative8_{ratio}.onnx", relative=True,
                                 sf=args.sf, sf_low=args.sf_low, sg=args.sg, round_to=8)  # fmt: skip
        except InputError as err:
            print(f"onnxprune (relative, round-to 8) ratio {ratio:.2f}: not run: {err}", flush=True)
            continue
        model = onnx2torch.convert(str(out))
        record("onnxprune (relative, round-to 8)", ratio, finetune(model, data, args.epochs, args.lr, args.batch))

    # onnxruntime latency of every model, all in interleaved turns, against the original.
    for batch, runs in ((1, 60), (32, 12)):
        timed = bench([MODEL] + [r["onnx"] for r in rows], provider="cpu", batch=batch, runs=runs, warmup=3)
        for r, t in zip(rows, timed["models"][1:], strict=True):
            r[f"latency_ms_b{batch}"], r[f"speedup_b{batch}"] = t["latency_ms_median"], t["speedup"]
        print(f"batch {batch}: original {timed['models'][0]['latency_ms_median']:.2f} ms", flush=True)

    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "settings": vars(args) | {"work": str(args.work),
              "results": str(args.results)}, "flops_original": int(2 * macs0), "params_original": int(params0),
              "rows": rows, "modelopt": MODELOPT, "seconds": round(time.perf_counter() - started)}  # fmt: skip
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "bench_resnet20_peers.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# ResNet-20 / CIFAR-10 peers ({result['machine']}, {result['seconds']} s)", "",
             "| method | channels removed (inner convs) | FLOPs | FLOPs fewer | parameters | test accuracy "
             "| latency batch 1 ms (speed-up) | latency batch 32 ms (speed-up) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {r['method']} | {100 * r['ratio']:.0f}% | {r['flops'] / 1e6:.1f}M | {100 * r['flops_reduction']:.1f}% | "
              f"{r['params']:,} | {100 * r['accuracy']:.2f}% | {r['latency_ms_b1']:.3f} ({r['speedup_b1']:.2f}x) | "
              f"{r['latency_ms_b32']:.2f} ({r['speedup_b32']:.2f}x) |" for r in rows]  # fmt: skip
    lines += ["", MODELOPT, "", f"Settings: `{json.dumps(result['settings'])}`"]
    (args.results / "bench_resnet20_peers.md").write_text("\n".join(lines) + "\n")
    plot(rows, args.results / "bench_resnet20_peers.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
