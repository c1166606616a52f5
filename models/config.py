"""Model configuration: plain dataclasses, validated on construction.

A bad value raises :class:`ConfigError` naming the field, the value and what is allowed, e.g.
``latent_dim=0: must be an integer >= 1``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

VARIANTS = ("cvae", "beta-cvae", "flow-cvae")
BACKBONES = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "gaussian", "logistic")
BETA_SCHEDULES = ("constant", "linear", "cyclical", "capacity")
FLOW_KINDS = ("planar", "radial", "iaf")


class ConfigError(ValueError):
    """A configuration value is out of range; the message is one line meant for users."""


def _require(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r}: {allowed}")


def _positive_int(name: str, value: Any) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
             name, value, "must be an integer >= 1")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    _require(value in choices, name, value, f"must be one of {', '.join(choices)}")


@dataclass(frozen=True)
class BetaConfig:
    """How the KL term is weighted in the *training* loss (reported ELBOs always use beta = 1).

    - ``constant``: weight ``beta`` throughout.
    - ``linear``: warm-up from 0 to ``beta`` over ``warmup_epochs``.
    - ``cyclical``: ``cycles`` cycles over the run; in each, the weight rises linearly from 0 to
      ``beta`` over the first ``ratio`` of the cycle, then stays (Fu et al. 2019).
    - ``capacity``: loss = recon + ``gamma`` * |KL - C|, with C rising linearly from 0 to
      ``capacity_max`` nats over ``capacity_epochs`` (Burgess et al. 2018).
    """

    schedule: str = "constant"
    beta: float = 1.0
    warmup_epochs: int = 10
    cycles: int = 4
    ratio: float = 0.5
    gamma: float = 100.0
    capacity_max: float = 25.0
    capacity_epochs: int = 20

    def __post_init__(self) -> None:
        _choice("beta_schedule", self.schedule, BETA_SCHEDULES)
        _require(isinstance(self.beta, (int, float)) and self.beta >= 0 and self.beta == self.beta
                 and self.beta != float("inf"), "beta", self.beta, "must be a finite number >= 0")
        _positive_int("warmup_epochs", self.warmup_epochs)
        _positive_int("cycles", self.cycles)
        _require(0 < self.ratio <= 1, "ratio", self.ratio, "must be in (0, 1]")
        _require(self.gamma > 0, "gamma", self.gamma, "must be > 0")
        _require(self.capacity_max >= 0, "capacity_max", self.capacity_max, "must be >= 0 (nats)")
        _positive_int("capacity_epochs", self.capacity_epochs)

    @property
    def is_identity(self) -> bool:
        """True when the training loss is the plain negative ELBO."""
        return self.schedule == "constant" and self.beta == 1.0


@dataclass(frozen=True)
class FlowConfig:
    """A normalizing flow of ``length`` K layers applied to the posterior sample z0."""

    kind: str = "planar"
    length: int = 4
    iaf_hidden: int = 64

    def __post_init__(self) -> None:
        _choice("flow", self.kind, FLOW_KINDS)
        _positive_int("flow_length", self.length)
        _positive_int("iaf_hidden", self.iaf_hidden)


@dataclass(frozen=True)
class CVAEConfig:
    """A conditional VAE and its variants.

    ``input_shape`` is (C, H, W) of images with values in [0, 1]; the condition is a class index in
    ``[0, num_classes)``, one-hot encoded and concatenated at the encoder input and decoder input.
    ``hidden`` are the MLP layer widths (the seed preset is ``(128,)``); for the ``conv`` backbone
    they are the widths of the fully connected layers after the convolutions.
    """

    input_shape: tuple[int, int, int]
    num_classes: int
    variant: str = "cvae"
    backbone: str = "mlp"
    hidden: tuple[int, ...] = (128,)
    conv_channels: tuple[int, ...] = (32, 64)
    latent_dim: int = 32
    likelihood: str = "bernoulli"
    learn_scale: bool = False
    gaussian_scale: float = 0.1
    binarize: bool = False
    beta: BetaConfig = field(default_factory=BetaConfig)
    flow: FlowConfig | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        object.__setattr__(self, "hidden", tuple(self.hidden))
        object.__setattr__(self, "conv_channels", tuple(self.conv_channels))
        _require(len(self.input_shape) == 3 and all(isinstance(s, int) and s >= 1 for s in self.input_shape),
                 "input_shape", self.input_shape, "must be (channels, height, width) of positive integers")
        _require(isinstance(self.num_classes, int) and self.num_classes >= 2, "num_classes",
                 self.num_classes, "must be an integer >= 2")
        _choice("variant", self.variant, VARIANTS)
        _choice("backbone", self.backbone, BACKBONES)
        _require(len(self.hidden) >= 1 and all(isinstance(h, int) and h >= 1 for h in self.hidden),
                 "hidden", self.hidden, "must be one or more layer widths >= 1")
        _require(len(self.conv_channels) >= 1 and all(isinstance(h, int) and h >= 1 for h in self.conv_channels),
                 "conv_channels", self.conv_channels, "must be one or more channel counts >= 1")
        _positive_int("latent_dim", self.latent_dim)
        _choice("likelihood", self.likelihood, LIKELIHOODS)
        _require(self.gaussian_scale > 0, "gaussian_scale", self.gaussian_scale, "must be > 0")
        _require(not (self.binarize and self.likelihood != "bernoulli"), "binarize", self.binarize,
                 "dynamic binarisation needs likelihood=bernoulli")
        if self.backbone == "conv":
            _, h, w = self.input_shape
            factor = 2 ** len(self.conv_channels)
            _require(h % factor == 0 and w % factor == 0, "input_shape", self.input_shape,
                     f"the conv backbone halves the image {len(self.conv_channels)} times: "
                     f"height and width must be divisible by {factor}")
        if self.variant == "cvae":
            _require(self.beta.is_identity, "beta", self.beta.beta if self.beta.schedule == "constant"
                     else self.beta.schedule, "variant cvae trains the plain ELBO (beta=1, constant); "
                     "use variant beta-cvae to weight the KL term")
            _require(self.flow is None, "flow", self.flow and self.flow.kind,
                     "variant cvae has no flow; use variant flow-cvae")
        if self.variant == "beta-cvae":
            _require(self.flow is None, "flow", self.flow and self.flow.kind,
                     "variant beta-cvae has no flow; use variant flow-cvae (which also takes beta options)")
        if self.variant == "flow-cvae":
            _require(self.flow is not None, "flow", None, "variant flow-cvae needs a flow: planar, radial or iaf")

    @property
    def input_dim(self) -> int:
        """Number of pixel values per example (C * H * W)."""
        c, h, w = self.input_shape
        return c * h * w

    def to_dict(self) -> dict[str, Any]:
        """The config as nested JSON-ready data; :meth:`from_dict` rebuilds it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CVAEConfig":
        """The config :meth:`to_dict` wrote (validated again; unknown keys are a ConfigError)."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        _require(not unknown, "config", unknown, f"unknown keys; expected some of {', '.join(sorted(known))}")
        values = dict(data)
        values["beta"] = BetaConfig(**values.get("beta", {}))
        values["flow"] = FlowConfig(**values["flow"]) if values.get("flow") else None
        return cls(**values)

    def to_flat_dict(self) -> dict[str, Any]:
        """The whole config as one flat ``{name: value}`` mapping, readable as MLflow params."""
        flat: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if key == "beta":
                flat.update({("beta_schedule" if k == "schedule" else f"beta_{k}" if k != "beta" else "beta"): v
                             for k, v in value.items()})
            elif key == "flow":
                flat["flow"] = value["kind"] if value else "none"
                flat["flow_length"] = value["length"] if value else 0
                if value and value["kind"] == "iaf":
                    flat["iaf_hidden"] = value["iaf_hidden"]
            elif isinstance(value, tuple):
                flat[key] = "x".join(str(v) for v in value)
            else:
                flat[key] = value
        return flat
