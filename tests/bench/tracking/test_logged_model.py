"""What train keeps: the trained CVAE as an MLflow logged model of its run, the data it read as run
inputs; `cvae-bench sample` and `evaluate` on it (real training, a real SQLite store)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.evaluation.metric_names import FINAL_METRICS
from bench.tracking import make_client
from studies.cli import main

slow = pytest.mark.slow
#: Trains a model that generates recognisable digits for each label (test_cond_acc 1.0 measured).
TRAIN = ["train", "--epochs", "10", "--lr", "3e-3", "--latent-dim", "8", "--iw-samples", "5", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tracked train run (with its logged model) shared by the tests of this module."""
    root = tmp_path_factory.mktemp("logged")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        metrics_json = root / "final.json"
        assert main([*TRAIN, "--tracking-uri", uri, "--metrics-json", str(metrics_json)]) == 0
    client = make_client(uri)
    run = client.search_runs([client.get_experiment_by_name("cvae-bench-train").experiment_id])[0]
    return {"root": root, "uri": uri, "client": client, "run": run, "final": json.loads(metrics_json.read_text())}


@pytest.fixture
def in_root(trained, monkeypatch):
    monkeypatch.chdir(trained["root"])
    return trained


def logged_models(client, run):
    return client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                       filter_string=f"source_run_id = '{run.info.run_id}'")


@slow
def test_train_logs_its_model_with_metrics_requirements_and_what_rebuilds_it(trained):
    client, run = trained["client"], trained["run"]
    (model,) = logged_models(client, run)
    assert str(model.status).endswith("READY") and model.model_type == "cvae"
    assert model.name == run.info.run_name == "cvae-digits"  # named after what it is, like its run
    linked = {m.key: m for m in model.metrics}
    for key in [k for k in FINAL_METRICS if k != "test_bits_per_dim"]:
        assert linked[key].value == pytest.approx(run.data.metrics[key]), key
        assert linked[key].dataset_name == "digits" and linked[key].dataset_digest
    assert model.params["latent_dim"] == "8" and model.params["lr"] == "0.003"
    assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
    import mlflow.artifacts

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location,
                                                     dst_path=str(trained["root"] / "dl"), tracking_uri=trained["uri"]))
    requirements = (local / "requirements.txt").read_text().split()
    assert requirements[0] == f"torch=={torch.__version__.split('+')[0]}" and "numpy" in requirements
    meta = json.loads((local / "data" / "cvae.json").read_text())
    assert meta["config"]["input_shape"] == [1, 8, 8] and meta["class_names"] == [str(i) for i in range(10)]
    assert (local / "code" / "models" / "cvae.py").is_file()
    assert "loader_module: models.saved_model" in (local / "MLmodel").read_text()


@slow
def test_the_logged_model_has_a_signature_and_an_input_example_that_predicts(trained):
    """What MLflow's model and registry pages show as inputs and outputs, and the request they offer."""
    import mlflow.pyfunc
    from mlflow.models import Model

    client, run = trained["client"], trained["run"]
    (model,) = logged_models(client, run)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", trained["uri"])
        loaded = mlflow.pyfunc.load_model(f"models:/{model.model_id}")
    signature = loaded.metadata.signature
    assert signature.inputs.to_dict() == [{"type": "long", "name": "label", "required": True}]
    (output,) = signature.outputs.to_dict()
    assert output["tensor-spec"]["dtype"] == "float32" and list(output["tensor-spec"]["shape"]) == [-1, 1, 8, 8]
    assert {p.name: p.default for p in signature.params.params} == {"temperature": 1.0, "seed": -1}
    local = Path(model.artifact_location.removeprefix("file://"))
    request = json.loads((local / "serving_input_example.json").read_text())
    assert request == {"inputs": {"label": [0, 9]}, "params": {"temperature": 0.8}}
    assert Model.load(str(local / "MLmodel")).load_input_example(str(local)) == {"label": [0, 9]}
    images = loaded.predict(request["inputs"], params={**request["params"], "seed": 3})
    assert images.shape == (2, 1, 8, 8) and images.dtype == np.float32 and 0 <= images.min() <= images.max() <= 1
    assert np.array_equal(images, loaded.predict(request["inputs"], params={"temperature": 0.8, "seed": 3}))
    assert not np.array_equal(images, loaded.predict(request["inputs"], params={"temperature": 0.8}))  # fresh draws


