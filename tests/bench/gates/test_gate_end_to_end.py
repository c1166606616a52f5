"""``cvae-bench gate`` end to end on two real commits of a tiny temporary git repository.

The tiny repository declares its step benchmarks the way the project does (``bench/timing/benchmarks.py``:
``benchmark_names``, ``prepare``) but its steps are pure-Python loops, so valgrind need not start
torch: the real mechanism -- worktrees, runners, one callgrind process per revision, interleaved
blocks, head's quality gate -- in seconds. The CI recipe's gate command is read from the example
workflow and run as written.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.timing.callgrind import find_valgrind, unsupported_reason
from studies.cli import main

ROOT = Path(__file__).resolve().parents[3]
WORKFLOW = ROOT / "examples" / "github-actions" / "speed-gate.yml"
needs_valgrind = pytest.mark.skipif(
    find_valgrind() is None or unsupported_reason() is not None,
    reason=unsupported_reason() or "valgrind is not installed (Debian: apt-get install valgrind; .ci/run installs it)")
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

BENCHMARKS = '''"""A tiny repository's step benchmarks: pure-Python loops of a fixed length, no torch."""

SPINS = {spins!r}


def benchmark_names(device="cpu"):
    return [name for name in SPINS if name.endswith("/" + device)]


def prepare(name):
    n = SPINS[name]

    def run(steps):
        for _ in range(steps):
            for _ in range(n):
                pass

    return run
'''
QUALITY = '''import sys

