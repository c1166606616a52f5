"""A saved CVAE folder (:mod:`models.saved_model`) as an MLflow 3 logged model of a run; registering one;
finding and loading one.

The model is a pyfunc model whose ``data`` is the saved folder, whose ``code`` is the ``models`` package
(pure PyTorch) and whose loader is :mod:`models.saved_model`: it reloads with only torch installed
(``mlflow.pyfunc.load_model(uri).predict(labels)`` draws images), with explicit pip requirements. The
MLmodel folder is assembled from MLflow's own pieces (``Model``, ``pyfunc.add_to_model``) rather than by
``mlflow.pyfunc.save_model``, which first maps every installed distribution to its modules (~1.7 s of CPU
per process). Writing runs in the writer process, which never imports torch.
"""

from __future__ import annotations

import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import models

#: The name of a logged model whose run has no name (a model is named after its run:
#: ``<variant>-<dataset>`` for ``train``, ``<variant>-trial-<n>`` for a trial), and every model's ``model_type``.
MODEL_NAME = "cvae"
MODEL_TYPE = "cvae"
#: The served model's input column (class indices) and its parameters with their defaults:
#: ``temperature`` scales the prior draws, ``seed`` < 0 draws fresh latents at every request.
LABEL_COLUMN = "label"
PREDICT_PARAMS = {"temperature": 1.0, "seed": -1}
LOADER_MODULE = "models.saved_model"
#: :data:`models.saved_model.CONFIG_FILE`, named here without importing torch (a test pins the two).
SAVED_CONFIG_FILE = "cvae.json"
#: Where the ``models`` package is copied from (the code the logged model carries).
MODELS_PACKAGE = Path(models.__file__).resolve().parent


def pip_requirements(torch_version: str) -> list[str]:
    """What loading the model needs: torch (the version it was trained with, without a local build
    suffix such as ``+cu130``) and numpy. MLflow itself is added by MLflow."""
    return [f"torch=={torch_version.split('+')[0]}", "numpy"]


