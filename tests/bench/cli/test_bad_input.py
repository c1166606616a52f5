"""Bad input to any command: one line on stderr, exit 2, no traceback, nothing already stored changed;
a tracking store or Optuna storage whose database server does not answer: the same, within 15 s.

The commands run in-process through ``studies.cli.main`` (what ``cvae-bench`` runs), except where a
read-only folder needs a process of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studies.cli import main

REPO = Path(__file__).resolve().parents[3]
HUGE = str(10**12)
TRAIN = ["train", "--dataset", "digits", "--limit", "60", "--epochs", "1", "--iw-samples", "2", "--no-progress"]
STEPTIME = ["steptime", "--repeats", "1", "--block-ms", "1", "--warmup", "1", "--no-track"]
STUDY = ["study", "--trials", "1", "--epochs", "1", "--limit", "60", "--iw-samples", "2", "--no-progress"]


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse
        return exc.code


def assert_one_line_error(capsys, command: str, fragment: str) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.out + captured.err, captured.err
    assert err.count("\n") == 0 and err.startswith(f"cvae-bench {command}: error:"), err
    assert fragment in err, err
    return err


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- sizes, lists, paths, numbers ----------------------------------------------------------------------

@pytest.mark.parametrize("extra, fragment", [
    (["--hidden", "64,,256"], "'64,,256' has an empty item"),
    (["--hidden", "64,"], "'64,' has an empty item"),
    (["--hidden", str(10**9)], "parameters: --hidden"),
    (["--latent-dim", str(10**9)], "parameters: --hidden, --latent-dim"),
    (["--variant", "flow-cvae", "--flow-length", str(10**9)], "--flow-length) with its gradients"),
    (["--iw-samples", HUGE], f"--iw-samples {HUGE} (k images of 1x8x8 at once) needs"),
    (["--image-size", str(10**6)], "--image-size 1000000 (180 images) needs"),
    (["--seed", "-1"], "argument --seed: -1 is not in 0..4294967295"),
    (["--seed", str(2**70)], "is not in 0..4294967295"),
    (["--batch-size", "0"], "batch_size=0"),
    (["--epochs", "-1"], "epochs=-1"),
    (["--lr", "nan"], "lr=nan"),
    (["--metrics-json", "FILE/x.json"], "--metrics-json"),
    (["--metrics-json", "FOLDER"], "a folder of that name exists"),
    (["--dataset", "mnist", "--data-root", "FILE"], "mnist: files not found"),
    (["--dataset", "imagefolder:FILE"], "imagefolder: folder not found"),
])
def test_train(tmp_path, monkeypatch, capsys, extra, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "FOLDER").mkdir()
    extra = [str(tmp_path / e) if e.startswith(("FILE", "FOLDER")) else e.replace("FILE", str(tmp_path / "FILE"))
             for e in extra]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert run([*TRAIN, "--tracking-uri", uri, *extra]) == 2
    assert_one_line_error(capsys, "train", fragment)
    assert not (tmp_path / "mlflow.db").exists()  # refused before a run (or its store) was made


@pytest.mark.parametrize("extra, fragment", [
    (["--batch-size", "64,,256"], "'64,,256' has an empty item"),
    (["--variant", "cvae,"], "'cvae,' has an empty item"),
    (["--variant", "cvae,,flow-cvae"], "has an empty item"),
    (["--batch-size", HUGE], f"--batch-size {HUGE} on digits needs"),
    (["--dataset", "synthetic:100000x100000"], "dataset synthetic:100000x100000 (60000 images) needs"),
    (["--seed", "-1"], "is not in 0..4294967295"),
    (["--json", "FOLDER"], "a folder of that name exists"),
])
def test_steptime(tmp_path, monkeypatch, capsys, extra, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FOLDER").mkdir()
    extra = [str(tmp_path / e) if e == "FOLDER" else e for e in extra]
    assert run([*STEPTIME, *extra]) == 2
    assert_one_line_error(capsys, "steptime", fragment)


@pytest.mark.parametrize("extra, fragment", [
    (["--seed", "-1"], "seed=-1: must be an integer >= 0"),
    (["--seed", str(2**40)], "must be an integer in 0..4294967295"),
    (["--experiment", ""], "experiment='': must not be empty"),
    (["--registered-model", " "], "registered_model=' ': must not be empty"),
    (["--iw-samples", HUGE], "--iw-samples 1000000000000"),
    (["--image-size", str(10**6)], "--image-size 1000000"),
    (["--limit", "-1"], "limit=-1"),
])
def test_study(tmp_path, monkeypatch, capsys, extra, fragment):
    monkeypatch.chdir(tmp_path)
    storage = tmp_path / "optuna.db"
    assert run([*STUDY, "--storage", f"sqlite:///{storage}", "--no-track", *extra]) == 2
    assert_one_line_error(capsys, "study", fragment)
    assert not storage.exists()


def test_suite_config_with_an_empty_variant_and_a_config_folder(tmp_path, capsys):
    config = tmp_path / "suite.json"
    config.write_text(json.dumps({"variants": ["cvae", ""], "track": False}))
    assert run(["suite", "--config", str(config)]) == 2
    assert_one_line_error(capsys, "suite", "variant=''")
    assert run(["suite", "--config", str(tmp_path)]) == 2
    assert_one_line_error(capsys, "suite", f"--config {tmp_path}: cannot read it")


def test_sync_spool_dir_that_is_a_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spool").write_text("x")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert run(["sync", "--spool-dir", str(tmp_path / "spool"), "--tracking-uri", uri]) == 2
    assert_one_line_error(capsys, "sync", "not a folder")


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A tiny tracked train run with its logged model."""
    root = tmp_path_factory.mktemp("bad-input-model")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        assert main([*TRAIN, "--tracking-uri", uri]) == 0
    from bench.tracking import make_client

    client = make_client(uri)
    run_id = client.search_runs([client.get_experiment_by_name("cvae-bench-train").experiment_id])[0].info.run_id
    return uri, run_id


