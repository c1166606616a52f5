"""What MLflow tracking adds to the wall time of ``cvae-bench train``: tracked vs ``--no-track``.

    python -m bench.timing.tracking_overhead --repeats 5 [--json out.json] [-- --epochs 20 --variant cvae]

Runs the command as fresh processes in a temporary folder (its own ``sqlite:///mlflow.db``),
tracked and untracked interleaved (the order alternates each round, so a drift in machine load
hits both alike), after one warm-up of each (the first tracked run also creates the database).
Prints the median wall time of each (seconds), the overhead of the medians in percent, and the median
of the per-round differences (less sensitive to load that changes between rounds). Other work on
the machine distorts it: CPU training slows many times over when another process takes a core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The command measured (``train``'s defaults: digits, 20 epochs), before any extra arguments.
TRAIN = ("train", "--no-progress")
ROOT = Path(__file__).resolve().parents[2]


def time_run(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Wall seconds of one ``cvae-bench`` process; raises if it fails."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "studies.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return seconds


def measure(repeats: int, extra: list[str]) -> dict[str, list[float]]:
    """Wall seconds of ``repeats`` tracked and untracked runs each, interleaved."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.pop("MLFLOW_TRACKING_URI", None)
    runs = {"tracked": [*TRAIN, *extra], "untracked": [*TRAIN, "--no-track", *extra]}
    times: dict[str, list[float]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory(prefix="cvae-bench-overhead-") as tmp:
        for argv in runs.values():  # warm-up: creates the database, fills the OS file cache
            time_run(argv, Path(tmp), env)
        for i in range(repeats):
            order = list(runs) if i % 2 == 0 else list(reversed(runs))
            for name in order:
                times[name].append(time_run(runs[name], Path(tmp), env))
                print(f"  round {i + 1}: {name:<9} {times[name][-1]:.3f} s", file=sys.stderr, flush=True)
    return times


def summary(times: dict[str, list[float]]) -> dict[str, float]:
    """Medians (s), the overhead of the medians (s, %), and the median of the per-round differences
    (s; each round's two runs share the machine's load at that moment)."""
    tracked, untracked = statistics.median(times["tracked"]), statistics.median(times["untracked"])
    paired = statistics.median(t - u for t, u in zip(times["tracked"], times["untracked"]))
    return {"tracked_median_s": tracked, "untracked_median_s": untracked,
            "overhead_s": tracked - untracked, "overhead_pct": 100.0 * (tracked - untracked) / untracked,
            "paired_overhead_s": paired, "paired_overhead_pct": 100.0 * paired / untracked,
            "repeats": len(times["tracked"])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.timing.tracking_overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="runs of each kind after the warm-up (default 5)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write every time and the summary as JSON")
    p.add_argument("extra", nargs="*", help="more train arguments, after --")
    args = p.parse_args(argv)
    times = measure(args.repeats, args.extra)
    s = summary(times)
    print(f"train {' '.join(args.extra) or '(defaults)'}: tracked {s['tracked_median_s']:.3f} s, "
          f"--no-track {s['untracked_median_s']:.3f} s (medians of {s['repeats']}), "
          f"overhead {s['overhead_s'] * 1000:+.0f} ms = {s['overhead_pct']:+.1f} % "
          f"(median of per-round differences {s['paired_overhead_s'] * 1000:+.0f} ms = "
          f"{s['paired_overhead_pct']:+.1f} %)")
    if args.json:
        Path(args.json).write_text(json.dumps({"times_s": times, **s}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
