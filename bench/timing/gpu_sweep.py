"""The GPU step-time sweep: every variant x batch 64/256/1024 x mode x precision, in one process.

    PYTHONPATH=. python -m bench.timing.gpu_sweep --out DIR            # on a CUDA machine, < 5 minutes
    PYTHONPATH=. python -m bench.timing.gpu_sweep --out DIR --device cpu --quick   # smoke run on CPU

Data: MNIST when its files are already on disk (nothing is downloaded), else synthetic random images in
[0, 1] of shape (1, 28, 28) with 10 classes -- the step's cost does not depend on pixel values.

Order, so that a time budget cuts the least informative work: the seed-loop baseline at batch 64,
then for each variant, batch and precision the floor (CUDA-graph replay of the bare step), eager and
CUDA graphs (for the seed preset at batch 64 also with torch's default Adam instead of the fused one);
then the torch.compile modes (compile, compile + CUDA graphs), which cost a compilation
each. A configuration that would start after ``--budget-s`` is skipped and listed as such; one that
fails is reported and the sweep goes on. Writes ``DIR/sweep.json`` (the steptime schema plus a
``sweep`` summary) and ``DIR/sweep.md``. Needs neither MLflow nor Optuna.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.data import DatasetError, DataSplits, load_dataset, synthetic_splits
from bench.timing.calibration import measure_calibration
from bench.timing.report import add_normalised, add_speedups, format_table, machine_info, report
from bench.timing.steptime import StepTimeConfig, StepTimeResult, TimingOptions, measure, release_memory
from bench.training.config import resolve_device
from models.config import VARIANTS

BATCH_SIZES = (64, 256, 1024)
PRECISIONS = ("none", "bf16")
SEED_PRESET = "cvae"


@dataclass(frozen=True)
class SweepPlan:
    variants: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    precisions: tuple[str, ...]
    compile: bool
    options: TimingOptions
    synthetic_n: int


def make_plan(device: str, quick: bool, compile: bool | None) -> SweepPlan:
    """Full plan on CUDA; ``quick`` shrinks it to batch 64, fp32, a few short blocks (a smoke run)."""
    if quick:
        return SweepPlan(VARIANTS, (64,), ("none",), bool(compile),
                         TimingOptions(repeats=2, steps_per_block=2, warmup_steps=1), synthetic_n=2048)
    use_compile = device == "cuda" if compile is None else compile
    return SweepPlan(VARIANTS, BATCH_SIZES, PRECISIONS, use_compile,
                     TimingOptions(repeats=7, block_ms=30.0, warmup_steps=5), synthetic_n=60_000)


def sweep_configs(plan: SweepPlan, device: str) -> list[StepTimeConfig]:
    """All configurations, cheapest and most informative first (see the module docstring)."""
    graphs = device == "cuda"
    configs = [StepTimeConfig(v, 64, device, loop="seed-loop") for v in plan.variants]
    for v in plan.variants:
        for b in plan.batch_sizes:
            for amp in plan.precisions:
                configs.append(StepTimeConfig(v, b, device, amp=amp, cuda_graphs=graphs, loop="floor"))
                configs.append(StepTimeConfig(v, b, device, amp=amp))
                if graphs:
                    configs.append(StepTimeConfig(v, b, device, amp=amp, cuda_graphs=True))
                configs += adam_contrast(v, b, device, amp, compile=False, cuda_graphs=graphs)
    if plan.compile:
        for v in plan.variants:
            for b in plan.batch_sizes:
                for amp in plan.precisions:
                    configs.append(StepTimeConfig(v, b, device, amp=amp, compile=True))
                    if graphs:
                        configs.append(StepTimeConfig(v, b, device, amp=amp, compile=True, cuda_graphs=True))
                    configs += adam_contrast(v, b, device, amp, compile=True, cuda_graphs=graphs)
    return configs


def adam_contrast(variant: str, batch: int, device: str, amp: str, compile: bool,
                  cuda_graphs: bool) -> list[StepTimeConfig]:
    """The seed preset at batch 64 in this mode once more, with torch's default Adam.

    The harness runs fused Adam; this row shows what that choice is worth where steps are shortest.
    """
    if (variant, batch) != (SEED_PRESET, 64):
        return []
    return [StepTimeConfig(variant, batch, device, amp=amp, compile=compile, cuda_graphs=cuda_graphs,
                           adam="default")]


def mnist_or_synthetic(data_root: str | None, n: int) -> tuple[DataSplits, str]:
    """MNIST if its files are present (never downloaded), else MNIST-shaped synthetic data."""
    try:
        return load_dataset("mnist", data_root), "MNIST (files found on disk)"
    except DatasetError as err:
        note = (f"MNIST not available ({err}); using synthetic random images in [0, 1], shape (1, 28, 28), "
                f"10 classes, {n} train examples (step cost does not depend on pixel values)")
        return synthetic_splits((1, 28, 28), 10, n=n), note


def floor_gaps(results: list[StepTimeResult]) -> list[dict[str, Any]]:
    """Per (variant, batch): the fastest harness setting and its ratio to the floor at its precision."""
    gaps = []
    keys = sorted({(r.variant, r.batch_size) for r in results}, key=lambda k: (VARIANTS.index(k[0]), k[1]))
    for variant, batch in keys:
        harness = [r for r in results if (r.variant, r.batch_size, r.loop) == (variant, batch, "harness")]
        floors = {r.amp: r for r in results if (r.variant, r.batch_size, r.loop) == (variant, batch, "floor")}
        if not harness:
            continue
        best = min(harness, key=lambda r: r.median_ms)
        floor = floors.get(best.amp)
        gaps.append({"variant": variant, "batch_size": batch, "best_mode": best.mode, "best_amp": best.amp,
                     "best_adam": best.adam,
                     "best_ms": best.median_ms, "best_samples_per_s": best.samples_per_s,
                     "floor_ms": floor.median_ms if floor else None,
                     "best_over_floor": best.median_ms / floor.median_ms if floor else None,
                     "speedup_vs_seed_loop": best.speedup})
    return gaps


def format_gaps(gaps: list[dict[str, Any]]) -> str:
    lines = ["| variant | batch | best setting | best ms | floor ms (same precision) | best / floor | "
             "speedup vs seed loop |", "|---|---|---|---|---|---|---|"]
    for g in gaps:
        floor = f"{g['floor_ms']:.4f}" if g["floor_ms"] is not None else "-"
        ratio = f"{g['best_over_floor']:.2f}x" if g["best_over_floor"] is not None else "-"
        speed = f"{g['speedup_vs_seed_loop']:.1f}x" if g["speedup_vs_seed_loop"] is not None else "-"
        amp = "bf16" if g["best_amp"] == "bf16" else "fp32"
        lines.append(f"| {g['variant']} | {g['batch_size']} | {g['best_mode']} {amp} adam-{g['best_adam']} | "
                     f"{g['best_ms']:.4f} | "
                     f"{floor} | {ratio} | {speed} |")
    return "\n".join(lines)


def run_sweep(out: Path, device: str, quick: bool, budget_s: float, compile: bool | None = None,
              data_root: str | None = None) -> dict[str, Any]:
    start = time.monotonic()
    plan = make_plan(device, quick, compile)
    data, data_note = mnist_or_synthetic(data_root, plan.synthetic_n)
    print(f"gpu_sweep: device {device}; data: {data_note}", flush=True)
    calibration = {device: measure_calibration(resolve_device(device), repeats=3 if quick else 10)}
    configs = sweep_configs(plan, device)
    results: list[StepTimeResult] = []
    skipped: list[str] = []
    failed: list[dict[str, str]] = []
    for i, cfg in enumerate(configs, 1):
        label = f"{cfg.loop} {cfg.variant} b{cfg.batch_size} {cfg.mode} {cfg.precision} adam-{cfg.adam}"
        elapsed = time.monotonic() - start
        if elapsed > budget_s:
            skipped.append(label)
            continue
        try:
            result = measure(cfg, data, plan.options)
        except Exception as err:  # noqa: BLE001 -- one failed mode must not lose the rest of a one-shot run
            message = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
            failed.append({"config": label, "error": message})
            print(f"  [{i}/{len(configs)} {elapsed:5.0f}s] {label}: FAILED {message}", flush=True)
            if cfg.compile:
                torch._dynamo.reset()
            release_memory(resolve_device(device))
            continue
        results.append(result)
        print(f"  [{i}/{len(configs)} {elapsed:5.0f}s] {label}: {result.median_ms:.4f} ms "
              f"(IQR {result.iqr_ms:.4f}), {result.samples_per_s:,.0f} samples/s, {result.tflops:.3f} TFLOP/s",
              flush=True)
    add_speedups(results)
    add_normalised(results, calibration)
    gaps = floor_gaps(results)
    document = report(results, calibration, machine_info([device]))
    document["sweep"] = {"data": data_note, "quick": quick, "budget_s": budget_s,
                         "wall_s": time.monotonic() - start, "floor_gaps": gaps, "skipped": skipped,
                         "failed": failed}
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / "sweep.md").write_text(markdown_report(document, results, gaps))
    return document


def markdown_report(document: dict[str, Any], results: list[StepTimeResult], gaps: list[dict[str, Any]]) -> str:
    sweep, machine = document["sweep"], document["machine"]
    cal = next(iter(document["calibration"].values()))
    seed_rows = [g for g in gaps if g["variant"] == SEED_PRESET and g["batch_size"] == 64]
    lines = [
        "# cvae-bench step-time sweep", "",
        f"- machine: {machine.get('gpu') or machine['cpu']}; torch {machine['torch']}, CUDA {machine['cuda']}",
        f"- data: {sweep['data']}",
        f"- calibration: {cal['workload']} {cal['median_ms']:.4f} ms",
        f"- wall time: {sweep['wall_s']:.0f} s (budget {sweep['budget_s']:.0f} s); "
        f"{len(results)} configurations timed, {len(sweep['skipped'])} skipped, {len(sweep['failed'])} failed",
    ]
    if seed_rows and seed_rows[0]["speedup_vs_seed_loop"] is not None:
        g = seed_rows[0]
        lines.append(f"- seed preset (cvae, MLP 128, latent 32) at batch 64: best harness setting "
                     f"{g['best_mode']} {'bf16' if g['best_amp'] == 'bf16' else 'fp32'} adam-{g['best_adam']} runs "
                     f"{g['speedup_vs_seed_loop']:.1f}x the seed loop's samples/s")
    floor = "the bare step on fixed buffers: a CUDA-graph replay on CUDA, eager on CPU"
    lines += ["", f"## Best setting vs the floor ({floor})", "", format_gaps(gaps), "",
              "## All configurations", "", format_table(results, markdown=True), ""]
    if sweep["skipped"]:
        lines += ["## Skipped (time budget)", "", *[f"- {s}" for s in sweep["skipped"]], ""]
    if sweep["failed"]:
        lines += ["## Failed", "", *[f"- {f['config']}: {f['error']}" for f in sweep["failed"]], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.timing.gpu_sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for sweep.json and sweep.md")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 64, fp32, tiny blocks")
    parser.add_argument("--budget-s", type=float, default=230.0, metavar="S",
                        help="start no configuration after S seconds (default 230: the sweep ends within 5 min)")
    parser.add_argument("--compile", dest="compile", action="store_true", default=None,
                        help="include torch.compile modes (default: on CUDA, not with --quick)")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--data-root", default=None, metavar="DIR", help="where MNIST files may already be")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device).type
    except ValueError as err:
        print(f"gpu_sweep: error: {err}", file=sys.stderr)
        return 2
    document = run_sweep(Path(args.out), device, args.quick, args.budget_s, args.compile, args.data_root)
    print((Path(args.out) / "sweep.md").read_text())
    return 1 if document["sweep"]["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
