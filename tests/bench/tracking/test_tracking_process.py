"""``cvae-bench train``'s tracking process: the run is logged completely from the child; failures of
training end it FAILED or KILLED; a dead or failing tracking process never costs the training results;
a bad tracking URI is one line and exit 2; the training process never imports mlflow or matplotlib."""

from __future__ import annotations

import io
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import bench.tracking
from bench.cli import train as train_command
from bench.evaluation.metric_names import EPOCH_METRICS, FINAL_METRICS
from bench.figures import draw as figures
from bench.tracking import child as tracking_child
from bench.tracking import make_client
from bench.tracking.child import _Inbox, _merge_steps
from bench.tracking.messages import frame as _frame
from bench.tracking.process import PipeWriter, TrackingProcess
from studies.cli import main

REPO = Path(__file__).resolve().parents[3]
QUICK = ["train", "--epochs", "3", "--limit", "300", "--iw-samples", "5", "--no-progress"]
DIGITS_FINAL = [m for m in FINAL_METRICS if m != "test_bits_per_dim"]
ERROR_PREFIX = "cvae-bench train: error:"

slow = pytest.mark.slow  # spawns processes, trains


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh SQLite tracking URI in tmp_path (also the working folder: artifacts land there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def started(monkeypatch) -> list[TrackingProcess]:
    """The tracking processes ``train`` starts, in order (``bench.tracking.TrackingProcess``, which ``train``
    imports when it runs, records them)."""
    processes: list[TrackingProcess] = []

    class Recorded(TrackingProcess):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            processes.append(self)

    monkeypatch.setattr(bench.tracking, "TrackingProcess", Recorded)
    return processes


def only_run(uri: str, experiment: str = "t"):
    client = make_client(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, run


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# -- the protocol --------------------------------------------------------------------------------

def test_inbox_reassembles_messages_and_times_out():
    read, write = os.pipe()
    inbox = _Inbox(read)
    try:
        frames = _frame(("metrics", {"a": 1.0}, 1)) + _frame(("figures", {"kl": np.arange(3.0)}))
        os.write(write, frames[:7])  # a message split across reads
        assert inbox.get(timeout=0.01) is _Inbox.TIMEOUT
        os.write(write, frames[7:])
        assert inbox.get() == ("metrics", {"a": 1.0}, 1)
        kind, payload = inbox.get(timeout=0.01)
        assert kind == "figures" and payload["kl"].tolist() == [0.0, 1.0, 2.0]
        os.close(write)
        write = -1
        assert inbox.get() is None  # end of file
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)


def test_pipe_writer_keeps_order_never_blocks_and_drops_frames_once_the_reader_is_gone():
    read, write = os.pipe()
    writer = PipeWriter(os.fdopen(write, "wb"))
    big = b"F" * (1 << 20)  # far more than a pipe holds: the rest goes to the thread
    small = [bytes([i]) * 100 for i in range(20)]
    start = time.monotonic()
    writer.send(b"<" + big + b">")
    for frame in small:
        writer.send(frame)  # queued behind the big one, not written past it
    writer.close()
    assert time.monotonic() - start < 0.5  # nobody has read yet, yet nothing blocked
    with os.fdopen(read, "rb") as pipe:
        got = pipe.read()  # up to end-of-file: close() closed the pipe after the last frame
    assert got == b"<" + big + b">" + b"".join(small)

    read, write = os.pipe()
    writer = PipeWriter(os.fdopen(write, "wb"))
    writer.send(b"x" * 10)  # written at once, by the caller
    assert os.read(read, 100) == b"x" * 10
    os.close(read)
    writer.send(b"y" * 10)  # EPIPE: no error here; later frames are dropped
    writer.send(b"z" * (1 << 20))
    writer.close()


def test_the_childs_stdin_is_widened_to_hold_a_runs_figures():
    fcntl = pytest.importorskip("fcntl")
    from bench.tracking.process import PIPE_BYTES, _widen

    limit = int(Path("/proc/sys/fs/pipe-max-size").read_text()) if Path("/proc/sys/fs/pipe-max-size").exists() else 0
    if limit < PIPE_BYTES:
        pytest.skip("this system caps pipes below PIPE_BYTES")
    read, write = os.pipe()
    try:
        assert fcntl.fcntl(write, fcntl.F_GETPIPE_SZ) < PIPE_BYTES
        _widen(write)
        assert fcntl.fcntl(write, fcntl.F_GETPIPE_SZ) == PIPE_BYTES
    finally:
        os.close(read)
        os.close(write)


def test_metrics_of_one_step_are_merged_in_order():
    held = [("metrics", {"a": 1.0}, 1), ("metrics", {"a": 2.0}, 2), ("metrics", {"test": 3.0}, 2),
            ("figures", {}), ("metrics", {"b": 4.0}, 2), ("end", "FINISHED", None)]
    assert _merge_steps(held) == [("metrics", {"a": 1.0}, 1), ("metrics", {"a": 2.0, "test": 3.0}, 2),
                                  ("figures", {}), ("metrics", {"b": 4.0}, 2), ("end", "FINISHED", None)]


class FakeClient:
    def settle(self):
        return None


class FakeTracker:
    def __init__(self):
        self.client, self.run_id, self.calls = FakeClient(), "r1", []

    def log_metric_steps(self, rows):
        if rows:  # one request: (step, key) of each row
            self.calls.append(("metrics", sorted((step, k) for k, _, step in rows)))

    def end(self, status, reason=None):
        self.calls.append(("end", status))

    def log_datasets(self, inputs):
        self.calls.append(("datasets", len(inputs)))

    def log_file(self, path, artifact_dir):
        self.calls.append(("file", artifact_dir))

    def delete_artifacts(self, artifact_dir):
        self.calls.append(("delete", artifact_dir))

    def log_model(self, folder, **kwargs):
        self.calls.append(("model", kwargs["metrics"]))

    def log_model_metrics(self, metrics):
        self.calls.append(("model_metrics", sorted(metrics)))


class ScriptedInbox:
    """Hands out ``messages``; notes how many writes the tracker had done when each was taken."""

    woken = True  # no wake pipe: never dozes

    def __init__(self, messages, tracker):
        self.messages, self.tracker, self.writes_before = list(messages), tracker, []

    def get(self, timeout=None, doze=False):
        self.writes_before.append(len(self.tracker.calls))
        return self.messages.pop(0) if self.messages else None

    def ready(self):
        return True  # every scripted message is there at once


EPOCHS = [("hold",), ("metrics", {"val_kl": 1.0}, 1), ("metrics", {"val_kl": 2.0}, 2), ("metrics", {"val_kl": 3.0}, 3),
          ("metrics", {"test_iw_nll": 9.0}, 3), ("end", "FINISHED", None)]


@pytest.mark.parametrize("interval, written_before_end", [(0.0, 4), (1e9, 0)])
def test_writes_are_held_while_training_runs_unless_the_interval_passed(monkeypatch, interval, written_before_end):
    monkeypatch.setattr(tracking_child, "LIVE_INTERVAL_S", interval)
    tracker = FakeTracker()
    child = tracking_child._Child(ScriptedInbox(EPOCHS, tracker), io.BytesIO())
    child.tracker = tracker
    inbox = child.inbox
    assert child._serve_run() == 0
    assert inbox.writes_before[-1] == written_before_end  # writes done when "end" was taken
    assert inbox.writes_before[1] == 0  # "hold" wrote nothing: nothing came before it
    assert tracker.calls[-1] == ("end", "FINISHED")
    if interval == 0.0:  # each epoch went out as it came; the finals of step 3 came later
        assert tracker.calls[:4] == [("metrics", [(1, "val_kl")]), ("metrics", [(2, "val_kl")]),
                                     ("metrics", [(3, "val_kl")]), ("metrics", [(3, "test_iw_nll")])]
    else:  # held: every epoch and the finals in one request
        assert tracker.calls[:2] == [("metrics", [(1, "val_kl"), (2, "val_kl"), (3, "test_iw_nll"), (3, "val_kl")]),
                                     ("end", "FINISHED")]


def checkpoint_file(tmp_path, epoch):
    folder = tmp_path / f"copy-{epoch}"
    folder.mkdir()
    (folder / "state.pt").write_bytes(b"x")
    return ("file", str(folder / "state.pt"), "checkpoint")


def test_outside_training_each_message_is_written_as_it_comes_and_checkpoints_wait_for_the_end(tmp_path):
    """Before "hold" (the training process sets up on one core) and after "release" (its test metrics
    are computed with a core left over) nothing waits for a burst; but checkpoint files and deletes
    after "release" wait for the end, where the run's delete makes them moot: never written."""
    tracker = FakeTracker()
    messages = [("datasets", [{}, {}, {}]), ("hold",), ("metrics", {"val_kl": 1.0}, 1),
                checkpoint_file(tmp_path, 1), ("metrics", {"val_kl": 2.0}, 2),
                ("model", "folder", {"metrics": None}), ("release",), checkpoint_file(tmp_path, 2),
                ("metrics", {"train_seconds": 1.0}, 2), ("model_metrics", {"test_kl": 1.0}),
                ("delete", "checkpoint"), ("end", "FINISHED", None)]
    inbox = ScriptedInbox(messages, tracker)
    inbox.ready = lambda: False  # each message comes on its own
    child = tracking_child._Child(inbox, io.BytesIO())
    child.tracker = tracker
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tracking_child, "LIVE_INTERVAL_S", 1e9)
        assert child._serve_run() == 0
    assert inbox.writes_before[1] == 1  # the datasets were written before "hold" was taken
    assert inbox.writes_before[6] == 1  # held while training ran
    assert inbox.writes_before[8] == 3  # "release" wrote the epochs and the model, not the checkpoint
    assert tracker.calls == [("datasets", 3), ("metrics", [(1, "val_kl"), (2, "val_kl")]), ("model", None),
                             ("metrics", [(2, "train_seconds")]), ("model_metrics", ["test_kl"]), ("end", "FINISHED")]
    assert not list(tmp_path.glob("copy-*"))  # the moot copies are removed


