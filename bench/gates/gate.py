"""``cvae-bench gate``: base against head in one job -- instructions, paired wall clock, head's quality gate.

1. Check the base (and a head other than the working tree) out into temporary git worktrees.
2. Start one runner per revision (:mod:`bench.gates.runner`, the current environment, the revision's
   source) and ask each for its benchmarks; ``--only`` globs pick among them.
3. Count instructions per step of every CPU benchmark, base and head, each revision in one valgrind
   process (:mod:`bench.gates.instructions`); the two run side by side (counts do not feel load).
4. Time every benchmark both sides declare in interleaved pairs of blocks (:mod:`bench.gates.paired`),
   nothing else of the gate running meanwhile.
5. Run head's quality gate, ``python -m studies.cli regress``, in head's tree.
6. Decide per benchmark (:mod:`bench.gates.verdict`).

What a revision must provide: ``bench/timing/benchmarks.py`` (``benchmark_names``, ``prepare``) and,
for step 5, ``studies/cli`` with a ``regress`` command. Anything older is refused in one line.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fnmatch
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench.errors import CLIError
from bench.gates.instructions import count_instructions, require_valgrind
from bench.gates.paired import time_pairs, timing_cpus
from bench.gates.revisions import Revision, checkout, repo_root, working_tree
from bench.gates.runner_process import RunnerProcess
from bench.gates.verdict import BenchmarkComparison, Thresholds, exit_code
from bench.timing.callgrind import env_for_threads

SCHEMA = "cvae-bench/gate/1"
QUALITY_COMMAND = ("-m", "studies.cli", "regress")


@dataclass(frozen=True)
class GateOptions:
    """What to compare and how long to measure. ``head`` None: the working tree.

    ``instruction_steps``: steps counted per benchmark; ``wall_blocks``: interleaved pairs of blocks
    per benchmark (0: no wall clock); ``block_ms``: length of one block (ms).
    """

    base: str
    head: str | None = None
    repo: Path = Path(".")
    patterns: tuple[str, ...] = ()
    devices: tuple[str, ...] = ("cpu",)
    thresholds: Thresholds = Thresholds()
    threads: int = 1
    instruction_steps: int = 10
    wall_blocks: int = 20
    block_ms: float = 100.0
    instructions: bool = True
    quality: bool = True

    def __post_init__(self) -> None:
        for option, value, least in (("--threads", self.threads, 1), ("--instruction-steps", self.instruction_steps, 1),
                                     ("--wall-blocks", self.wall_blocks, 0)):
            if value < least:
                raise CLIError(f"{option} {value}: must be >= {least}")
        if not 0 < self.block_ms < float("inf"):
            raise CLIError(f"--block-ms {self.block_ms}: must be a finite number of milliseconds > 0")
        if not self.instructions and self.wall_blocks == 0:
            raise CLIError("--wall-only with --wall-blocks 0 measures nothing")
        if "cuda" in self.devices and self.wall_blocks == 0:
            raise CLIError("CUDA benchmarks are measured by wall clock only: drop --instructions-only "
                           "(or --wall-blocks 0) with --device cuda")


@dataclass(frozen=True)
class QualityResult:
    """Head's ``regress``: its exit status (0 within tolerance, 1 moved, else failed) and its output."""

    exit_code: int
    output: str
    seconds: float

    @property
    def verdict(self) -> str:
        return {0: "pass", 1: "moved"}.get(self.exit_code, "error")

    def summary(self) -> str:
        lines = [line for line in self.output.splitlines() if line.strip()]
        return lines[-1].strip() if lines else f"exit {self.exit_code}, no output"


@dataclass
class GateReport:
    options: GateOptions
    base: Revision
    head: Revision
    rows: list[BenchmarkComparison]
    quality: QualityResult | None
    seconds: dict[str, float] = field(default_factory=dict)
    load_average: dict[str, list[float]] = field(default_factory=dict)
    cpus: list[int] | None = None

    @property
    def exit_code(self) -> int:
        return exit_code(self.rows, self.options.thresholds, self.quality.exit_code if self.quality else None)

    def to_document(self) -> dict[str, Any]:
        o, t = self.options, self.options.thresholds
        return {
            "schema": SCHEMA,
            "benchmarks": [row.to_dict(t) for row in self.rows],
            "base": self.base.to_dict(), "head": self.head.to_dict(),
            "thresholds": {"instructions_pct": t.instructions_pct, "wall_pct": t.wall_pct},
            "settings": {"threads": o.threads, "cpus": self.cpus, "devices": list(o.devices), "only": list(o.patterns),
                         "instruction_steps": o.instruction_steps if o.instructions else None,
                         "wall_blocks": o.wall_blocks, "block_ms": o.block_ms},
            "quality": None if self.quality is None else {
                "verdict": self.quality.verdict, "exit_code": self.quality.exit_code,
                "summary": self.quality.summary(), "seconds": self.quality.seconds},
            "exit_code": self.exit_code,
            "seconds": self.seconds,
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "cpu_count": os.cpu_count(), "load_average": self.load_average},
        }


