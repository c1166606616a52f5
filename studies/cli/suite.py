"""``cvae-bench suite``: the main job. A short study of every variant, then one comparison table.

By default (:class:`studies.suite.SuiteConfig`): on ``digits``, a short study of each of ``cvae``,
``beta-cvae`` and ``flow-cvae`` (budget and time in the README), then the best feasible trial of each
variant side by side (:mod:`studies.feasibility`), printed and logged to MLflow. ``--config FILE`` changes any of the
suite's settings; :data:`OVERRIDES` may also be given on the command line, over the config.
Rerunning the suite resumes its studies (``trials`` is the total per study).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from studies.cli.study import add_setting, value
from studies.spec import fields_of
from studies.suite import SuiteConfig, config_keys

#: The suite's settings its command line may set too (over the ``--config`` file).
OVERRIDES = ("tracking_uri", "track")


def config_from_args(args: argparse.Namespace) -> SuiteConfig:
    """The ``--config`` file's settings (default :class:`SuiteConfig`), with the :data:`OVERRIDES` given."""
    from studies.suite import load_config

    config = load_config(args.config) if args.config else SuiteConfig()
    given = {f.name: value(args, f) for f in fields_of() if f.name in OVERRIDES}
    return dataclasses.replace(config, **{name: v for name, v in given.items() if v is not None})


def run_suite(args: argparse.Namespace) -> int:
    import pandas as pd

    from bench.tracking import TrackingWriter, check_tracking_uri, redact_url, resolve_tracking_uri, ui_hint
    from bench.tracking.ui_links import run_link
    from studies.runner import load_data, run_study
    from studies.storage import dashboard_hint
    from studies.suite import SUMMARY_COLUMNS, collapse_notes, format_table, log_summary, summary_row

    config = config_from_args(args)
    specs = config.study_specs()
    print(f"cvae-bench suite: {', '.join(config.variants)} on {config.dataset}: {config.trials} trials x "
          f"{config.epochs} epochs per variant, objective {config.objective}; studies in {redact_url(config.storage)}",
          flush=True)
    start = time.perf_counter()
    uri = resolve_tracking_uri(config.tracking_uri)
    if config.track:
        check_tracking_uri(uri)
    writer = TrackingWriter(uri, sync=True) if config.track else None  # one writer for every study
    try:
        data = load_data(specs[0])
        rows = []
        for spec in specs:
            print(f"\n== {spec.variant}: study {spec.name!r}", flush=True)
            outcome = run_study(spec, data, progress=not args.no_progress, writer=writer)
            c = outcome.counts
            print(f"{spec.name}: {c.get('COMPLETE', 0)} complete, {c.get('PRUNED', 0)} pruned, "
                  f"{c.get('FAIL', 0)} failed; ran {outcome.ran} trials in {outcome.seconds:.1f} s", flush=True)
            for note in outcome.notes:
                print(f"note: {note}", flush=True)
            row = summary_row(spec, outcome)
            if writer:  # the store's id, if the run's local id is known by now
                row["mlflow_run_id"] = writer.run_id(row["mlflow_run_id"])
            rows.append(row)
        frame = pd.DataFrame(rows, columns=[*SUMMARY_COLUMNS, "mlflow_run_id", "model_link"])
        table = format_table(frame[list(SUMMARY_COLUMNS)])
        print(f"\nbest feasible trial per variant on {data.name} (nats per example; test_cond_acc: fraction; "
              f"test_cond_std: pixel intensity; infeasible: completed trials that left the latent unused; "
              f"suite took {time.perf_counter() - start:.0f} s):")
        print(table)
        for note in collapse_notes(frame):
            print(f"note: {note}")
        summary = log_summary(writer, config, frame, table) if writer else None
    finally:
        note = writer.close() if writer else None
    if summary is not None:
        link = f": {run_link(uri, summary.run_id, summary.experiment_id)}" if summary.experiment_id else ""
        print(f"summary logged to MLflow run {summary.run_id} (experiment {config.experiment!r}){link}")
        for row in frame.to_dict("records"):
            if row["model_link"]:
                print(f"  {row['variant']}: {row['model_uri']} (trial {row['trial']}): {row['model_link']}")
        print(f"open the results: {ui_hint(uri)}   |   {dashboard_hint(config.storage)}")
    else:
        print(f"open the studies: {dashboard_hint(config.storage)}")
    if note:
        print(f"note: {note}", file=sys.stderr)
    sys.stdout.flush()
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    defaults = SuiteConfig()
    p = subparsers.add_parser(
        "suite", help="the main job: a short study of every variant and a comparison table",
        description=f"Run a short Optuna study of each variant (default: {', '.join(defaults.variants)} on "
                    f"{defaults.dataset}, {defaults.trials} trials x {defaults.epochs} epochs each), then print and "
                    "log the best trial of each side by side. Rerunning resumes the studies.",
        epilog=f"Config keys: {', '.join(config_keys())}.")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="JSON or TOML file of suite settings (default: the settings above; keys below)")
    for f in fields_of():
        if f.name in OVERRIDES:
            add_setting(p, f, default=None, phrase="overrides the config; default")  # None: not given
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_suite)
    return p