def test_after_release_a_checkpoint_still_reaches_the_run_if_the_training_process_dies(tmp_path):
    tracker = FakeTracker()
    messages = [("hold",), checkpoint_file(tmp_path, 1), ("release",), ("metrics", {"val_kl": 1.0}, 1)]
    child = tracking_child._Child(ScriptedInbox(messages, tracker), io.BytesIO())
    child.tracker = tracker
    assert child._serve_run() == 1  # end-of-file: KILLED
    assert ("file", "checkpoint") in tracker.calls and tracker.calls[-1] == ("end", "KILLED")


class Pipes:
    """The two pipes of a child's inbox (stdin, wake), as the training process holds them; closes the rest."""

    def __init__(self) -> None:
        self.read, self.write = os.pipe()
        self.wake_read, self.wake_write = os.pipe()

    def close(self, *names: str) -> None:
        for name in names or ("read", "write", "wake_read", "wake_write"):
            if getattr(self, name) >= 0:
                os.close(getattr(self, name))
                setattr(self, name, -1)


def test_a_dozing_inbox_reads_only_at_its_deadline_or_when_woken():
    """While training runs the child waits on the wake pipe, not on stdin: a message that comes
    meanwhile is read at the deadline, or at once when the training process wakes it (a byte, or its
    exit closing the pipe); after a wake it never dozes again."""
    pipes = Pipes()
    inbox = _Inbox(pipes.read, pipes.wake_read)
    late = threading.Timer(0.05, os.write, (pipes.write, _frame(("metrics", {"a": 1.0}, 1))))
    try:
        start = time.monotonic()
        late.start()
        assert inbox.get(1.0, doze=True) == ("metrics", {"a": 1.0}, 1)
        assert time.monotonic() - start >= 0.95  # it came after 0.05 s, and was read at the deadline
        assert inbox.get(0.05, doze=True) is _Inbox.TIMEOUT and not inbox.woken

        def wake():
            os.write(pipes.write, _frame(("release",)))
            os.write(pipes.wake_write, b"w")

        waker = threading.Timer(0.05, wake)
        start = time.monotonic()
        waker.start()
        assert inbox.get(60.0, doze=True) == ("release",)
        assert time.monotonic() - start < 30.0 and inbox.woken  # not the deadline: the wake
        waker.join()
    finally:
        late.join()
        pipes.close()

    pipes = Pipes()
    inbox = _Inbox(pipes.read, pipes.wake_read)
    closing = threading.Timer(0.05, pipes.close, ("write",))
    try:
        pipes.close("wake_write")  # the training process is gone: its end of the wake pipe closes first
        start = time.monotonic()
        closing.start()
        assert inbox.get(60.0, doze=True) is None  # then stdin's end-of-file, read when it comes
        assert inbox.woken and time.monotonic() - start < 30.0
    finally:
        closing.join()
        pipes.close()