def select(names: list[str], patterns: tuple[str, ...]) -> list[str]:
    """``names`` that match any of the shell globs ``patterns`` (all when none); a glob matching none is an error."""
    if not patterns:
        return list(names)
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise CLIError(f"--only {pattern}: matches no benchmark (there are: {', '.join(names) or 'none'})")
    return [name for name in names if any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def run_quality(head: Revision) -> QualityResult:
    """Head's quality gate, in head's tree and with head's code."""
    env = env_for_threads(1)
    env["PYTHONPATH"] = str(head.root)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *QUALITY_COMMAND], cwd=head.root, env=env, capture_output=True, text=True)
    return QualityResult(proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start)


def _device(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def run_gate(options: GateOptions, say: Callable[[str], None] = print) -> GateReport:
    """Measure base and head as :class:`GateOptions` asks; the report holds every figure and the verdicts."""
    started = time.perf_counter()
    load = {"start": list(os.getloadavg())}
    repo = repo_root(options.repo)
    valgrind = require_valgrind() if options.instructions and "cpu" in options.devices else None
    seconds: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        base = stack.enter_context(checkout(repo, options.base, "base", "--base"))
        head = (working_tree(repo) if options.head is None
                else stack.enter_context(checkout(repo, options.head, "head", "--head")))
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cvae-bench-gate-")))
        cpus = timing_cpus(options.threads)
        say(f"gate: {base.describe()} against {head.describe()}, {options.threads} thread(s)"
            f"{f', timed on CPU(s) {cpus}' if cpus else ''}")
        runners = {rev.label: stack.enter_context(RunnerProcess(rev, options.threads, work / f"{rev.label}.log",
                                                                cpus=cpus))
                   for rev in (base, head)}
        declared = {label: runner.names(options.devices) for label, runner in runners.items()}
        names = select([*declared["base"], *(n for n in declared["head"] if n not in declared["base"])],
                       options.patterns)
        rows = {name: {"in_base": name in declared["base"], "in_head": name in declared["head"]} for name in names}

        if valgrind:
            t0 = time.perf_counter()
            to_count = {rev.label: [n for n in names if _device(n) == "cpu" and n in declared[rev.label]]
                        for rev in (base, head)}
            say(f"counting instructions per step (callgrind, one thread, {options.instruction_steps} steps each): "
                f"{len(to_count['base'])} base and {len(to_count['head'])} head benchmark(s), side by side")

            def counted(rev: Revision, name: str) -> None:
                say(f"  counted {rev.label} {name}")

            with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
                futures = {rev.label: pool.submit(count_instructions, rev, to_count[rev.label],
                                                  options.instruction_steps, work, valgrind, counted)
                           for rev in (base, head)}
                for label, future in futures.items():
                    for name, value in future.result().items():
                        rows[name][f"{label}_instructions"] = value
            seconds["instructions"] = time.perf_counter() - t0

        if options.wall_blocks:
            t0 = time.perf_counter()
            both = [n for n in names if rows[n]["in_base"] and rows[n]["in_head"]]
            say(f"timing {len(both)} benchmark(s): {options.wall_blocks} interleaved pairs of ~{options.block_ms:g} ms "
                f"blocks each")
            for name in both:
                rows[name]["wall"] = time_pairs(runners["base"], runners["head"], name, options.wall_blocks,
                                                options.block_ms)
                say(f"  timed {name}: head/base {rows[name]['wall'].ratio:.3f}")
            seconds["wall"] = time.perf_counter() - t0
        for runner in runners.values():
            runner.close()

        quality = None
        if options.quality:
            say("quality gate of head: regress")
            quality = run_quality(head)
            seconds["quality"] = quality.seconds
        seconds["total"] = time.perf_counter() - started
        load["end"] = list(os.getloadavg())
        comparisons = [BenchmarkComparison(name, **fields) for name, fields in rows.items()]
        return GateReport(options, base, head, comparisons, quality, seconds, load, cpus)
