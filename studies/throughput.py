"""How fast a shared study goes: trials per minute with 1..N workers, and what one trial pays for
its storage and tracking round trips.

    python -m studies.throughput --storage postgresql://u:pw@host/optuna --tracking-uri http://host:5000 \\
        --workers 1,2,3 --trials 12 --epochs 3

Every configuration is a fresh study (``tp-<config>-<stamp>``) of the same short trials on
``digits`` with the random sampler and no pruning. Worker processes are real ``cvae-bench worker``
processes, each with ``--threads 1``. Reported per configuration:

- ``wall_s``: launch of the workers to the exit of the last (process start-up included);
- ``trials_per_min``: finished trials / (last trial end - first trial start), i.e. the steady rate.

The per-trial overhead is measured on one worker with the ``study`` command (no seed salt, so the
three runs sample the same parameters in the same order) and paired by trial number:

- storage: trial duration on ``--storage`` minus on a local journal file, both untracked (ms);
- tracking: trial duration tracked on ``--tracking-uri`` minus untracked, both on ``--storage`` (ms).
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

import optuna

from bench.tracking import redact_url
from studies.storage import open_storage


def _cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    return subprocess.Popen([sys.executable, "-m", "studies.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"a worker failed ({p.returncode}): {redact_url(err.strip().splitlines()[-1])}")


def _durations_s(storage: str, name: str) -> dict[int, float]:
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    return {t.number: (t.datetime_complete - t.datetime_start).total_seconds()
            for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None}


def _rate_per_min(storage: str, name: str) -> float:
    trials = [t for t in optuna.load_study(study_name=name, storage=open_storage(storage)).get_trials(deepcopy=False)
              if t.datetime_complete is not None]
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return 60.0 * len(trials) / span


def trial_args(args: argparse.Namespace) -> list[str]:
    return ["--epochs", str(args.epochs), "--limit", str(args.limit), "--sampler", "random", "--pruner", "none",
            "--iw-samples", "5", "--threads", "1", "--no-progress"]


def measure_overhead(args: argparse.Namespace, stamp: str, work: Path) -> dict[str, float]:
    """Median paired per-trial overhead (ms) of the storage and of the tracking, one worker."""
    journal = str(work / "baseline.journal")
    runs = {"journal_untracked": (journal, ["--no-track"]), "storage_untracked": (args.storage, ["--no-track"]),
            "storage_tracked": (args.storage, ["--tracking-uri", args.tracking_uri])}
    durations = {}
    for key, (storage, extra) in runs.items():
        name = f"tp-{key}-{stamp}"
        _wait([_cli("study", "--study-name", name, "--storage", storage, "--trials", str(args.trials),
                    *trial_args(args), *extra, cwd=work)])
        durations[key] = _durations_s(storage, name)

    def paired_ms(a: str, b: str) -> float:
        common = durations[a].keys() & durations[b].keys()
        return 1000 * statistics.median(durations[a][n] - durations[b][n] for n in common)

    return {"trial_s_median": statistics.median(durations["journal_untracked"].values()),
            "storage_overhead_ms": paired_ms("storage_untracked", "journal_untracked"),
            "tracking_overhead_ms": paired_ms("storage_tracked", "storage_untracked")}


def measure_workers(args: argparse.Namespace, n_workers: int, stamp: str, work: Path) -> dict[str, float]:
    name = f"tp-{n_workers}w-{stamp}"
    common = ["--study-name", name, "--storage", args.storage, "--tracking-uri", args.tracking_uri]
    start = time.perf_counter()  # started together: one of them creates the study, the others join it
    _wait([_cli("worker", *common, "--trials-total", str(args.trials), *trial_args(args), cwd=work)
           for _ in range(n_workers)])
    wall = time.perf_counter() - start
    return {"workers": n_workers, "wall_s": wall, "trials_per_min": _rate_per_min(args.storage, name)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--storage", required=True, metavar="URL", help="shared Optuna storage (PostgreSQL)")
    p.add_argument("--tracking-uri", required=True, metavar="URI", help="MLflow tracking server")
    p.add_argument("--workers", default="1,2,3", help="worker counts to measure (default 1,2,3)")
    p.add_argument("--trials", type=int, default=12, help="finished trials per study (default 12)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per trial (default 3)")
    p.add_argument("--limit", type=int, default=600, help="examples per split (default 600)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    stamp = time.strftime("%Y%m%d%H%M%S")
    with tempfile.TemporaryDirectory(prefix="cvae-bench-throughput-") as tmp:
        work = Path(tmp)
        overhead = measure_overhead(args, stamp, work)
        rows = [measure_workers(args, int(n), stamp, work) for n in args.workers.split(",")]
    print(f"{args.trials} trials of {args.epochs} epochs on digits (limit {args.limit}), storage "
          f"{redact_url(args.storage)}, tracking {redact_url(args.tracking_uri)}, {os.cpu_count()} CPUs")
    print(f"{'workers':>7}  {'wall_s':>7}  {'trials/min':>10}")
    for r in rows:
        print(f"{r['workers']:>7}  {r['wall_s']:>7.1f}  {r['trials_per_min']:>10.1f}")
    print(f"one trial takes {overhead['trial_s_median']:.2f} s (median, journal file, untracked); per trial, the "
          f"storage round trips add {overhead['storage_overhead_ms']:.0f} ms and MLflow tracking adds "
          f"{overhead['tracking_overhead_ms']:.0f} ms (medians of paired trials)")
    if args.json:
        Path(args.json).write_text(json.dumps({"workers": rows, "overhead": overhead}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
