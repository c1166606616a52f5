"""The hyperparameters each variant's studies search, in one place.

Every variant searches :data:`COMMON`; ``beta-cvae`` adds the KL weight and its schedule,
``flow-cvae`` the flow type and length. Distributions are Optuna's own. :func:`suggest` turns a
trial's values into the keyword arguments of :func:`bench.model_config` and :class:`bench.TrainConfig`.
:data:`SHAPE_PARAMS` are the parameters that set a model's tensor shapes or its batch size: trials
that share them can train as one vmapped model (``--batch-trials``, :mod:`studies.batch_runner`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

COMMON: dict[str, BaseDistribution] = {
    "lr": FloatDistribution(1e-4, 3e-2, log=True),
    "latent_dim": CategoricalDistribution((4, 8, 16, 32)),
    "hidden_width": CategoricalDistribution((64, 128, 256)),
    "hidden_depth": IntDistribution(1, 3),
    "batch_size": CategoricalDistribution((32, 64, 128)),
}

SEARCH_SPACES: dict[str, dict[str, BaseDistribution]] = {
    "cvae": COMMON,
    "beta-cvae": {
        **COMMON,
        "beta": FloatDistribution(0.1, 10.0, log=True),
        "beta_schedule": CategoricalDistribution(("constant", "linear", "cyclical")),
    },
    "flow-cvae": {
        **COMMON,
        "flow": CategoricalDistribution(("planar", "radial", "iaf")),
        "flow_length": IntDistribution(1, 8),
    },
}


#: Parameters that set the model's shapes (latent size, hidden layers, flow type and length) or the
#: batch size; the others (lr, beta, beta_schedule) are per-trial values of a batched group.
SHAPE_PARAMS = ("latent_dim", "hidden_width", "hidden_depth", "batch_size", "flow", "flow_length")


def shape_params(variant: str) -> tuple[str, ...]:
    """The :data:`SHAPE_PARAMS` of ``variant``'s search space."""
    return tuple(name for name in SEARCH_SPACES[variant] if name in SHAPE_PARAMS)


@dataclass(frozen=True)
class TrialConfig:
    """What one trial trains: keyword arguments of ``model_config`` and of ``TrainConfig``."""

    model_kwargs: dict[str, Any]
    train_kwargs: dict[str, Any]


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    raise TypeError(f"unsupported distribution for {name}: {dist!r}")


def suggest(trial: optuna.Trial, variant: str, epochs: int) -> TrialConfig:
    """Sample ``variant``'s space. Schedules are scaled to ``epochs``: a linear warm-up over the
    first half of training, one annealing cycle per 5 epochs (at least one). ``flow-cvae`` always
    warms its KL weight up from 0 to 1 over the first half, as the planar and radial flows' paper
    did (Rezende & Mohamed 2015): at weight 1 from the start, nearly every flow model left its
    latent unused (``studies.feasibility``). ``cvae`` trains the plain ELBO throughout."""
    values = {name: _suggest(trial, name, dist) for name, dist in SEARCH_SPACES[variant].items()}
    model_kwargs: dict[str, Any] = {
        "latent_dim": values["latent_dim"],
        "hidden": (values["hidden_width"],) * values["hidden_depth"],
    }
    if variant == "beta-cvae":
        model_kwargs.update(beta=values["beta"], beta_schedule=values["beta_schedule"],
                            warmup_epochs=max(1, epochs // 2), cycles=max(1, epochs // 5))
    if variant == "flow-cvae":
        model_kwargs.update(flow=values["flow"], flow_length=values["flow_length"], beta_schedule="linear",
                            warmup_epochs=max(1, epochs // 2))
    train_kwargs = {"lr": values["lr"], "batch_size": values["batch_size"]}
    return TrialConfig(model_kwargs, train_kwargs)
