"""K fits of one shape trained as one vmapped model: each member ends as it would alone (per-member lr,
KL schedule, gradient clipping), a NaN or a raising callback ends that member only and takes it out of
the group, and a member's checkpoint resumes alone or in a group."""

from __future__ import annotations

import math

import pytest
import torch

from bench.training import (BatchMember, NonFiniteLossError, TrainConfig, batched_fit, fit, group_key, model_config,
                            torch_threads)
from bench.training import batched as batched_module
from bench.training import checkpoint as ckpt

TIMING = ("samples_per_s", "step_ms")  # wall clock; a group's step time is not a lone fit's


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread, as a study's trials train on a 2-core machine: small steps on two OpenMP
    threads slow down many times over when the cores are shared."""
    with torch_threads(1):
        yield


def _untimed(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


def _assert_same_histories(mine: list[dict], theirs: list[dict], rel: float = 1e-3) -> None:
    """Epoch by epoch, every metric but the timings within ``rel`` (and 1e-4 nats)."""
    assert [h["epoch"] for h in mine] == [h["epoch"] for h in theirs]
    for a, b in zip(_untimed(mine), _untimed(theirs)):
        assert a == pytest.approx(b, rel=rel, abs=1e-4), a["epoch"]


def _alone(member: BatchMember, data, **kwargs):
    return fit(member.model_cfg, member.train_cfg, data, callbacks=member.callbacks, progress=False,
               checkpoint=member.checkpoint, checkpoint_every=member.checkpoint_every, resume=member.resume,
               **kwargs)


def _members(digits, variant: str, epochs: int, lrs=(3e-4, 1e-3, 3e-3), **train):
    if variant == "beta-cvae":  # three schedules, three weights
        cfgs = [model_config("beta-cvae", digits, hidden=(64,), latent_dim=8, beta=b, beta_schedule=s,
                             warmup_epochs=max(1, epochs // 2), cycles=2)
                for b, s in [(0.5, "constant"), (2.0, "linear"), (4.0, "cyclical")]]
    elif variant == "flow-cvae":  # IAF: masks are buffers, stacked like the parameters
        cfgs = [model_config("flow-cvae", digits, hidden=(64, 64), latent_dim=8, flow="iaf", flow_length=2)] * 3
    else:
        cfgs = [model_config("cvae", digits, hidden=(64,), latent_dim=8)] * 3
    return [BatchMember(cfg, TrainConfig(epochs=epochs, device="cpu", lr=lr, iw_samples=5, **train))
            for cfg, lr in zip(cfgs, lrs)]


CASES = {"cvae-lr": ("cvae", 10, {}), "beta-cvae-schedules": ("beta-cvae", 3, {}),
         "flow-cvae-iaf": ("flow-cvae", 2, {}), "cvae-grad-clip": ("cvae", 2, {"grad_clip": 5.0})}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_each_member_ends_as_it_would_alone(digits, case):
    """Measured on CPU: val -ELBO equal to ~1e-7 relative after 10 epochs (the same random draws; bmm
    instead of mm, the lr scaling); the issue asks for 1 %."""
    variant, epochs, train = case
    members = _members(digits, variant, epochs, **train)
    outcomes = batched_fit(members, digits, progress=False, final_eval=False)
    for member, outcome in zip(members, outcomes):
        alone = _alone(member, digits, final_eval=False)
        assert isinstance(outcome, type(alone)), outcome
        assert len(outcome.history) == epochs
        assert outcome.history[-1]["val_neg_elbo"] == pytest.approx(alone.history[-1]["val_neg_elbo"], rel=0.01)
        _assert_same_histories(outcome.history, alone.history)
    assert len({o.history[-1]["val_neg_elbo"] for o in outcomes}) == 3  # three trainings, not one copied


def test_final_metrics_are_the_members_own(digits):
    """Each member's test metrics are computed on its own CVAE, with the ordinary evaluation."""
    members = _members(digits, "cvae", 2)
    outcomes = batched_fit(members, digits, progress=False)
    for member, outcome in zip(members, outcomes):
        alone = _alone(member, digits)
        assert set(outcome.final) == set(alone.final)
        for name, value in alone.final.items():
            assert outcome.final[name] == pytest.approx(value, rel=1e-3, abs=1e-3), name
    assert len({id(o.model) for o in outcomes}) == 3


def test_a_nan_member_fails_alone(digits):
    """Adam at lr=1e10 turns the loss NaN on the second step; the others train on as alone."""
    members = _members(digits, "cvae", 2, lrs=(1e-3, 1e10, 3e-3))
    outcomes = batched_fit(members, digits, progress=False, final_eval=False)
    assert isinstance(outcomes[1], NonFiniteLossError) and outcomes[1].epoch == 1
    for i in (0, 2):
        _assert_same_histories(outcomes[i].history, _alone(members[i], digits, final_eval=False).history)


