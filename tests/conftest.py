"""Shared fixtures: the embedded ``digits`` data set, loaded once per session.

Tests run offline (MLflow telemetry off) and with a small fixed number of torch threads, so that
timings and results do not depend on how many cores the CI machine has.
"""

from __future__ import annotations

import os

import pytest
import torch
from machine_state import machine_line, state_report

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
torch.set_num_threads(2)


def pytest_report_header(config):
    return f"machine: {machine_line()}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failure carries the machine's state at that moment (CI shows only what the run printed)."""
    report = yield
    if report.failed:
        report.sections.append(("machine at the failure", state_report()))
    return report


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits as :class:`bench.data.DataSplits` (1437/180/180, CPU)."""
    from bench.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(autouse=True, scope="session")
def _spool_in_tmp(tmp_path_factory):
    """MLflow writes spooled during tests (outages) stay out of the user's ~/.cache."""
    os.environ["CVAE_BENCH_SPOOL"] = str(tmp_path_factory.mktemp("mlflow-spool"))
    os.environ["CVAE_BENCH_CHECKPOINTS"] = str(tmp_path_factory.mktemp("checkpoints"))  # nor checkpoints
    # Commands wait for their tracking writer at most this long (10 s by default): tests check what is
    # written, on a CI machine that may be slow; the tests of the bound itself set it back.
    os.environ.setdefault("CVAE_BENCH_FLUSH_BOUND_S", "120")


@pytest.fixture
def saved_model(tmp_path):
    """Writes a small untrained CVAE (digits' shape and classes) as a saved-model folder; returns its path."""
    from models import CVAE, CVAEConfig
    from models.saved_model import save

    def write(name: str = "saved"):
        torch.manual_seed(0)
        model = CVAE(CVAEConfig(input_shape=(1, 8, 8), num_classes=10, hidden=(16,), latent_dim=2))
        return save(model, tmp_path / name, [str(i) for i in range(10)])

    return write
