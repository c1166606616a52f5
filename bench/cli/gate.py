"""``cvae-bench gate --base REV [--head REV]``: slower or worse than the base? One job, one table, exit 0/1/2."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.cli.arguments import check_writable
from bench.errors import CLIError

DEVICES = ("cpu", "cuda")


def pattern_list(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values:
        raise argparse.ArgumentTypeError("needs at least one pattern")
    return values


def device_list(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in values if v not in DEVICES]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"{text!r}: give cpu, cuda or cpu,cuda")
    return values


def run_gate_command(args: argparse.Namespace) -> int:
    from bench.gates.gate import GateOptions, run_gate
    from bench.gates.speed import parse_threshold
    from bench.gates.verdict import REGRESSION, Thresholds, format_table, regressions

    if args.json:
        check_writable(args.json, "--json")
    if args.instructions_only and args.wall_only:
        raise CLIError("--instructions-only and --wall-only exclude each other")
    thresholds = Thresholds(parse_threshold(args.threshold, "--threshold"),
                            parse_threshold(args.wall_threshold, "--wall-threshold"))
    options = GateOptions(base=args.base, head=args.head, repo=Path(args.repo), patterns=args.only or (),
                          devices=args.device, thresholds=thresholds, threads=args.threads,
                          instruction_steps=args.instruction_steps,
                          wall_blocks=0 if args.instructions_only else args.wall_blocks, block_ms=args.block_ms,
                          instructions=not args.wall_only, quality=not args.no_quality)
    report = run_gate(options, say=lambda line: print(line, flush=True))
    print(format_table(report.rows, thresholds))
    if report.quality is not None:
        q = report.quality
        if q.verdict == "pass":
            print(f"quality (regress of head): {q.summary()}")
        else:
            print(f"quality (regress of head) {q.verdict.upper()}, exit {q.exit_code}:\n{q.output.rstrip()}")
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(report.to_document(), indent=2) + "\n")
        except OSError as err:
            raise CLIError(f"cannot write {args.json}: {err.strerror or err}") from None
        print(f"wrote {args.json}")
    slower = regressions(report.rows, thresholds)
    code = report.exit_code
    if code == 2:
        raise CLIError(f"the quality gate of head failed (exit {report.quality.exit_code}): {report.quality.summary()}")
    if slower:
        print(f"{len(slower)} {REGRESSION}(s): instructions up by more than {thresholds.instructions_pct:g}% or the "
              f"wall-clock interval above +{thresholds.wall_pct:g}%: {', '.join(r.name for r in slower)}")
    elif code == 0:
        print(f"no regression ({len(report.rows)} benchmark(s), {report.seconds['total']:.0f} s)")
    return code


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "gate", help="speed and quality gate: base against head in one job (instructions, paired wall clock, regress)",
        description="Check BASE (and HEAD, default the working tree) out into temporary git worktrees and measure "
                    "both in this environment, each with its own source: instructions per train step under "
                    "callgrind (CPU, one valgrind process per revision), wall clock in interleaved base/head "
                    "blocks (a paired ratio head/base with a 90 percent bootstrap interval; CUDA events on CUDA, where "
                    "it alone decides), and head's quality gate (regress). A regression: instructions up by more "
                    "than --threshold, or the whole wall interval above --wall-threshold. Exits 1 on a regression "
                    "or a moved quality metric, 0 otherwise, 2 on an error. Benchmarks: "
                    "train-step/<variant>/b<batch>/<device>, declared by each revision's "
                    "bench/timing/benchmarks.py (a revision without it cannot be gated).")
    p.add_argument("--base", required=True, metavar="REV", help="base revision, e.g. origin/main")
    p.add_argument("--head", default=None, metavar="REV", help="head revision (default: the working tree, as it is)")
    p.add_argument("--repo", default=".", metavar="DIR", help="the git repository (default: the current folder's)")
    p.add_argument("--only", type=pattern_list, default=None, metavar="PATTERN[,PATTERN]",
                   help="shell globs of the benchmarks to measure, e.g. 'train-step/cvae/*' (default: all)")
    p.add_argument("--device", type=device_list, default=("cpu",), metavar="cpu[,cuda]",
                   help="devices whose benchmarks are measured (default cpu)")
    p.add_argument("--threshold", default="1%", metavar="PCT",
                   help="allowed rise of instructions per step (default 1%%)")
    p.add_argument("--wall-threshold", default="10%", metavar="PCT",
                   help="a regression when the whole 90%% interval of wall head/base lies above 1 + PCT (default 10%%)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch CPU threads of the timed runs, pinned to N CPUs (default 1; instructions are always "
                        "counted on one thread)")
    m = p.add_argument_group("how long to measure")
    m.add_argument("--instruction-steps", type=int, default=10, metavar="N",
                   help="steps counted per benchmark under callgrind (default 10)")
    m.add_argument("--wall-blocks", type=int, default=20, metavar="N",
                   help="interleaved base/head pairs of timed blocks per benchmark (default 20; 0: no wall clock)")
    m.add_argument("--block-ms", type=float, default=100.0, metavar="MS", help="length of a timed block (default 100)")
    m.add_argument("--instructions-only", action="store_true", help="count instructions, time nothing")
    m.add_argument("--wall-only", action="store_true", help="time only (no valgrind needed); CPU verdicts get noisier")
    p.add_argument("--no-quality", action="store_true", help="skip head's quality gate (regress)")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write {benchmarks: [{name, base_instructions, head_instructions, "
                        "instructions_change_pct, wall_ratio, wall_interval, verdict}], ...}")
    p.set_defaults(func=run_gate_command)
    return p
