"""The gate's decisions on fixed, hand-made measurements: regression, improvement, noise, one-sided benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.errors import CLIError
from bench.gates.gate import GateOptions, GateReport, QualityResult, select
from bench.gates.paired import PairedTimes, steps_for
from bench.gates.revisions import Revision
from bench.gates.verdict import (
    IMPROVEMENT,
    NEW,
    REGRESSION,
    REMOVED,
    UNCHANGED,
    BenchmarkComparison,
    Thresholds,
    exit_code,
    format_table,
)

DEFAULT = Thresholds()  # 1 % instructions, 10 % wall clock
NAME = "train-step/cvae/b64/cpu"


def pairs(base_ms: list[float], ratios: list[float]) -> PairedTimes:
    """Paired blocks whose head/base ratios are ``ratios`` exactly."""
    return PairedTimes(tuple(base_ms), tuple(b * r for b, r in zip(base_ms, ratios)), steps_per_block=50)


# a loaded machine: base blocks from 1.5 to 6 ms per step, head in step with them
LOADED = [1.5, 1.6, 4.0, 1.7, 6.0, 1.5, 2.2, 1.6, 3.1, 1.5, 1.8, 5.5, 1.6, 1.5, 2.8, 1.7]


def row(base: float | None = 5.2e6, head: float | None = 5.2e6, wall: PairedTimes | None = None,
        **sides) -> BenchmarkComparison:
    return BenchmarkComparison(NAME, base_instructions=base, head_instructions=head, wall=wall, **sides)


def test_instructions_up_beyond_the_threshold_is_a_regression_whatever_the_wall_clock():
    flat = pairs(LOADED, [1.0] * len(LOADED))
    r = row(5.2e6, 5.2e6 * 1.03, flat)
    assert r.instructions_change_pct == pytest.approx(3.0)
    assert r.verdict(DEFAULT) == REGRESSION
    assert r.verdict(Thresholds(instructions_pct=5.0)) == UNCHANGED
    assert row(5.2e6, 5.2e6 * 1.009, flat).verdict(DEFAULT) == UNCHANGED


def test_a_wall_interval_wholly_above_the_wall_threshold_is_a_regression():
    slower = pairs(LOADED, [1.18, 1.22, 1.20, 1.25, 1.19, 1.21, 1.17, 1.23, 1.20, 1.22, 1.19, 1.24, 1.18, 1.21,
                            1.20, 1.22])
    r = row(wall=slower)  # the same instructions: e.g. a slower memory access pattern
    lo, hi = r.wall_interval
    assert 1.10 < lo <= r.wall_ratio <= hi
    assert r.verdict(DEFAULT) == REGRESSION
    assert r.verdict(Thresholds(wall_pct=25.0)) == UNCHANGED


def test_wall_noise_that_straddles_the_threshold_is_not_a_verdict():
    # a busy neighbour: per-pair ratios from 0.7 to 1.5, centred near 1.05
    noisy = pairs(LOADED, [0.70, 1.50, 1.05, 0.90, 1.30, 1.02, 0.85, 1.20, 1.08, 0.95, 1.40, 1.00, 0.80, 1.10,
                           1.06, 1.25])
    r = row(5.2e6, 5.2e6 * 1.002, noisy)
    lo, hi = r.wall_interval
    assert lo < 1.10 < hi
    assert r.verdict(DEFAULT) == UNCHANGED
    # on CUDA (no instructions) the same noise decides nothing either
    assert row(None, None, noisy).verdict(DEFAULT) == UNCHANGED


def test_fewer_instructions_is_an_improvement_and_so_is_a_wall_interval_below_on_cuda():
    flat = pairs(LOADED, [1.0] * len(LOADED))
    assert row(5.2e6, 4.9e6, flat).verdict(DEFAULT) == IMPROVEMENT
    faster = pairs(LOADED, [0.80, 0.78, 0.82, 0.79, 0.81, 0.80, 0.77, 0.83, 0.80, 0.79, 0.81, 0.80, 0.78, 0.82,
                            0.80, 0.79])
    assert row(None, None, faster).verdict(DEFAULT) == IMPROVEMENT
    # fewer instructions but a wall clock wholly 20 % slower: the regression wins
    slower = pairs(LOADED, [1.2] * len(LOADED))
    assert row(5.2e6, 4.9e6, slower).verdict(DEFAULT) == REGRESSION


def test_a_benchmark_on_one_side_only_is_reported_not_failed():
    new = row(None, 5.2e6, in_base=False)
    removed = row(5.2e6, None, in_head=False)
    assert new.verdict(DEFAULT) == NEW and removed.verdict(DEFAULT) == REMOVED
    assert new.instructions_change_pct is None
    assert exit_code([new, removed], DEFAULT, quality_code=0) == 0
    table = format_table([new, removed], DEFAULT)
    assert "new" in table and "removed" in table and "REGRESSION" not in table


def test_exit_codes_combine_speed_and_quality():
    fine, slower = row(), row(5.2e6, 5.5e6)
    assert exit_code([fine], DEFAULT, None) == 0
    assert exit_code([fine, slower], DEFAULT, 0) == 1
    assert exit_code([fine], DEFAULT, 1) == 1  # a moved quality metric fails the gate too
    assert exit_code([fine], DEFAULT, 2) == 2  # the quality gate itself broke


def test_paired_ratio_and_interval():
    times = pairs([2.0] * 9, [1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 1.2, 0.8, 1.0])
    assert times.ratio == pytest.approx(1.0)
    lo, hi = times.interval
    assert lo <= 1.0 <= hi and 0.8 <= lo and hi <= 1.2
    assert times.interval == times.interval  # a fixed bootstrap seed: the same report twice
    with pytest.raises(ValueError):
        PairedTimes((1.0,), (), 1)
    assert steps_for(100.0, probe_ms=3.0, probe_steps=3) == 100
    assert steps_for(100.0, probe_ms=3000.0, probe_steps=3) == 1


def test_json_document_has_the_issue_schema(tmp_path):
    base = Revision("base", "origin/main", "a" * 40, tmp_path / "base")
    head = Revision("head", "working tree", "b" * 40, tmp_path, dirty=True)
    rows = [row(5.2e6, 5.2e6 * 1.03, pairs(LOADED, [1.0] * len(LOADED))), row(None, 5.2e6, in_base=False)]
    report = GateReport(GateOptions(base="origin/main"), base, head, rows,
                        QualityResult(0, "all 9 metrics within tolerance (7.0 s)\n", 7.0), {"total": 60.0})
    doc = json.loads(json.dumps(report.to_document()))
    first = doc["benchmarks"][0]
    assert list(first)[:7] == ["name", "base_instructions", "head_instructions", "instructions_change_pct",
                               "wall_ratio", "wall_interval", "verdict"]
    assert first["instructions_change_pct"] == pytest.approx(3.0) and first["verdict"] == REGRESSION
    assert len(first["wall_interval"]) == 2 and first["base_wall_ms"] > 0
    assert doc["benchmarks"][1]["verdict"] == NEW and doc["benchmarks"][1]["wall_ratio"] is None
    assert doc["exit_code"] == 1 and doc["quality"]["verdict"] == "pass"
    assert doc["base"] == {"rev": "origin/main", "commit": "a" * 40, "dirty": False}
    assert doc["thresholds"] == {"instructions_pct": 1.0, "wall_pct": 10.0}


def test_only_picks_benchmarks_by_glob_and_refuses_a_glob_that_matches_nothing():
    names = ["train-step/cvae/b64/cpu", "train-step/cvae/b256/cpu", "train-step/flow-cvae/b64/cpu"]
    assert select(names, ()) == names
    assert select(names, ("train-step/cvae/*",)) == names[:2]
    assert select(names, ("*/b64/*", "train-step/cvae/b256/cpu")) == names
    with pytest.raises(CLIError, match="--only train-step/vae/\\*: matches no benchmark"):
        select(names, ("train-step/cvae/*", "train-step/vae/*"))


@pytest.mark.parametrize("argv, message", [
    (["--threshold", "x"], "--threshold 'x'"),
    (["--wall-threshold=-3%"], "--wall-threshold '-3%'"),
    (["--threads", "0"], "--threads 0"),
    (["--instructions-only", "--wall-only"], "exclude each other"),
    (["--block-ms", "0"], "--block-ms"),
    (["--device", "cuda", "--instructions-only"], "CUDA benchmarks are measured by wall clock only"),
    (["--device", "tpu"], "give cpu, cuda or cpu,cuda"),
])
def test_bad_options_are_one_line_exit_2(argv, message, capsys):
    from studies.cli import main

    try:
        code = main(["gate", "--base", "HEAD", "--no-quality", *argv])
    except SystemExit as exc:  # argparse's own checks
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_not_a_repository_and_an_unknown_revision_are_one_line_exit_2(tmp_path, capsys):
    from studies.cli import main

    assert main(["gate", "--base", "HEAD", "--repo", str(tmp_path), "--wall-only"]) == 2
    assert "not inside a git repository" in capsys.readouterr().err
    root = Path(__file__).resolve().parents[3]
    assert main(["gate", "--base", "no-such-branch-xyz", "--repo", str(root), "--wall-only"]) == 2
    err = capsys.readouterr().err
    assert "--base no-such-branch-xyz: not a commit" in err and err.count("\n") == 1
