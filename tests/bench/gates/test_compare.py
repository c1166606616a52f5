"""``cvae-bench compare``: steptime JSON, pytest-benchmark JSON and MLflow runs; thresholds; bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import CLIError
from bench.gates.speed import ComparisonRow, parse_threshold
from studies.cli import main

NAMES = ("harness:cvae/digits/b64/cpu/eager/fp32", "harness:flow-cvae/digits/b64/cpu/eager/fp32")


def steptime_doc(ms: dict[str, float], calibration_ms: float = 1.0) -> dict:
    return {"machine": {"cpu": "test"}, "calibration": {"cpu": {"median_ms": calibration_ms}},
            "results": [{"name": name, "median_ms": value, "normalised": value / calibration_ms}
                        for name, value in ms.items()]}


def pytest_benchmark_doc(seconds: dict[str, float], calibration_s: float = 1e-3) -> dict:
    return {"machine_info": {"node": "ci"}, "benchmarks": [
        {"name": name.split("::")[-1], "fullname": name,
         "stats": {"median": value, "mean": value, "min": value, "max": value},
         "extra_info": {"normalised": value / calibration_s}} for name, value in seconds.items()]}


def write(tmp_path, name: str, doc) -> str:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def run(argv, capsys):
    code = main(["compare", *argv])
    return code, capsys.readouterr()


def test_identical_pair_passes(tmp_path, capsys):
    doc = steptime_doc({NAMES[0]: 2.0, NAMES[1]: 5.0})
    code, out = run([write(tmp_path, "a.json", doc), write(tmp_path, "b.json", doc)], capsys)
    assert code == 0
    assert "+0.0%" in out.out and "REGRESSION" not in out.out


def test_planted_30_percent_regression_is_flagged(tmp_path, capsys):
    base = write(tmp_path, "base.json", steptime_doc({NAMES[0]: 2.0, NAMES[1]: 5.0}))
    head = write(tmp_path, "head.json", steptime_doc({NAMES[0]: 2.0, NAMES[1]: 6.5}))
    code, out = run([base, head, "--threshold", "10%"], capsys)
    assert code == 1
    line = next(line for line in out.out.splitlines() if line.startswith(NAMES[1]))
    assert "+30.0%" in line and "REGRESSION" in line
    assert "1 regression" in out.out
    # the same change is within a 35 % threshold, and a speed-up is never a regression
    assert run([base, head, "--threshold", "35"], capsys)[0] == 0
    assert run([head, base], capsys)[0] == 0


def test_normalised_mode_forgives_a_slower_machine_but_not_a_slower_step(tmp_path, capsys):
    base = write(tmp_path, "base.json", steptime_doc({NAMES[0]: 2.0}, calibration_ms=1.0))
    slower_machine = write(tmp_path, "machine.json", steptime_doc({NAMES[0]: 2.6}, calibration_ms=1.3))
    assert run([base, slower_machine], capsys)[0] == 1
    assert run([base, slower_machine, "--normalised"], capsys)[0] == 0
    slower_step = write(tmp_path, "step.json", steptime_doc({NAMES[0]: 2.6}, calibration_ms=1.0))
    code, out = run([base, slower_step, "--normalised"], capsys)
    assert code == 1 and "x calib" in out.out


def test_pytest_benchmark_files(tmp_path, capsys):
    name = "tests/test_benchmarks.py::test_train_step[cpu-cvae-64]"
    base = write(tmp_path, "0001_base.json", pytest_benchmark_doc({name: 0.002}))
    head = write(tmp_path, "0002_head.json", pytest_benchmark_doc({name: 0.0026}))
    code, out = run([base, head], capsys)
    assert code == 1 and "2.0000" in out.out and "2.6000" in out.out  # seconds shown as ms
    assert run([base, base, "--normalised"], capsys)[0] == 0


def test_benchmarks_in_only_one_file_are_reported_not_compared(tmp_path, capsys):
    base = write(tmp_path, "a.json", steptime_doc({NAMES[0]: 2.0, NAMES[1]: 5.0}))
    head = write(tmp_path, "b.json", steptime_doc({NAMES[0]: 2.0}))
    code, out = run([base, head], capsys)
    assert code == 0 and "1 benchmark(s) in only one" in out.out


@pytest.mark.parametrize("make, message", [
    (lambda p: str(p / "missing.json"), "no such file"),
    (lambda p: write(p, "bad.json", "{not json"), "is not JSON"),
    (lambda p: write(p, "other.json", {"foo": 1}), "neither a steptime JSON"),
    (lambda p: write(p, "list.json", [1, 2]), "neither a steptime JSON"),
    (lambda p: write(p, "rows.json", {"results": [{"name": "x"}]}), "no positive median_ms"),
    (lambda p: write(p, "benches.json", {"benchmarks": [{"name": "x", "stats": {}}]}), "no positive stats.median"),
    (lambda p: write(p, "other_names.json", steptime_doc({"harness:other": 1.0})), "no common benchmarks"),
])
def test_bad_head_is_one_line_exit_2(tmp_path, capsys, make, message):
    base = write(tmp_path, "base.json", steptime_doc({NAMES[0]: 2.0}))
    code, out = run([base, make(tmp_path)], capsys)
    assert code == 2
    assert message in out.err and out.err.count("\n") == 1
    assert out.err.startswith("cvae-bench compare: error: HEAD") or "no common" in out.err


def test_normalised_without_normalised_figures_is_exit_2(tmp_path, capsys):
    doc = {"results": [{"name": NAMES[0], "median_ms": 2.0}]}
    path = write(tmp_path, "a.json", doc)
    code, out = run([path, path, "--normalised"], capsys)
    assert code == 2 and "no normalised figure" in out.err


def test_threshold_parsing():
    assert parse_threshold("10%") == 10.0 and parse_threshold("2.5") == 2.5
    for bad in ("ten", "-5%", "nan"):
        with pytest.raises(CLIError):
            parse_threshold(bad)
    assert ComparisonRow("x", 2.0, 2.6).change_pct == pytest.approx(30.0)


@pytest.mark.slow
def test_mlflow_run_ids(tmp_path, capsys):
    pytest.importorskip("mlflow")
    from bench.cli.steptime import log_to_mlflow
    from bench.timing.steptime import StepTimeResult
    from bench.tracking import make_client

    def result(median_ms: float) -> StepTimeResult:
        return StepTimeResult(variant="cvae", dataset="digits", batch_size=64, device="cpu", device_name="cpu",
                              loop="harness", mode="eager", compile=False, amp="none", cuda_graphs=False, adam="fused",
                              median_ms=median_ms, iqr_ms=0.1, q25_ms=median_ms, q75_ms=median_ms,
                              samples_per_s=64e3 / median_ms, peak_mem_mb=1.0, peak_mem_source="test",
                              flops_per_step=1, tflops=1e-9, steps_per_block=1, repeats=1, normalised=median_ms)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_to_mlflow([result(2.0)], {"cpu": {"median_ms": 1.0, "workload": "test"}}, uri, "steptime")
    log_to_mlflow([result(2.6)], {"cpu": {"median_ms": 1.0, "workload": "test"}}, uri, "steptime")
    client = make_client(uri)
    runs = client.search_runs([client.get_experiment_by_name("steptime").experiment_id], order_by=["start_time ASC"])
    base, head = (r.info.run_id for r in runs)
    assert run([base, head, "--tracking-uri", uri], capsys)[0] == 1
    assert run([base, base, "--tracking-uri", uri, "--normalised"], capsys)[0] == 0
    # a run id mixed with a steptime JSON of the same configuration
    json_head = write(tmp_path, "head.json", steptime_doc({NAMES[0]: 2.1}))
    assert run([base, json_head, "--tracking-uri", uri], capsys)[0] == 0
    code, out = run(["0" * 32, head, "--tracking-uri", uri], capsys)
    assert code == 2 and "cannot read MLflow run" in out.err and out.err.count("\n") == 1


@pytest.mark.slow
def test_the_pytest_benchmark_recipe_still_works(tmp_path, capsys):
    """The README's pytest-benchmark recipe on one CPU target: autosave, compare, --benchmark-json + compare.

    Thresholds are wide: this checks that the commands and files fit together, not the machine's noise.
    """
    root = Path(__file__).resolve().parents[3]
    recipe = [sys.executable, "-m", "pytest", "tests/bench/timing/test_benchmarks.py", "-q", "-p", "no:cacheprovider",
              "-k", "test_train_step[cvae-64-cpu] or test_calibration[cpu]", "--benchmark-enable",
              f"--benchmark-storage=file://{tmp_path / 'storage'}"]
    env = {**os.environ, "PYTHONPATH": str(root)}

    def pytest_run(*extra: str) -> None:
        proc = subprocess.run([*recipe, *extra], cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    pytest_run("--benchmark-autosave")  # the base commit
    saved = list((tmp_path / "storage").rglob("0001_*.json"))
    assert len(saved) == 1
    pytest_run("--benchmark-compare", "--benchmark-compare-fail=median:1000%",
               f"--benchmark-json={tmp_path / 'head.json'}")  # the candidate
    code, out = run([str(saved[0]), str(tmp_path / "head.json"), "--normalised", "--threshold", "1000%"], capsys)
    assert code == 0
    assert "test_train_step[cvae-64-cpu]" in out.out and "x calib" in out.out
