"""What the machine looked like: one line in pytest's header, and a section beside each failure.

CI shows only what the run printed. When a test fails there and not here, this tells which resource
differed: the CPU, the load, memory, disk, the limits on open files and processes, the files the test
process holds, and the project's processes still alive (a writer a killed command left behind, a
server a test did not stop).
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.tracking.environment import device_name

#: Command-line fragments of the processes this project starts.
PROJECT_PROCESSES = ("bench.tracking.writer_process", "studies.cli", "bench.cli", "mlflow", "uvicorn", "postgres")


def _mem_available_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _limit(which: int) -> str:
    soft, _ = resource.getrlimit(which)
    return "unlimited" if soft == resource.RLIM_INFINITY else str(soft)


def machine_line() -> str:
    """CPU, cores, load average, available memory (GiB), free disk under the temporary folder (GiB), and the
    soft limits on open files and processes."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    mem = _mem_available_gib()
    tmp = tempfile.gettempdir()
    free = shutil.disk_usage(tmp).free / 2**30
    return (f"{device_name('cpu')}, {os.cpu_count()} CPUs, load {load}, "
            f"{'?' if mem is None else f'{mem:.1f}'} GiB memory available, {free:.1f} GiB free in {tmp}, "
            f"open files <= {_limit(resource.RLIMIT_NOFILE)}, processes <= {_limit(resource.RLIMIT_NPROC)}")


def _processes() -> dict[int, tuple[int, str, str, float]]:
    """pid -> (parent pid, state letter, command line, CPU seconds) of every process readable in /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        found[int(entry.name)] = (int(fields[1]), fields[0], cmdline, (int(fields[11]) + int(fields[12])) / ticks)
    return found


def _descendants(root: int, table: dict[int, tuple[int, str, str, float]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_rest) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def state_report() -> str:
    """The machine line, this process's open files by kind, and the project's processes alive now (ours,
    and any that outlived the process that started them)."""
    me = os.getpid()
    lines = [machine_line(), time.strftime("at %H:%M:%S")]
    try:
        kinds = Counter()
        for fd in Path("/proc/self/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            kinds[target.split(":")[0] if ":" in target else Path(target).suffix or target] += 1
        lines.append(f"this process holds {sum(kinds.values())} open files: "
                     + ", ".join(f"{n} {kind}" for kind, n in kinds.most_common(6)))
    except OSError:
        pass
    table = _processes()
    mine = _descendants(me, table)
    for pid, (ppid, state, cmdline, cpu) in sorted(table.items()):
        if pid == me or not any(p in cmdline for p in PROJECT_PROCESSES):
            continue
        whose = "ours" if pid in mine else f"outlived its parent (now {ppid})" if ppid == 1 else f"parent {ppid}"
        lines.append(f"  pid {pid} [{state}] {cpu:.1f} CPU-s, {whose}: {cmdline[:160]}")
    return "\n".join(lines)
