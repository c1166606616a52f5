"""Client requests from Python: a no-op natively, exact instruction counts under callgrind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.timing import callgrind

ROOT = Path(__file__).resolve().parents[3]
needs_valgrind = pytest.mark.skipif(
    callgrind.find_valgrind() is None or callgrind.unsupported_reason() is not None,
    reason=callgrind.unsupported_reason() or "valgrind is not installed (Debian: apt-get install valgrind; "
                                             ".ci/run installs it)")

COUNTED_LOOPS = """
import sys
sys.path.insert(0, {root!r})
from bench.timing import callgrind

def spin(steps):
    for _ in range(steps):
        for _ in range(2000):  # the same work every step
            pass

assert callgrind.running_on_valgrind()
spin(10)  # warm: a loop's first runs do extra work (CPython specialises it)
for steps in (10, 110):
    callgrind.count(f"spin {{steps}}", spin, steps)
print("counted")
"""


@pytest.mark.skipif(callgrind.unsupported_reason() is not None, reason="client requests need x86-64 Linux")
def test_client_requests_do_nothing_natively():
    assert not callgrind.running_on_valgrind()
    assert callgrind.client_request(callgrind.RUNNING_ON_VALGRIND, default=7) == 7
    counted = []
    callgrind.count("native", counted.append, 3)  # runs the steps, counts nothing
    assert counted == [3]


@needs_valgrind
def test_count_under_callgrind_is_linear_in_the_work(tmp_path):
    script = tmp_path / "loops.py"
    script.write_text(COUNTED_LOOPS.format(root=str(ROOT)))
    proc = subprocess.run([*callgrind.valgrind_command(tmp_path), sys.executable, str(script)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "counted" in proc.stdout, callgrind.log_tail(tmp_path)
    counts = callgrind.read_counts(tmp_path)
    assert set(counts) == {"spin 10", "spin 110"}
    per_iteration = (counts["spin 110"] - counts["spin 10"]) / (100 * 2000)
    # an empty CPython for-loop iteration: a few hundred instructions (~200 on CPython 3.11)
    assert 50 < per_iteration < 2000
    # the requests around the call add a fixed ~20 k instructions (ctypes calls): 11x the work, ~11x the count
    assert counts["spin 110"] / counts["spin 10"] == pytest.approx(11.0, rel=0.02)


def test_read_counts_ignores_the_dump_at_exit(tmp_path):
    (tmp_path / "callgrind.out").write_text("desc: Trigger: Program termination\ntotals: 123\n")
    (tmp_path / "callgrind.out.1").write_text("desc: Trigger: Client Request: a/b\nsummary: 10\ntotals: 10\n")
    (tmp_path / "callgrind.out.2").write_text("desc: Trigger: Client Request: c d\ntotals: 2500\n")
    assert callgrind.read_counts(tmp_path) == {"a/b": 10, "c d": 2500}
