"""How fast a shared study goes: trials per minute with 1..N workers, and what one trial pays for
its storage and tracking round trips; or with K trials trained at once (``--batch-trials``).

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

Batched trials (``--batch-trials 1,8``) measures instead one study per K, one after the other, each a
``cvae-bench study --batch-trials K`` process on the same work: ``--trials`` (default 32) trials of
``--epochs`` (default 10) on all of ``digits`` (or ``--dataset``, ``--image-size``, on ``--device``, default
cpu), random sampler, no pruning, ``--iw-samples 5`` and
``--threads 1`` as above, the study's other defaults, and the shape parameters fixed for every trial
(:data:`FIXED_SHAPE`, enqueued; lr is sampled), so every K trains the same models. Storage: a SQLite file in a temporary folder unless ``--storage``;
untracked unless ``--tracking-uri``. Reported per K: ``wall_s`` (process start to exit),
``cpu_s`` (the process's user + system CPU seconds), ``trials_per_min`` (steady rate, as above)
and its ratio to the first K's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


#: The shape parameters every trial of the batched-trials measurement trains with (lr is sampled).
FIXED_SHAPE = {"latent_dim": 16, "hidden_width": 128, "hidden_depth": 1, "batch_size": 64}


def measure_batches(args: argparse.Namespace, k: int, stamp: str, work: Path) -> dict[str, float]:
    """One study of ``args.trials`` trials at ``--batch-trials k``: wall seconds and trials per minute."""
    storage = args.storage or f"sqlite:///{work / 'batches.db'}"
    name = f"tp-batch{k}-{stamp}"
    study = optuna.create_study(study_name=name, storage=open_storage(storage))
    for _ in range(args.trials):
        study.enqueue_trial(FIXED_SHAPE)
    tracking = ["--tracking-uri", args.tracking_uri] if args.tracking_uri else ["--no-track"]
    limit = ["--limit", str(args.limit)] if args.limit else []
    data = ["--dataset", args.dataset, *(["--image-size", str(args.image_size)] if args.image_size else []),
            "--device", args.device]
    start, cpu = time.perf_counter(), _children_cpu_s()
    _wait([_cli("study", "--study-name", name, "--storage", storage, "--trials", str(args.trials), "--epochs",
                str(args.epochs), "--sampler", "random", "--pruner", "none", "--batch-trials", str(k),
                "--iw-samples", "5", "--threads", "1", "--no-progress", *limit, *data, *tracking, cwd=work)])
    wall, cpu = time.perf_counter() - start, _children_cpu_s() - cpu
    return {"batch_trials": k, "wall_s": wall, "cpu_s": cpu, "trials_per_min": _rate_per_min(storage, name)}


def _children_cpu_s() -> float:
    """User + system CPU seconds of the ended child processes (less sensitive to a shared machine than wall time)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def batches_main(args: argparse.Namespace, stamp: str) -> int:
    with tempfile.TemporaryDirectory(prefix="cvae-bench-throughput-") as tmp:
        rows = [measure_batches(args, int(k), stamp, Path(tmp)) for k in args.batch_trials.split(",")]
    shape = " ".join(f"{k}={v}" for k, v in FIXED_SHAPE.items())
    size = f" at {args.image_size}x{args.image_size}" if args.image_size else ""
    print(f"{args.trials} trials of {args.epochs} epochs on {args.dataset}{size} "
          f"({f'limit {args.limit}' if args.limit else 'all'}), device {args.device}, random sampler, no pruning, "
          f"iw-samples 5, 1 thread, every trial {shape}; storage "
          f"{redact_url(args.storage) if args.storage else 'SQLite (temporary file)'}, "
          f"{'tracking ' + redact_url(args.tracking_uri) if args.tracking_uri else 'untracked'}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'batch_trials':>12}  {'wall_s':>7}  {'cpu_s':>7}  {'trials/min':>10}  {'trials/h':>9}  {'ratio':>5}")
    for r in rows:
        r["ratio"] = r["trials_per_min"] / rows[0]["trials_per_min"]
        print(f"{r['batch_trials']:>12}  {r['wall_s']:>7.1f}  {r['cpu_s']:>7.1f}  {r['trials_per_min']:>10.1f}  "
              f"{60 * r['trials_per_min']:>9.0f}  {r['ratio']:>5.2f}")
    if args.json:
        setup = {"trials": args.trials, "epochs": args.epochs, "dataset": args.dataset, "image_size": args.image_size,
                 "limit": args.limit, "device": args.device, "cpus": os.cpu_count()}
        Path(args.json).write_text(json.dumps({"setup": setup, "batches": rows}, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--storage", metavar="URL", help="shared Optuna storage (PostgreSQL); required unless --batch-trials")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking server; required unless --batch-trials")
    p.add_argument("--workers", default="1,2,3", help="worker counts to measure (default 1,2,3)")
    p.add_argument("--batch-trials", metavar="K,K", help="measure batched trials instead: one study per K "
                   "(e.g. 1,8), untracked unless --tracking-uri")
    p.add_argument("--trials", type=int, help="finished trials per study (default 12; batched: 32)")
    p.add_argument("--epochs", type=int, help="epochs per trial (default 3; batched: 10)")
    p.add_argument("--limit", type=int, help="examples per split (default 600; batched: all)")
    p.add_argument("--dataset", default="digits", metavar="NAME",
                   help="batched: the study's --dataset (default digits)")
    p.add_argument("--image-size", type=int, metavar="PX", help="batched: the study's --image-size (e.g. 28)")
    p.add_argument("--device", default="cpu", help="batched: the study's --device (default cpu; cuda on a GPU)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    stamp = time.strftime("%Y%m%d%H%M%S")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.batch_trials:
        args.trials, args.epochs = args.trials or 32, args.epochs or 10
        return batches_main(args, stamp)
    if not (args.storage and args.tracking_uri):
        p.error("--storage and --tracking-uri are required (or measure --batch-trials)")
    args.trials, args.epochs, args.limit = args.trials or 12, args.epochs or 3, args.limit or 600
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
