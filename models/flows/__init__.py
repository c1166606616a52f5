"""Normalizing flows on the CVAE latent: the :class:`LatentFlow` interface, three flows and :func:`build_flow`."""

from __future__ import annotations

from models.config import FlowConfig
from models.flows.base import LatentFlow
from models.flows.iaf import InverseAutoregressiveFlow
from models.flows.planar import PlanarFlow
from models.flows.radial import RadialFlow

__all__ = ["LatentFlow", "InverseAutoregressiveFlow", "PlanarFlow", "RadialFlow", "build_flow"]


def build_flow(cfg: FlowConfig, latent_dim: int, feature_dim: int) -> LatentFlow:
    """The flow described by ``cfg`` on a D = ``latent_dim`` latent, conditioned on H = ``feature_dim`` features.

    Raises ValueError for an unknown ``cfg.kind`` or a length below 1.
    """
    if not isinstance(cfg.length, int) or cfg.length < 1:
        raise ValueError(f"flow_length={cfg.length!r}: must be an integer >= 1")
    if cfg.kind == "planar":
        return PlanarFlow(latent_dim, feature_dim, cfg.length)
    if cfg.kind == "radial":
        return RadialFlow(latent_dim, feature_dim, cfg.length)
    if cfg.kind == "iaf":
        return InverseAutoregressiveFlow(latent_dim, feature_dim, cfg.length, hidden=cfg.iaf_hidden)
    raise ValueError(f"flow={cfg.kind!r}: must be one of planar, radial, iaf")