print("tiny quality gate: all 0 metrics within tolerance")
sys.exit(0 if sys.argv[1:] == ["regress"] else 2)
'''
FIRST = {"train-step/spin/b1/cpu": 4000, "train-step/flat/b1/cpu": 4000, "train-step/gone/b1/cpu": 1000}
SECOND = {"train-step/spin/b1/cpu": 4400, "train-step/flat/b1/cpu": 4000, "train-step/new/b1/cpu": 1000}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def write_benchmarks(repo: Path, spins: dict[str, int]) -> None:
    (repo / "bench" / "timing" / "benchmarks.py").write_text(BENCHMARKS.format(spins=spins))


def make_repo(repo: Path, *commits: dict[str, int]) -> Path:
    """A git repository (branch main) with one commit per dict of benchmark loop lengths."""
    for package in ("bench", "bench/timing", "studies", "studies/cli"):
        (repo / package).mkdir(parents=True)
        (repo / package / "__init__.py").write_text("")
    (repo / "studies" / "cli" / "__main__.py").write_text(QUALITY)
    git(repo.parent, "init", "-q", "-b", "main", str(repo))
    git(repo, "config", "user.email", "gate@test")
    git(repo, "config", "user.name", "gate test")
    for i, spins in enumerate(commits, 1):
        write_benchmarks(repo, spins)
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", f"commit {i}")
    return repo


@pytest.fixture
def tiny_repo(tmp_path) -> Path:
    """Two commits: the second makes ``spin`` 10 % longer, keeps ``flat``, drops ``gone``, adds ``new``."""
    return make_repo(tmp_path / "tiny", FIRST, SECOND)


@needs_git
@needs_valgrind
@pytest.mark.slow
def test_gate_of_two_commits_finds_the_planted_regression(tiny_repo, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tiny_repo)
    out = tmp_path / "gate.json"
    code = main(["gate", "--base", "HEAD~1", "--head", "HEAD", "--wall-blocks", "6", "--block-ms", "20",
                 "--wall-threshold", "50%", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 1, printed
    doc = json.loads(out.read_text())
    rows = {r["name"]: r for r in doc["benchmarks"]}
    assert set(rows) == {*FIRST, *SECOND}
    spin, flat = rows["train-step/spin/b1/cpu"], rows["train-step/flat/b1/cpu"]
    # 4400 iterations instead of 4000: +10 % instructions, counted to within a point
    assert spin["verdict"] == "regression" and spin["instructions_change_pct"] == pytest.approx(10.0, abs=1.0)
    assert flat["verdict"] == "unchanged" and abs(flat["instructions_change_pct"]) < 1.0
    assert flat["base_instructions"] == pytest.approx(flat["head_instructions"], rel=0.01)
    for r in (spin, flat):
        lo, hi = r["wall_interval"]
        assert lo <= r["wall_ratio"] <= hi and r["wall_blocks"]["steps_per_block"] >= 1
    assert rows["train-step/gone/b1/cpu"]["verdict"] == "removed"
    new = rows["train-step/new/b1/cpu"]
    assert new["verdict"] == "new" and new["base_instructions"] is None and new["head_instructions"] > 0
    assert doc["quality"]["verdict"] == "pass" and "tiny quality gate" in doc["quality"]["summary"]
    assert doc["base"]["commit"] == git(tiny_repo, "rev-parse", "HEAD~1")
    assert "REGRESSION" in printed and "1 regression(s)" in printed
    # the temporary worktrees are gone again
    assert git(tiny_repo, "worktree", "list").count("\n") == 0


@needs_git
@needs_valgrind
@pytest.mark.slow
def test_the_example_workflows_gate_command_as_written(tmp_path, capsys, monkeypatch):
    """A clone of a tiny repository with origin/main, a pull request's working tree: the workflow's command."""
    commands = workflow_commands()
    gate = [c for c in commands if c.startswith("cvae-bench gate")]
    assert gate == ["cvae-bench gate --base origin/main --json gate.json"]
    upstream = make_repo(tmp_path / "upstream", {"train-step/flat/b1/cpu": 4000})  # one benchmark: default timing
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(upstream), str(clone))
    (clone / "README.md").write_text("a pull request that touches no step\n")  # head: the working tree
    monkeypatch.chdir(clone)
    code = main(shlex.split(gate[0])[1:])
    printed = capsys.readouterr().out
    assert code == 0, printed
    doc = json.loads((clone / "gate.json").read_text())
    assert doc["base"]["rev"] == "origin/main" and doc["head"]["rev"] == "working tree"
    (flat,) = doc["benchmarks"]
    assert flat["verdict"] == "unchanged" and abs(flat["instructions_change_pct"]) < 1.0 and flat["wall_interval"]
    assert doc["settings"]["wall_blocks"] == 20 and doc["quality"]["verdict"] == "pass"


@needs_git
def test_a_base_older_than_the_gate_is_refused_in_one_line(tiny_repo, capsys, monkeypatch):
    (tiny_repo / "bench" / "timing" / "benchmarks.py").unlink()
    git(tiny_repo, "commit", "-qam", "third: no step benchmarks")
    monkeypatch.chdir(tiny_repo)
    assert main(["gate", "--base", "HEAD", "--head", "HEAD~1", "--wall-only", "--no-quality"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("cvae-bench gate: error: base (HEAD ") and "predates the gate" in err


def test_the_runner_refuses_benchmarks_imported_from_outside_the_revision(tmp_path):
    """A revision without ``bench`` would import an installed cvae-bench's: that is not the revision."""
    from bench.gates.runner import Runner

    runner = Runner((tmp_path / "revision").resolve())  # this test session's bench lies elsewhere
    with pytest.raises(RuntimeError, match="predates the gate; bench.timing.benchmarks came from"):
        runner.names(["cpu"])


@needs_git
def test_an_only_glob_that_matches_nothing_is_exit_2(tiny_repo, capsys, monkeypatch):
    monkeypatch.chdir(tiny_repo)
    assert main(["gate", "--base", "HEAD~1", "--only", "train-step/nothing/*", "--wall-only"]) == 2
    err = capsys.readouterr().err
    assert "--only train-step/nothing/*: matches no benchmark" in err and "train-step/spin/b1/cpu" in err


def workflow_commands() -> list[str]:
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load(WORKFLOW.read_text())
    return [step["run"].strip() for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]


def test_every_command_of_the_example_workflow_is_tested_or_the_ci_scripts_own():
    """The gate command is the one the test above runs; the rest install what .ci/run installs."""
    ci = (ROOT / ".ci" / "run").read_text()
    for command in workflow_commands():
        if command.startswith("cvae-bench "):
            assert command == "cvae-bench gate --base origin/main --json gate.json"
        elif "apt-get install" in command:
            packages = command.split("apt-get install", 1)[1].split()
            assert [p for p in packages if not p.startswith("-")] == ["valgrind"] and "valgrind" in ci
        else:
            assert command == "python -m pip install -e ." and "pip install" in ci


def test_the_readme_shows_the_example_workflow_as_it_is():
    readme = (ROOT / "README.md").read_text()
    shown = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    body = "".join(line for line in WORKFLOW.read_text().splitlines(keepends=True) if not line.startswith("#"))
    assert shown == body
