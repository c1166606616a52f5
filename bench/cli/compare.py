"""``cvae-bench compare BASE HEAD``: side-by-side step times; exit 1 on a regression beyond the threshold."""

from __future__ import annotations

import argparse

from bench.gates.speed import compare, format_comparison, load_source, parse_threshold, regressions


def run_compare(args: argparse.Namespace) -> int:
    threshold = parse_threshold(args.threshold)
    base = load_source(args.base, "BASE", args.tracking_uri)
    head = load_source(args.head, "HEAD", args.tracking_uri)
    rows = compare(base, head, normalised=args.normalised)
    print(f"base: {base.label} ({base.kind}); head: {head.label} ({head.kind})")
    print(format_comparison(rows, threshold, args.normalised))
    only = sorted(set(base.entries) ^ set(head.entries))
    if only:
        print(f"{len(only)} benchmark(s) in only one of the two were not compared")
    slower = regressions(rows, threshold)
    figure = "normalised time" if args.normalised else "median step time"
    if slower:
        print(f"{len(slower)} regression(s): {figure} more than {threshold:g}% above the base")
        return 1
    print(f"no regression beyond {threshold:g}% ({figure}, {len(rows)} benchmark(s))")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare", help="compare two step-time results; exit 1 on a regression",
        description="Compare BASE and HEAD -- each a steptime JSON, a pytest-benchmark JSON or an MLflow run "
                    "id of the steptime experiment -- benchmark by benchmark. Prints base, head and the change "
                    "in percent; exits 1 when any benchmark is slower than the threshold allows, 0 otherwise, "
                    "2 on unreadable input.")
    p.add_argument("base", metavar="BASE", help="baseline: JSON file or MLflow run id")
    p.add_argument("head", metavar="HEAD", help="candidate: JSON file or MLflow run id")
    p.add_argument("--threshold", default="10%", metavar="PCT", help="allowed slow-down in percent (default 10%%)")
    p.add_argument("--normalised", action="store_true",
                   help="gate on median / calibration workload of the same session (robust to machine drift)")
    p.add_argument("--tracking-uri", default=None, metavar="URI",
                   help="MLflow tracking URI for run ids (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.set_defaults(func=run_compare)
    return p