@pytest.fixture
def dozing_child(monkeypatch):
    """A child reading real pipes with a wake pipe, no burst due before the end, a FakeTracker."""
    monkeypatch.setattr(tracking_child, "LIVE_INTERVAL_S", 1e9)
    pipes = Pipes()
    child = tracking_child._Child(_Inbox(pipes.read, pipes.wake_read), io.BytesIO())
    child.tracker = FakeTracker()
    yield child, pipes
    pipes.close()


def test_the_child_holds_epochs_unread_while_training_runs_and_writes_them_when_woken(dozing_child):
    child, pipes = dozing_child
    calls = child.tracker.calls
    result = []
    serving = threading.Thread(target=lambda: result.append(child._serve_run()))
    try:
        os.write(pipes.write, _frame(("hold",)))
        serving.start()
        deadline = time.monotonic() + 30
        while not child.holding and time.monotonic() < deadline:
            time.sleep(0.01)
        assert child.holding
        os.write(pipes.write, _frame(("metrics", {"val_kl": 1.0}, 1)) + _frame(("metrics", {"val_kl": 2.0}, 2)))
        time.sleep(0.2)
        assert select.select([pipes.read], [], [], 0)[0] and calls == []  # still in the pipe: the child dozes
        os.write(pipes.write, _frame(("release",)))
        os.write(pipes.wake_write, b"w")
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert calls == [("metrics", [(1, "val_kl"), (2, "val_kl")])]  # written on the wake
        os.write(pipes.write, _frame(("end", "FINISHED", None)))
        serving.join(30)
        assert result == [0] and calls[-1] == ("end", "FINISHED")
    finally:
        serving.join(30)