@pytest.mark.slow
@pytest.mark.parametrize("command, extra, fragment", [
    ("sample", ["--n", HUGE], f"--n {HUGE} x 10 label(s)"),
    ("sample", ["--label", "3", "--label", ""], "label='': not a class"),
    ("sample", ["--temperature", "nan"], "--temperature nan: must be a finite number > 0"),
    ("sample", ["--seed", "-1"], "is not in 0..4294967295"),
    ("evaluate", ["--iw-samples", HUGE], f"--iw-samples {HUGE}"),
    ("evaluate", ["--seed", str(2**33)], "is not in 0..4294967295"),
    ("evaluate", ["--limit", "0"], "limit=0"),
])
def test_sample_and_evaluate(logged, tmp_path, capsys, command, extra, fragment):
    uri, run_id = logged
    out = ["--out", str(tmp_path / "x.png")] if command == "sample" else []
    assert run([command, "--model", run_id, "--tracking-uri", uri, *out, *extra]) == 2
    assert_one_line_error(capsys, command, fragment)
    assert not (tmp_path / "x.png").exists()


def test_allocation_failures_left_to_torch_are_one_line_too(monkeypatch, capsys):
    """The net under the commands' own size checks: an allocation that fails anyway."""
    import bench.cli.steptime as steptime

    def fail(args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 256000000000000 bytes. Error code 12")

    monkeypatch.setattr(steptime, "run_steptime", fail)
    assert run(["steptime", "--no-track"]) == 2
    assert_one_line_error(capsys, "steptime", "out of memory (can't allocate memory: you tried to allocate")


# -- tracking stores and storages that do not answer -------------------------------------------------------

@pytest.fixture
def dead_db(tmp_path, monkeypatch):
    """A PostgreSQL URL (with a password) of a loopback port nobody listens on."""
    monkeypatch.chdir(tmp_path)
    port = closed_port()
    return f"postgresql://cvae:S3cret/PW@127.0.0.1:{port}/mlflow", f"127.0.0.1:{port}"


@pytest.mark.parametrize("argv", [
    [*STUDY, "--storage", "sqlite:///optuna.db"],
    ["sample", "--model", "0123456789abcdef0123456789abcdef", "--out", "x.png"],
    ["evaluate", "--model", "0123456789abcdef0123456789abcdef", "--dataset", "digits"],
    ["compare", "0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef"],
    ["report", "--study-name", "s", "--storage", "sqlite:///optuna.db"],
    ["sync"],
    ["suite", "--config", "suite.json"],
    [*STEPTIME[:-1], "--batch-size", "8"],
    TRAIN,  # its tracking process finds out; training goes on to the next epoch, then the command stops
])
def test_unreachable_tracking_database_is_one_line_within_15_s(dead_db, tmp_path, capsys, argv):
    uri, host = dead_db
    command = argv[0]
    if command == "report":  # a study to report on
        import optuna

        optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    if command == "suite":
        (tmp_path / "suite.json").write_text(json.dumps({"variants": ["cvae"], "trials": 1, "epochs": 1,
                                                         "limit": 60, "storage": "sqlite:///optuna.db"}))
    def files():
        return sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock")  # (lock files of the storage)

    before = files()
    start = time.monotonic()
    assert run([*argv, "--tracking-uri", uri]) == 2
    assert time.monotonic() - start < 15
    err = assert_one_line_error(capsys, command, f"cannot reach the database server {host}")
    assert "S3cret" not in err
    if command not in ("study", "suite"):  # (they make their Optuna storage first, which is not the store)
        assert files() == before


def test_unreachable_optuna_storage_is_one_line(dead_db, capsys):
    uri, host = dead_db
    assert run([*STUDY, "--no-track", "--storage", uri.replace("/mlflow", "/optuna")]) == 2
    err = assert_one_line_error(capsys, "study", f"--storage postgresql://cvae:***@{host}/optuna: cannot reach")
    assert "S3cret" not in err


@pytest.mark.slow
def test_silent_database_server_is_one_line_within_15_s(tmp_path, monkeypatch, capsys):
    """A server that drops connections (its listen queue is full): the kernel would wait ~2 minutes."""
    from local_services import silent_listener

    monkeypatch.chdir(tmp_path)
    with silent_listener() as port:
        start = time.monotonic()
        assert run([*STUDY, "--storage", "sqlite:///optuna.db",
                    "--tracking-uri", f"postgresql://u:pw@127.0.0.1:{port}/mlflow"]) == 2
        assert time.monotonic() - start < 15
    assert_one_line_error(capsys, "study", f"127.0.0.1:{port} (no answer within 5 s)")


# -- a read-only folder -----------------------------------------------------------------------------------

def _read_only(folder: Path, argv: list[str]) -> subprocess.CompletedProcess:
    """Run ``cvae-bench argv`` with ``folder`` read-only for it: a read-only bind mount in a mount namespace
    of its own when root (root writes through permissions), else a folder without write permission."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "studies.cli", *argv]
    if os.geteuid() == 0:
        if not shutil.which("unshare"):
            pytest.skip("needs unshare(1) to make a read-only folder as root")
        cmd = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"',
               str(folder), *cmd]
    else:
        folder.chmod(0o555)
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    finally:
        folder.chmod(0o755)
    if "mount" in done.stderr and "cvae-bench" not in done.stderr:
        pytest.skip(f"cannot make a read-only mount here: {done.stderr.strip()}")
    return done


@pytest.mark.slow
@pytest.mark.parametrize("existing", [False, True])
def test_optuna_storage_in_a_read_only_folder(tmp_path, existing):
    folder = tmp_path / "ro"
    folder.mkdir()
    storage = f"sqlite:///{folder / 'optuna.db'}"
    if existing:
        import optuna

        study = optuna.create_study(study_name="s", storage=storage)
        study.set_user_attr("kept", 1)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    done = _read_only(folder, [*STUDY, "--study-name", "s", "--storage", storage, "--no-track"])
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip()
    assert err.count("\n") == 0 and "Traceback" not in done.stderr, done.stderr
    assert err.startswith("cvae-bench study: error: cannot create the lock file") and str(folder) in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
