"""``cvae-bench train``: the table and final metrics it prints, ``--metrics-json``, ``--help``, and
one-line errors with exit status 2 for every kind of bad input (in-process and as a real process)."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli.train import EpochTable
from bench.evaluation.metric_names import FINAL_METRICS
from studies.cli import build_parser, main

CONSOLE_SCRIPT = Path(sys.executable).with_name("cvae-bench")
DIGITS_FINAL = [m for m in FINAL_METRICS if m != "test_bits_per_dim"]  # digits is not 8-bit
ERROR_PREFIX = "cvae-bench train: error:"


def train_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def _no_track() -> list[str]:
    """``--no-track`` where the command has MLflow tracking (added by another change)."""
    options = {s for a in train_parser()._actions for s in a.option_strings}
    return ["--no-track"] if "--no-track" in options else []


QUICK = ["train", "--dataset", "digits", "--epochs", "2", "--iw-samples", "10", "--no-progress"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Run in tmp_path, with any MLflow store and data cache there, never in the repository."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("CVAE_BENCH_DATA", str(tmp_path / "data-cache"))
    return tmp_path


def run_main(argv: list[str]) -> int:
    """studies.cli.main in-process; argparse errors exit through SystemExit."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def visible_lines(stream: str) -> list[str]:
    """Non-empty lines as a terminal shows them (a progress bar redrawn with \\r leaves only its last state)."""
    return [line.rsplit("\r", 1)[-1] for line in stream.split("\n") if line.rsplit("\r", 1)[-1].strip()]


def check_output(stdout: str, metrics: dict[str, float]) -> None:
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["epoch"])
    assert lines[header].split() == list(EpochTable.COLUMNS)
    rows = [line.split() for line in lines[header + 1:header + 3]]
    assert [r[0] for r in rows] == ["1", "2"]
    assert all(len(r) == len(EpochTable.COLUMNS) and all(math.isfinite(float(v)) for v in r) for r in rows)
    printed = {line.split()[0]: float(line.split()[1]) for line in lines if line.startswith("  ")
               and len(line.split()) == 2}
    assert set(printed) == set(DIGITS_FINAL)
    for name in DIGITS_FINAL:
        assert printed[name] == pytest.approx(metrics[name], abs=1e-4)


def check_metrics_json(path: Path) -> dict[str, float]:
    metrics = json.loads(path.read_text())
    assert isinstance(metrics, dict) and set(metrics) == set(DIGITS_FINAL)
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in metrics.values())  # flat
    assert metrics["test_iw_nll"] <= metrics["test_neg_elbo"] + 0.5
    return metrics


