"""``cvae-bench --help`` and every ``cvae-bench COMMAND --help`` answer without the heavy stack.

The target (<= 0.5 s on the 2-core VM) is measured by the benchmark below (``--benchmark-enable``);
the unit tests check the cause of speed that does not drift with the machine: which modules a help
request imports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
HEAVY = ("torch", "mlflow", "optuna", "pandas", "matplotlib", "sklearn", "torchvision", "tqdm")

PROBE = """
import contextlib, io, json, sys
from studies.cli import build_parser, main
argv = sys.argv[1:]
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
commands = [a for a in build_parser()._actions if a.dest == "command"][0].choices
print(json.dumps({{"code": code, "heavy": heavy, "commands": sorted(commands), "chars": len(out.getvalue())}}))
""".format(heavy=HEAVY)


def help_probe(*argv: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, timeout=120,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def commands() -> list[str]:
    return help_probe("--help")["commands"]


def test_top_level_help_imports_no_heavy_module():
    result = help_probe("--help")
    assert result["code"] == 0 and result["chars"] > 200
    assert result["heavy"] == []
    assert {"train", "study", "suite", "report", "worker", "steptime", "compare", "regress", "server",
            "sync"} <= set(result["commands"])


@pytest.mark.slow
def test_every_command_help_imports_no_heavy_module():
    for command in commands():
        result = help_probe(command, "--help")
        assert result["code"] == 0 and result["chars"] > 200, command
        assert result["heavy"] == [], f"cvae-bench {command} --help imports {result['heavy']}"


def test_help_wall_time(benchmark):
    """Wall time of ``python -m studies.cli --help`` as a fresh process (the target: <= 0.5 s on 2 cores)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def run() -> None:
        subprocess.run([sys.executable, "-m", "studies.cli", "--help"], env=env, cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
