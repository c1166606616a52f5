"""The one exception type command implementations raise for user mistakes (printed as one line, exit 2)."""


class CLIError(Exception):
    """A user-facing error: bad file, bad combination of options, unreachable service, ..."""