def test_a_dozing_child_ends_the_run_killed_when_the_training_process_dies(dozing_child):
    child, pipes = dozing_child
    os.write(pipes.write, _frame(("hold",)) + _frame(("metrics", {"val_kl": 1.0}, 1)))
    pipes.close("write", "wake_write")  # the training process dies: both of its pipes close
    assert child._serve_run() == 1  # at once, not after LIVE_INTERVAL_S
    assert child.tracker.calls == [("metrics", [(1, "val_kl")]), ("end", "KILLED")]


# -- the process on its own ----------------------------------------------------------------------

@slow
def test_tracking_process_logs_a_whole_run(store):
    grid = figures.ImageGrid(np.zeros((19, 19), np.float32), "t", cell_px=8, row_labels=("a", "b"))
    payload = {"reconstructions": grid, "kl_per_dim": figures.KLPerDim(np.array([0.5, 0.1]))}
    with TrackingProcess() as tracking:
        tracking.start_run(store, "t", "r", tags={"variant": "cvae", "url": "http://u:s3cret@h"},
                           params={"lr": 0.001, "hidden": "128"})
        for epoch in (1, 2, 3):
            tracking(epoch, {"val_kl": float(epoch), "val_recon": 10.0 / epoch})
        tracking.log_figures(payload)
        tracking.log_metrics({"test_neg_elbo": 25.0}, step=3)
    run_id = tracking.finish()
    client, run = only_run(store)
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.001", "hidden": "128"}
    assert run.data.tags["variant"] == "cvae" and run.data.tags["url"] == "http://u:***@h"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_kl")] == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert run.data.metrics["test_neg_elbo"] == 25.0
    assert {a.path for a in client.list_artifacts(run_id, "figures")} == {
        figures.FIGURE_FILES["reconstructions"], figures.FIGURE_FILES["kl_per_dim"]}