def test_a_member_whose_callback_raises_leaves_the_group(digits, monkeypatch):
    """A pruned member stops at its epoch; the group's later steps run without it. Its callbacks run
    on a helper thread beside the group's next epoch, so it leaves during that epoch."""

    class Pruned(Exception):
        pass

    seen: list[int] = []

    def prune_at_2(epoch, metrics):
        seen.append(epoch)
        if epoch == 2:
            raise Pruned(f"pruned at epoch {epoch}")

    members = _members(digits, "cvae", 4)
    members[1].callbacks = [prune_at_2]
    sizes: list[int] = []
    step = batched_module._Batch._step

    def counting_step(self, idx, global_step):
        sizes.append(len(self.slots))
        assert self.leaves[0].shape[0] == len(self.slots)  # the stacked parameters shrank with the group
        return step(self, idx, global_step)

    monkeypatch.setattr(batched_module._Batch, "_step", counting_step)
    outcomes = batched_fit(members, digits, progress=False, final_eval=False)
    assert isinstance(outcomes[1], Pruned) and seen == [1, 2]
    steps = len(digits.train) // 64
    # its epoch-2 callback runs beside epoch 3: the member leaves once it has raised, within epoch 3
    assert sizes[:2 * steps] == [3] * (2 * steps) and sizes[3 * steps:] == [2] * steps
    assert sizes == sorted(sizes, reverse=True) and len(sizes) == 4 * steps
    for i in (0, 2):
        _assert_same_histories(outcomes[i].history, _alone(members[i], digits, final_eval=False).history)


def test_one_member_is_an_ordinary_fit(digits):
    member = _members(digits, "cvae", 2)[0]
    (outcome,) = batched_fit([member], digits, progress=False, final_eval=False)
    assert _untimed(outcome.history) == _untimed(_alone(member, digits, final_eval=False).history)


def test_members_of_other_shapes_are_refused(digits):
    a, b = _members(digits, "cvae", 2)[:2]
    b.model_cfg = model_config("cvae", digits, hidden=(64,), latent_dim=16)
    assert group_key(a) != group_key(b)
    with pytest.raises(ValueError, match="group_key"):
        batched_fit([a, b], digits, progress=False)
    c = _members(digits, "beta-cvae", 2)
    assert len({group_key(m) for m in c}) == 1  # schedules and weights are per member


def test_a_members_checkpoint_resumes_alone_and_in_a_group(digits):
    """Checkpoints written in a group have fit's layout: a member resumes from its own alone, and the
    group resumes together; both end as the group run straight through."""
    epochs = 3
    members = _members(digits, "beta-cvae", epochs)
    saved: list[dict] = [{} for _ in members]
    for i, m in enumerate(members):
        m.checkpoint, m.checkpoint_every = (lambda epoch, state, i=i: saved[i].__setitem__(epoch, state)), 2
    straight = batched_fit(members, digits, progress=False, final_eval=False)
    assert all(sorted(s) == [2] for s in saved)  # every 2 epochs, before the last
    states = [s[2] for s in saved]
    for state, member in zip(states, members):
        ckpt.check_resumable(state, epochs, batched_module.run_fingerprint(member.model_cfg, member.train_cfg,
                                                                           digits))
        assert state["optimizer"]["param_groups"][0]["lr"] == member.train_cfg.lr
    resumed = [BatchMember(m.model_cfg, m.train_cfg, resume=s) for m, s in zip(members, states)]
    assert len({group_key(m) for m in resumed}) == 1 and group_key(resumed[0]) != group_key(members[0])
    together = batched_fit(resumed, digits, progress=False, final_eval=False)
    for i, member in enumerate(resumed):
        alone = _alone(member, digits, final_eval=False)
        for run in (alone, together[i]):
            _assert_same_histories(run.history, straight[i].history, rel=1e-4)


def test_a_refused_resume_fails_that_member_only(digits):
    members = _members(digits, "cvae", 3)
    saved: dict[int, dict] = {}
    members[0].checkpoint, members[0].checkpoint_every = saved.__setitem__, 2
    batched_fit(members[:2], digits, progress=False, final_eval=False)
    bad = dict(saved[2], fingerprint="0" * 16)
    resumed = [BatchMember(members[0].model_cfg, members[0].train_cfg, resume=saved[2]),
               BatchMember(members[1].model_cfg, members[1].train_cfg, resume=bad)]
    outcomes = batched_fit(resumed, digits, progress=False, final_eval=False)
    assert isinstance(outcomes[1], ckpt.CheckpointRefused)
    assert [h["epoch"] for h in outcomes[0].history] == [1, 2, 3]
    assert all(math.isfinite(h["val_neg_elbo"]) for h in outcomes[0].history)
    torch.testing.assert_close(outcomes[0].history[-1]["val_neg_elbo"],
                               _alone(resumed[0], digits, final_eval=False).history[-1]["val_neg_elbo"],
                               rtol=1e-4, atol=0)
