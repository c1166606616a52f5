"""The ``cvae-bench`` command line: every subcommand in one parser.

Errors a user can cause (bad option, unknown variant or dataset, missing files, a loss that turns NaN)
print one line ``cvae-bench <command>: error: ...`` to stderr and exit with status 2, no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but errors are a single line (plus a pointer to --help) and exit 2."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


#: Each module defines ``add_parser(subparsers)``, which registers one subcommand whose
#: ``func(args) -> int`` runs it. Modules not yet present are skipped.
COMMAND_MODULES = (
    "bench.train_command",       # train
    "studies.study_command",     # study
    "studies.suite_command",     # suite
    "studies.report_command",    # report
    "studies.worker_command",    # worker
    "bench.steptime_command",    # steptime
    "bench.compare_command",     # compare
    "bench.regress_command",     # regress
    "bench.server_command",      # server
    "bench.sync_command",        # sync
)


OPTIONAL_STACK = ("optuna", "mlflow")


def user_errors() -> tuple[type[BaseException], ...]:
    from bench.cli_errors import CLIError
    from bench.datasets import DatasetError
    from bench.fit import NonFiniteLossError
    from models.config import ConfigError
    return (CLIError, ConfigError, DatasetError, NonFiniteLossError)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = OneLineParser(prog="cvae-bench", description=(
        "Benchmark suite for conditional VAEs: train the CVAE and its variants (beta-cvae, flow-cvae), "
        "run Optuna studies tracked in MLflow, and time train steps. Every run reports the reconstruction "
        "and KL terms per epoch, in nats per example."))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A module not written yet, or a command whose optional stack (optuna, mlflow) is not
            # installed here, e.g. a bare GPU box: the other commands still work.
            if exc.name != name and (exc.name or "").split(".")[0] not in OPTIONAL_STACK:
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except user_errors() as exc:
        print(f"cvae-bench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cvae-bench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
