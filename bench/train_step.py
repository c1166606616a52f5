"""The train step shared by ``fit`` and the step-time benchmarks: forward, loss, backward, Adam.

The step returns its statistics as a detached (3,) tensor -- (loss, recon, kl), batch means in nats --
and never reads a value back to the host, so on CUDA it never synchronises.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import Tensor

from models import CVAE, training_loss

StepFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def make_optimizer(model: CVAE, lr: float, weight_decay: float = 0.0, capturable: bool = False) -> torch.optim.Adam:
    """Adam; ``capturable=True`` keeps its step counters on the device (needed for CUDA graphs)."""
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, capturable=capturable)


def autocast_context(device: torch.device, amp: str):
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_loss_fn(model: CVAE, amp: str = "none", compile: bool = False) -> Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]:
    """(x, y, weight) -> (loss, recon mean, kl mean); optionally under bf16 autocast / torch.compile."""
    capacity = model.cfg.beta.schedule == "capacity"
    device = next(model.parameters()).device

    def loss_fn(x: Tensor, y: Tensor, weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with autocast_context(device, amp):
            target = model.likelihood.prepare_target(x.flatten(1))
            terms = model(x, y, target=target)
            recon, kl = terms.recon.float(), terms.kl.float()
            return training_loss(recon, kl, weight, capacity), recon.mean(), kl.mean()

    return torch.compile(loss_fn) if compile else loss_fn


def make_train_step(model: CVAE, optimizer: torch.optim.Optimizer, *, grad_clip: float = 0.0, amp: str = "none",
                    compile: bool = False) -> StepFn:
    """Build ``step(x (B,C,H,W), y (B,), weight (2,)) -> (3,) tensor of (loss, recon, kl)``."""
    loss_fn = make_loss_fn(model, amp=amp, compile=compile)
    params = [p for p in model.parameters() if p.requires_grad]

    def step(x: Tensor, y: Tensor, weight: Tensor) -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss, recon, kl = loss_fn(x, y, weight)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        return torch.stack((loss, recon, kl)).detach()

    return step
