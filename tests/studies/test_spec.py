"""StudySpec is the one declaration of a study's settings: the commands' options, the suite's config
and the study's stored user attributes are derived from it, and the command modules stay light."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from bench.errors import CLIError
from models.config import ConfigError
from studies.cli import main
from studies.cli.study import dest, spec_from_args, value
from studies.cli.worker import spec_from_args as worker_spec_from_args
from studies.spec import (
    DEFAULT_HEARTBEAT_S,
    DEFAULT_STORAGE,
    Role,
    StudySpec,
    names,
    settings_from_attrs,
    study_attrs,
)
from studies.suite import SUITE_DEFAULTS, SuiteConfig, config_keys, load_config

REPO = Path(__file__).resolve().parents[2]
FIELDS = [f.name for f in dataclasses.fields(StudySpec)]
#: The roles as the design states them (pinned here, so a change to the declaration is a decision).
DEFINING = {"variant", "dataset", "objective", "epochs", "seed", "limit", "image_size"}  # the trials' data too
STORED = {"pruner", "sampler", "iw_samples", "experiment", "trials", "registered_model"}
LOCAL = {"storage", "study_name", "jobs", "batch_trials", "device", "threads", "heartbeat", "timeout", "track", "tracking_uri",
         "data_root", "download", "log_model", "cuda_graphs", "compile", "amp", "checkpoint_every", "keep_checkpoints"}
STORED_ATTRS = (DEFINING | STORED | {"trials_total"}) - {"trials"}


def command_parser(name: str) -> argparse.ArgumentParser:
    import importlib

    sub = argparse.ArgumentParser().add_subparsers()
    return importlib.import_module(f"studies.cli.{name}").add_parser(sub)


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.option_strings}


def test_every_setting_has_one_role_as_designed():
    assert set(names(Role.DEFINES)) == DEFINING
    assert set(names(Role.STORED)) == STORED
    assert set(names(Role.LOCAL)) == LOCAL
    assert sorted(names()) == sorted(FIELDS) == sorted(DEFINING | STORED | LOCAL)


def test_every_field_is_an_option_of_study_with_its_default():
    parser = command_parser("study")
    opts = options(parser)
    dests = {dest(f): f for f in dataclasses.fields(StudySpec)}
    assert set(opts) - set(dests) == {"help", "no_progress"} and set(dests) <= set(opts)
    defaults = parser.parse_args([])
    for name, f in dests.items():
        assert value(defaults, f) == f.default, f.name
        assert opts[name].help, f.name
    assert opts["no_track"].option_strings == ["--no-track"] and not opts["no_track"].default  # dest as before
    assert opts["iw_samples"].option_strings == ["--iw-samples"]
    assert opts["storage"].default == DEFAULT_STORAGE and opts["heartbeat"].default == DEFAULT_HEARTBEAT_S
    assert opts["objective"].choices == ("neg-elbo", "rate-distortion")
    assert "(default 20)" in opts["trials"].help and "(default 10)" in opts["epochs"].help


def test_study_defaults_are_the_spec_defaults():
    args = command_parser("study").parse_args([])
    assert spec_from_args(args) == StudySpec()
    args = command_parser("study").parse_args(["--variant", "beta-cvae", "--no-track", "--limit", "300",
                                               "--timeout", "2.5", "--device", "cpu"])
    assert spec_from_args(args) == StudySpec(variant="beta-cvae", track=False, limit=300, timeout=2.5, device="cpu")


def test_worker_options_default_to_the_studys_values():
    parser = command_parser("worker")
    opts = options(parser)
    assert {dest(f) for f in dataclasses.fields(StudySpec)} <= set(opts)
    for name in DEFINING | STORED:
        assert opts[name].default is None, name  # None: the study's stored value
    defaults = parser.parse_args(["--study-name", "s", "--storage", "sqlite:///x.db"])
    for f in dataclasses.fields(StudySpec):
        if f.name in LOCAL - {"study_name", "storage"}:
            assert value(defaults, f) == f.default, f.name
    assert opts["study_name"].required and opts["storage"].required
    assert opts["trials"].option_strings == ["--trials-total"]  # the worker names it after its stored attribute
    assert "new study default cvae" in opts["variant"].help
    args = parser.parse_args(["--study-name", "s", "--storage", "sqlite:///x.db", "--epochs", "3", "--jobs", "2"])
    stored = {"variant": "flow-cvae", "epochs": 3, "trials": 7, "seed": 5, "limit": 300}
    spec = worker_spec_from_args(args, stored)
    assert spec == StudySpec(variant="flow-cvae", epochs=3, trials=7, seed=5, limit=300, study_name="s",
                             storage="sqlite:///x.db", jobs=2)


def test_suite_config_is_the_spec_without_variant_and_name():
    keys = config_keys()
    assert set(keys) == (set(FIELDS) - {"variant", "study_name"}) | {"variants", "study_prefix"}
    defaults, spec = SuiteConfig(), StudySpec()
    assert (defaults.trials, defaults.epochs, defaults.experiment) == (20, 25, "cvae-bench-suite")
    assert {k: getattr(defaults, k) for k in SUITE_DEFAULTS} == SUITE_DEFAULTS
    for key in set(keys) - set(SUITE_DEFAULTS) - {"variants", "study_prefix"}:
        assert getattr(defaults, key) == getattr(spec, key), key
    assert defaults.variants == ("cvae", "beta-cvae", "flow-cvae") and defaults.study_prefix == "suite"
    specs = SuiteConfig(variants=["cvae", "beta-cvae"], limit=300, track=False).study_specs()
    assert [s.name for s in specs] == ["suite-cvae-digits", "suite-beta-cvae-digits"]
    assert all(s.limit == 300 and not s.track and s.experiment == "cvae-bench-suite" and s.epochs == 25
               for s in specs)


def test_suite_command_line_overrides_the_config(tmp_path):
    from studies.cli.suite import config_from_args

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"track": False, "tracking_uri": "sqlite:///a.db", "trials": 3}))
    parser = command_parser("suite")
    assert config_from_args(parser.parse_args([])) == SuiteConfig()
    assert config_from_args(parser.parse_args(["--no-track"])) == SuiteConfig(track=False)
    config = config_from_args(parser.parse_args(["--config", str(path)]))
    assert (config.track, config.tracking_uri, config.trials) == (False, "sqlite:///a.db", 3)
    config = config_from_args(parser.parse_args(["--config", str(path), "--tracking-uri", "sqlite:///b.db"]))
    assert (config.track, config.tracking_uri, config.trials) == (False, "sqlite:///b.db", 3)


@pytest.mark.parametrize("key, value, message", [
    ("trials", "many", "trials='many' must be an integer"),
    ("timeout", "soon", "timeout='soon' must be a number of seconds"),
    ("track", "yes", "track='yes' must be true or false"),
    ("variants", "cvae", "variants='cvae' must be a list of variant names"),
    ("experiment", None, "experiment=None must be a string"),  # the suite's experiment is a name
    ("limit", 2.5, "limit=2.5 must be an integer"),
    ("pruner", 3, "pruner=3 must be a string"),
    ("dataset", ["digits"], "dataset=['digits'] must be a string"),
])
def test_suite_config_types_come_from_the_spec(tmp_path, key, value, message):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({key: value}))
    with pytest.raises(CLIError) as info:
        load_config(str(path))
    assert str(info.value) == f"--config {path}: {message}"


def test_suite_config_accepts_every_key_and_null_where_the_spec_does(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"pruner": None, "limit": None, "timeout": 30, "threads": 1, "image_size": None,
                                "study_prefix": "p", "variants": ["cvae"], "download": False}))
    config = load_config(str(path))
    assert (config.pruner, config.timeout, config.threads, config.study_prefix, config.variants) == \
        (None, 30, 1, "p", ("cvae",))


@pytest.mark.parametrize("field, value, message", [
    ("trials", 0, "trials=0: must be an integer >= 1"),
    ("jobs", True, "jobs=True: must be an integer >= 1"),
    ("batch_trials", 0, "batch_trials=0: must be an integer >= 1"),
    ("threads", 0, "threads=0: must be an integer >= 1"),
    ("timeout", -1, "timeout=-1: must be a number of seconds > 0"),
    ("seed", "x", "seed='x': must be an integer >= 0"),
    ("limit", "many", "limit='many': must be an integer"),
    ("objective", "elbo", "objective='elbo': must be one of neg-elbo, rate-distortion"),
    ("sampler", "grid", "sampler='grid': must be one of tpe, nsga2, random"),
    ("pruner", "asha", "pruner='asha': must be one of median, hyperband, none"),
    ("variant", "vae", "variant='vae': must be one of cvae, beta-cvae, flow-cvae"),
])
def test_spec_errors_name_the_bad_value(field, value, message):
    with pytest.raises(ConfigError) as info:
        StudySpec(**{field: value})
    assert str(info.value) == message


def test_batch_trials_is_an_option_of_study_worker_and_the_suite_config(tmp_path):
    assert spec_from_args(command_parser("study").parse_args(["--batch-trials", "8"])).batch_trials == 8
    worker = command_parser("worker").parse_args(["--study-name", "s", "--storage", "sqlite:///x.db",
                                                  "--batch-trials", "4"])
    assert worker_spec_from_args(worker, {"trials": 3}).batch_trials == 4
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({"batch_trials": 8, "variants": ["cvae"]}))
    assert [s.batch_trials for s in load_config(str(path)).study_specs()] == [8]


def test_batched_trials_refuse_what_groups_cannot_do():
    with pytest.raises(ConfigError, match="batch_trials=4.*train eager"):
        StudySpec(batch_trials=4, compile=True)
    with pytest.raises(ConfigError, match="batch_trials=4.*without CUDA graphs"):
        StudySpec(batch_trials=4, cuda_graphs=True)
    assert StudySpec(batch_trials=1, compile=True).compile  # one trial at a time: as before


def test_stored_attrs_round_trip():
    spec = StudySpec(variant="beta-cvae", trials=7, limit=300, seed=3, study_name="x", jobs=2)
    attrs = study_attrs(spec)
    assert set(attrs) == STORED_ATTRS and attrs["trials_total"] == 7
    assert settings_from_attrs({**attrs, "mlflow_parent_run_id": "r"}) == \
        {name: getattr(spec, name) for name in DEFINING | STORED} | {"pruner": "median"}
    assert spec.pruner is None and attrs["pruner"] == "median"  # what ran, not null (optuna-dashboard shows it)


def test_a_new_study_stores_exactly_the_declared_attributes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    argv = ["study", "--study-name", "s", "--storage", storage, "--trials", "1", "--epochs", "1", "--limit", "200",
            "--iw-samples", "5", "--no-track", "--no-progress", "--seed", "4"]
    assert main(argv) == 0
    study = optuna.load_study(study_name="s", storage=storage)
    attrs = dict(study.user_attrs)
    # Besides the settings, what ran in Optuna's words (optuna-dashboard shows these), and the objective's name.
    assert attrs.pop("pruner_settings") == "MedianPruner(n_startup_trials=2, n_warmup_steps=0)"
    assert attrs.pop("sampler_settings") == "TPESampler(n_startup_trials=3, constant_liar=True)"
    assert attrs.pop("infeasible_trials") + (attrs.pop("best_feasible_trial") >= 0) == 1  # the one trial's fate
    assert study.metric_names == ["val_neg_elbo"]
    assert set(attrs) == STORED_ATTRS
    assert attrs == study_attrs(StudySpec(trials=1, epochs=1, limit=200, iw_samples=5, seed=4))
    assert main([*argv[:5], "--trials", "2", *argv[7:]]) == 0  # trials_total follows the latest total asked for
    assert optuna.load_study(study_name="s", storage=storage).user_attrs["trials_total"] == 2


HEAVY = ("torch", "optuna", "mlflow", "pandas", "matplotlib", "tqdm", "sqlalchemy")


def test_command_modules_import_nothing_heavy():
    code = ("import argparse, importlib, sys\n"
            "sub = argparse.ArgumentParser().add_subparsers()\n"
            "for name in ('study', 'worker', 'suite', 'report'):\n"
            "    importlib.import_module('studies.cli.' + name).add_parser(sub)\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_non_command_modules_never_import_the_commands():
    for path in sorted((REPO / "studies").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("studies.cli"), f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not [a for a in node.names if a.name.startswith("studies.cli")], path.name


def test_throughput_module_still_runs():
    out = subprocess.run([sys.executable, "-m", "studies.throughput", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "--workers" in out.stdout, out.stderr


@pytest.mark.parametrize("cores, jobs, threads, expected", [(2, 1, None, 1), (16, 1, None, 8), (16, 3, None, 2),
                                                            (2, 4, None, 1), (16, 1, 5, 5)])
def test_threads_per_job_are_half_the_cores_shared_among_the_jobs_as_train_uses(
        monkeypatch, cores, jobs, threads, expected):
    import os

    from bench.training.config import default_cpu_threads

    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert StudySpec(jobs=jobs, threads=threads, device="cpu").resolved_threads == expected
    if threads is None:  # the study's default is train's: one definition
        assert default_cpu_threads(jobs) == expected
