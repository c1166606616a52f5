"""``cvae-bench regress``: the quality gate -- retrain each variant briefly, compare to the baseline file."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.errors import CLIError
from bench.gates.quality import (
    DEFAULT_PROTOCOL,
    METRICS,
    MIN_ABS_TOLERANCE,
    SPREAD_FACTOR,
    QualityBaseline,
    check,
    default_baseline_path,
    environment,
    format_check,
    load_baseline,
    measure_spread,
    run_protocol,
    tolerances_from_spread,
)
from models.config import VARIANTS


def _progress(what: str) -> None:
    print(f"  training {what} ...", flush=True)


def run_regress(args: argparse.Namespace) -> int:
    path = Path(args.baseline) if args.baseline else default_baseline_path()
    if args.spread_seeds is not None and (not args.update or args.spread_seeds < 2):
        raise CLIError("--spread-seeds N (N >= 2) re-measures the tolerances and needs --update")
    if args.update:
        return update_baseline(path, args.spread_seeds)
    baseline = load_baseline(path)
    protocol = baseline.protocol
    print(f"cvae-bench regress: {', '.join(baseline.values)} on {protocol['dataset']}, {protocol['epochs']} epochs, "
          f"seed {protocol['seed']}, CPU (baseline {path})", flush=True)
    start = time.perf_counter()
    rows = check(baseline, run_protocol(protocol, list(baseline.values), _progress))
    print(format_check(rows))
    moved = [r for r in rows if r.moved]
    if moved:
        print(f"{len(moved)} metric(s) moved beyond tolerance "
              f"({', '.join(sorted({f'{r.variant}:{r.metric}' for r in moved}))}); if the change is intended, "
              f"rerun with --update and commit {path.name}")
        return 1
    print(f"all {len(rows)} metrics within tolerance ({time.perf_counter() - start:.1f} s)")
    return 0


def update_baseline(path: Path, spread_seeds: int | None) -> int:
    if path.exists():
        baseline = load_baseline(path)
    elif spread_seeds is None:
        raise CLIError(f"{path} does not exist: create it with --update --spread-seeds N (tolerances from N seeds)")
    else:
        baseline = QualityBaseline(dict(DEFAULT_PROTOCOL), {}, {v: {} for v in VARIANTS}, {})
    protocol, variants = baseline.protocol, list(baseline.values)
    doc = baseline.document
    if spread_seeds is not None:
        spread = measure_spread(protocol, variants, list(range(spread_seeds)), _progress)
        baseline.tolerances, baseline.variant_tolerances = tolerances_from_spread(spread)
        doc["spread"] = spread
        doc["tolerance_rule"] = (f"abs = {SPREAD_FACTOR} x the seed-to-seed range (max - min over the spread seeds, "
                                 f"same protocol) of the metric for that variant (variant_tolerances), or the "
                                 f"largest range over the variants (tolerances); at least {MIN_ABS_TOLERANCE} "
                                 f"nats; rel unused (0)")
    baseline.values = run_protocol(protocol, variants, _progress)
    doc["description"] = ("Quality baseline of `cvae-bench regress`: test-split -ELBO, recon and KL (nats per "
                          "example) of each variant after the protocol below; a value moved when |current - "
                          "baseline| > max(abs, rel * |baseline|), with the variant's own tolerance where "
                          "variant_tolerances has one.")
    doc["environment"] = environment()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(baseline.to_document(), indent=2) + "\n")
    except OSError as err:
        raise CLIError(f"cannot write {path}: {err.strerror or err}") from None
    for variant, metrics in baseline.values.items():
        print(f"  {variant:<10} " + "  ".join(f"{m} {metrics[m]:.4f}" for m in METRICS))
    print(f"wrote {path}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "regress", help="quality gate: retrain each variant on digits and compare to the committed baseline",
        description="Train each variant on digits with a fixed seed and a short budget (CPU, one thread, "
                    "reproducible) and compare test_neg_elbo, test_recon and test_kl with the baseline file, "
                    "within the tolerances it holds. Exits 1 with a table when a metric moved, 0 otherwise.")
    p.add_argument("--baseline", default=None, metavar="FILE",
                   help="baseline JSON (default: the one shipped in the package, bench/quality_baseline.json)")
    p.add_argument("--update", action="store_true",
                   help="rewrite the baseline values from this run (tolerances and protocol are kept)")
    p.add_argument("--spread-seeds", type=int, default=None, metavar="N",
                   help="with --update: also re-measure the seed-to-seed spread over N seeds and reset the "
                        "tolerances from it")
    p.set_defaults(func=run_regress)
    return p
