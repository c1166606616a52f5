"""Training configuration: one dataclass, validated on construction (see models.config.ConfigError)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import torch

from models.config import ConfigError

DEVICES = ("auto", "cpu", "cuda")  # and "cuda:N", the N-th visible CUDA device
AMP_DTYPES = ("none", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """How one configuration is trained and evaluated.

    ``grad_clip`` is the max global gradient norm (0 = off). ``iw_samples`` is k of the
    importance-weighted test bound. ``cond_samples_per_class`` samples per class are generated for
    ``test_cond_acc``.
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    seed: int = 0
    device: str = "auto"
    iw_samples: int = 100
    eval_batch_size: int = 500
    cond_samples_per_class: int = 100
    amp: str = "none"
    compile: bool = False
    cuda_graphs: bool | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "iw_samples", "eval_batch_size", "cond_samples_per_class"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ConfigError(f"{name}={value!r}: must be an integer >= 1")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < float("inf")):
            raise ConfigError(f"lr={self.lr!r}: must be a finite number > 0")
        if not self.weight_decay >= 0:
            raise ConfigError(f"weight_decay={self.weight_decay!r}: must be >= 0")
        if not self.grad_clip >= 0:
            raise ConfigError(f"grad_clip={self.grad_clip!r}: must be >= 0 (0 turns clipping off)")
        if not (self.device in DEVICES or _cuda_index(self.device) is not None):  # shape only, see resolve_device
            raise ConfigError(f"device={self.device!r}: must be one of {', '.join(DEVICES)}")
        if self.amp not in AMP_DTYPES:
            raise ConfigError(f"amp={self.amp!r}: must be one of {', '.join(AMP_DTYPES)}")
        if not (self.cuda_graphs is None or isinstance(self.cuda_graphs, bool)):
            raise ConfigError(f"cuda_graphs={self.cuda_graphs!r}: must be True, False or None (on when the "
                              f"device is CUDA)")
        if self.cuda_graphs and self.device == "cpu":
            raise ConfigError(_graphs_need_cuda(self.device, "cpu"))

    def resolve_device(self) -> torch.device:
        """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is a ConfigError."""
        return resolve_device(self.device)

    def use_cuda_graphs(self, device: torch.device) -> bool:
        """Whether steps run as CUDA graphs on the resolved ``device``: ``cuda_graphs``, or None -> on CUDA.

        ``cuda_graphs=True`` on a device that is not CUDA (e.g. ``auto`` without a GPU) is a ConfigError.
        """
        if self.cuda_graphs is None:
            return device.type == "cuda"
        if self.cuda_graphs and device.type != "cuda":
            raise ConfigError(_graphs_need_cuda(self.device, device.type))
        return self.cuda_graphs

    def to_flat_dict(self) -> dict[str, Any]:
        return asdict(self)


def _graphs_need_cuda(name: str, resolved: str) -> str:
    where = "is not one" if name == resolved else f"is {resolved} here"
    return (f"cuda_graphs=True: CUDA graphs need a CUDA device, and device={name!r} {where} "
            f"(use a CUDA device, or leave cuda_graphs unset: None turns them on only on CUDA)")


def _cuda_index(name: object) -> int | None:
    """N of a ``"cuda:N"`` string (N decimal digits), else None."""
    if isinstance(name, str) and name.startswith("cuda:") and name[5:].isascii() and name[5:].isdigit():
        return int(name[5:])
    return None


def default_cpu_threads(jobs: int = 1) -> int:
    """torch CPU threads for each of ``jobs`` trainings that run side by side: half the cores shared among
    them, at least 1 (``train`` and ``study`` use it unless given ``--threads``).

    Small models gain nothing from more intra-op threads: on the 2-core VM the default MLP on digits
    trains faster on one thread than on two. OpenMP threads that outnumber the free cores slow training
    down by an order of magnitude when anything else runs, and the other half of the machine is left to
    the tracking writer (whose work then costs a run ~nothing), data loading and the rest.
    """
    return max(1, (os.cpu_count() or 2) // 2 // jobs)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op CPU threads set to ``threads`` inside the block, the caller's count restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(name: str) -> torch.device:
    """The torch device a user's device name means: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    ``auto`` is cuda when available, else cpu. A CUDA device that is not there (no CUDA at all, or
    N >= the number of visible devices) is a :class:`ConfigError` naming the value, as is any other name.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda': no CUDA device is available here (use --device cpu or auto)")
    index = _cuda_index(name)
    if index is not None:
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name!r}: no CUDA device is available here (use --device cpu or auto)")
        count = torch.cuda.device_count()
        if index >= count:
            raise ConfigError(f"device={name!r}: no such CUDA device here ({count} visible: cuda:0 to "
                              f"cuda:{count - 1})")
        return torch.device("cuda", index)
    if name not in DEVICES:
        raise ConfigError(f"device={name!r}: must be one of {', '.join(DEVICES)}")
    return torch.device(name)