def test_train_prints_table_and_final_metrics_and_writes_json(isolated, capsys):
    out = isolated / "out" / "metrics.json"
    assert run_main([*QUICK, *_no_track(), "--metrics-json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    check_output(captured.out, check_metrics_json(out))
    if _no_track():  # nothing tracked, so no store appears in the working folder
        assert not (isolated / "mlflow.db").exists() and not (isolated / "mlruns").exists()


@pytest.mark.parametrize("cores, asked, expected", [(2, [], 1), (16, [], 8), (2, ["--threads", "2"], 2)])
def test_train_trains_on_half_the_cores_unless_told_and_restores_the_callers_threads(
        isolated, monkeypatch, cores, asked, expected):
    import torch

    import bench.training

    seen = []
    real_fit = bench.training.fit

    def fit(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(bench.training, "fit", fit)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    before = torch.get_num_threads()
    assert run_main([*QUICK, *_no_track(), "--epochs", "1", *asked]) == 0
    assert seen == [expected]
    assert torch.get_num_threads() == before


@pytest.mark.slow
def test_console_script_end_to_end(isolated):
    assert CONSOLE_SCRIPT.exists(), CONSOLE_SCRIPT
    out = isolated / "metrics.json"
    proc = subprocess.run([str(CONSOLE_SCRIPT), *QUICK, *_no_track(), "--variant", "flow-cvae", "--flow", "iaf",
                           "--metrics-json", str(out)], capture_output=True, text=True, timeout=120,
                          cwd=isolated, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "flow-cvae on digits" in proc.stdout
    check_output(proc.stdout, check_metrics_json(out))


BAD_INPUTS = {
    "unknown variant": (["--variant", "vqvae"], ["variant='vqvae'", "cvae, beta-cvae, flow-cvae"]),
    "unknown dataset": (["--dataset", "imagenet"], ["'imagenet'", "digits"]),
    "lr = 0": (["--lr", "0"], ["lr=0.0"]),
    "lr < 0": (["--lr", "-0.01"], ["lr=-0.01"]),
    "latent size 0": (["--latent-dim", "0"], ["latent_dim=0"]),
    "cvae with beta 4": (["--variant", "cvae", "--beta", "4"], ["beta=4.0"]),
    "conv on 10x10 (not divisible by 4)": (["--backbone", "conv", "--image-size", "10"], ["input_shape=(1, 10, 10)"]),
    "missing imagefolder": (["--dataset", "imagefolder:no/such/dir"], ["no/such/dir"]),
    "flow-cvae with --flow none": (["--variant", "flow-cvae", "--flow", "none"], ["variant flow-cvae needs a flow"]),
    "unknown backbone (argparse)": (["--backbone", "resnet"], ["--backbone", "resnet"]),
    "bad hidden list (argparse)": (["--hidden", "wide"], ["--hidden", "'wide'"]),
    "diverging loss": (["--lr", "1e10"], ["epoch 1", "step"]),
    "no threads (argparse)": (["--threads", "0"], ["--threads", "0 threads: must be >= 1"]),
    "threads not a number (argparse)": (["--threads", "two"], ["--threads", "'two' is not a whole number"]),
}


@pytest.mark.parametrize("args, mentions", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_one_line_and_exit_2(isolated, capsys, args, mentions):
    out = isolated / "metrics.json"
    code = run_main([*QUICK, *_no_track(), "--metrics-json", str(out), *args])
    captured = capsys.readouterr()
    assert code == 2
    lines = visible_lines(captured.err)
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    assert "Traceback" not in captured.err + captured.out
    for text in mentions:
        assert text in lines[0]
    assert not out.exists()  # no half-written results


@pytest.mark.parametrize("where", ["under-a-file/metrics.json", "a-folder"])
def test_unwritable_metrics_json_fails_before_training(isolated, capsys, where):
    (isolated / "under-a-file").write_text("")
    (isolated / "a-folder").mkdir()
    code = run_main([*QUICK, "--metrics-json", str(isolated / where)])  # tracked: no run may be left open
    captured = capsys.readouterr()
    assert code == 2
    lines = visible_lines(captured.err)
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX) and "--metrics-json" in lines[0], captured.err
    assert "Traceback" not in captured.err
    assert "epoch" not in captured.out  # nothing was trained and then thrown away


def test_missing_mnist_files_name_the_folder_and_files(isolated, capsys):
    empty = isolated / "empty-root"
    empty.mkdir()
    code = run_main([*QUICK, *_no_track(), "--dataset", "mnist", "--data-root", str(empty)])
    captured = capsys.readouterr()
    assert code == 2
    lines = visible_lines(captured.err)
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX)
    assert str(empty) in lines[0]
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte", "--download"):
        assert name in lines[0]
    assert list(empty.iterdir()) == [] or all(p.is_dir() for p in empty.rglob("*"))  # nothing downloaded


@pytest.mark.slow
def test_console_script_bad_input_exit_2_without_traceback(isolated):
    empty = isolated / "empty-root"
    empty.mkdir()
    proc = subprocess.run([str(CONSOLE_SCRIPT), "train", "--dataset", "mnist", "--data-root", str(empty)],
                          capture_output=True, text=True, timeout=120, cwd=isolated, env=os.environ.copy())
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = visible_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX) and str(empty) in lines[0]


HELP_OPTIONS = ["--variant", "--dataset", "--data-root", "--download", "--image-size", "--limit", "--epochs",
                "--batch-size", "--lr", "--weight-decay", "--grad-clip", "--latent-dim", "--hidden", "--backbone",
                "--likelihood", "--beta", "--beta-schedule", "--flow", "--flow-length", "--device", "--seed",
                "--iw-samples", "--metrics-json"]


def test_help_exits_0_and_explains_each_option(capsys):
    assert run_main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    for option in HELP_OPTIONS:
        assert option in text, option
    for action in train_parser()._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and action.help != argparse.SUPPRESS, action.option_strings
            assert any(s in text for s in action.option_strings)
    for variant in ("cvae", "beta-cvae", "flow-cvae"):
        assert variant in text


def test_every_option_with_a_default_states_it_in_its_help():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command, parser in sub.choices.items():
        for action in parser._actions:
            if (action.option_strings and action.dest != "help" and not action.required
                    and action.default not in (None, False)):
                assert "default" in (action.help or ""), (command, action.option_strings)


def test_console_entry_returns_mains_code_and_freezes_only_after_it(monkeypatch):
    import gc

    import studies.cli as cli

    events = []
    monkeypatch.setattr(cli, "main", lambda: events.append("main") or 3)
    monkeypatch.setattr(gc, "freeze", lambda: events.append("freeze"))
    assert cli.run() == 3
    assert events == ["main", "freeze"]
