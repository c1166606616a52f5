"""The ``cvae-bench`` command line: every subcommand in one parser.

Errors a user can cause (bad option, unknown variant or dataset, missing files, a loss that turns NaN)
print one line ``cvae-bench <command>: error: ...`` to stderr and exit with status 2, no traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from bench.cli.arguments import OneLineParser
from bench.errors import CLIError, Terminated, interrupt_reason, raise_terminated
from models.config import ConfigError

#: Each module defines ``add_parser(subparsers)``, which registers one subcommand whose
#: ``func(args) -> int`` runs it. Modules not yet present are skipped.
COMMAND_MODULES = (
    "bench.cli.train",       # train
    "studies.cli.study",     # study
    "studies.cli.suite",     # suite
    "studies.cli.report",    # report
    "studies.cli.worker",    # worker
    "bench.cli.sample",      # sample
    "bench.cli.evaluate",    # evaluate
    "bench.cli.steptime",    # steptime
    "bench.cli.compare",     # compare
    "bench.cli.regress",     # regress
    "bench.cli.gate",        # gate
    "bench.cli.server",      # server
    "bench.cli.sync",        # sync
)


OPTIONAL_STACK = ("optuna", "mlflow")


#: What a user can cause: printed as one line, exit 2 (DatasetError and NonFiniteLossError are CLIErrors).
USER_ERRORS = (CLIError, ConfigError)


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
    from bench.tracking import configure_mlflow_environment

    configure_mlflow_environment()
    parser = build_parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():  # SIGTERM stops a command as Ctrl-C does
        signal.signal(signal.SIGTERM, raise_terminated)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        print(f"cvae-bench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"cvae-bench {args.command}: {interrupt_reason(exc)}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except (MemoryError, RuntimeError) as exc:
        message = allocation_failure(exc)
        if message is None:
            raise
        print(f"cvae-bench {args.command}: error: {message}", file=sys.stderr)
        return 2


#: How torch and CUDA word a failed allocation (CPU: DefaultCPUAllocator; CUDA: torch.OutOfMemoryError).
ALLOCATION_FAILURES = ("can't allocate memory", "out of memory", "not enough memory")


def allocation_failure(exc: BaseException) -> str | None:
    """One line for an allocation that failed (a size too large for the machine, missed by the commands'
    own checks), None for any other error. Commands refuse sizes that can never fit before they store
    anything (``bench.data.memory.check_fits``); this is the net under those checks."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, MemoryError) and not any(words in text.lower() for words in ALLOCATION_FAILURES):
        return None
    detail = text.split("DefaultCPUAllocator: ")[-1][:200] or type(exc).__name__
    return (f"out of memory ({detail}); smaller sizes need less (--batch-size, --hidden, --latent-dim, "
            "--image-size, --iw-samples, --n, ...)")


def run() -> int:
    """The ``cvae-bench`` console script (and ``python -m studies.cli``): :func:`main`, then a quick exit.

    After torch is imported, the interpreter's last garbage collection at exit walks millions of
    objects: ~1.2 s of every command on a 2-core VM, tracked or not. Freezing them (``gc.freeze``)
    skips that walk; exit handlers, thread joins and module teardown still run as usual.
    """
    import gc

    code = main()
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(run())
