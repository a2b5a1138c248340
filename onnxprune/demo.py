"""`onnxprune demo`: what the package does today, on a model it builds itself.

Until the pruning pipeline lands, the demo exports a freshly initialised VGG16 (CIFAR size) to
ONNX, reads its conv weights back from the ONNX file and shows the statistics that drive filter
selection: the global threshold at a target sparsity, each layer's share of zero weights and of
mostly-zero filters (sF) and input slices (sG) at that threshold, and the global sparsity curve.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune import stats


@dataclass(frozen=True)
class LayerStats:
    """Zero statistics of one conv layer at the global threshold."""

    name: str
    shape: tuple[int, ...]
    zero_fraction: float  # of all the layer's weights
    filters_sf_050: int  # filters with sF >= 0.5 (the paper's lower cut-off s'_F)
    inputs_sg_050: int  # input channels whose slices have sG >= 0.5


def conv_weights(model: onnx.ModelProto) -> list[tuple[str, np.ndarray]]:
    """(node name, weight) of every Conv whose weight is an initializer, in graph order."""
    inits = {i.name: i for i in model.graph.initializer}
    return [
        (node.name or node.output[0], numpy_helper.to_array(inits[node.input[1]]))
        for node in model.graph.node
        if node.op_type == "Conv" and node.input[1] in inits
    ]


def layer_stats(weights: list[tuple[str, np.ndarray]], threshold: float) -> list[LayerStats]:
    rows = []
    for name, w in weights:
        sf = stats.filter_zero_fractions(w, threshold)
        sg = stats.input_channel_zero_fractions(w, threshold)
        rows.append(
            LayerStats(
                name=name,
                shape=tuple(int(d) for d in w.shape),
                zero_fraction=float(stats.sparsity_curve([w], [threshold])[0]),
                filters_sf_050=int((sf >= 0.5).sum()),
                inputs_sg_050=int((sg >= 0.5).sum()),
            )
        )
    return rows


def plot_curve(thresholds: np.ndarray, curve: np.ndarray, chosen: float, sparsity: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(thresholds, curve * 100, lw=2)
    ax.axvline(chosen, color="tab:red", ls="--", label=f"t = {chosen:.4g} ({sparsity:.0%} zero)")
    ax.set_xlabel("global weight threshold t")
    ax.set_ylabel("conv weights with |w| <= t (%)")
    ax.set_title("VGG16 (CIFAR) sparsity curve")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(out_dir: str | Path, sparsity: float = 0.5, curve_points: int = 256) -> dict:
    """Build, export and analyse the model; write model, JSON and plot to out_dir; return the JSON."""
    from onnxprune.zoo import export_onnx, vgg16_cifar

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path = export_onnx(vgg16_cifar(), out / "vgg16_cifar.onnx")
    weights = conv_weights(onnx.load(str(model_path)))
    arrays = [w for _, w in weights]

    start = time.perf_counter()
    threshold = stats.threshold_for_sparsity(arrays, sparsity)
    thresholds = np.linspace(0.0, stats.threshold_for_sparsity(arrays, 0.999), curve_points)
    curve = stats.sparsity_curve(arrays, thresholds)
    layers = layer_stats(weights, threshold)
    seconds = time.perf_counter() - start

    plot_path = out / "sparsity_curve.png"
    plot_curve(thresholds, curve, threshold, sparsity, plot_path)
    result = {
        "model": str(model_path),
        "conv_weights": int(sum(w.size for w in arrays)),
        "target_sparsity": sparsity,
        "threshold": threshold,
        "layers": [asdict(layer) for layer in layers],
        "curve": {"thresholds": thresholds.tolist(), "sparsity": curve.tolist()},
        "stats_seconds": seconds,
        "plot": str(plot_path),
        "cuda_available": stats.cuda_available(),
    }
    (out / "demo.json").write_text(json.dumps(result, indent=2))
    return result


def format_report(result: dict) -> str:
    lines = [
        f"VGG16 (CIFAR) exported to {result['model']}: {result['conv_weights']:,} conv weights",
        f"global threshold for {result['target_sparsity']:.0%} zero weights: t = {result['threshold']:.6g}",
        "",
        f"{'layer':<28} {'weight shape':<20} {'zero %':>7} {'sF>=0.5':>8} {'sG>=0.5':>8}",
    ]
    for layer in result["layers"]:
        shape = "x".join(map(str, layer["shape"]))
        lines.append(
            f"{layer['name']:<28} {shape:<20} {layer['zero_fraction'] * 100:7.1f} "
            f"{layer['filters_sf_050']:8d} {layer['inputs_sg_050']:8d}"
        )
    lines += [
        "",
        "A global threshold zeroes layers unevenly: layers with many inputs have small weights.",
        f"statistics computed in {result['stats_seconds'] * 1e3:.1f} ms; curve plot: {result['plot']}",
        f"next: onnxprune analyze {result['model']} --threshold 0.01 (the model is untrained: `sparsify` it "
        "before `prune` finds whole filters to cut)",
    ]
    return "\n".join(lines)