def signature(input_shape: Sequence[int]) -> Any:
    """What the model serves: a column of class indices (long) in, images (N, C, H, W) float32 in [0, 1]
    out (decoder means), the parameters :data:`PREDICT_PARAMS`. MLflow's UI and registry show it."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([ColSpec("long", LABEL_COLUMN)]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *input_shape), name="images")]),
        params=ParamSchema([ParamSpec("temperature", "double", PREDICT_PARAMS["temperature"]),
                            ParamSpec("seed", "long", PREDICT_PARAMS["seed"])]))


def input_example(num_classes: int) -> tuple[dict[str, list[int]], dict[str, float]]:
    """Two labels (the first and the last class) and a temperature: the request the UI shows, saved as
    ``serving_input_example.json`` (``{"inputs": {"label": [...]}, "params": {...}}``)."""
    return {LABEL_COLUMN: [0, num_classes - 1]}, {"temperature": 0.8}


def write_model_folder(path: Path, saved_folder: Path, *, model_id: str, artifact_location: str, run_id: str,
                       requirements: Sequence[str]) -> None:
    """An MLflow model folder at ``path``: MLmodel (with its signature), data/, code/models/, the input
    example, requirements and environment files."""
    import json

    from mlflow.models import Model
    from mlflow.models.utils import _save_example
    from mlflow.pyfunc import add_to_model
    from mlflow.utils.environment import _mlflow_conda_env, _PythonEnv

    path.mkdir(parents=True)
    shutil.copytree(saved_folder, path / "data")
    shutil.copytree(MODELS_PACKAGE, path / "code" / "models", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    meta = json.loads((Path(saved_folder) / SAVED_CONFIG_FILE).read_text())
    mlflow_model = Model(artifact_path=artifact_location, model_uuid=model_id, run_id=run_id, model_id=model_id,
                         signature=signature(meta["config"]["input_shape"]))
    _save_example(mlflow_model, input_example(len(meta["class_names"])), str(path))
    add_to_model(mlflow_model, loader_module=LOADER_MODULE, data="data", code="code", conda_env="conda.yaml",
                 python_env="python_env.yaml")
    (path / "requirements.txt").write_text("\n".join(requirements) + "\n")
    _mlflow_conda_env(path / "conda.yaml", additional_pip_deps=list(requirements), install_mlflow=False)
    _PythonEnv(python=platform.python_version(), build_dependencies=["pip"],
               dependencies=["-r requirements.txt"]).to_yaml(path / "python_env.yaml")
    mlflow_model.save(str(path / "MLmodel"))


def begin_logged_model(client: Any, run_id: str, saved_folder: str | Path, *, step: int, params: Mapping[str, str],
                       tags: Mapping[str, str], requirements: Sequence[str]) -> str:
    """Log ``saved_folder`` as a PENDING logged model of run ``run_id`` (an output of the run at ``step``),
    named after the run: its files are written, its metrics come with :func:`finish_logged_model`. ``client`` is a plain
    ``MlflowClient``. Returns the model id (``m-...``)."""
    from mlflow.entities import LoggedModelOutput

    run = client.get_run(run_id)
    experiment_id = run.info.experiment_id
    logged = client.create_logged_model(experiment_id, name=run.info.run_name or MODEL_NAME, source_run_id=run_id,
                                        params=dict(params), tags=dict(tags), model_type=MODEL_TYPE)
    try:
        with tempfile.TemporaryDirectory(prefix="cvae-bench-model-") as tmp:
            folder = Path(tmp) / "model"
            write_model_folder(folder, Path(saved_folder), model_id=logged.model_id,
                               artifact_location=logged.artifact_location, run_id=run_id, requirements=requirements)
            client.log_model_artifacts(logged.model_id, str(folder))
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=step)])
    except BaseException:
        client.finalize_logged_model(logged.model_id, "FAILED")
        raise
    return logged.model_id


def finish_logged_model(client: Any, run_id: str, model_id: str, *, step: int, metrics: Mapping[str, float] | None,
                        dataset: Mapping[str, str] | None = None) -> None:
    """Link ``metrics`` (at ``step``; and to ``dataset`` -- ``{"name", "digest"}`` -- when given) to the
    pending model ``model_id`` of run ``run_id`` and make it READY; ``metrics`` None: mark it FAILED
    (its metrics never came: the run ended before they were computed)."""
    from mlflow.entities import Metric

    if metrics is None:
        client.finalize_logged_model(model_id, "FAILED")
        return
    now = int(time.time() * 1000)
    named = dict(dataset_name=dataset["name"], dataset_digest=dataset["digest"]) if dataset else {}
    rows = [Metric(k, float(v), now, step, model_id=model_id, **named) for k, v in metrics.items()]
    if rows:
        client.log_batch(run_id, metrics=rows)
    client.finalize_logged_model(model_id, "READY")


# --------------------------------------------------------------------------------------------------
# Finding and loading a logged model

#: What ``--model`` accepts, for error messages.
URI_FORMS = "models:/NAME@ALIAS, models:/NAME/VERSION, models:/MODEL_ID or a run id"


#: The model-version tag that names the version's logged model. Versions are registered from the
#: model's artifact location: SQL registry stores resolve a ``models:/m-...`` source through the
#: process-wide tracking URI, not the client's, and keep no ``model_id``.
MODEL_ID_TAG = "mlflow_model_id"


def version_model_id(version: Any) -> str | None:
    """The logged model a registered model version points at: its ``model_id``, else its
    :data:`MODEL_ID_TAG`, else the id in a ``models:/m-...`` source."""
    source = version.source or ""
    return (version.model_id or (version.tags or {}).get(MODEL_ID_TAG)
            or (source[len("models:/"):] if source.startswith("models:/m-") else None))


def register_run_model(client: Any, name: str, run_id: str, *, version_tags: Mapping[str, str],
                       alias: str | None = None, model_tags: Mapping[str, str] = (), description: str = "") -> str:
    """Register the logged model of run ``run_id`` under ``name`` (created, with ``model_tags`` and
    ``description``, if new) unless that model is a version of it already, and point ``alias`` at its
    version. Returns the version. A run without a READY logged model is a ``LookupError``."""
    from mlflow.exceptions import MlflowException

    model = find_run_model(client, run_id)
    if model is None:
        raise LookupError(f"run {run_id} has no logged model to register (trained with --no-model?)")
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, tags=dict(model_tags), description=description)
    registered = {version_model_id(v): v.version for v in client.search_model_versions(f"name='{name}'")}
    version = registered.get(model.model_id)
    if version is None:
        version = client.create_model_version(name, source=model.artifact_location, run_id=run_id,
                                              model_id=model.model_id,
                                              tags={MODEL_ID_TAG: model.model_id, **version_tags}).version
        _link_version(client, model, name, str(version))
    if alias:
        client.set_registered_model_alias(name, alias, str(version))
    return str(version)


def _link_version(client: Any, model: Any, name: str, version: str) -> None:
    """Name the version on the logged model (the ``mlflow.modelVersions`` tag ``mlflow.register_model``
    writes), so that the UI's Models tab shows where each model is registered."""
    import json

    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    versions = json.loads(model.tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
    entry = {"name": name, "version": version}
    if entry not in versions:
        client.set_logged_model_tags(model.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([*versions, entry])})


