"""``cvae-bench report``: the trials of a study joined with their MLflow runs (:mod:`studies.report`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.errors import CLIError
from studies.spec import DEFAULT_STORAGE


def run_report(args: argparse.Namespace) -> int:
    import pandas as pd

    from bench.tracking import redact_url, resolve_tracking_uri
    from studies.report import PRINTED, load_study, selection_lines, study_report, tracking_client

    study = load_study(args.storage, args.study_name)
    uri = resolve_tracking_uri(args.tracking_uri)
    client = None if args.no_track else tracking_client(uri)
    frame = study_report(study, client)
    if not args.no_track and "run_id" not in frame:
        why = frame.attrs.get("mlflow_error")
        print(f"note: no MLflow runs of this study in {redact_url(uri)}{f' ({redact_url(why)})' if why else ''}; "
              "Optuna columns only")
    shown = [c for c in PRINTED if c in frame] or list(frame.columns)
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 40):
        print(frame[shown].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    csv = Path(args.csv or f"{args.study_name}-report.csv")
    try:
        csv.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(csv, index=False)
    except OSError as exc:
        raise CLIError(f"--csv {csv}: cannot write it ({exc.strerror or exc})") from None
    for line in selection_lines(study):
        print(line)
    print(f"{len(frame)} trials; all {len(frame.columns)} columns written to {csv}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report", help="a study's trials joined with their MLflow runs, as a table and a CSV",
        description="Print the trials of a study with their MLflow runs' metrics and status, and write them all "
                    "to a CSV file.")
    p.add_argument("--study-name", required=True, metavar="NAME", help="the study (see `optuna-dashboard` or the "
                   "error message for the names in a storage)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, metavar="URL",
                   help=f"Optuna storage (default {DEFAULT_STORAGE})")
    p.add_argument("--csv", default=None, metavar="PATH", help="where to write the table (default <study>-report.csv)")
    p.add_argument("--tracking-uri", default=None, metavar="URI",
                   help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--no-track", action="store_true", help="Optuna columns only; do not read MLflow")
    p.set_defaults(func=run_report)
    return p
