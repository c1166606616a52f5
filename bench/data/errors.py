"""The data layer's one error, and the one-line wording of the errors it wraps."""

from __future__ import annotations

from bench.errors import CLIError


class DatasetError(CLIError, ValueError):
    """One-line, user-facing message (missing files, bad name)."""


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


def describe(err: BaseException) -> str:
    """``Type: message`` on one line (torchvision's IDX reader fails with bare ``assert``s)."""
    msg = one_line(err)
    return f"{type(err).__name__}: {msg}" if msg else type(err).__name__
