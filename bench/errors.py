"""The one user-facing error type: commands print it as one line and exit 2.

Errors a user can cause inside the harness derive from it (a missing dataset file:
``bench.data.DatasetError``; a loss that turned NaN: ``bench.training.NonFiniteLossError``).
Bad configuration values raise :class:`models.config.ConfigError`, which the models layer owns.
"""


class CLIError(Exception):
    """A user-facing error: bad file, bad combination of options, unreachable service, ..."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, systemd, Kubernetes, CI runners), raised where Ctrl-C raises KeyboardInterrupt, so
    both stop a command the same way: what it runs ends KILLED with the reason, nothing finished is lost,
    exit 143 (Ctrl-C: 130)."""


def raise_terminated(signum: int, frame: object) -> None:
    """A SIGTERM handler: :class:`Terminated` in the main thread."""
    raise Terminated()


def interrupt_reason(exc: BaseException) -> str:
    """Why a command stopped, for a run's ``end_reason`` and the command's last line."""
    return "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (Ctrl-C)"
