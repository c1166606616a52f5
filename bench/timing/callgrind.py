"""Instruction counts under callgrind: client requests from Python, the valgrind command, its dumps.

The measured process runs under ``valgrind --tool=callgrind --instr-atstart=no --collect-atstart=no``
(:func:`valgrind_command`). It starts -- imports torch, loads data, builds and warms up each model -- at
valgrind's uninstrumented speed (importing torch: ~27 s on a 2-core VM, against ~200 s instrumented),
and :func:`count` turns collection on around exactly the steps it measures, then dumps the
instructions executed under a label. One valgrind process measures any number of benchmarks,
so its start-up is paid once; :func:`read_counts` reads the dumps back (one file per label).

The client requests are valgrind.h's "magic" instruction sequence (four rotations of ``rdi`` that
leave it unchanged, then ``xchg rbx, rbx``), placed in a few bytes of executable memory and called
through ctypes: natively they do nothing and return the default, under valgrind they reach the tool.
So the measured process needs no compiler, no C extension and no torch. x86-64 Linux only (the amd64
sequence); :func:`unsupported_reason` says why not elsewhere.

This module imports only the standard library, at any depth: ``cvae-bench gate`` loads it by path
into processes whose ``bench`` package is another revision's (see :mod:`bench.gates.runner`).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import re
import shutil
import sys
from pathlib import Path
from typing import Callable

#: valgrind.h: VG_USERREQ__RUNNING_ON_VALGRIND.
RUNNING_ON_VALGRIND = 0x1001
#: callgrind.h: VG_USERREQ_TOOL_BASE('C', 'T') and the requests that follow it.
_CALLGRIND = (ord("C") << 24) | (ord("T") << 16)
DUMP_STATS, ZERO_STATS, TOGGLE_COLLECT, DUMP_STATS_AT, START_INSTRUMENTATION, STOP_INSTRUMENTATION = (
    _CALLGRIND + i for i in range(6))

# uint64_t request(uint64_t args[6] /* rdi */, uint64_t default /* rsi */), System V amd64:
#   mov rax, rdi; mov rdx, rsi; rol rdi, 3; rol rdi, 13; rol rdi, 61; rol rdi, 51; xchg rbx, rbx;
#   mov rax, rdx; ret   -- valgrind reads the request from the array at rax and returns in rdx.
_AMD64_REQUEST = bytes.fromhex("4889f8 4889f2 48c1c703 48c1c70d 48c1c73d 48c1c733 4887db 4889d0 c3")
_Args = ctypes.c_uint64 * 6
_request_fn: Callable[[object, int], int] | None = None
_code_page: mmap.mmap | None = None


def unsupported_reason() -> str | None:
    """Why client requests cannot be sent from this platform, or None when they can."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return (f"instruction counting needs x86-64 Linux (this is {sys.platform} {platform.machine()}); "
                f"time wall clock instead")
    return None


def client_request(request: int, *args: int, default: int = 0) -> int:
    """Send one valgrind client request (up to five integer arguments); ``default`` when not under valgrind."""
    global _request_fn, _code_page
    if _request_fn is None:
        reason = unsupported_reason()
        if reason:
            raise OSError(reason)
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        page.write(_AMD64_REQUEST)
        address = ctypes.addressof(ctypes.c_char.from_buffer(page))
        _request_fn = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.POINTER(_Args), ctypes.c_uint64)(address)
        _code_page = page  # the function lives as long as the page
    return int(_request_fn(_Args(request, *args, *([0] * (5 - len(args)))), default))


def running_on_valgrind() -> bool:
    return client_request(RUNNING_ON_VALGRIND) > 0


def count(label: str, run: Callable[[int], object], steps: int) -> None:
    """Run ``run(steps)`` with callgrind collecting, and dump its instructions under ``label``.

    Only the call is counted. Everything before the first count (imports, data, the first model) runs
    at valgrind's uninstrumented speed; the first count turns instrumentation on and leaves it on,
    because turning it off again flushes valgrind's code cache and the next count would translate
    every path of the step anew (measured: a second benchmark's count took twice as long). ``label``
    must not contain a newline.
    """
    if "\n" in label:
        raise ValueError(f"label {label!r}: no newlines")
    name = ctypes.create_string_buffer(label.encode())
    client_request(START_INSTRUMENTATION)  # a no-op once on
    client_request(ZERO_STATS)
    client_request(TOGGLE_COLLECT)
    try:
        run(steps)
    finally:
        client_request(TOGGLE_COLLECT)
    client_request(DUMP_STATS_AT, ctypes.addressof(name))


def find_valgrind() -> str | None:
    """The ``valgrind`` executable on PATH, or None."""
    return shutil.which("valgrind")


def valgrind_command(out_dir: Path, valgrind: str = "valgrind") -> list[str]:
    """The command prefix that runs a program under callgrind, collecting nothing until :func:`count`.

    Dumps go to ``out_dir/callgrind.out.N`` and valgrind's own messages to ``out_dir/valgrind.log``.
    """
    return [valgrind, "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
            f"--callgrind-out-file={out_dir / 'callgrind.out'}", f"--log-file={out_dir / 'valgrind.log'}"]


_TRIGGER = re.compile(r"^desc: Trigger: Client Request: (.*)$", re.MULTILINE)
_TOTALS = re.compile(r"^totals: (\d+)", re.MULTILINE)


def read_counts(out_dir: Path) -> dict[str, int]:
    """``{label: instructions}`` of every :func:`count` dump in ``out_dir`` (the dump at exit is ignored)."""
    counts = {}
    for path in sorted(Path(out_dir).glob("callgrind.out.*"), key=lambda p: int(p.suffix[1:] or 0)):
        text = path.read_text(errors="replace")
        trigger, totals = _TRIGGER.search(text), _TOTALS.search(text)
        if trigger and totals:
            counts[trigger.group(1)] = int(totals.group(1))
    return counts


def log_tail(out_dir: Path, lines: int = 3) -> str:
    """The last lines of valgrind's own log in ``out_dir`` (for an error message), joined by ' | '."""
    path = Path(out_dir) / "valgrind.log"
    if not path.is_file():
        return ""
    kept = [line.split("== ", 1)[-1].strip() for line in path.read_text(errors="replace").splitlines()]
    return " | ".join([line for line in kept if line][-lines:])


def env_for_threads(threads: int, env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with OpenMP and MKL held to ``threads`` threads (torch reads them)."""
    env = dict(os.environ if env is None else env)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env
