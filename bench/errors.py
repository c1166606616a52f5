"""The one user-facing error type: commands print it as one line and exit 2.

Errors a user can cause inside the harness derive from it (a missing dataset file:
``bench.data.DatasetError``; a loss that turned NaN: ``bench.training.NonFiniteLossError``).
Bad configuration values raise :class:`models.config.ConfigError`, which the models layer owns.
"""


class CLIError(Exception):
    """A user-facing error: bad file, bad combination of options, unreachable service, ..."""