@slow
def test_training_process_gone_ends_the_run_killed(store):
    tracking = TrackingProcess()
    tracking.start_run(store, "t", "r", tags={}, params={"a": 1})
    tracking.log_metrics({"x": 1.0}, step=1)
    tracking._writer.close()  # stdin closes without an "end": what the child sees if we die
    tracking._closed.wait(60)
    assert tracking.proc.wait(60) == 1
    client, run = only_run(store)
    assert run.info.status == "KILLED"
    assert "exited before ending the run" in run.data.tags["end_reason"]
    assert run.data.metrics["x"] == 1.0


@slow
def test_abandoned_before_the_run_writes_nothing(store, tmp_path):
    tracking = TrackingProcess()
    tracking.abandon()
    assert not (tmp_path / "mlflow.db").exists()


# -- the train command ---------------------------------------------------------------------------

@slow
def test_train_logs_everything_it_prints(store, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main([*QUICK, "--tracking-uri", store, "--experiment", "t", "--metrics-json", str(out)]) == 0
    printed = capsys.readouterr().out
    client, run = only_run(store)
    assert f"tracked as MLflow run {run.info.run_id} in experiment 't'" in printed
    assert run.info.status == "FINISHED"
    for key in EPOCH_METRICS:
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2, 3], key
    # The values logged for each epoch are the ones the table printed (3 decimals), column by column.
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["epoch"])
    columns = lines[header].split()
    table = [dict(zip(columns, map(float, line.split()))) for line in lines[header + 1:header + 4]]
    assert [row["epoch"] for row in table] == [1, 2, 3]
    for key in ("train_recon", "train_kl", "val_recon", "val_kl", "val_neg_elbo", "beta"):
        logged = [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
        assert logged == pytest.approx([row[key] for row in table], abs=6e-4), key
    assert len({row["val_kl"] for row in table}) == 3  # epochs differ, so a shuffled history would show
    finals = json.loads(out.read_text())
    assert set(finals) == set(DIGITS_FINAL)
    for key, value in finals.items():
        assert run.data.metrics[key] == pytest.approx(value), key
    assert run.data.metrics["train_seconds"] > 0
    for key in finals:  # once: the run's final metrics are the ones linked to its model
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [3], key
    (model,) = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert str(model.status).endswith("READY") and {m.key for m in model.metrics} == set(finals)
    assert run.data.params["n_train"] == "300" and run.data.params["epochs"] == "3"
    assert run.data.tags["command"] == "train" and run.data.tags["variant"] == "cvae"
    assert {a.path for a in client.list_artifacts(run.info.run_id, "figures")} == set(figures.FIGURE_FILES.values())

    # Figures are computed before the test metrics now: they must not change them.
    untracked = tmp_path / "untracked.json"
    assert main([*QUICK, "--no-track", "--metrics-json", str(untracked)]) == 0
    assert json.loads(untracked.read_text()) == finals


@slow
def test_a_tracked_run_leaves_a_core_to_the_tracking_process_while_its_test_metrics_are_computed(store, monkeypatch):
    import torch

    from bench.training import loop

    seen, compute = [], loop.final_metrics
    monkeypatch.setattr(loop, "final_metrics", lambda *a, **k: seen.append(torch.get_num_threads()) or compute(*a, **k))
    threads = torch.get_num_threads()
    assert threads >= 2  # conftest: 2
    assert main([*QUICK, "--tracking-uri", store, "--experiment", "t"]) == 0
    assert main([*QUICK, "--no-track"]) == 0
    assert seen == [threads - 1, threads]
    assert torch.get_num_threads() == threads  # restored


@slow
def test_interrupt_ends_the_run_killed(store, monkeypatch):
    def interrupt(self, epoch, metrics):
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_command.EpochTable, "__call__", interrupt)
    assert main([*QUICK, "--tracking-uri", store, "--experiment", "t"]) == 130
    client, run = only_run(store)
    assert run.info.status == "KILLED" and run.data.tags["end_reason"] == "interrupted"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_kl")] == [1]


