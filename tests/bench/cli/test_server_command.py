"""``cvae-bench server``: bad options are one-line errors before any MLflow server starts."""

from __future__ import annotations

import subprocess

import pytest

from studies.cli import main


@pytest.mark.parametrize("argv, message", [
    (["--host", "0.0.0.0"], "refusing to bind 0.0.0.0"),
    (["--port", "70000"], "--port 70000: must be in 1..65535"),
    (["--workers", "0"], "--workers 0: must be an integer >= 1"),
    (["--workers", "-1"], "--workers -1: must be an integer >= 1"),
])
def test_bad_server_options_are_one_line_and_start_nothing(monkeypatch, capsys, argv, message):
    def no_server(*args, **kwargs):
        raise AssertionError("an MLflow server was started")

    monkeypatch.setattr(subprocess, "Popen", no_server)
    assert main(["server", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cvae-bench server: error:") and message in err, err
