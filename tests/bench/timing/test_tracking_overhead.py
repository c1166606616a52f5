"""The summary of ``python -m bench.timing.tracking_overhead``: medians, paired differences and their
bootstrap interval, on times given here (the command itself is run by hand: it takes minutes)."""

from __future__ import annotations

import pytest

from bench.timing.tracking_overhead import paired_interval, summary


def test_summary_of_paired_rounds():
    times = {"tracked": [10.5, 11.0, 9.9, 10.2, 10.8], "untracked": [10.0, 10.6, 9.8, 9.9, 10.0]}
    cpu = {"tracked": [14.0, 15.0, 14.5, 14.2, 14.9], "untracked": [10.0, 10.1, 9.9, 10.2, 10.0]}
    s = summary(times, cpu)
    assert s["tracked_median_s"] == pytest.approx(10.5) and s["untracked_median_s"] == pytest.approx(10.0)
    assert s["overhead_pct"] == pytest.approx(5.0)
    assert s["paired_overhead_s"] == pytest.approx(0.4)  # differences 0.5, 0.4, 0.1, 0.3, 0.8
    assert s["paired_overhead_pct"] == pytest.approx(4.0)
    low, high = s["paired_interval_pct"]
    assert 1.0 - 1e-9 <= low <= 4.0 <= high <= 8.0 + 1e-9  # within the smallest and largest difference
    assert s["tracked_cpu_median_s"] == pytest.approx(14.5) and s["untracked_cpu_median_s"] == pytest.approx(10.0)
    assert s["repeats"] == 5


def test_paired_interval_is_reproducible_and_narrows_with_more_rounds():
    few = [0.1, -0.4, 0.6, 0.2, -0.1, 0.9, 0.0]
    assert paired_interval(few) == paired_interval(few)
    low, high = paired_interval(few)
    assert low <= 0.1 <= high  # the median of the rounds lies inside its interval
    many = few * 8
    low_many, high_many = paired_interval(many)
    assert high_many - low_many < high - low
    assert paired_interval([0.3] * 5) == (0.3, 0.3)
