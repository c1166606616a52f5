"""What a run records about where and how it ran: device, versions, commit, host; config as params."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any, Mapping


@functools.lru_cache(maxsize=1)
def git_commit(path: str | None = None) -> str | None:
    """Commit checked out in the working tree holding ``path`` (default: this code), or None."""
    cwd = path or str(Path(__file__).resolve().parent)
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=2)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


@functools.lru_cache(maxsize=1)
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(device: Any) -> str:
    """Human name of a torch device: the GPU model for CUDA, the CPU model otherwise."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_name()


def environment_tags(device: Any) -> dict[str, str]:
    """Tags describing where a run ran: device, torch/CUDA versions, git commit, host."""
    import torch

    tags = {"device": str(device), "device_name": device_name(device), "torch_version": torch.__version__,
            "cuda_version": torch.version.cuda or "none", "python_version": platform.python_version(),
            "host": platform.node()}
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
    return tags


def config_params(model_cfg: Any, train_cfg: Any, data_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The whole resolved configuration as one flat mapping (MLflow params).

    Keys of :meth:`CVAEConfig.to_flat_dict`, :meth:`TrainConfig.to_flat_dict` and the data options
    must not collide (a collision would silently drop a value); a collision raises ValueError.
    """
    params: dict[str, Any] = {}
    for part in (model_cfg.to_flat_dict(), train_cfg.to_flat_dict(), dict(data_options or {})):
        clash = params.keys() & part.keys()
        if clash:
            raise ValueError(f"config keys logged twice: {', '.join(sorted(clash))}")
        params.update(part)
    return params


def run_tags(model_cfg: Any, data: Any, device: Any, **extra: Any) -> dict[str, str]:
    """Tags of a training run: variant, dataset, the environment (:func:`environment_tags`), extras."""
    return {"variant": model_cfg.variant, "dataset": data.name, **environment_tags(device),
            **{k: str(v) for k, v in extra.items()}}
