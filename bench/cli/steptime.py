"""``cvae-bench steptime``: time the whole train step of each configuration; table, JSON, MLflow.

Also runnable without the rest of the CLI (e.g. on a GPU machine without MLflow or Optuna)::

    PYTHONPATH=. python -m bench.cli.steptime --variant cvae --dataset synthetic:28x28 --no-track

torch and the timing modules are imported when the command runs, not at import: ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.cli.arguments import add_device_argument, check_writable, int_list, name_list, parse_seed, thread_count
from bench.errors import CLIError
from models.config import ConfigError

if TYPE_CHECKING:
    from bench.timing.steptime import StepTimeConfig, StepTimeResult, TimingOptions

EXPERIMENT = "steptime"
#: ``bench.training.step.ADAM_IMPLEMENTATIONS``, spelled out so that ``--help`` needs no torch (a test keeps them equal).
ADAM_CHOICES = ("fused", "default")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to time")
    g.add_argument("--variant", type=name_list, default=("cvae",), metavar="V[,V...]",
                   help="variants, comma-separated: cvae, beta-cvae, flow-cvae (default cvae; seed preset)")
    g.add_argument("--dataset", default="digits", metavar="NAME",
                   help="digits (default), mnist, fashion-mnist, cifar10, imagefolder:PATH, or synthetic:HxW / "
                        "synthetic:CxHxW (random images, e.g. synthetic:28x28 for MNIST-shaped data)")
    g.add_argument("--data-root", default=None, metavar="DIR",
                   help="where torchvision datasets live (default: $CVAE_BENCH_DATA or ~/.cache/cvae-bench/data)")
    g.add_argument("--batch-size", type=int_list, default=(64,), metavar="B[,B...]",
                   help="batch sizes, comma-separated (default 64)")
    add_device_argument(g)
    g.add_argument("--compile", action="store_true", help="torch.compile the forward and loss")
    g.add_argument("--amp", default="none", choices=("none", "bf16"), help="bf16 autocast (default none)")
    g.add_argument("--cuda-graphs", action="store_true",
                   help="capture the whole step (gather, forward, backward, Adam) as one CUDA graph")
    g.add_argument("--adam", default="fused", choices=ADAM_CHOICES,
                   help="Adam of the harness and floor rows: fused (default, one kernel for all parameters) or "
                        "default (torch.optim.Adam's own choice, as the seed loop uses)")
    g.add_argument("--baseline", default=None, choices=("seed-loop",),
                   help="also time the seed article's DataLoader loop, its blocks interleaved with the harness's; "
                        "adds the speedup column")
    g.add_argument("--floor", action="store_true",
                   help="also time the bare step on fixed buffers (a CUDA-graph replay on CUDA): the floor")
    t = p.add_argument_group("measurement")
    t.add_argument("--repeats", type=int, default=10, metavar="R", help="timed blocks per configuration (default 10)")
    t.add_argument("--steps-per-block", type=int, default=None, metavar="N",
                   help="steps per timed block (default: enough for --block-ms)")
    t.add_argument("--block-ms", type=float, default=50.0, metavar="MS", help="target block length (default 50)")
    t.add_argument("--warmup", type=int, default=5, metavar="N", help="untimed warm-up steps (default 5)")
    t.add_argument("--threads", type=thread_count, default=None, metavar="N",
                   help="torch CPU threads (default: torch's)")
    t.add_argument("--seed", type=parse_seed, default=0, help="seed of the model init and batch order (default 0)")
    t.add_argument("--instructions", action="store_true",
                   help="also count instructions per step under callgrind, one thread, every row in one valgrind "
                        "process (CPU only; needs valgrind; adds minutes: valgrind imports torch)")
    o = p.add_argument_group("output")
    o.add_argument("--json", default=None, metavar="PATH",
                   help="also write {machine, calibration, results} as JSON (default: none written)")
    o.add_argument("--tracking-uri", default=None, metavar="URI",
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    o.add_argument("--experiment", default=EXPERIMENT, metavar="NAME", help=f"MLflow experiment (default {EXPERIMENT})")
    o.add_argument("--no-track", action="store_true", help="log nothing to MLflow (MLflow need not be installed)")


def configs_from_args(args: argparse.Namespace, device: str) -> list[StepTimeConfig]:
    """Every (variant, batch size) configuration, the baseline/floor rows included; validated up front."""
    from bench.timing.steptime import StepTimeConfig
    from bench.training.presets import check_variant

    for variant in args.variant:
        check_variant(variant)
    configs = []
    for variant in args.variant:
        for batch in args.batch_size:
            if args.baseline == "seed-loop":
                configs.append(StepTimeConfig(variant, batch, device, loop="seed-loop"))
            if args.floor:
                configs.append(StepTimeConfig(variant, batch, device, compile=args.compile, amp=args.amp,
                                              cuda_graphs=device == "cuda", loop="floor", adam=args.adam))
            configs.append(StepTimeConfig(variant, batch, device, compile=args.compile, amp=args.amp,
                                          cuda_graphs=args.cuda_graphs, adam=args.adam))
    return configs


def interleaved_groups(configs: list[StepTimeConfig]) -> list[list[StepTimeConfig]]:
    """Consecutive configurations of the same variant and batch size (seed loop, floor, harness): one group each."""
    groups: list[list[StepTimeConfig]] = []
    for cfg in configs:
        if groups and (groups[-1][0].variant, groups[-1][0].batch_size) == (cfg.variant, cfg.batch_size):
            groups[-1].append(cfg)
        else:
            groups.append([cfg])
    return groups


def timing_options(args: argparse.Namespace) -> TimingOptions:
    from bench.timing.steptime import TimingOptions

    return TimingOptions(repeats=args.repeats, steps_per_block=args.steps_per_block, block_ms=args.block_ms,
                         warmup_steps=args.warmup, seed=args.seed)


def write_json(path: str, document: dict[str, Any]) -> None:
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(document, indent=2) + "\n")
    except OSError as err:
        raise CLIError(f"cannot write {path}: {err.strerror or err}") from None


def check_store(tracking_uri: str | None) -> str:
    """The tracking URI, checked before the timing (a missing SQLite folder, a database server that does not
    answer, MLflow not installed: one line now, not after minutes of timing). The writer that logs the
    results starts after the timing, so that it takes no CPU from it."""
    from bench.tracking import check_tracking_uri, resolve_tracking_uri
    from bench.tracking.writer import require_mlflow

    uri = resolve_tracking_uri(tracking_uri)
    require_mlflow()
    check_tracking_uri(uri)
    return uri


def log_to_mlflow(results: list[StepTimeResult], calibration: dict[str, Any], uri: str, experiment: str) -> str:
    """One MLflow run per configuration in ``experiment`` (through a writer process); returns the tracking URI."""
    from bench.tracking import TrackingWriter, environment_tags, redact_url

    writer = TrackingWriter(uri)
    for r in results:
        cal = calibration.get(r.device)
        tags = {**environment_tags(r.device), "loop": r.loop, "benchmark": r.name}
        with writer.start_run(experiment, r.name, tags=tags) as tracker:
            tracker.log_params({"variant": r.variant, "dataset": r.dataset, "batch_size": r.batch_size,
                                "device": r.device, "loop": r.loop, "mode": r.mode, "compile": r.compile,
                                "amp": r.amp, "cuda_graphs": r.cuda_graphs, "adam": r.adam,
                                "steps_per_block": r.steps_per_block, "repeats": r.repeats,
                                "peak_mem_source": r.peak_mem_source,
                                "calibration_workload": cal["workload"] if cal else "none"})
            metrics = {"median_ms": r.median_ms, "iqr_ms": r.iqr_ms, "samples_per_s": r.samples_per_s,
                       "peak_mem_mb": r.peak_mem_mb, "tflops": r.tflops, "flops_per_step": float(r.flops_per_step)}
            if r.speedup is not None:
                metrics["speedup"] = r.speedup
            if r.normalised is not None:
                metrics["normalised"] = r.normalised
                metrics["calibration_ms"] = cal["median_ms"]
            if r.instructions_per_step is not None:
                metrics["instructions_per_step"] = r.instructions_per_step
            tracker.log_metrics(metrics)
    note = writer.close()
    if writer.errors:  # the JSON is written already
        raise CLIError(f"MLflow logging to {redact_url(uri)} failed: {writer.errors[0]}")
    if note:
        print(f"note: {note}", file=sys.stderr)
    return uri


def run_steptime(args: argparse.Namespace) -> int:
    import torch

    from bench.data import load_benchmark_data
    from bench.data.memory import check_fits
    from bench.timing.calibration import measure_calibration
    from bench.timing.report import add_normalised, add_speedups, format_table, machine_info, report
    from bench.timing.instructions import count_step_instructions, require_counting
    from bench.timing.steptime import measure_group
    from bench.training.config import resolve_device

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if not 0 < args.block_ms < float("inf"):
        raise CLIError(f"--block-ms {args.block_ms}: must be a finite number of milliseconds > 0")
    if args.json:
        check_writable(args.json, "--json")  # before the timing, not after it
    chosen = resolve_device(args.device)
    if chosen.type == "cuda" and chosen.index is not None:
        torch.cuda.set_device(chosen)  # configs and results name the type: "cuda" is now the chosen GPU
    device = chosen.type
    if args.instructions:
        require_counting(device)  # before the timing, not after it
    configs = configs_from_args(args, device)
    options = timing_options(args)
    data = load_benchmark_data(args.dataset, args.data_root, seed=args.seed)
    for batch in args.batch_size:  # one batch of images, its reconstruction and their gradients (float32)
        check_fits(16 * batch * math.prod(data.input_shape), f"--batch-size {batch} on {data.name}", chosen)
    uri = None if args.no_track else check_store(args.tracking_uri)
    print(f"cvae-bench steptime: {len(configs)} configuration(s) on {data.name} "
          f"({len(data.train)} train examples), device {device}", flush=True)

    calibration = {device: measure_calibration(chosen)}
    results = []
    groups = interleaved_groups(configs)
    for i, group in enumerate(groups, 1):
        first = group[0]
        print(f"  [{i}/{len(groups)}] {first.variant} batch {first.batch_size}: "
              f"{', '.join(f'{c.loop} {c.mode} {c.precision}' for c in group)}"
              f"{' (blocks interleaved)' if len(group) > 1 else ''}", flush=True)
        results.extend(measure_group(group, data, options))
    if args.instructions:
        print(f"  counting instructions per step of {len(configs)} configuration(s) under callgrind (one thread)",
              flush=True)
        counts = count_step_instructions(configs, args.dataset, args.data_root, args.seed, args.warmup)
        for r in results:
            r.instructions_per_step = counts[r.name]
    add_speedups(results)
    add_normalised(results, calibration)
    print(format_table(results))
    cal = calibration[device]
    print(f"calibration: {cal['workload']} on {device}: {cal['median_ms']:.3f} ms")

    if args.json:
        write_json(args.json, report(results, calibration, machine_info([device])))
        print(f"wrote {args.json}")
    if not args.no_track:
        log_to_mlflow(results, calibration, uri, args.experiment)
        from bench.tracking import redact_url
        print(f"logged {len(results)} run(s) to experiment {args.experiment!r} at {redact_url(uri)}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "steptime", help="time the train step (forward, loss, backward, Adam) of each configuration",
        description="Time the whole train step of each variant x batch size after an untimed warm-up "
                    "(compilation and CUDA-graph capture excluded): median and IQR of the step time over "
                    "timed blocks (CUDA events, one synchronise per block; a monotonic clock on CPU), "
                    "samples/s, peak memory and achieved TFLOP/s. One MLflow run per configuration.")
    add_arguments(p)
    p.set_defaults(func=run_steptime)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.cli.steptime``: the subcommand alone (no Optuna/MLflow imports needed)."""
    parser = argparse.ArgumentParser(prog="cvae-bench steptime")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_steptime(args)
    except (CLIError, ConfigError) as err:  # bench.data.DatasetError is a CLIError
        print(f"cvae-bench steptime: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