def train_with_tracking_failing(store, tmp_path, monkeypatch, capsys, on_epoch) -> str:
    """``train`` with ``on_epoch(self, epoch, metrics)`` breaking tracking: it exits 2 yet prints and writes
    every final metric; returns its one line of stderr."""
    monkeypatch.setattr(train_command.EpochTable, "__call__", on_epoch)
    out = tmp_path / "m.json"
    assert main([*QUICK, "--tracking-uri", store, "--experiment", "t", "--metrics-json", str(out)]) == 2
    captured = capsys.readouterr()
    assert "final metrics" in captured.out and set(json.loads(out.read_text())) == set(DIGITS_FINAL)
    (line,) = error_lines(captured.err)
    return line


@slow
def test_dead_tracking_process_keeps_the_results_and_fails_in_one_line(store, tmp_path, monkeypatch, capsys, started):
    def kill_tracking(self, epoch, metrics):
        if epoch == 1:
            started[0].proc.kill()
            started[0].proc.wait()

    line = train_with_tracking_failing(store, tmp_path, monkeypatch, capsys, kill_tracking)
    assert line.startswith(ERROR_PREFIX) and "tracking process exited with status -9" in line


@slow
def test_store_failing_mid_run_keeps_the_results_and_fails_in_one_line(store, tmp_path, monkeypatch, capsys, started):
    db = tmp_path / "mlflow.db"

    def corrupt_store(self, epoch, metrics):
        if epoch == 1:  # the run exists by now once the child has caught up; wait for it
            deadline = time.monotonic() + 60
            while not started[0].run_id and not started[0].error and time.monotonic() < deadline:
                time.sleep(0.05)
            with open(db, "r+b") as fh:  # same inode: the child's connection sees it
                fh.write(b"not a database" * 512)

    line = train_with_tracking_failing(store, tmp_path, monkeypatch, capsys, corrupt_store)
    assert line.startswith(ERROR_PREFIX) and f"MLflow run {started[0].run_id} is incomplete" in line


