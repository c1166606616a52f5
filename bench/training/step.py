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


ADAM_IMPLEMENTATIONS = ("fused", "default")


def make_optimizer(model: CVAE, lr: float, weight_decay: float = 0.0, capturable: bool = False,
                   implementation: str = "fused") -> torch.optim.Adam:
    """Adam over ``model``'s parameters.

    ``implementation``: ``fused`` (default) updates every parameter in one kernel per device and dtype
    (CPU and CUDA). ``default`` leaves the choice to ``torch.optim.Adam`` -- multi-tensor ``foreach``
    kernels on CUDA, a per-parameter loop on CPU -- which is what ``optim.Adam(model.parameters(), lr)``
    in the seed article runs. ``capturable=True`` keeps the step counters on the device (needed to
    capture the step in a CUDA graph).
    """
    if implementation not in ADAM_IMPLEMENTATIONS:
        raise ValueError(f"implementation={implementation!r}: must be one of {', '.join(ADAM_IMPLEMENTATIONS)}")
    fused = True if implementation == "fused" else None
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, capturable=capturable, fused=fused)


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
