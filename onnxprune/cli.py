"""The `onnxprune` command. Exit codes: 0 success, 2 bad usage or input, 1 internal error."""

from __future__ import annotations

import argparse
import json
import os
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onnxprune", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    analyze = sub.add_parser("analyze", help="list the channel groups of a model: layers, channels, zero filters, pins")
    analyze.add_argument("model", help="the ONNX model")
    analyze.add_argument("--threshold", type=float, default=0.0, help="weights with |w| <= T count as zero (default 0)")
    analyze.add_argument("--layers", nargs="+", default=(), metavar="GLOB", help="globs over node or output names")

    prune = sub.add_parser("prune", help="remove the filters Algorithm 1 selects (or a saved plan's)")
    prune.add_argument("model", help="the ONNX model (never modified)")
    prune.add_argument("-o", "--output", required=True, help="path of the pruned model")
    how = prune.add_mutually_exclusive_group()
    how.add_argument("--threshold", type=float, help="global weight threshold T: |w| <= T counts as zero (default 0)")
    how.add_argument("--sparsity", type=float, help="choose T so that this fraction of the pruned layers' weights is zero")
    how.add_argument("--plan", help="apply a plan written by --plan-out instead of selecting")
    prune.add_argument("--sf", type=float, default=0.9, help="s_F: remove a filter at least this zero (default 0.9)")
    prune.add_argument("--sf-low", type=float, default=0.5, help="s'_F: ... or this zero when its readers are (default 0.5)")
    prune.add_argument("--sg", type=float, default=0.9, help="s_G: ... at least this zero (default 0.9)")
    prune.add_argument("--layers", nargs="+", default=(), metavar="GLOB",
                       help="the pruned set L: globs over node or output names (default: every conv)")  # fmt: skip
    prune.add_argument("--round-to", type=int, default=1, metavar="N", help="keep channel counts multiples of N")
    prune.add_argument("--plan-out", help="also write the selection as a JSON plan")

    demo = sub.add_parser("demo", help="show the weight statistics on a VGG16 built and exported here")
    demo.add_argument("--out", default="demo-out", help="folder for the model, JSON and plot (default: demo-out)")
    demo.add_argument("--sparsity", type=float, default=0.5, help="target share of zero weights (default 0.5)")
    demo.add_argument("--quick", action="store_true", help="fewer curve points (for tests)")
    for p in (analyze, prune, demo):
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        p.add_argument("-v", "--verbose", action="store_true", help="progress with timings; tracebacks on errors")
        p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return parser


def _analyze(args: argparse.Namespace) -> int:
    from onnxprune import commands

    report = commands.analyze(args.model, args.threshold, layers=tuple(args.layers), progress=args.verbose)
    if args.json:
        print(json.dumps(report))
    elif not args.quiet:
        print(commands.format_analysis(report))
    return 0


def _prune(args: argparse.Namespace) -> int:
    from onnxprune import commands

    report = commands.prune(
        args.model, args.output, threshold=args.threshold, sparsity=args.sparsity, sf=args.sf, sf_low=args.sf_low,
        sg=args.sg, layers=tuple(args.layers), round_to=args.round_to, plan=args.plan, plan_out=args.plan_out,
        progress=not args.quiet and not args.json,
    )  # fmt: skip
    report.pop("model")
    if args.json:
        print(json.dumps(report))
    elif not args.quiet:
        print(commands.format_prune(report))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from onnxprune import demo

    if not 0.0 <= args.sparsity <= 1.0:
        raise ValueError(f"--sparsity must be in [0, 1]; got {args.sparsity}")
    result = demo.run(args.out, sparsity=args.sparsity, curve_points=32 if args.quick else 256)
    if args.json:
        print(json.dumps(result))
    elif not args.quiet:
        print(demo.format_report(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"analyze": _analyze, "prune": _prune, "demo": _demo}[args.command](args)
    except (ValueError, FileNotFoundError) as err:
        if args.verbose:
            raise
        print(f"onnxprune {args.command}: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `onnxprune analyze m.onnx | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