@slow
def test_bad_tracking_uri_is_one_line_exit_2_without_password(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "studies.cli", *QUICK, "--tracking-uri", "bogus://u:s3cret@x/y"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 2
    (line,) = error_lines(proc.stderr)
    assert line.startswith(f"{ERROR_PREFIX} tracking store bogus://u:***@x/y")
    assert "s3cret" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


@slow
def test_bad_options_create_no_store(store, tmp_path, capsys):
    assert main([*QUICK, "--tracking-uri", store, "--lr", "0"]) == 2
    assert len(error_lines(capsys.readouterr().err)) == 1
    assert not (tmp_path / "mlflow.db").exists()


@slow
def test_training_process_imports_neither_mlflow_nor_matplotlib(store, tmp_path):
    code = ("import sys; from studies.cli import main; "
            f"assert main({[*QUICK, '--tracking-uri', store]!r}) == 0; "
            "print('IMPORTED', sorted(m for m in ('mlflow', 'matplotlib') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTED []" in proc.stdout
    assert only_run(store, "cvae-bench-train")[1].info.status == "FINISHED"


@slow
def test_killed_train_process_leaves_the_run_killed(store, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "studies.cli", "train", "--epochs", "20000", "--limit", "300",
                             "--no-progress", "--tracking-uri", store, "--experiment", "t"],
                            stdout=subprocess.PIPE, stderr=open(tmp_path / "train.err", "w"), text=True,
                            cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        client = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # until the run has logged an epoch (minutes of training are left)
            time.sleep(0.2)
            try:
                client, run = only_run(store)
            except Exception:  # noqa: BLE001 - the store or run does not exist yet
                continue
            if run.data.metrics:
                break
        assert client is not None, f"the run never appeared: {(tmp_path / 'train.err').read_text()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        while time.monotonic() < deadline and only_run(store)[1].info.status == "RUNNING":
            time.sleep(0.2)
        _, run = only_run(store)
        assert run.info.status == "KILLED"
    finally:
        proc.kill()
        proc.wait()


@slow
def test_server_down_at_the_end_spools_the_run_and_says_so(tmp_path, monkeypatch, capsys, started):
    """The tracking process inherits RunTracker's spool: writes held until the end, when the server is
    gone, are spooled; train says so, exits 0, and `cvae-bench sync` completes the run later."""
    from local_services import MlflowServer

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CVAE_BENCH_SPOOL", str(tmp_path / "spool"))
    server = MlflowServer(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts", tmp_path / "server.log")
    server.start()
    try:
        def stop_server(self, epoch, metrics):
            if epoch == 2:  # once the run exists: a server down at the start is a bad store (exit 2)
                deadline = time.monotonic() + 60
                while not started[0].run_id and time.monotonic() < deadline:
                    time.sleep(0.05)
                server.stop()

        monkeypatch.setattr(train_command.EpochTable, "__call__", stop_server)
        assert main([*QUICK, "--tracking-uri", server.uri, "--experiment", "t"]) == 0
        captured = capsys.readouterr()
        assert "tracked as MLflow run" in captured.out
        (note,) = error_lines(captured.err)
        assert note.startswith("note: the MLflow server was unreachable") and "cvae-bench sync" in note
        server.start()
        assert main(["sync", "--tracking-uri", server.uri]) == 0
        client, run = only_run(server.uri)
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_kl")] == [1, 2, 3]
        assert "test_iw_nll" in run.data.metrics
        names = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
        assert names == set(figures.FIGURE_FILES.values())  # replayed artifacts keep their names
    finally:
        server.stop()


def test_held_checkpoint_files_that_a_later_one_or_a_delete_makes_moot_are_not_written(tmp_path):
    def file(name: str, folder: str, artifact_dir: str) -> tuple:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_bytes(b"x")
        return ("file", str(tmp_path / folder / name), artifact_dir)

    first, second = file("state.pt", "a", "checkpoint"), file("state.pt", "b", "checkpoint")
    notes, gone = file("notes.txt", "c", "extra"), file("state.pt", "d", "old")
    held = [first, ("metrics", {"a": 1.0}, 1), notes, gone, second, ("delete", "old"), ("end", "FINISHED", None)]
    assert tracking_child._drop_superseded_files(held) == [
        ("metrics", {"a": 1.0}, 1), notes, second, ("delete", "old"), ("end", "FINISHED", None)]
    assert not (tmp_path / "a").exists() and not (tmp_path / "d").exists()  # the dropped copies are removed
    assert (tmp_path / "b" / "state.pt").exists() and (tmp_path / "c" / "notes.txt").exists()
