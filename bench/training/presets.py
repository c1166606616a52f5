"""From a dataset and a handful of user-facing options to validated configs.

The defaults are the seed article's preset: MLP with one hidden layer of 128, latent 32, Adam at
1e-3, batch 64. Variant defaults: ``beta-cvae`` uses beta = 4, ``flow-cvae`` a planar flow of 4.
"""

from __future__ import annotations

from typing import Any

from bench.data import DataSplits
from models import BetaConfig, CVAEConfig, FlowConfig
from models.config import VARIANTS, ConfigError

DEFAULT_BETA = {"cvae": 1.0, "beta-cvae": 4.0, "flow-cvae": 1.0}


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ConfigError(f"variant={variant!r}: must be one of {', '.join(VARIANTS)}")


def model_config(variant: str, data: DataSplits, *, backbone: str = "mlp", hidden: tuple[int, ...] = (128,),
                 latent_dim: int = 32, likelihood: str | None = None, beta: float | None = None,
                 beta_schedule: str = "constant", flow: str | None = None, flow_length: int = 4,
                 binarize: bool = False, learn_scale: bool = False, **beta_options: Any) -> CVAEConfig:
    """A :class:`CVAEConfig` for ``variant`` on ``data``; ``likelihood=None`` picks the dataset's."""
    check_variant(variant)
    beta_cfg = BetaConfig(schedule=beta_schedule, beta=DEFAULT_BETA[variant] if beta is None else beta,
                          **beta_options)
    flow_cfg = None
    if flow not in (None, "none") or (variant == "flow-cvae" and flow is None):  # "none" asks for no flow
        flow_cfg = FlowConfig(kind=flow or "planar", length=flow_length)
    return CVAEConfig(input_shape=data.input_shape, num_classes=data.num_classes, variant=variant,
                      backbone=backbone, hidden=tuple(hidden), latent_dim=latent_dim,
                      likelihood=likelihood or data.default_likelihood, binarize=binarize,
                      learn_scale=learn_scale, beta=beta_cfg, flow=flow_cfg)
