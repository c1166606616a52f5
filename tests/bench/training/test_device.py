"""Devices are resolved in one place: resolve_device (auto, cpu, cuda, cuda:N); TrainConfig checks the shape."""

from __future__ import annotations

import pytest
import torch

from bench.training import TrainConfig, resolve_device
from models.config import ConfigError


@pytest.fixture
def two_gpus(monkeypatch):
    """torch reports two visible CUDA devices (nothing is placed on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_cpu_and_auto_without_cuda(no_gpu):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_and_cuda_with_cuda(two_gpus):
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")


@pytest.mark.parametrize("name, index", [("cuda:0", 0), ("cuda:1", 1)])
def test_indexed_cuda_device_that_exists(two_gpus, name, index):
    device = resolve_device(name)
    assert device == torch.device("cuda", index) and device.type == "cuda" and device.index == index


def test_indexed_cuda_device_beyond_the_visible_ones_names_the_value(two_gpus):
    with pytest.raises(ConfigError) as err:
        resolve_device("cuda:2")
    assert str(err.value) == "device='cuda:2': no such CUDA device here (2 visible: cuda:0 to cuda:1)"


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_names_the_value(no_gpu, name):
    with pytest.raises(ConfigError) as err:
        resolve_device(name)
    assert str(err.value) == f"device={name!r}: no CUDA device is available here (use --device cpu or auto)"


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:", "cuda:-1", "cuda:x", "cuda:1.0", "cuda:\u00b2", " cpu",
                                  "mps"])
def test_other_names_are_rejected_with_the_choices(two_gpus, name):
    with pytest.raises(ConfigError) as err:
        resolve_device(name)
    assert str(err.value) == f"device={name!r}: must be one of auto, cpu, cuda"


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:7"])
def test_train_config_accepts_every_device_shape(no_gpu, name):
    """Only the shape is checked on construction: whether the device exists is resolve_device's to say."""
    assert TrainConfig(device=name).device == name


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "cuda:-1", None, 0])
def test_train_config_rejects_other_devices(name):
    with pytest.raises(ConfigError, match=r"device=.*: must be one of auto, cpu, cuda"):
        TrainConfig(device=name)


def test_train_config_resolves_through_resolve_device(two_gpus):
    assert TrainConfig(device="cuda:1").resolve_device() == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="cuda:2"):
        TrainConfig(device="cuda:2").resolve_device()