def find_run_model(client: Any, run_id: str) -> Any | None:
    """The latest READY logged model whose source run is ``run_id`` (None if the run logged none)."""
    experiment_id = client.get_run(run_id).info.experiment_id
    found = client.search_logged_models(experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'",
                                        order_by=[{"field_name": "creation_timestamp", "ascending": False}])
    ready = [m for m in found if str(m.status) in ("READY", "LoggedModelStatus.READY")]
    return ready[0] if ready else None


def resolve_model(client: Any, uri: str) -> Any:
    """The logged model ``uri`` names (see :data:`URI_FORMS`); a :class:`bench.errors.CLIError` naming the
    URI, and where it can what exists, when there is no such model."""
    from mlflow.exceptions import MlflowException

    from bench.errors import CLIError

    def missing(what: str) -> CLIError:
        return CLIError(f"--model {uri}: {what}")

    try:
        if not uri.startswith("models:/"):
            try:
                client.get_run(uri)
            except MlflowException:
                raise missing(f"no run {uri!r} in this tracking store (give {URI_FORMS})") from None
            model = find_run_model(client, uri)
            if model is None:
                raise missing(f"run {uri} logged no model (was it trained with --no-model, pruned or failed?)")
            return model
        ref = uri[len("models:/"):]
        if ref.startswith("m-") and "/" not in ref and "@" not in ref:
            try:
                return client.get_logged_model(ref)
            except MlflowException:
                raise missing(f"no logged model with id {ref!r}") from None
        name, alias, version = ref, None, None
        if "@" in ref:
            name, alias = ref.split("@", 1)
        elif "/" in ref:
            name, version = ref.rsplit("/", 1)
        try:
            registered = client.get_registered_model(name)
        except MlflowException:
            names = sorted(m.name for m in client.search_registered_models())
            raise missing(f"no registered model {name!r}; registered: {', '.join(names) or 'none'}") from None
        try:
            mv = (client.get_model_version_by_alias(name, alias) if alias is not None
                  else client.get_model_version(name, version or ""))
        except MlflowException:
            if alias is not None:
                have = ", ".join(sorted(registered.aliases)) or "none"
                raise missing(f"registered model {name!r} has no alias {alias!r}; its aliases: {have}") from None
            versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
            raise missing(f"registered model {name!r} has no version {version!r}; its versions: "
                          f"{', '.join(map(str, versions)) or 'none'}") from None
        model_id = version_model_id(mv)
        if not model_id:
            raise missing(f"version {mv.version} of {name!r} is not a logged model (its source is {mv.source})")
        return client.get_logged_model(model_id)
    except CLIError:
        raise
    except MlflowException as exc:
        raise missing(" ".join(str(exc).split())[:300]) from None


def load_logged_model(client: Any, uri: str, *, map_location: str = "cpu") -> Any:
    """The :class:`models.saved_model.SavedCVAE` behind ``uri``, downloaded to a temporary folder.

    Missing or corrupt files are one :class:`bench.errors.CLIError` line naming the URI."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from bench.errors import CLIError
    from models.saved_model import SavedModelError, load

    model = resolve_model(client, uri)
    with tempfile.TemporaryDirectory(prefix="cvae-bench-load-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location, dst_path=tmp,
                                                        tracking_uri=client._tracking_client.tracking_uri)
        except (MlflowException, OSError) as exc:
            raise CLIError(f"--model {uri}: cannot download {model.model_id}'s files "
                           f"({' '.join(str(exc).split())[:200]})") from None
        try:
            return load(Path(local) / "data", map_location=map_location)
        except SavedModelError as exc:
            raise CLIError(f"--model {uri}: the logged model's files are missing or corrupt: {exc}") from None
