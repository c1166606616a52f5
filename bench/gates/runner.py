"""The process that runs one revision's step benchmarks for ``cvae-bench gate``: a script, never imported.

    python bench/gates/runner.py ROOT

ROOT is a revision's source tree. The runner puts ROOT first on ``sys.path``, so that ``bench`` and
``models`` are that revision's code, imports the revision's ``bench.timing.benchmarks`` (what the gate
needs from a revision: ``benchmark_names(device)`` and ``prepare(name) -> run(steps)``), and answers
one JSON request per line on stdin with one JSON line on stdout:

    {"op": "names", "devices": ["cpu"]}  -> {"names": [...]}
    {"op": "prepare", "name": NAME}       -> {"prepared": NAME}   builds NAME and warms it up
    {"op": "time", "steps": K}            -> {"ms": MS}           one timed block of K steps, milliseconds
    {"op": "count", "steps": K}           -> {"counted": NAME}    K steps counted by callgrind, dumped as NAME

Blocks are timed here, the same way for every revision: ``time.perf_counter`` around the block on CPU,
two CUDA events and one synchronise after the block on CUDA (``.../cuda`` names). ``count`` needs the
runner to run under callgrind (:func:`bench.timing.callgrind.valgrind_command`). A failed request is
answered ``{"error": "one line"}``; whatever the revision prints goes to stderr. The runner uses the
standard library and this tree's ``bench/timing/callgrind.py``, loaded by path: in this process,
``bench`` is the revision's package.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

CONTRACT = "bench.timing.benchmarks"
_CONTRACT_MODULES = ("bench", "bench.timing", CONTRACT)


def _load_callgrind():
    path = Path(__file__).resolve().parents[1] / "timing" / "callgrind.py"
    spec = importlib.util.spec_from_file_location("_cvae_bench_gate_callgrind", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Runner:
    """Answers the requests for the revision whose tree is ``root`` (first on ``sys.path``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._contract = None
        self._callgrind = None
        self.name: str | None = None
        self.run: Callable[[int], Any] | None = None

    def contract(self):
        """The revision's ``bench.timing.benchmarks``, checked: from its tree, with both functions."""
        if self._contract is not None:
            return self._contract
        try:
            module = importlib.import_module(CONTRACT)
        except ModuleNotFoundError as err:
            if err.name not in _CONTRACT_MODULES:
                raise
            raise RuntimeError("this revision has no bench/timing/benchmarks.py, the step benchmarks the gate "
                               "measures (it predates the gate)") from None
        where = Path(getattr(module, "__file__", None) or "").resolve()
        if self.root not in where.parents:  # the environment's copy (an installed cvae-bench), not the revision's
            raise RuntimeError(f"this revision has no bench/timing/benchmarks.py, the step benchmarks the gate "
                               f"measures (it predates the gate; {CONTRACT} came from {where})")
        missing = [f for f in ("benchmark_names", "prepare") if not callable(getattr(module, f, None))]
        if missing:
            raise RuntimeError(f"this revision's {CONTRACT} lacks {' and '.join(missing)}(), which the gate needs")
        self._contract = module
        return module

    def names(self, devices: list[str]) -> dict[str, Any]:
        return {"names": [n for device in devices for n in self.contract().benchmark_names(device)]}

    def prepare(self, name: str) -> dict[str, Any]:
        self.name, self.run = None, None
        self.run = self.contract().prepare(name)
        self.name = name
        return {"prepared": name}

    def _prepared(self) -> Callable[[int], Any]:
        if self.run is None:
            raise RuntimeError("no benchmark prepared")
        return self.run

    def time(self, steps: int) -> dict[str, Any]:
        run = self._prepared()
        if self.name.endswith("/cuda"):
            import torch

            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run(steps)
            end.record()
            end.synchronize()
            return {"ms": start.elapsed_time(end)}
        t0 = time.perf_counter()
        run(steps)
        return {"ms": (time.perf_counter() - t0) * 1e3}

    def count(self, steps: int) -> dict[str, Any]:
        run = self._prepared()
        if self._callgrind is None:
            self._callgrind = _load_callgrind()
        callgrind = self._callgrind
        if not callgrind.running_on_valgrind():
            raise RuntimeError("count needs the runner to run under valgrind --tool=callgrind")
        callgrind.count(self.name, run, steps)
        return {"counted": self.name}


def serve(root: Path, requests, replies) -> None:
    sys.path.insert(0, str(root))
    runner = Runner(root)
    ops = {"names": runner.names, "prepare": runner.prepare, "time": runner.time, "count": runner.count}
    for line in requests:
        try:
            request = json.loads(line)
            op = ops[request.pop("op")]
            reply = op(**request)
        except Exception as err:  # noqa: BLE001 -- every failure is answered, in one line
            reply = {"error": " ".join(f"{type(err).__name__}: {err}".split())[:500]}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: runner.py REVISION_ROOT", file=sys.stderr)
        return 2
    # run as a script, sys.path[0] is this folder: its modules must not shadow anything
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # the revision's prints go to stderr, not into the replies
    sys.stdout = sys.stderr
    serve(Path(argv[0]).resolve(), sys.stdin, replies)
    # Nothing is left to do: skip the interpreter's teardown of torch (seconds, and under callgrind a
    # minute: instrumented by then).
    replies.close()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
