"""``python -m studies.throughput --batch-trials``: one real study per K, the data options passed through."""

from __future__ import annotations

import json

import optuna
import pytest

from studies import throughput
from studies.storage import open_storage, study_names


@pytest.mark.slow
def test_batched_throughput_runs_one_study_per_k_on_the_data_asked_for(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'tp.db'}"
    out = tmp_path / "tp.json"
    code = throughput.main(["--batch-trials", "1,2", "--trials", "2", "--epochs", "1", "--limit", "100",
                            "--image-size", "12", "--storage", storage, "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["setup"] | {"cpus": None} == {"trials": 2, "epochs": 1, "dataset": "digits", "image_size": 12,
                                                 "limit": 100, "device": "cpu", "cpus": None}
    assert [r["batch_trials"] for r in result["batches"]] == [1, 2]
    assert all(r["trials_per_min"] > 0 and r["wall_s"] > 0 for r in result["batches"])
    assert result["batches"][0]["ratio"] == 1.0
    printed = capsys.readouterr().out
    assert "on digits at 12x12 (limit 100), device cpu" in printed and "trials/h" in printed

    opened = open_storage(storage)
    studies = {name: optuna.load_study(study_name=name, storage=opened) for name in study_names(opened)}
    assert len(studies) == 2
    for study in studies.values():
        assert study.user_attrs["image_size"] == 12 and study.user_attrs["limit"] == 100
        trials = study.get_trials(deepcopy=False)
        assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        assert {t.params["latent_dim"] for t in trials} == {throughput.FIXED_SHAPE["latent_dim"]}
    sizes = {name.split("-")[1]: {t.user_attrs.get("batch_group_size", 1) for t in s.get_trials(deepcopy=False)}
             for name, s in studies.items()}
    assert sizes == {"batch1": {1}, "batch2": {2}}  # K=2 trained its two trials as one group
