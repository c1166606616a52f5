"""The gate's side of a runner (:mod:`bench.gates.runner`): one child process per revision, asked in turn.

The child runs with ``sys.executable`` (the current environment), the revision's tree as its working
folder and ``PYTHONPATH``, OpenMP/MKL held to the gate's thread count and, for timing, pinned to CPUs. Its stderr goes to a file
(the last line of it names the cause when the child dies).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from bench.errors import CLIError
from bench.gates.revisions import Revision
from bench.timing.callgrind import env_for_threads

RUNNER = Path(__file__).resolve().with_name("runner.py")


class RunnerProcess:
    """A runner child for ``revision``; ``prefix`` runs it under another program (valgrind); ``cpus``, when
    given, pins it to those CPUs (before it starts any thread: its threads inherit the pinning)."""

    def __init__(self, revision: Revision, threads: int, log: Path, prefix: Sequence[str] = (),
                 cpus: Sequence[int] | None = None) -> None:
        self.revision, self.log = revision, log
        env = env_for_threads(threads)
        env["PYTHONPATH"] = str(revision.root)
        self._log_file = open(log, "w")
        try:
            self.proc = subprocess.Popen([*prefix, sys.executable, str(RUNNER), str(revision.root)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log_file,
                                         text=True, cwd=revision.root, env=env)
        except OSError as err:
            self._log_file.close()
            raise CLIError(f"{revision.describe()}: cannot start {prefix[0] if prefix else sys.executable}: "
                           f"{err.strerror or err}") from None
        if cpus is not None:
            os.sched_setaffinity(self.proc.pid, cpus)

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request, wait for its answer; an error answer or a dead child is a :class:`CLIError`."""
        try:
            self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            code = self.proc.wait()
            raise CLIError(f"{self.revision.describe()}: the benchmark process exited ({code}) during {op}: "
                           f"{self.last_words()}")
        reply = json.loads(line)
        if "error" in reply:
            raise CLIError(f"{self.revision.describe()}: {reply['error']}")
        return reply

    def last_words(self) -> str:
        self._log_file.flush()
        lines = [line.strip() for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        return lines[-1][:300] if lines else "no message"

    def names(self, devices: Sequence[str]) -> list[str]:
        return list(self.request("names", devices=list(devices))["names"])

    def prepare(self, name: str) -> None:
        self.request("prepare", name=name)

    def time(self, steps: int) -> float:
        """Milliseconds of one block of ``steps`` steps of the prepared benchmark."""
        return float(self.request("time", steps=steps)["ms"])

    def count(self, steps: int) -> None:
        self.request("count", steps=steps)

    def close(self) -> int:
        """End the child (EOF on its stdin) and wait for it; its exit status."""
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            code = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log_file.close()
        return code

    def __enter__(self) -> RunnerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
