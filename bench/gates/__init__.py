"""CI gates: the fixed-seed quality gate (and its baseline JSON), the step-time comparison, and the speed gate.

The speed gate (``cvae-bench gate``, :mod:`bench.gates.gate`) measures two revisions in one job: their
checkouts (``revisions``), a child process per revision that runs its benchmarks (``runner``, driven
through ``runner_process``), instructions per step under callgrind (``instructions``), interleaved
wall-clock pairs (``paired``), and the decision (``verdict``).
"""
