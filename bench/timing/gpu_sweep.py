"""The GPU step-time sweep: every variant x batch 64/256/1024 x mode x precision, in one process.

    PYTHONPATH=. python -m bench.timing.gpu_sweep --out DIR            # on a CUDA machine, < 5 minutes
    PYTHONPATH=. python -m bench.timing.gpu_sweep --out DIR --device cpu --quick   # smoke run on CPU

Data: MNIST when its files are already on disk (nothing is downloaded), else synthetic random images in
[0, 1] of shape (1, 28, 28) with 10 classes -- the step's cost does not depend on pixel values.

Order, so that a time budget cuts the least informative work: the seed-loop baseline at batch 64,
then for each variant, batch and precision eager and CUDA graphs (for the seed preset at batch 64
also with torch's default Adam instead of the fused one); then the whole trial (below); then the
torch.compile modes (compile, compile + CUDA graphs), which cost a compilation each. Every harness
row is preceded by its floor: the bare step on fixed buffers with the same compile, CUDA-graph,
precision and Adam settings, so that harness / floor is the cost of the harness's gather and counter
alone. A configuration that would start after ``--budget-s`` is skipped and listed as such; one that
fails is reported and the sweep goes on.

The whole trial times ``fit`` -- what ``cvae-bench train`` and every study trial run, the final test
evaluation included -- of the seed preset at batch 64 for 10 epochs on synthetic 28x28 data of
60 000 train examples (held-out splits the size of MNIST's: 6 000 val, 10 000 test), and reports its
wall time and the share of it spent outside train steps. ``--quick`` shrinks it to a smoke run.

Writes ``DIR/sweep.json`` (the steptime schema plus a ``sweep`` summary) and ``DIR/sweep.md``. Needs
neither MLflow nor Optuna.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from bench.data import DatasetError, DataSplits, Split, load_benchmark_data, load_dataset, synthetic_splits
from bench.timing.block_timer import synchronize
from bench.timing.calibration import measure_calibration
from bench.timing.report import add_normalised, add_speedups, format_table, machine_info, report
from bench.timing.steptime import StepTimeConfig, StepTimeResult, TimingOptions, measure, release_memory
from bench.training import TrainConfig, fit, model_config
from bench.training.config import resolve_device
from models.config import VARIANTS

BATCH_SIZES = (64, 256, 1024)
PRECISIONS = ("none", "bf16")
SEED_PRESET = "cvae"


@dataclass(frozen=True)
class TrialPlan:
    """The whole-trial row: ``fit`` of the seed preset at batch 64 on synthetic data of this size."""

    shape: tuple[int, int, int]
    n_train: int
    n_val: int
    n_test: int
    epochs: int
    batch_size: int = 64
    quick: bool = False
    note: str = ""


#: 60 000 train examples as the issue's benchmark; val and test as MNIST's (10 % of its 60 000, its test set).
FULL_TRIAL = TrialPlan((1, 28, 28), 60_000, 6_000, 10_000, epochs=10)
#: The smoke run's: 8x8 images, so that the judge classifier of the final evaluation is the small MLP
#: (at 28x28 its conv net alone takes ~20 s on two CPU cores however few the examples).
QUICK_TRIAL = TrialPlan((1, 8, 8), 512, 128, 128, epochs=1, quick=True,
                        note="quick: scaled down to 8x8 images, 512/128/128 train/val/test examples, 1 epoch "
                             "(a smoke run, not the whole-trial workload)")


@dataclass(frozen=True)
class SweepPlan:
    variants: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    precisions: tuple[str, ...]
    compile: bool
    options: TimingOptions
    synthetic_n: int
    trial: TrialPlan = FULL_TRIAL


def make_plan(device: str, quick: bool, compile: bool | None) -> SweepPlan:
    """Full plan on CUDA; ``quick`` shrinks it to batch 64, fp32, a few short blocks (a smoke run)."""
    if quick:
        return SweepPlan(VARIANTS, (64,), ("none",), bool(compile),
                         TimingOptions(repeats=2, steps_per_block=2, warmup_steps=1), synthetic_n=2048,
                         trial=QUICK_TRIAL)
    use_compile = device == "cuda" if compile is None else compile
    return SweepPlan(VARIANTS, BATCH_SIZES, PRECISIONS, use_compile,
                     TimingOptions(repeats=7, block_ms=30.0, warmup_steps=5), synthetic_n=60_000)


def sweep_configs(plan: SweepPlan, device: str) -> list[StepTimeConfig]:
    """All configurations, cheapest and most informative first (see the module docstring)."""
    return eager_configs(plan, device) + compile_configs(plan, device)


def eager_configs(plan: SweepPlan, device: str) -> list[StepTimeConfig]:
    """The seed-loop baselines, then eager and (on CUDA) CUDA-graph harness rows, each after its floor."""
    graphs = device == "cuda"
    configs = [StepTimeConfig(v, 64, device, loop="seed-loop") for v in plan.variants]
    for v in plan.variants:
        for b in plan.batch_sizes:
            for amp in plan.precisions:
                configs += with_floor(StepTimeConfig(v, b, device, amp=amp))
                if graphs:
                    configs += with_floor(StepTimeConfig(v, b, device, amp=amp, cuda_graphs=True))
                configs += adam_contrast(v, b, device, amp, compile=False, cuda_graphs=graphs)
    return configs


def compile_configs(plan: SweepPlan, device: str) -> list[StepTimeConfig]:
    """The torch.compile harness rows (with CUDA graphs too on CUDA), each after its floor."""
    if not plan.compile:
        return []
    graphs = device == "cuda"
    configs = []
    for v in plan.variants:
        for b in plan.batch_sizes:
            for amp in plan.precisions:
                configs += with_floor(StepTimeConfig(v, b, device, amp=amp, compile=True))
                if graphs:
                    configs += with_floor(StepTimeConfig(v, b, device, amp=amp, compile=True, cuda_graphs=True))
                configs += adam_contrast(v, b, device, amp, compile=True, cuda_graphs=graphs)
    return configs


def with_floor(harness: StepTimeConfig) -> list[StepTimeConfig]:
    """[the floor with ``harness``'s settings, ``harness``]: the floor bounds exactly that row."""
    return [dataclasses.replace(harness, loop="floor"), harness]


def settings(r: StepTimeConfig | StepTimeResult) -> tuple[bool, bool, str, str]:
    """(compile, cuda_graphs, amp, adam): what a floor row must share with the harness row it bounds."""
    return r.compile, r.cuda_graphs, r.amp, r.adam


def adam_contrast(variant: str, batch: int, device: str, amp: str, compile: bool,
                  cuda_graphs: bool) -> list[StepTimeConfig]:
    """The seed preset at batch 64 in this mode once more, with torch's default Adam (after its floor).

    The harness runs fused Adam; this row shows what that choice is worth where steps are shortest.
    """
    if (variant, batch) != (SEED_PRESET, 64):
        return []
    return with_floor(StepTimeConfig(variant, batch, device, amp=amp, compile=compile, cuda_graphs=cuda_graphs,
                                     adam="default"))


def mnist_or_synthetic(data_root: str | None, n: int) -> tuple[DataSplits, str]:
    """MNIST if its files are present (never downloaded), else MNIST-shaped synthetic data."""
    try:
        return load_dataset("mnist", data_root), "MNIST (files found on disk)"
    except DatasetError as err:
        note = (f"MNIST not available ({err}); using synthetic random images in [0, 1], shape (1, 28, 28), "
                f"10 classes, {n} train examples (step cost does not depend on pixel values)")
        return synthetic_splits((1, 28, 28), 10, n=n), note


def floor_gaps(results: list[StepTimeResult]) -> list[dict[str, Any]]:
    """Per (variant, batch): the fastest harness setting and its ratio to the floor with the same settings.

    The floor is the one timed with the best row's compile, CUDA-graph, precision and Adam settings
    (None when it was not timed: skipped by the budget, or failed).
    """
    gaps = []
    keys = sorted({(r.variant, r.batch_size) for r in results}, key=lambda k: (VARIANTS.index(k[0]), k[1]))
    for variant, batch in keys:
        harness = [r for r in results if (r.variant, r.batch_size, r.loop) == (variant, batch, "harness")]
        floors = {settings(r): r for r in results if (r.variant, r.batch_size, r.loop) == (variant, batch, "floor")}
        if not harness:
            continue
        best = min(harness, key=lambda r: r.median_ms)
        floor = floors.get(settings(best))
        gaps.append({"variant": variant, "batch_size": batch, "best_mode": best.mode, "best_amp": best.amp,
                     "best_adam": best.adam,
                     "best_ms": best.median_ms, "best_samples_per_s": best.samples_per_s,
                     "floor_mode": floor.mode if floor else None,
                     "floor_ms": floor.median_ms if floor else None,
                     "best_over_floor": best.median_ms / floor.median_ms if floor else None,
                     "speedup_vs_seed_loop": best.speedup})
    return gaps


def format_gaps(gaps: list[dict[str, Any]]) -> str:
    lines = ["| variant | batch | best setting | best ms | floor ms (same setting) | harness / floor | "
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


def trial_data(plan: TrialPlan) -> DataSplits:
    """Synthetic train data (``load_benchmark_data``) with held-out splits of ``plan``'s sizes.

    ``load_benchmark_data`` holds 100 val and 100 test examples (step timing reads train only): a final
    evaluation on those would cost next to nothing, so val and test are drawn here at full size.
    """
    c, h, w = plan.shape
    data = load_benchmark_data(f"synthetic:{c}x{h}x{w}" if c != 1 else f"synthetic:{h}x{w}",
                               synthetic_n=plan.n_train)
    held_out = synthetic_splits(plan.shape, data.num_classes, n=plan.n_val + plan.n_test, seed=1).train
    val = Split(held_out.x[:plan.n_val], held_out.y[:plan.n_val])
    test = Split(held_out.x[plan.n_val:], held_out.y[plan.n_val:])
    return dataclasses.replace(data, val=val, test=test)


def time_trial(plan: TrialPlan, device: str) -> dict[str, Any]:
    """Wall time of ``fit`` (final evaluation included) and the share of it outside train steps.

    ``steps_s`` is the sum of the per-step times fit measures (:class:`bench.training.StepTimer`:
    CUDA events on CUDA); ``outside_steps_share`` = (wall - steps) / wall. ``epoch_loops_s`` is the
    wall time of the epochs' step loops (steps plus the per-epoch synchronisation).
    """
    data = trial_data(plan)
    model_cfg = model_config(SEED_PRESET, data)
    train_cfg = TrainConfig(epochs=plan.epochs, batch_size=plan.batch_size, device=device)  # train's defaults
    dev = resolve_device(device)
    release_memory(dev)
    synchronize(dev)
    start = time.perf_counter()
    result = fit(model_cfg, train_cfg, data, progress=False)  # ends on a read of the last test metric
    wall = time.perf_counter() - start
    steps = plan.epochs * (plan.n_train // plan.batch_size)
    row = {"what": f"fit ({SEED_PRESET} seed preset, batch {plan.batch_size}, final evaluation included)",
           "dataset": data.name, "n_train": plan.n_train, "n_val": plan.n_val, "n_test": plan.n_test,
           "epochs": plan.epochs, "batch_size": plan.batch_size, "device": device,
           "mode": "cuda-graphs" if train_cfg.use_cuda_graphs(dev) else "eager", "steps": steps,
           "wall_s": wall, "steps_s": result.step_seconds, "epoch_loops_s": result.train_seconds,
           "outside_steps_s": wall - result.step_seconds,
           "outside_steps_share": (wall - result.step_seconds) / wall,
           "step_ms": statistics.median(h["step_ms"] for h in result.history),
           "test_neg_elbo": result.final["test_neg_elbo"], "quick": plan.quick, "note": plan.note}
    del result
    release_memory(dev)
    return row


def format_trial(row: dict[str, Any]) -> str:
    lines = ["| data | train/val/test | epochs | mode | steps | wall s | steps s | outside steps | step ms |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| {row['dataset']} | {row['n_train']}/{row['n_val']}/{row['n_test']} | {row['epochs']} | "
             f"{row['mode']} | {row['steps']} | {row['wall_s']:.2f} | {row['steps_s']:.2f} | "
             f"{row['outside_steps_share']:.0%} ({row['outside_steps_s']:.2f} s) | {row['step_ms']:.4f} |"]
    if row["note"]:
        lines += ["", f"Note: {row['note']}."]
    return "\n".join(lines)


def run_sweep(out: Path, device: str, quick: bool, budget_s: float, compile: bool | None = None,
              data_root: str | None = None) -> dict[str, Any]:
    start = time.monotonic()
    plan = make_plan(device, quick, compile)
    data, data_note = mnist_or_synthetic(data_root, plan.synthetic_n)
    print(f"gpu_sweep: device {device}; data: {data_note}", flush=True)
    calibration = {device: measure_calibration(resolve_device(device), repeats=3 if quick else 10)}
    eager, compiled = eager_configs(plan, device), compile_configs(plan, device)
    total = len(eager) + 1 + len(compiled)
    results: list[StepTimeResult] = []
    skipped: list[str] = []
    failed: list[dict[str, str]] = []
    trial: dict[str, Any] | None = None

    def attempt(i: int, label: str, work: Callable[[], Any], compiles: bool = False) -> Any:
        """``work()``, unless the budget is spent (skipped) or it raises (failed): None then."""
        elapsed = time.monotonic() - start
        if elapsed > budget_s:
            skipped.append(label)
            return None
        try:
            return work()
        except Exception as err:  # noqa: BLE001 -- one failed mode must not lose the rest of a one-shot run
            message = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
            failed.append({"config": label, "error": message})
            print(f"  [{i}/{total} {elapsed:5.0f}s] {label}: FAILED {message}", flush=True)
            if compiles:
                torch._dynamo.reset()
            release_memory(resolve_device(device))
            return None

    def measure_all(configs: list[StepTimeConfig], first: int) -> None:
        for i, cfg in enumerate(configs, first):
            label = f"{cfg.loop} {cfg.variant} b{cfg.batch_size} {cfg.mode} {cfg.precision} adam-{cfg.adam}"
            result = attempt(i, label, lambda: measure(cfg, data, plan.options), compiles=cfg.compile)
            if result is not None:
                results.append(result)
                print(f"  [{i}/{total} {time.monotonic() - start:5.0f}s] {label}: {result.median_ms:.4f} ms "
                      f"(IQR {result.iqr_ms:.4f}), {result.samples_per_s:,.0f} samples/s, "
                      f"{result.tflops:.3f} TFLOP/s", flush=True)

    measure_all(eager, 1)
    trial = attempt(len(eager) + 1, f"whole trial {SEED_PRESET} b{plan.trial.batch_size}",
                    lambda: time_trial(plan.trial, device))
    if trial is not None:
        print(f"  [{len(eager) + 1}/{total} {time.monotonic() - start:5.0f}s] whole trial: {trial['wall_s']:.2f} s, "
              f"{trial['outside_steps_share']:.0%} outside train steps", flush=True)
    measure_all(compiled, len(eager) + 2)
    add_speedups(results)
    add_normalised(results, calibration)
    gaps = floor_gaps(results)
    document = report(results, calibration, machine_info([device]))
    document["sweep"] = {"data": data_note, "quick": quick, "budget_s": budget_s,
                         "wall_s": time.monotonic() - start, "floor_gaps": gaps, "whole_trial": trial,
                         "skipped": skipped, "failed": failed}
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
    trial = sweep["whole_trial"]
    if trial is not None:
        lines.append(f"- whole trial ({trial['what']}, {trial['epochs']} epochs on {trial['dataset']}): "
                     f"{trial['wall_s']:.1f} s wall, {trial['outside_steps_share']:.0%} of it outside train steps"
                     + (" (quick: scaled down)" if trial["quick"] else ""))
    floor = "the bare step on fixed buffers, with the best setting's compile, CUDA-graph, precision and Adam"
    lines += ["", f"## Best setting vs the floor ({floor})", "", format_gaps(gaps), ""]
    if trial is not None:
        lines += [f"## Whole trial: {trial['what']}", "",
                  "Wall time of `fit` as `cvae-bench train` runs it (model and data set-up, CUDA-graph capture, "
                  "per-epoch validation, final test evaluation with the judge classifier's training); "
                  "*outside steps* = (wall - sum of the per-step times) / wall.", "", format_trial(trial), ""]
    lines += ["## All configurations", "", format_table(results, markdown=True), ""]
    if sweep["skipped"]:
        lines += ["## Skipped (time budget)", "", *[f"- {s}" for s in sweep["skipped"]], ""]
    if sweep["failed"]:
        lines += ["## Failed", "", *[f"- {f['config']}: {f['error']}" for f in sweep["failed"]], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.timing.gpu_sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for sweep.json and sweep.md")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: batch 64, fp32, tiny blocks, a scaled-down whole trial")
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
