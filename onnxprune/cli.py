"""The `onnxprune` command. Exit codes: 0 success, 2 bad usage or input, 1 internal error."""

from __future__ import annotations

import argparse
import json
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onnxprune", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="show the weight statistics on a VGG16 built and exported here")
    demo.add_argument("--out", default="demo-out", help="folder for the model, JSON and plot (default: demo-out)")
    demo.add_argument("--sparsity", type=float, default=0.5, help="target share of zero weights (default 0.5)")
    demo.add_argument("--quick", action="store_true", help="fewer curve points (for tests)")
    for p in (demo,):
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        p.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
        p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return parser


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
        return {"demo": _demo}[args.command](args)
    except (ValueError, FileNotFoundError) as err:
        if args.verbose:
            raise
        print(f"onnxprune {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
