"""Instructions per step of a revision's benchmarks: one runner under callgrind per revision.

The runner starts under ``valgrind --tool=callgrind`` with instrumentation off, so importing torch and
building each model run at valgrind's uninstrumented speed; for each benchmark it warms up, then
counts ``steps`` steps (:func:`bench.timing.callgrind.count`) and dumps the total under the
benchmark's name. Instructions per step = that total / ``steps``. The count does not depend on the
machine's load (0.02 % apart in three runs of the same step); it does depend on the CPU's features
(the code paths MKL/oneDNN pick), so base and head are always counted on the same machine, in one job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from bench.errors import CLIError
from bench.gates.revisions import Revision
from bench.gates.runner_process import RunnerProcess
from bench.timing.callgrind import find_valgrind, log_tail, read_counts, unsupported_reason, valgrind_command


def require_valgrind() -> str:
    """The valgrind executable; a one-line :class:`CLIError` when instructions cannot be counted here."""
    reason = unsupported_reason()
    if reason:
        raise CLIError(reason + " (--wall-only)")
    valgrind = find_valgrind()
    if valgrind is None:
        raise CLIError("valgrind is not installed: install it (Debian/Ubuntu: apt-get install valgrind) to count "
                       "instructions, or pass --wall-only")
    return valgrind


def count_instructions(revision: Revision, names: Sequence[str], steps: int, workdir: Path, valgrind: str,
                       progress=None) -> dict[str, float]:
    """``{name: instructions per step}`` of ``revision``'s benchmarks ``names``, in one valgrind process, one
    thread (with more, OpenMP's spin-waits would enter the count)."""
    out = workdir / f"callgrind-{revision.label}"
    out.mkdir(parents=True, exist_ok=True)
    with RunnerProcess(revision, 1, out / "runner.log", prefix=valgrind_command(out, valgrind)) as runner:
        try:
            for name in names:
                runner.prepare(name)
                runner.count(steps)
                if progress:
                    progress(revision, name)
        except CLIError as err:
            if "exited" not in str(err):
                raise
            raise CLIError(f"{err} (valgrind: {log_tail(out) or 'no message'})") from None  # the child died
    counts = read_counts(out)
    missing = [name for name in names if name not in counts]
    if missing:
        raise CLIError(f"{revision.describe()}: callgrind wrote no count for {', '.join(missing)} "
                       f"({log_tail(out) or 'see ' + str(out)})")
    return {name: counts[name] / steps for name in names}
