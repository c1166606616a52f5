"""Checkpoints of a fit: a resumed fit ends exactly where an uninterrupted one does (CPU, fixed seed);
a checkpoint of other hyper-parameters is refused, a corrupt one is unreadable."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.training import checkpoint as ckpt
from bench.training.config import TrainConfig
from bench.training.loop import fit, run_fingerprint
from bench.training.presets import model_config

TIMING = ("samples_per_s", "step_ms")


def _strip(history):
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


@pytest.fixture(scope="module")
def setup(digits):
    cfg = model_config("flow-cvae", digits, flow="iaf", flow_length=2)
    train = TrainConfig(epochs=4, seed=3, device="cpu", iw_samples=5, cond_samples_per_class=5)
    full = fit(cfg, train, digits, progress=False)
    return cfg, train, full


def test_resumed_fit_matches_an_uninterrupted_one(digits, setup, tmp_path):
    cfg, train, full = setup
    saved: dict[int, dict] = {}
    seen: list[int] = []

    def sink(epoch, state):
        saved[epoch] = ckpt.load(ckpt.save(state, tmp_path / f"{epoch}.pt"))

    first = fit(cfg, train, digits, progress=False, checkpoint=sink, checkpoint_every=2)
    assert sorted(saved) == [2]  # no checkpoint at the last epoch
    assert _strip(first.history) == _strip(full.history) and first.final == full.final  # checkpoints change nothing
    resumed = fit(cfg, train, digits, progress=False, resume=saved[2], callbacks=[lambda e, m: seen.append(e)])
    assert seen == [3, 4]
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert _strip(resumed.history) == _strip(full.history)
    for name, value in full.final.items():
        assert resumed.final[name] == pytest.approx(value, rel=1e-6), name


def test_a_checkpoint_of_other_hyper_parameters_is_refused(digits, setup, tmp_path):
    cfg, train, _ = setup
    saved = {}
    fit(cfg, train, digits, progress=False, final_eval=False, checkpoint=lambda e, s: saved.update(s=s),
        checkpoint_every=1)
    other = dataclasses.replace(train, lr=2e-3)
    assert run_fingerprint(cfg, other, digits) != saved["s"]["fingerprint"]
    with pytest.raises(ckpt.CheckpointRefused, match="fingerprint"):
        fit(cfg, other, digits, progress=False, resume=saved["s"])
    path = ckpt.save(saved["s"], tmp_path / "s.pt")
    with pytest.raises(ckpt.CheckpointRefused, match="another configuration"):
        ckpt.load(path, run_fingerprint(cfg, other, digits))
    # device, compile and CUDA graphs do not change what is trained: same fingerprint
    assert run_fingerprint(cfg, dataclasses.replace(train, device="auto"), digits) == saved["s"]["fingerprint"]


def test_a_corrupt_or_incomplete_checkpoint_is_unreadable(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CheckpointUnreadable, match="unreadable"):
        ckpt.load(bad)
    torch.save({"format": 1, "epoch": 2}, tmp_path / "part.pt")
    with pytest.raises(ckpt.CheckpointUnreadable, match="missing fingerprint"):
        ckpt.load(tmp_path / "part.pt")
    with pytest.raises(ckpt.CheckpointUnreadable, match="unreadable"):
        ckpt.load(tmp_path / "absent.pt")


def test_checkpoint_every_must_be_a_count_of_epochs(digits, setup):
    cfg, train, _ = setup
    with pytest.raises(ValueError, match="checkpoint_every=-1"):
        fit(cfg, train, digits, progress=False, checkpoint=lambda e, s: None, checkpoint_every=-1)
    for bad in (-1, True, float("nan")):
        with pytest.raises(ValueError, match=f"checkpoint_seconds={bad!r}"):
            fit(cfg, train, digits, progress=False, checkpoint=lambda e, s: None, checkpoint_seconds=bad)


@pytest.mark.parametrize("seconds, expected", [(2.0, [2, 4, 6]), (2.5, [3, 6]), (0.5, [1, 2, 3, 4, 5, 6]),
                                               (100.0, [])])
def test_checkpoints_by_time_come_at_the_first_epoch_that_ends_that_long_after_the_last(
        digits, setup, monkeypatch, seconds, expected):
    import bench.training.loop as loop

    cfg, train, _ = setup
    ticks = iter(range(100))  # the clock reads 0 at the start and 1 s more at each epoch's end
    monkeypatch.setattr(loop, "checkpoint_clock", lambda: float(next(ticks)))
    saved = []
    fit(cfg, dataclasses.replace(train, epochs=7), digits, progress=False, final_eval=False,
        checkpoint=lambda e, s: saved.append(e), checkpoint_seconds=seconds)
    assert saved == expected  # never at the last epoch (7)
