"""``cvae-bench suite``: the main job. A short study of every variant, then one comparison table.

By default: on ``digits``, a :data:`DEFAULT_TRIALS`-trial, :data:`DEFAULT_EPOCHS`-epoch study of
each of ``cvae``, ``beta-cvae`` and ``flow-cvae`` (about 1.5 minutes on a 2-core CPU), then the best
trial of each variant side by side, printed and logged to MLflow (a ``suite-summary`` run holding
the table as CSV and Markdown and its numbers as metrics ``<variant>/<metric>``).

``--config FILE`` (JSON, or TOML when the name ends in ``.toml``) changes any of
:class:`SuiteConfig`'s fields; an unknown key is a one-line error naming it. Rerunning the suite
resumes its studies (``trials`` is the total per study).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import CLIError
from studies.storage import DEFAULT_HEARTBEAT_S, DEFAULT_STORAGE

DEFAULT_VARIANTS = ("cvae", "beta-cvae", "flow-cvae")
DEFAULT_TRIALS = 20
DEFAULT_EPOCHS = 25

#: Columns of the summary table (one row per variant: its best trial), nats per example unless named.
SUMMARY_COLUMNS = ("variant", "trial", "val_neg_elbo", "test_neg_elbo", "test_iw_nll", "test_recon", "test_kl",
                   "test_active_units", "test_cond_acc", "samples_per_s", "finished", "study")


@dataclass(frozen=True)
class SuiteConfig:
    """What the suite runs; every field may be set in the ``--config`` file (same names)."""

    dataset: str = "digits"
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    trials: int = DEFAULT_TRIALS
    epochs: int = DEFAULT_EPOCHS
    objective: str = "neg-elbo"
    pruner: str | None = None
    sampler: str = "tpe"
    storage: str = DEFAULT_STORAGE
    study_prefix: str = "suite"
    experiment: str = "cvae-bench-suite"
    tracking_uri: str | None = None
    track: bool = True
    timeout: float | None = None
    jobs: int = 1
    seed: int = 0
    device: str = "auto"
    iw_samples: int = 100
    heartbeat: int = DEFAULT_HEARTBEAT_S
    threads: int | None = None
    data_root: str | None = None
    download: bool = False
    image_size: int | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "variants", tuple(self.variants))
        if not self.variants or len(set(self.variants)) != len(self.variants):
            raise CLIError(f"variants={list(self.variants)!r}: give one or more distinct variants")

    def study_specs(self) -> list:
        """One :class:`StudySpec` per variant (validated there: a bad value is a one-line error)."""
        from studies.runner import StudySpec, dataset_slug

        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in ("variants", "study_prefix")}
        return [StudySpec(variant=v, study_name=f"{self.study_prefix}-{v}-{dataset_slug(self.dataset)}", **shared)
                for v in self.variants]


def config_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(SuiteConfig)]


def load_config(path: str) -> SuiteConfig:
    """Read a JSON/TOML suite config; unknown keys and wrong types are one-line :class:`CLIError` s."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise CLIError(f"--config {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise CLIError(f"--config {path}: cannot read it (not UTF-8 text)") from None
    try:
        if file.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise CLIError(f"--config {path}: TOML needs Python 3.11 or newer; use a JSON file") from None
            raw = tomllib.loads(text)
        else:
            raw = json.loads(text)
    except (ValueError, json.JSONDecodeError) as exc:
        raise CLIError(f"--config {path}: not valid {'TOML' if file.suffix == '.toml' else 'JSON'} ({exc})") from None
    if not isinstance(raw, dict):
        raise CLIError(f"--config {path}: must hold one object/table of settings")
    allowed = config_keys()
    for key in raw:
        if key not in allowed:
            raise CLIError(f"--config {path}: unknown key {key!r} (allowed: {', '.join(allowed)})")
    defaults = SuiteConfig()
    for key, value in raw.items():
        _check_type(path, key, value, getattr(defaults, key))
    return SuiteConfig(**raw)


def _check_type(path: str, key: str, value: Any, default: Any) -> None:
    if key == "variants":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        expected = "a list of variant names"
    elif key in ("pruner", "tracking_uri", "data_root"):
        ok, expected = value is None or isinstance(value, str), "a string"
    elif key in ("image_size", "limit", "threads"):
        ok, expected = value is None or (isinstance(value, int) and not isinstance(value, bool)), "an integer"
    elif key == "timeout":
        ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
        expected = "a number of seconds"
    elif isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    else:
        ok, expected = isinstance(value, str), "a string"
    if not ok:
        raise CLIError(f"--config {path}: {key}={value!r} must be {expected}")


def summary_row(spec, outcome) -> dict[str, Any]:
    """The best trial of one study as a table row (NaN where no trial completed)."""
    from studies.runner import best_trial

    best = best_trial(outcome.study, spec.objective_names)
    counts = outcome.counts
    row: dict[str, Any] = {"variant": spec.variant, "study": spec.name,
                           "finished": counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)}
    attrs = best.user_attrs if best is not None else {}
    row["trial"] = best.number if best is not None else -1
    for col in SUMMARY_COLUMNS:
        if col not in row:
            row[col] = float(attrs.get(col, float("nan")))
    row["mlflow_run_id"] = attrs.get("mlflow_run_id", "")
    return row


