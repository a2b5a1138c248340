"""Reports next to every model a command writes: `<model>.report.json` (all figures),
`<model>.report.md` (the paper's Table 1 style: channels per layer, parameters, FLOPs, metric,
latency) and `<model>.report.png` (channels kept per layer, or the training curves)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["report_paths", "write_prune_report", "write_train_report"]


def report_paths(output: str | Path) -> tuple[Path, Path, Path]:
    out = Path(output)
    return tuple(out.with_name(f"{out.name}.report.{ext}") for ext in ("json", "md", "png"))  # type: ignore[return-value]


def _summary_rows(report: dict) -> list[str]:
    rows = ["| | before | after | change |", "|---|---:|---:|---:|"]
    if report.get("metric_name") and report.get("metric_before") is not None:
        rows.append(f"| {report['metric_name']} | {report['metric_before']:.4f} | {report['metric_after']:.4f} | "
                    f"{report['metric_after'] - report['metric_before']:+.4f} |")  # fmt: skip
    if report.get("metric_dense_tuned") is not None:
        rows.append(f"| {report['metric_name']}, dense model trained {report['dense_tuned_epochs']} epochs alike | "
                    f"{report['metric_dense_tuned']:.4f} | {report['metric_after']:.4f} | "
                    f"{report['metric_after'] - report['metric_dense_tuned']:+.4f} |")  # fmt: skip
    rows.append(f"| parameters | {report['params_before']:,} | {report['params_after']:,} | "
                f"{report['params_before'] / max(report['params_after'], 1):.2f}x smaller |")  # fmt: skip
    rows.append(f"| FLOPs | {report['flops_before']:,} | {report['flops_after']:,} | "
                f"{100 * (1 - report['flops_after'] / max(report['flops_before'], 1)):.1f}% fewer |")  # fmt: skip
    if "size_bytes_before" in report:
        rows.append(f"| size (bytes) | {report['size_bytes_before']:,} | {report['size_bytes_after']:,} | |")
    if "latency_ms_before" in report:
        rows.append(f"| latency (ms, CPU, batch 1) | {report['latency_ms_before']:.3f} | {report['latency_ms_after']:.3f} | "
                    f"{report['latency_ms_before'] / max(report['latency_ms_after'], 1e-9):.2f}x |")  # fmt: skip
    return rows


def write_prune_report(output: str | Path, report: dict, title: str) -> None:
    """For `prune` and `compress`: `report["channels"]` is a list of {layer, before, after}."""
    json_path, md_path, png_path = report_paths(output)
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"# {title}", "", *_summary_rows(report), "", "| layer | channels before | after |", "|---|---:|---:|"]
    lines += [f"| {c['layer']} | {c['before']} | {c['after']} |" for c in report["channels"]]
    md_path.write_text("\n".join(lines) + "\n")
    _plot_channels(report, png_path)


def write_train_report(output: str | Path, report: dict, title: str) -> None:
    """For `finetune` and `sparsify`: the history per epoch."""
    json_path, md_path, png_path = report_paths(output)
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    history = report["history"]
    columns = [k for k in ("loss", "accuracy", "sparsity", "zero_filters") if any(k in h for h in history)]
    lines = [f"# {title}", "", *_summary_rows(report), "", "| epoch | " + " | ".join(columns) + " |",
             "|---:|" + "---:|" * len(columns)]  # fmt: skip
    for h in history:
        cells = [f"{h[k]:.4f}" if isinstance(h.get(k), float) else str(h.get(k, "")) for k in columns]
        lines.append(f"| {h['epoch']} | " + " | ".join(cells) + " |")
    if report.get("precise_bn"):
        scores = report.get("bn_scores") or {}
        judged = (f": {scores['metric']} {scores['reestimated']:.4f} against {scores['running']:.4f} with the running averages, "
                  f"so the {'re-estimated statistics were' if report.get('precise_bn_kept') else 'running averages were'} kept"
                  if scores else "")  # fmt: skip
        lines += ["", f"BatchNorm statistics re-estimated on {report['precise_bn']:,} unaugmented training images after the "
                      f"last epoch (`--precise-bn`){judged}. Accuracy per epoch, where shown, is with the running averages of "
                      f"augmented batches."]  # fmt: skip
    if report.get("teacher_bn_augmented"):
        lines += ["", f"The teacher's BatchNorm statistics were those of unaugmented images; they were re-estimated on "
                      f"{report['teacher_bn_augmented']:,} augmented training images, the inputs it was fed."]  # fmt: skip
    md_path.write_text("\n".join(lines) + "\n")
    _plot_history(history, png_path, title)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_channels(report: dict, path: Path) -> None:
    plt = _pyplot()
    layers = report["channels"]
    fig, ax = plt.subplots(figsize=(max(6.4, 0.35 * len(layers)), 4.0), dpi=120)
    xs = range(len(layers))
    ax.bar(xs, [c["before"] for c in layers], color="lightgray", label="before")
    ax.bar(xs, [c["after"] for c in layers], color="tab:blue", label="after")
    ax.set_xticks(list(xs), [c["layer"][-18:] for c in layers], rotation=90, fontsize=7)
    ax.set_ylabel("output channels")
    ax.set_title(f"Channels kept per layer: FLOPs {report['flops_before'] / 1e6:.1f}M -> {report['flops_after'] / 1e6:.1f}M")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_history(history: list[dict], path: Path, title: str) -> None:
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    panels = [k for k in ("loss", "accuracy", "sparsity") if any(k in h for h in history)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), dpi=120, squeeze=False)
    for ax, key in zip(axes[0], panels, strict=True):
        ax.plot(epochs, [h.get(key) for h in history], "o-")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
