"""``cvae-bench sync``: send the MLflow writes that processes spooled while the server was down."""

from __future__ import annotations

import argparse


def run_sync(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.errors import CLIError
    from bench.tracking import is_transient, make_client, resolve_tracking_uri
    from bench.tracking.ops import Store
    from bench.tracking.redaction import redact_url
    from bench.tracking.spool import default_spool_dir, sync_spool
    from bench.tracking.store import check_database_reachable

    uri = resolve_tracking_uri(args.tracking_uri)
    spool = Path(args.spool_dir) if args.spool_dir else default_spool_dir()
    if spool.exists() and not spool.is_dir():
        raise CLIError(f"--spool-dir {spool}: not a folder")
    try:
        check_database_reachable(uri)
    except CLIError as exc:
        raise CLIError(f"{exc} Nothing was sent: the writes stay spooled in {spool}") from None
    try:
        report = sync_spool(Store(make_client(uri), uri), spool)
    except CLIError:
        raise
    except Exception as exc:  # noqa: BLE001 -- sorted right below
        if not is_transient(exc):  # e.g. a URI MLflow cannot use: one line, the spool is kept
            detail = redact_url(" ".join(str(exc).split()))[:300]
            raise CLIError(f"cannot send to {redact_url(uri)} ({type(exc).__name__}: {detail}); "
                           f"what was not sent stays spooled in {spool}") from None
        raise CLIError(f"tracking server {redact_url(uri)} is still unreachable ({type(exc).__name__}); "
                       f"nothing was lost: the rest stays spooled in {spool}") from None
    print(f"cvae-bench sync: sent {report.sent.records} spooled writes ({report.sent.bytes / 1e6:.1f} MB) from "
          f"{report.files} file(s) in {spool} to {redact_url(uri)}")
    if report.busy:
        print(f"  {len(report.busy)} file(s) belong to processes still running; they send their own")
    if report.other_uri:
        print(f"  {len(report.other_uri)} file(s) were spooled for another tracking URI; run sync with that "
              "--tracking-uri")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sync", help="send MLflow writes spooled while the tracking server was unreachable",
        description="While the tracking server cannot be reached, train/study/worker keep training and spool "
                    "their MLflow writes locally (one file per writer process; only each run's newest checkpoint "
                    "is kept). A running process sends its own spool as soon as the server answers again; study "
                    "and worker also send leftovers when they start. This command sends what ended processes "
                    "left behind, in order (registrations included), says how much it sent, and ends FAILED any "
                    "run whose process died before ending it.")
    p.add_argument("--tracking-uri", default=None, metavar="URI",
                   help="the server the writes were meant for (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--spool-dir", default=None, metavar="DIR",
                   help="default: $CVAE_BENCH_SPOOL, else ~/.cache/cvae-bench/mlflow-spool")
    p.set_defaults(func=run_sync)
    return p