def collapse_notes(frame) -> list[str]:
    """``variant: <note>`` for each variant whose best trial has collapsed (see bench.evaluation.posterior_collapse)."""
    from bench.evaluation.posterior_collapse import collapse_note

    notes = []
    for row in frame.to_dict("records"):
        note = collapse_note(row)
        if note:
            notes.append(f"{row['variant']} (trial {row['trial']}): {note}")
    return notes


def format_table(frame) -> str:
    """A Markdown table of the summary (numbers to 3 decimals; samples/s and active units as integers)."""
    cols = list(frame.columns)
    def cell(col: str, value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.0f}" if col in ("samples_per_s", "test_active_units") else f"{value:.3f}"
        return str(value)
    rows = [[cell(c, v) for c, v in zip(cols, rec)] for rec in frame.itertuples(index=False)]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda cells: "| " + " | ".join(x.rjust(w) for x, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def log_summary(config: SuiteConfig, frame, table: str) -> str:
    """A ``suite-summary`` run in the suite's experiment: the table (CSV, Markdown) and its numbers."""
    from bench.tracking import RunTracker, open_experiment, resolve_tracking_uri

    client, experiment_id = open_experiment(resolve_tracking_uri(config.tracking_uri), config.experiment)
    with RunTracker.start(client, experiment_id, "suite-summary",
                          tags={"run_kind": "suite", "dataset": config.dataset}) as run:
        run.log_params({"dataset": config.dataset, "variants": ",".join(config.variants), "trials": config.trials,
                        "epochs": config.epochs, "objective": config.objective})
        metrics = {f"{row['variant']}/{col}": row[col] for row in frame.to_dict("records")
                   for col in SUMMARY_COLUMNS if isinstance(row[col], float) and row[col] == row[col]}
        run.log_metrics(metrics)
        run.log_text(frame.to_csv(index=False), "suite_summary.csv")
        run.log_text(table + "\n", "suite_summary.md")
    return run.run_id


def run_suite(args: argparse.Namespace) -> int:
    import pandas as pd

    from bench.tracking import redact, resolve_tracking_uri, ui_hint
    from studies.runner import load_data, run_study
    from studies.storage import dashboard_hint

    config = load_config(args.config) if args.config else SuiteConfig()
    overrides = {}
    if args.tracking_uri:
        overrides["tracking_uri"] = args.tracking_uri
    if args.no_track:
        overrides["track"] = False
    config = dataclasses.replace(config, **overrides)
    specs = config.study_specs()
    print(f"cvae-bench suite: {', '.join(config.variants)} on {config.dataset}: {config.trials} trials x "
          f"{config.epochs} epochs per variant, objective {config.objective}; studies in {redact(config.storage)}",
          flush=True)
    start = time.perf_counter()
    data = load_data(specs[0])
    rows = []
    for spec in specs:
        print(f"\n== {spec.variant}: study {spec.name!r}", flush=True)
        outcome = run_study(spec, data, progress=not args.no_progress)
        c = outcome.counts
        print(f"{spec.name}: {c.get('COMPLETE', 0)} complete, {c.get('PRUNED', 0)} pruned, {c.get('FAIL', 0)} failed; "
              f"ran {outcome.ran} trials in {outcome.seconds:.1f} s", flush=True)
        rows.append(summary_row(spec, outcome))
    frame = pd.DataFrame(rows, columns=[*SUMMARY_COLUMNS, "mlflow_run_id"])
    table = format_table(frame[list(SUMMARY_COLUMNS)])
    print(f"\nbest trial per variant on {data.name} (nats per example; test_cond_acc: fraction; "
          f"suite took {time.perf_counter() - start:.0f} s):")
    print(table)
    for note in collapse_notes(frame):
        print(f"note: {note}")
    if config.track:
        run_id = log_summary(config, frame, table)
        uri = resolve_tracking_uri(config.tracking_uri)
        print(f"summary logged to MLflow run {run_id} (experiment {config.experiment!r})")
        print(f"open the results: {ui_hint(uri)}   |   {dashboard_hint(config.storage)}")
    else:
        print(f"open the studies: {dashboard_hint(config.storage)}")
    sys.stdout.flush()
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "suite", help="the main job: a short study of every variant and a comparison table",
        description=f"Run a short Optuna study of each variant (default: {', '.join(DEFAULT_VARIANTS)} on digits, "
                    f"{DEFAULT_TRIALS} trials x {DEFAULT_EPOCHS} epochs each), then print and log the best trial "
                    "of each side by side. Rerunning resumes the studies.",
        epilog=f"Config keys: {', '.join(config_keys())}.")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="JSON or TOML file of suite settings (default: the settings above; keys below)")
    p.add_argument("--tracking-uri", default=None, metavar="URI",
                   help="MLflow tracking URI (overrides the config; default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--no-track", action="store_true", help="log nothing to MLflow")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_suite)
    return p