def test_the_model_folder_reads_the_saved_config_under_its_name():
    from bench.tracking.logged_model import SAVED_CONFIG_FILE
    from models.saved_model import CONFIG_FILE

    assert SAVED_CONFIG_FILE == CONFIG_FILE


@slow
def test_run_inputs_name_each_split_with_a_digest_and_the_experiment_is_model_training(trained):
    client, run = trained["client"], trained["run"]
    inputs = {d.tags[0].value: d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "validation", "test"}
    assert {d.name for d in inputs.values()} == {"digits"}
    assert len({d.digest for d in inputs.values()}) == 3
    assert run.info.run_name == "cvae-digits"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


@slow
def test_evaluate_reloads_the_model_and_gets_the_logged_metrics(in_root, capsys):
    out = in_root["root"] / "again.json"
    assert main(["evaluate", "--model", in_root["run"].info.run_id, "--dataset", "digits", "--iw-samples", "5",
                 "--tracking-uri", in_root["uri"], "--metrics-json", str(out)]) == 0
    again = json.loads(out.read_text())
    assert again.keys() == in_root["final"].keys()
    for key, value in in_root["final"].items():
        assert again[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key  # same seed, same draws, same CPU


@slow
def test_sample_writes_a_grid_per_label_and_the_judge_recognises_the_labels(in_root):
    from bench.data import load_dataset
    from bench.evaluation import accuracy, train_classifier

    run_id = in_root["run"].info.run_id
    npz = in_root["root"] / "s.npz"
    assert main(["sample", "--model", run_id, "--label", "3", "--label", "7", "--n", "50", "--seed", "1",
                 "--tracking-uri", in_root["uri"], "--out", str(npz)]) == 0
    arrays = np.load(npz)
    images, labels = arrays["images"], arrays["labels"]
    assert images.shape == (100, 1, 8, 8) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert labels.tolist() == [3] * 50 + [7] * 50
    judge = train_classifier(load_dataset("digits"), seed=0)
    recognised = accuracy(judge, torch.from_numpy(images), torch.from_numpy(labels))
    assert recognised >= 0.8, recognised  # measured 1.0 (10 epochs on digits)

    png = in_root["root"] / "s.png"
    assert main(["sample", "--model", run_id, "--n", "6", "--tracking-uri", in_root["uri"], "--out", str(png)]) == 0
    picture = np.asarray(Image.open(png).convert("L"))
    # 8x8 digits enlarged 8 times (64 px each), 6 to a row, one row per class, named at the row's left
    from bench.figures.compute import image_grid
    from bench.figures.draw import grid_layout

    layout = grid_layout(image_grid(torch.zeros(60, 1, 8, 8), nrow=6, title="", row_labels=list("0123456789"),
                                    display_px=64))
    assert layout.scale == 8 and picture.shape[1] >= 6 * 64 and picture.shape[0] >= 10 * 64
    cell = 8 * layout.scale + layout.scale  # a cell and the white line under it
    for row in range(10):
        centre = layout.top + layout.scale + row * cell + 4 * layout.scale
        label_band = picture[centre - 6:centre + 6, :layout.left - 2]
        assert (label_band < 128).any(), f"no label at the left of row {row}"


@slow
def test_bad_labels_uris_and_mismatched_data_are_one_line_errors(in_root, capsys, tmp_path):
    run_id, uri = in_root["run"].info.run_id, in_root["uri"]
    assert main(["sample", "--model", run_id, "--label", "ten", "--tracking-uri", uri, "--out", str(tmp_path / "x.png")]) == 2
    assert "its classes are 0=0, 1=1" in capsys.readouterr().err
    assert main(["sample", "--model", "models:/nope@best", "--tracking-uri", uri, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no registered model 'nope'" in err
    assert main(["sample", "--model", run_id, "--tracking-uri", uri, "--out", str(tmp_path / "x.gif")]) == 2
    assert ".png" in capsys.readouterr().err
    for i in range(3):  # an RGB image folder: 3x8x8 images of 3 classes
        (tmp_path / "rgb" / f"c{i}").mkdir(parents=True)
        for j in range(10):
            Image.fromarray(np.full((8, 8, 3), 20 * j + i, dtype=np.uint8)).save(tmp_path / "rgb" / f"c{i}" / f"{j}.png")
    assert main(["evaluate", "--model", run_id, "--dataset", f"imagefolder:{tmp_path / 'rgb'}",
                 "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "3x8x8 images and 3 classes" in err and "the model takes 1x8x8 images and 10" in err


@slow
def test_a_logged_model_with_missing_files_is_one_line_naming_the_uri(in_root, capsys, tmp_path):
    client, run = in_root["client"], in_root["run"]
    (model,) = logged_models(client, run)
    weights = Path(model.artifact_location.removeprefix("file://")) / "data" / "cvae.pt"
    backup = tmp_path / "cvae.pt"
    shutil.move(weights, backup)
    try:
        code = main(["sample", "--model", f"models:/{model.model_id}", "--tracking-uri", in_root["uri"],
                     "--out", str(tmp_path / "x.png")])
    finally:
        shutil.move(backup, weights)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"--model models:/{model.model_id}: the logged model's files are missing or corrupt" in err


@slow
def test_no_model_logs_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["train", "--epochs", "1", "--limit", "200", "--iw-samples", "2", "--no-progress", "--no-model",
                 "--tracking-uri", uri]) == 0
    client = make_client(uri)
    run = client.search_runs([client.get_experiment_by_name("cvae-bench-train").experiment_id])[0]
    assert run.data.metrics["test_neg_elbo"] > 0 and not list(logged_models(client, run))
    assert run.inputs.dataset_inputs  # inputs are logged with or without a model


def test_dataset_digests_identify_the_split_content():
    from bench.data import load_dataset
    from bench.tracking.dataset_inputs import dataset_inputs

    small, same, other = (dataset_inputs(load_dataset("digits", limit=n)) for n in (100, 100, 200))
    assert [d["digest"] for d in small] == [d["digest"] for d in same]
    assert small[0]["digest"] != other[0]["digest"]  # another --limit: another training split
    assert [d["context"] for d in small] == ["training", "validation", "test"]
    assert json.loads(small[0]["profile"])["num_rows"] == 100


@slow
def test_the_readme_serving_recipe_answers_a_request(trained, tmp_path):
    """`mlflow models serve -m models:/NAME@best --env-manager local` with the venv's bin on PATH (the
    README's recipe), on loopback; the request is the model's own serving example."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    client, run = trained["client"], trained["run"]
    (model,) = logged_models(client, run)
    client.create_registered_model("served")
    version = client.create_model_version("served", source=model.artifact_location, run_id=run.info.run_id,
                                          model_id=model.model_id)
    client.set_registered_model_alias("served", "best", version.version)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
               MLFLOW_TRACKING_URI=trained["uri"], MLFLOW_DISABLE_TELEMETRY="true")
    log = open(tmp_path / "serve.log", "wb")
    server = subprocess.Popen(["mlflow", "models", "serve", "-m", "models:/served@best", "--env-manager", "local",
                               "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-2000:]
            time.sleep(1)
        local = Path(model.artifact_location.removeprefix("file://"))
        body = (local / "serving_input_example.json").read_bytes()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            images = np.asarray(json.loads(answer.read())["predictions"], dtype=np.float32)
        assert images.shape == (2, 1, 8, 8) and 0 <= images.min() <= images.max() <= 1
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # mlflow and the uvicorn it runs
        server.wait(timeout=30)
        log.close()
