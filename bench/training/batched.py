"""Train several fits whose models have the same shapes as one vmapped model: :func:`batched_fit`.

A CVAE of the sizes a study tries fills neither a GPU nor two CPU cores: a step is a few dozen small
kernels, and its time goes to launching them. K members that share their shapes train as one model
(``torch.func``: :func:`~torch.func.stack_module_state`, :func:`~torch.func.functional_call`,
:func:`~torch.func.vmap`), so a step launches each kernel once for all K. Each member keeps its own:

- configuration values: learning rate (a (K,) tensor: Adam runs fused over the stacked parameters at
  lr 1 and each member's update is scaled by its own lr), KL-weight schedule (a (K, steps, 2) table),
  checkpoints, epoch callbacks (Optuna reports and pruning, the MLflow run) and history;
- outcome: a NaN loss, a callback that raises (pruning), a failed checkpoint end that member only;
  it leaves the group, whose remaining members go on without it (its compute stops there).

A member's end of an epoch -- its callbacks, then its checkpoint (a snapshot taken at the epoch's
end) -- runs on a helper thread, in order, beside the group's next epoch: the callbacks of a study's
trial write to the Optuna storage and to MLflow (~3-20 ms a write on the 2-core VM, fsync), which
for K members would otherwise stall the group K times per epoch. The group checks them after each
step and waits for them at the end of the epoch: a member whose callback raised (pruned) leaves the
group then, after a few steps of the next epoch whose results are dropped (its outcome is what it
would have been alone). Callbacks must therefore be thread-safe; each member's run in order.

Members train in lock step, so they must share what sets a step's shapes and its random draws: the
model shapes, batch size, epochs, seed, and the epoch and RNG states a resumed member starts from
(:func:`group_key`). A fit's random draws -- its data order (the epoch permutations of its seeded
``torch.Generator``) and the global RNG stream (initialisation, reparameterisation noise, the
validation pass) -- depend only on its seed and its shapes, so the members of a group would draw
the same ones alone: the group draws them once (one permutation per epoch, each batch gathered once,
``vmap(randomness="same")`` for the noise), every member gets exactly what it would draw alone, and
ends within floating-point rounding of the same fit run alone (bmm instead of mm; the lr scaling).
A member's checkpoint has the layout of :func:`bench.training.loop.fit`'s: a fit resumes from
either, alone or in a group.

One member is an ordinary :func:`fit`. Groups run eager, also on CUDA (no CUDA graphs, no
``torch.compile``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import statistics
import time
from collections.abc import Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

import bench.training.checkpoint as ckpt
from bench.data import DataSplits
from bench.evaluation import final_metrics
from bench.training.config import TrainConfig
from bench.training.harness_loop import device_context
from bench.training.loop import (
    CheckpointSink,
    EpochCallback,
    FitResult,
    NonFiniteLossError,
    fit,
    run_fingerprint,
    seed_everything,
)
from bench.training.step import autocast_context, make_optimizer
from bench.training.step_timer import StepTimer
from models import CVAE, BetaConfig, CVAEConfig, schedule_table, training_loss


@dataclass
class BatchMember:
    """One fit of a batch: what :func:`bench.training.loop.fit` takes besides the data."""

    model_cfg: CVAEConfig
    train_cfg: TrainConfig
    callbacks: Sequence[EpochCallback] = ()
    checkpoint: CheckpointSink | None = None
    checkpoint_every: int = 0
    resume: dict | None = None
    on_trained: Callable[[FitResult], None] | None = None


#: What a member ends with: its FitResult, or the exception that stopped it (as ``fit`` would raise it).
Outcome = FitResult | Exception


def group_key(member: BatchMember) -> Hashable:
    """Members with equal keys can train as one vmapped model.

    Everything of the model config but the KL schedule's values (a capacity schedule trains another
    loss: it stays in the key), everything of the training config but the learning rate, and for a
    resumed member the epoch it resumes after and its RNG and data-order states (the group draws once).
    """
    beta = member.model_cfg.beta
    model = dataclasses.replace(member.model_cfg, beta=BetaConfig())  # the default is every variant's identity
    resumed = None
    if member.resume is not None:
        state = member.resume
        rng = hashlib.blake2b(digest_size=8)
        for t in [state["rng_cpu"], state["generator"], *(state["rng_cuda"] or [])]:
            rng.update(t.numpy().tobytes())
        resumed = (int(state["epoch"]), rng.hexdigest())
    return (model, beta.schedule == "capacity", dataclasses.replace(member.train_cfg, lr=1.0), resumed)


def batched_fit(members: Sequence[BatchMember], data: DataSplits, *, progress: bool = True,
                final_eval: bool = True) -> list[Outcome]:
    """Train ``members`` (all of one :func:`group_key`) on ``data`` as one vmapped model.

    Returns one outcome per member, in order: the :class:`FitResult` ``fit`` would have returned
    (``history``, ``final`` test metrics of the member's own, unstacked CVAE, ``model``), or the
    exception that stopped the member (``NonFiniteLossError``, what a callback raised, a refused
    resume). Per-epoch metrics are ``fit``'s; ``samples_per_s`` counts one member's examples and
    ``step_ms``/``train_seconds`` are the group's (every member steps in each group step).

    A single member is run by :func:`bench.training.loop.fit` itself (callbacks inline). Members of
    different keys are a ValueError. Only ``KeyboardInterrupt`` and the like propagate.
    """
    members = list(members)
    if len(members) == 1:
        m = members[0]
        try:
            return [fit(m.model_cfg, m.train_cfg, data, callbacks=m.callbacks, progress=progress,
                        final_eval=final_eval, checkpoint=m.checkpoint, checkpoint_every=m.checkpoint_every,
                        resume=m.resume, on_trained=m.on_trained)]
        except Exception as exc:  # noqa: BLE001 -- the member's outcome
            return [exc]
    if not members:
        return []
    keys = [group_key(m) for m in members]
    if any(k != keys[0] for k in keys):
        raise ValueError("batched_fit: members differ in model shapes, training settings (other than lr and the "
                         "KL schedule) or resume point; group them by group_key first")
    for m in members:
        if isinstance(m.checkpoint_every, bool) or not isinstance(m.checkpoint_every, int) or m.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every={m.checkpoint_every!r}: must be an integer >= 0 (epochs; 0 = off)")
    train_cfg = members[0].train_cfg
    if train_cfg.compile:
        raise ValueError("batched_fit: compile=True is not supported (groups run eager)")
    device = train_cfg.resolve_device()
    with device_context(device):
        return _Batch(members, data, device).run(progress, final_eval)


@dataclass
class _Slot:
    """A member's own state beside the stacked tensors."""

    index: int  # in the caller's list
    member: BatchMember
    model: CVAE  # the member's own CVAE: its initialisation, then (synced) its trained weights
    template: torch.optim.Adam  # an optimizer of the member's own: its state_dict layout for checkpoints
    table: Tensor  # (epochs * steps, 2) (beta, capacity) per global step
    fingerprint: str
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    step_seconds: float = 0.0


class _Batch:
    """The members still training: their slots, stacked parameters, Adam state and per-member tensors."""

    def __init__(self, members: list[BatchMember], data: DataSplits, device: torch.device) -> None:
        cfg = members[0].train_cfg
        self.device, self.cfg = device, cfg
        self.outcomes: list[Outcome | None] = [None] * len(members)
        self.data = data.to(device)
        self.n = len(self.data.train)
        self.batch = min(cfg.batch_size, self.n)
        self.steps = self.n // self.batch
        self.capacity = members[0].model_cfg.beta.schedule == "capacity"
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)  # the data order, as fit's loop
        checkpointing = any(m.checkpoint is not None and m.checkpoint_every for m in members)
        self.base = CVAE(members[0].model_cfg).to("meta")  # the module functional_call runs; made before seeding
        self.slots: list[_Slot] = []
        self.pending: dict[int, Future] = {}  # slot index -> its last epoch end, running beside the training
        for i, m in enumerate(members):
            fp = run_fingerprint(m.model_cfg, m.train_cfg, data) if (checkpointing or m.resume is not None) else ""
            if m.resume is not None:
                try:
                    ckpt.check_resumable(m.resume, cfg.epochs, fp)
                except ckpt.CheckpointError as exc:
                    self.outcomes[i] = exc
                    continue
            # as fit: each member initialised from the seed, the global RNG left as after one fit's init
            seed_everything(cfg.seed)
            model = CVAE(m.model_cfg).to(device)
            template = make_optimizer(model, m.train_cfg.lr, cfg.weight_decay)
            table = schedule_table(m.model_cfg.beta, self.steps, cfg.epochs, device)
            slot = _Slot(i, m, model, template, table, fp)
            if m.resume is not None:  # the RNGs and the generator: the same states for every member of the key
                ckpt.restore(m.resume, model=model, optimizer=template, generator=self.generator)
                slot.history = [dict(h) for h in m.resume["history"]]
            self.slots.append(slot)
        resumed = next((s.member.resume for s in self.slots if s.member.resume is not None), None)
        self.start = 1 if resumed is None else int(resumed["epoch"]) + 1
        self._stack(resumed=resumed is not None)
        self._build_functions()

    # -- the stacked state -----------------------------------------------------------------------
    def _stack(self, resumed: bool) -> None:
        """Stack the slots' models and optimizer state; called once, then :meth:`_keep` shrinks them."""
        if not self.slots:
            return
        params, self.buffers = stack_module_state([s.model for s in self.slots])
        self.names = list(params)
        self.leaves = [p.detach().clone().requires_grad_() for p in params.values()]
        state = None
        if resumed:  # each template holds its member's restored Adam state
            per_member = [[s.template.state[p] for p in s.model.parameters()] for s in self.slots]
            state = [{"step": per_member[0][j]["step"],
                      "exp_avg": torch.stack([pm[j]["exp_avg"] for pm in per_member]),
                      "exp_avg_sq": torch.stack([pm[j]["exp_avg_sq"] for pm in per_member])}
                     for j in range(len(self.leaves))]
            for s in self.slots:
                s.template.state.clear()
        self._make_optimizer(state)
        self._per_member_tensors()
        self.stats = torch.zeros(self.steps, len(self.slots), 3, device=self.device)  # (steps, k, 3) of an epoch

    def _make_optimizer(self, state: list[dict[str, Tensor]] | None) -> None:
        # lr 1: the stacked Adam computes each member's unit-lr update, scaled per member in :meth:`_adam_step`
        self.optimizer = torch.optim.Adam(self.leaves, lr=1.0, weight_decay=self.cfg.weight_decay, fused=True)
        if state is not None:
            for leaf, s in zip(self.leaves, state):
                self.optimizer.state[leaf] = {
                    "step": torch.as_tensor(s["step"], dtype=torch.float32, device=self.device).clone(),
                    "exp_avg": s["exp_avg"].to(self.device), "exp_avg_sq": s["exp_avg_sq"].to(self.device)}
        self.params = dict(zip(self.names, self.leaves))
        self.before = [torch.empty_like(p) for p in self.leaves]

    def _per_member_tensors(self) -> None:
        k = len(self.slots)
        lr = torch.tensor([s.member.train_cfg.lr for s in self.slots], dtype=torch.float32, device=self.device)
        self.lr = [lr.view(k, *([1] * (p.dim() - 1))) for p in self.leaves]
        self.tables = torch.stack([s.table for s in self.slots])  # (k, epochs * steps, 2)

    def _keep(self, keep: list[int]) -> None:
        """Go on with the slots at positions ``keep`` only (the others are done)."""
        if len(keep) == len(self.slots):
            return
        self.slots = [self.slots[i] for i in keep]
        if not self.slots:
            return
        index = torch.tensor(keep, device=self.device)
        state = [self.optimizer.state.get(p) for p in self.leaves]
        self.leaves = [p.detach().index_select(0, index).requires_grad_() for p in self.leaves]
        self.buffers = {name: b.index_select(0, index) for name, b in self.buffers.items()}
        kept = None
        if all(s for s in state):
            kept = [{"step": s["step"], "exp_avg": s["exp_avg"].index_select(0, index),
                     "exp_avg_sq": s["exp_avg_sq"].index_select(0, index)} for s in state]
        self._make_optimizer(kept)
        self._per_member_tensors()
        self.stats = self.stats.index_select(1, index)  # the epoch's rows so far (a member may leave mid-epoch)

    @torch.no_grad()
    def _sync(self, position: int) -> CVAE:
        """The slot's own CVAE, its parameters and buffers copied out of the stack."""
        slot = self.slots[position]
        for name, tensor in slot.model.named_parameters():
            tensor.copy_(self.params[name][position])
        for name, tensor in slot.model.named_buffers():
            if name in self.buffers:
                tensor.copy_(self.buffers[name][position])
        return slot.model

    def _optimizer_state(self, position: int) -> dict[str, Any]:
        """The slot's Adam ``state_dict`` as its own optimizer would have it (fit's checkpoint layout)."""
        slot = self.slots[position]
        state = slot.template.state_dict()  # param_groups: the member's lr, betas, ...; its state is empty
        state["state"] = {j: {"step": s["step"].clone(), "exp_avg": s["exp_avg"][position].clone(),
                              "exp_avg_sq": s["exp_avg_sq"][position].clone()}
                          for j, p in enumerate(self.leaves) if (s := self.optimizer.state.get(p))}
        return state

    # -- the step ----------------------------------------------------------------------------------
    def _build_functions(self) -> None:
        base, capacity, amp, device = self.base, self.capacity, self.cfg.amp, self.device

        def member_step(params, buffers, x, y, weight):
            # fit's loss_fn (bench.training.step.make_loss_fn) for one member
            with autocast_context(device, amp):
                target = base.likelihood.prepare_target(x.flatten(1))
                terms = functional_call(base, (params, buffers), (x, y), {"target": target})
                recon, kl = terms.recon.float(), terms.kl.float()
                loss = training_loss(recon, kl, weight, capacity)
                return loss, torch.stack((loss, recon.mean(), kl.mean())).detach()

        def member_sums(params, buffers, x, y):
            terms = functional_call(base, (params, buffers), (x, y))
            return torch.stack((terms.recon.sum(), terms.kl.sum()))

        # the batch is shared (None); "same": one draw per step for the group, each member's own draw alone
        self.member_step = vmap(member_step, in_dims=(0, 0, None, None, 0), randomness="same")
        self.member_sums = vmap(member_sums, in_dims=(0, 0, None, None), randomness="same")

    def _step(self, idx: Tensor, global_step: int) -> Tensor:
        """One train step of every member on the examples idx (B,) -> (k, 3) (loss, recon, kl)."""
        x = self.data.train.x.index_select(0, idx)  # index_select: see HarnessLoop.run
        y = self.data.train.y.index_select(0, idx)
        self.optimizer.zero_grad(set_to_none=True)
        losses, stats = self.member_step(self.params, self.buffers, x, y, self.tables[:, global_step])
        losses.sum().backward()  # members are independent: each gets its own loss's gradient
        if self.cfg.grad_clip > 0:
            self._clip_per_member(self.cfg.grad_clip)
        self._adam_step()
        return stats

    @torch.no_grad()
    def _clip_per_member(self, max_norm: float) -> None:
        """``clip_grad_norm_`` of each member's gradients over its own parameters."""
        grads = [p.grad for p in self.leaves if p.grad is not None]
        sq = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0)  # (k,)
        coef = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))

    @torch.no_grad()
    def _adam_step(self) -> None:
        """Fused Adam at lr 1, then each member's parameters moved by its own lr: p + lr_k (p_adam - p)."""
        torch._foreach_copy_(self.before, self.leaves)
        self.optimizer.step()
        torch._foreach_lerp_(self.before, self.leaves, self.lr)
        torch._foreach_copy_(self.leaves, self.before)

    @torch.no_grad()
    def _val_sums(self) -> Tensor:
        """(k, 2) mean val recon and KL (beta = 1), nats: :func:`bench.evaluation.elbo_terms` per member."""
        split, batch = self.data.val, self.cfg.eval_batch_size
        total = torch.zeros(len(self.slots), 2, device=split.x.device, dtype=torch.float64)
        for start in range(0, len(split), batch):
            total += self.member_sums(self.params, self.buffers, split.x[start:start + batch],
                                      split.y[start:start + batch]).double()
        return total / len(split)

    # -- the run -----------------------------------------------------------------------------------
    def run(self, progress: bool, final_eval: bool) -> list[Outcome]:
        epochs = self.cfg.epochs
        bar = tqdm(range(self.start, epochs + 1), desc=f"{len(self.slots)} members on {self.data.name}",
                   unit="epoch", disable=None if progress else True, leave=False)
        timer = StepTimer(self.device)
        with ThreadPoolExecutor(max_workers=max(1, len(self.slots)), thread_name_prefix="cvae-bench-member") as pool:
            for epoch in bar:
                if not self.slots:
                    break
                need = self.steps * self.batch  # one randperm per epoch, as HarnessLoop.prepare draws it
                idx = torch.randperm(self.n, device=self.device, generator=self.generator)[:need].view(self.steps, -1)
                wall = time.perf_counter()
                timer.start()
                first = (epoch - 1) * self.steps
                for i in range(self.steps):
                    self.stats[i] = self._step(idx[i], first + i)
                    timer.mark()
                    if self.pending and all(f.done() for f in self.pending.values()):
                        self._settle()  # the last epoch's callbacks are done: a pruned member leaves now
                step_ms = timer.durations_ms()  # synchronises on CUDA
                seconds = time.perf_counter() - wall
                self._settle()
                if not self.slots:
                    break
                stats = self.stats.cpu()  # (steps, k, 3): the epoch's one read of the training statistics
                val = self._val_sums().tolist()
                keep = []
                for position, slot in enumerate(self.slots):
                    slot.train_seconds += seconds
                    slot.step_seconds += sum(step_ms) / 1e3
                    try:
                        metrics = self._epoch_metrics(position, epoch, stats[:, position], val[position], seconds,
                                                      step_ms)
                    except NonFiniteLossError as exc:
                        self.outcomes[slot.index] = exc
                        continue
                    slot.history.append({"epoch": epoch, **metrics})
                    state = self._checkpoint_state(position, epoch) if self._checkpoint_due(slot, epoch) else None
                    self.pending[slot.index] = pool.submit(self._end_epoch, slot.member, epoch, metrics, state)
                    keep.append(position)
                self._keep(keep)
            bar.close()
            self._settle()
        for position, slot in enumerate(self.slots):
            self.outcomes[slot.index] = self._finish(position, final_eval)
        return list(self.outcomes)  # type: ignore[arg-type]

    def _settle(self) -> None:
        """Wait for the members' pending epoch ends; a member whose callbacks or checkpoint raised leaves
        the group with that exception as its outcome (whatever it trained since is dropped)."""
        failed = set()
        for index, future in self.pending.items():
            error = future.exception()
            if error is not None:
                self.outcomes[index] = error
                failed.add(index)
        self.pending = {}
        if failed:
            self._keep([p for p, slot in enumerate(self.slots) if slot.index not in failed])

    def _epoch_metrics(self, position: int, epoch: int, stats: Tensor, val: list[float], seconds: float,
                       step_ms: list[float]) -> dict[str, float]:
        """fit's metrics of an epoch for one member; :class:`NonFiniteLossError` as fit raises it."""
        slot = self.slots[position]
        bad = ~torch.isfinite(stats[:, 0])
        if bad.any():
            i = int(bad.nonzero()[0, 0])
            raise NonFiniteLossError(float(stats[i, 0]), epoch, i + 1)
        means = stats.mean(0).tolist()
        first = (epoch - 1) * self.steps
        metrics = {
            "train_recon": means[1], "train_kl": means[2], "train_neg_elbo": means[1] + means[2],
            "val_recon": val[0], "val_kl": val[1], "val_neg_elbo": val[0] + val[1],
            "beta": slot.table[first:first + self.steps, 0].mean().item(),
            "samples_per_s": self.steps * self.batch / seconds,
            "step_ms": statistics.median(step_ms),
        }
        if not math.isfinite(metrics["val_neg_elbo"]):
            raise NonFiniteLossError(metrics["val_neg_elbo"], epoch, self.steps)
        return metrics

    def _checkpoint_due(self, slot: _Slot, epoch: int) -> bool:
        m = slot.member
        return m.checkpoint is not None and bool(m.checkpoint_every) and epoch % m.checkpoint_every == 0 \
            and epoch < self.cfg.epochs

    @staticmethod
    def _end_epoch(member: BatchMember, epoch: int, metrics: dict[str, float], state: dict | None) -> None:
        """fit's end of an epoch for one member, on a helper thread: its callbacks, then its checkpoint."""
        for callback in member.callbacks:
            callback(epoch, metrics)
        if state is not None:
            member.checkpoint(epoch, state)

    def _checkpoint_state(self, position: int, epoch: int) -> dict[str, Any]:
        slot = self.slots[position]
        return ckpt.make_state(fingerprint=slot.fingerprint, epoch=epoch, model=self._sync(position),
                               optimizer=_MemberOptimizer(self, position), generator=self.generator,
                               history=slot.history)

    def _finish(self, position: int, final_eval: bool) -> Outcome:
        """The member's FitResult: its own CVAE with the trained weights, its test metrics."""
        slot = self.slots[position]
        result = FitResult(model=self._sync(position), data=self.data, history=slot.history,
                           train_seconds=slot.train_seconds, step_seconds=slot.step_seconds)
        try:
            if slot.member.on_trained is not None:
                slot.member.on_trained(result)
            if final_eval:
                cfg = slot.member.train_cfg
                result.final = final_metrics(result.model, self.data, iw_samples=cfg.iw_samples, seed=cfg.seed,
                                             eval_batch_size=cfg.eval_batch_size,
                                             cond_samples_per_class=cfg.cond_samples_per_class)
        except Exception as exc:  # noqa: BLE001 -- this member's outcome
            return exc
        return result


class _MemberOptimizer:
    """A member's view of the group's Adam, for :func:`bench.training.checkpoint.make_state`."""

    def __init__(self, batch: _Batch, position: int) -> None:
        self.batch, self.position = batch, position

    def state_dict(self) -> dict[str, Any]:
        return self.batch._optimizer_state(self.position)
