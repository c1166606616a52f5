"""What is trained: pure PyTorch modules and objectives (no MLflow, no Optuna)."""

from .beta_schedule import schedule_table, training_loss
from .config import (BACKBONES, BETA_SCHEDULES, FLOW_KINDS, LIKELIHOODS, VARIANTS, BetaConfig, ConfigError,
                     CVAEConfig, FlowConfig)
from .cvae import CVAE, ELBOTerms

__all__ = ["BACKBONES", "BETA_SCHEDULES", "FLOW_KINDS", "LIKELIHOODS", "VARIANTS", "BetaConfig", "ConfigError",
           "CVAEConfig", "CVAE", "ELBOTerms", "FlowConfig", "schedule_table", "training_loss"]
