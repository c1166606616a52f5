"""What MLflow tracking adds to the wall time of ``cvae-bench train``: tracked vs ``--no-track``.

    python -m bench.timing.tracking_overhead --repeats 5 [--json out.json] [-- --epochs 20 --variant cvae]

Runs the command as fresh processes in a temporary folder (its own ``sqlite:///mlflow.db``),
tracked and untracked interleaved (the order alternates each round, so a drift in machine load
hits both alike), after one warm-up of each (the first tracked run also creates the database).
Prints the median wall time of each (seconds), the overhead of the medians in percent, the median
of the per-round differences (less sensitive to load that changes between rounds) with a 90 %
bootstrap interval over the rounds, and the CPU seconds each kind used (the command and every
process it waited for: the writer process). Other work on the machine
distorts it: CPU training slows many times over when another process takes a core.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The command measured (``train``'s defaults: digits, 20 epochs), before any extra arguments.
TRAIN = ("train", "--no-progress")
ROOT = Path(__file__).resolve().parents[2]


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one ``cvae-bench`` process; raises if it fails. The CPU seconds
    count the process and every descendant that was waited for."""
    cpu_start, start = _children_cpu_s(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "studies.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True)
    seconds, cpu = time.perf_counter() - start, _children_cpu_s() - cpu_start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return seconds, cpu


def measure(repeats: int, extra: list[str]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall seconds and CPU seconds of ``repeats`` tracked and untracked runs each, interleaved."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.pop("MLFLOW_TRACKING_URI", None)
    runs = {"tracked": [*TRAIN, *extra], "untracked": [*TRAIN, "--no-track", *extra]}
    times: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory(prefix="cvae-bench-overhead-") as tmp:
        for argv in runs.values():  # warm-up: creates the database, fills the OS file cache
            time_run(argv, Path(tmp), env)
        for i in range(repeats):
            order = list(runs) if i % 2 == 0 else list(reversed(runs))
            for name in order:
                wall, used = time_run(runs[name], Path(tmp), env)
                times[name].append(wall)
                cpu[name].append(used)
                print(f"  round {i + 1}: {name:<9} {wall:.3f} s wall, {used:.2f} s CPU", file=sys.stderr,
                      flush=True)
    return times, cpu


def paired_interval(differences: list[float], level: float = 0.9, resamples: int = 4000,
                    seed: int = 0) -> tuple[float, float]:
    """A ``level`` bootstrap interval of the median of ``differences`` (rounds resampled with
    replacement; a fixed seed, so a report is reproducible)."""
    rng = random.Random(seed)
    n = len(differences)
    medians = sorted(statistics.median(rng.choices(differences, k=n)) for _ in range(resamples))
    tail = (1.0 - level) / 2.0
    return medians[int(tail * (resamples - 1))], medians[int((1.0 - tail) * (resamples - 1))]


def summary(times: dict[str, list[float]], cpu: dict[str, list[float]]) -> dict[str, float]:
    """Medians (s), the overhead of the medians (s, %), the median of the per-round differences
    (s, %; each round's two runs share the machine's load at that moment) with its 90 % bootstrap
    interval (%), and the median CPU seconds of each kind."""
    tracked, untracked = statistics.median(times["tracked"]), statistics.median(times["untracked"])
    differences = [t - u for t, u in zip(times["tracked"], times["untracked"])]
    paired = statistics.median(differences)
    low, high = paired_interval(differences)
    return {"tracked_median_s": tracked, "untracked_median_s": untracked,
            "overhead_s": tracked - untracked, "overhead_pct": 100.0 * (tracked - untracked) / untracked,
            "paired_overhead_s": paired, "paired_overhead_pct": 100.0 * paired / untracked,
            "paired_interval_pct": [100.0 * low / untracked, 100.0 * high / untracked],
            "tracked_cpu_median_s": statistics.median(cpu["tracked"]),
            "untracked_cpu_median_s": statistics.median(cpu["untracked"]),
            "repeats": len(times["tracked"])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.timing.tracking_overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=9, help="runs of each kind after the warm-up (default 9)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write every time and the summary as JSON")
    p.add_argument("extra", nargs="*", help="more train arguments, after --")
    args = p.parse_args(argv)
    times, cpu = measure(args.repeats, args.extra)
    s = summary(times, cpu)
    print(f"train {' '.join(args.extra) or '(defaults)'}: tracked {s['tracked_median_s']:.3f} s, "
          f"--no-track {s['untracked_median_s']:.3f} s (medians of {s['repeats']}), "
          f"overhead {s['overhead_s'] * 1000:+.0f} ms = {s['overhead_pct']:+.1f} % "
          f"(median of per-round differences {s['paired_overhead_s'] * 1000:+.0f} ms = "
          f"{s['paired_overhead_pct']:+.1f} %, 90 % interval {s['paired_interval_pct'][0]:+.1f} to "
          f"{s['paired_interval_pct'][1]:+.1f} %); CPU {s['tracked_cpu_median_s']:.2f} s tracked, "
          f"{s['untracked_cpu_median_s']:.2f} s untracked")
    if args.json:
        Path(args.json).write_text(json.dumps({"times_s": times, "cpu_s": cpu, **s}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
