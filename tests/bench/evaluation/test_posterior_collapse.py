"""The posterior-collapse note of ``train`` and ``suite``: said when no latent unit is active, not otherwise."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bench.evaluation.posterior_collapse import collapse_note
from studies.cli import main
from studies.suite import collapse_notes


def test_note_only_when_no_unit_is_active():
    note = collapse_note({"test_active_units": 0.0, "test_kl": -0.002})
    assert note is not None and "no latent unit is active" in note and "-0.002 nats" in note
    assert collapse_note({"test_active_units": 1.0, "test_kl": 0.0}) is None
    assert collapse_note({"test_kl": 0.0}) is None  # not measured: no claim
    assert collapse_note({"test_active_units": math.nan, "test_kl": 0.0}) is None  # no completed trial


def test_suite_notes_name_the_collapsed_variants_only():
    frame = pd.DataFrame([{"variant": "cvae", "trial": 1, "test_active_units": 2.0, "test_kl": 0.7},
                          {"variant": "flow-cvae", "trial": 9, "test_active_units": 0.0, "test_kl": -0.002}])
    (note,) = collapse_notes(frame)
    assert note.startswith("flow-cvae (trial 9): posterior collapse")


@pytest.mark.parametrize("beta, lr, collapsed", [(20.0, 1e-3, True), (0.01, 1e-2, False)])
def test_train_says_so_when_the_trained_model_collapsed(tmp_path, monkeypatch, capsys, beta, lr, collapsed):
    """beta 20 drives every posterior to the prior; beta 0.01 keeps the latent units in use."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--variant", "beta-cvae", "--beta", str(beta), "--lr", str(lr), "--epochs", "4",
                 "--limit", "400", "--no-track", "--no-progress", "--metrics-json", "m.json"]) == 0
    out = capsys.readouterr().out
    active = float(next(line.split()[1] for line in out.splitlines() if line.strip().startswith("test_active_units")))
    assert (active == 0) is collapsed
    assert ("note: posterior collapse" in out) is collapsed
