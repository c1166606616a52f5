"""Synthetic data (random images of a named shape) and load_benchmark_data, which also knows real sets."""

from __future__ import annotations

import pytest

from bench.data import SYNTHETIC_PREFIX, load_benchmark_data, parse_synthetic, synthetic_splits
from models.config import ConfigError


def test_synthetic_data_is_mnist_shaped():
    data = synthetic_splits((1, 28, 28), 10, n=256)
    assert data.input_shape == (1, 28, 28) and len(data.train) == 256
    assert 0.0 <= float(data.train.x.min()) and float(data.train.x.max()) <= 1.0
    assert int(data.train.y.max()) < 10


@pytest.mark.parametrize("name, shape", [("synthetic:28x28", (1, 28, 28)), ("synthetic:3x32x32", (3, 32, 32))])
def test_synthetic_names_give_channels_height_width(name, shape):
    assert name.startswith(SYNTHETIC_PREFIX)
    assert parse_synthetic(name) == shape
    data = load_benchmark_data(name, synthetic_n=16)
    assert data.name == name and data.input_shape == shape and data.train.x.shape == (16, *shape)
    assert (len(data.val), len(data.test)) == (100, 100)


@pytest.mark.parametrize("name", ["synthetic:28", "synthetic:0x28", "synthetic:axb", "synthetic:", "synthetic:1x2x3x4"])
def test_bad_synthetic_names_are_config_errors(name):
    with pytest.raises(ConfigError, match="synthetic:HxW or synthetic:CxHxW"):
        parse_synthetic(name)


def test_benchmark_data_loads_real_sets_by_name(digits):
    data = load_benchmark_data("digits")
    assert data.name == "digits" and len(data.train) == len(digits.train)
