"""Configuration dataclasses reject bad values with a ConfigError naming the field and the value."""

from __future__ import annotations

import pytest

from bench.training.config import TrainConfig, resolve_device
from models import BetaConfig, ConfigError, CVAEConfig, FlowConfig

BASE = dict(input_shape=(1, 8, 8), num_classes=10)


def cvae(**overrides) -> CVAEConfig:
    return CVAEConfig(**{**BASE, **overrides})


BAD_MODEL_CONFIGS = {
    "latent_dim=0": (lambda: cvae(latent_dim=0), "latent_dim=0"),
    "latent_dim=2.5": (lambda: cvae(latent_dim=2.5), "latent_dim=2.5"),
    "hidden=()": (lambda: cvae(hidden=()), "hidden=()"),
    "hidden=(64, 0)": (lambda: cvae(hidden=(64, 0)), "hidden=(64, 0)"),
    "variant=foo": (lambda: cvae(variant="foo"), "variant='foo'"),
    "backbone=resnet": (lambda: cvae(backbone="resnet"), "backbone='resnet'"),
    "likelihood=poisson": (lambda: cvae(likelihood="poisson"), "likelihood='poisson'"),
    "num_classes=1": (lambda: cvae(num_classes=1), "num_classes=1"),
    "input_shape 2-d": (lambda: cvae(input_shape=(8, 8)), "input_shape=(8, 8)"),
    "gaussian_scale=0": (lambda: cvae(likelihood="gaussian", gaussian_scale=0.0), "gaussian_scale=0.0"),
    "binarize with gaussian": (lambda: cvae(likelihood="gaussian", binarize=True), "binarize=True"),
    "cvae with beta=4": (lambda: cvae(variant="cvae", beta=BetaConfig(beta=4.0)), "beta=4.0"),
    "cvae with a schedule": (lambda: cvae(variant="cvae", beta=BetaConfig(schedule="linear")), "beta='linear'"),
    "cvae with a flow": (lambda: cvae(variant="cvae", flow=FlowConfig()), "flow='planar'"),
    "beta-cvae with a flow": (lambda: cvae(variant="beta-cvae", flow=FlowConfig(kind="iaf")), "flow='iaf'"),
    "flow-cvae without flow": (lambda: cvae(variant="flow-cvae"), "flow=None"),
    "conv on 10x10": (lambda: cvae(backbone="conv", input_shape=(1, 10, 10)), "input_shape=(1, 10, 10)"),
    "conv on 28x28, 3 halvings": (lambda: cvae(backbone="conv", input_shape=(1, 28, 28), conv_channels=(8, 8, 8)),
                                  "input_shape=(1, 28, 28)"),
    "conv_channels=()": (lambda: cvae(conv_channels=()), "conv_channels=()"),
    "beta<0": (lambda: BetaConfig(beta=-1.0), "beta=-1.0"),
    "beta=nan": (lambda: BetaConfig(beta=float("nan")), "beta=nan"),
    "beta_schedule=cosine": (lambda: BetaConfig(schedule="cosine"), "beta_schedule='cosine'"),
    "warmup_epochs=0": (lambda: BetaConfig(warmup_epochs=0), "warmup_epochs=0"),
    "cycles=0": (lambda: BetaConfig(cycles=0), "cycles=0"),
    "ratio=0": (lambda: BetaConfig(ratio=0.0), "ratio=0.0"),
    "gamma=0": (lambda: BetaConfig(gamma=0.0), "gamma=0.0"),
    "capacity_max<0": (lambda: BetaConfig(capacity_max=-1.0), "capacity_max=-1.0"),
    "flow=maf": (lambda: FlowConfig(kind="maf"), "flow='maf'"),
    "flow_length=0": (lambda: FlowConfig(length=0), "flow_length=0"),
}

BAD_TRAIN_CONFIGS = {
    "lr=0": (dict(lr=0.0), "lr=0.0"),
    "lr<0": (dict(lr=-1e-3), "lr=-0.001"),
    "lr=inf": (dict(lr=float("inf")), "lr=inf"),
    "lr=nan": (dict(lr=float("nan")), "lr=nan"),
    "epochs=0": (dict(epochs=0), "epochs=0"),
    "batch_size=0": (dict(batch_size=0), "batch_size=0"),
    "batch_size=True": (dict(batch_size=True), "batch_size=True"),
    "iw_samples=0": (dict(iw_samples=0), "iw_samples=0"),
    "weight_decay<0": (dict(weight_decay=-0.1), "weight_decay=-0.1"),
    "grad_clip<0": (dict(grad_clip=-1.0), "grad_clip=-1.0"),
    "device=tpu": (dict(device="tpu"), "device='tpu'"),
    "amp=fp16": (dict(amp="fp16"), "amp='fp16'"),
}


def _check_message(err: pytest.ExceptionInfo, field_and_value: str) -> None:
    message = str(err.value)
    assert message.startswith(field_and_value + ":"), message
    assert "\n" not in message
    assert len(message) > len(field_and_value) + 10  # says what is allowed


@pytest.mark.parametrize("make, field_and_value", BAD_MODEL_CONFIGS.values(), ids=BAD_MODEL_CONFIGS.keys())
def test_bad_model_config_names_field_and_value(make, field_and_value):
    with pytest.raises(ConfigError) as err:
        make()
    _check_message(err, field_and_value)


@pytest.mark.parametrize("kwargs, field_and_value", BAD_TRAIN_CONFIGS.values(), ids=BAD_TRAIN_CONFIGS.keys())
def test_bad_train_config_names_field_and_value(kwargs, field_and_value):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**kwargs)
    _check_message(err, field_and_value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("make", [
    lambda: cvae(),
    lambda: cvae(variant="beta-cvae", beta=BetaConfig(schedule="cyclical", beta=0.5)),
    lambda: cvae(variant="flow-cvae", flow=FlowConfig(kind="iaf", length=2), beta=BetaConfig(beta=2.0)),
    lambda: cvae(backbone="conv", input_shape=(3, 32, 32), likelihood="logistic"),
    lambda: cvae(likelihood="bernoulli", binarize=True),
], ids=["default", "beta-cvae cyclical", "flow-cvae with beta", "conv rgb", "binarize"])
def test_valid_configs_are_accepted(make):
    make()


def test_flat_dict_of_a_flow_cvae():
    flat = cvae(variant="flow-cvae", flow=FlowConfig(kind="iaf", length=3), hidden=(64, 32)).to_flat_dict()
    assert flat["flow"] == "iaf" and flat["flow_length"] == 3 and flat["hidden"] == "64x32"
    assert flat["beta"] == 1.0 and flat["beta_schedule"] == "constant"
    assert all(isinstance(v, (str, int, float, bool)) for v in flat.values())


def test_cuda_device_without_gpu_is_a_config_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ConfigError, match="device='cuda'"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
