"""What is trained: pure PyTorch modules and objectives (no MLflow, no Optuna).

The configs are torch-free and imported at once (the command line reads their choices); the modules
that need torch load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from models.config import (
    BACKBONES,
    BETA_SCHEDULES,
    FLOW_KINDS,
    LIKELIHOODS,
    VARIANTS,
    BetaConfig,
    ConfigError,
    CVAEConfig,
    FlowConfig,
)

if TYPE_CHECKING:
    from models.beta_schedule import schedule_table, training_loss
    from models.cvae import CVAE, ELBOTerms

_LAZY = {"CVAE": "models.cvae", "ELBOTerms": "models.cvae", "schedule_table": "models.beta_schedule",
         "training_loss": "models.beta_schedule"}

__all__ = ["BACKBONES", "BETA_SCHEDULES", "FLOW_KINDS", "LIKELIHOODS", "VARIANTS", "BetaConfig", "ConfigError",
           "CVAEConfig", "CVAE", "ELBOTerms", "FlowConfig", "schedule_table", "training_loss"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
