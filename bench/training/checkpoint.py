"""A training checkpoint: the state a killed ``fit`` resumes from, and the fingerprint that guards it.

A checkpoint (a dict, written with ``torch.save``) holds, at the end of epoch ``epoch`` (1-based):

- ``model``: the model's ``state_dict``; ``optimizer``: the optimizer's ``state_dict``;
- ``rng_cpu`` / ``rng_cuda``: torch's CPU RNG state and every CUDA device's (None without CUDA);
- ``generator``: the state of the harness loop's epoch-permutation ``torch.Generator``;
- ``epoch``: the epochs done, which is also the schedule position (global step = epoch * steps);
- ``history``: the per-epoch metrics of epochs 1..epoch, as ``fit`` returns them;
- ``fingerprint``: :func:`fingerprint` of the model config, the training config and the data.

A checkpoint whose fingerprint differs from the run's is refused (:class:`CheckpointRefused`); one
that cannot be read is :class:`CheckpointUnreadable`. Both are :class:`CheckpointError`: the caller
starts at epoch 1 and says why in one line. Nothing here knows where checkpoints are kept
(:mod:`bench.training.checkpoint_store`) or about MLflow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import weakref
from pathlib import Path
from typing import Any

import torch

#: Version of the checkpoint layout; a checkpoint of another version is unreadable.
FORMAT = 1
#: The file name of a checkpoint, locally and as an MLflow artifact (``checkpoint/state.pt``).
FILE_NAME = "state.pt"
#: TrainConfig fields that do not change what is trained (where it runs, how fast): left out of the fingerprint.
_NOT_FINGERPRINTED = ("device", "compile", "cuda_graphs")
_KEYS = ("format", "fingerprint", "epoch", "model", "optimizer", "rng_cpu", "rng_cuda", "generator", "history")


class CheckpointError(RuntimeError):
    """A checkpoint that is not resumed from; the message says why, in one line."""


class CheckpointUnreadable(CheckpointError):
    """The file is missing keys, truncated, corrupt or of another format."""


class CheckpointRefused(CheckpointError):
    """The checkpoint was made under another configuration (model, training or data)."""


_DIGESTS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def data_digest(data: Any) -> str:
    """A 16-hex-digit digest of a :class:`bench.data.DataSplits`: its name, shapes and every tensor's bytes.

    Cost: one pass over the data (~0.1 s per 100 MB on CPU), once per DataSplits object (cached; the
    splits are frozen).
    """
    try:
        return _DIGESTS[data]
    except (KeyError, TypeError):
        pass
    digest = _digest(data)
    try:
        _DIGESTS[data] = digest
    except TypeError:
        pass
    return digest


def _digest(data: Any) -> str:
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{data.name}|{data.input_shape}|{data.num_classes}".encode())
    for split in (data.train, data.val, data.test):
        for t in (split.x, split.y):
            t = t.detach().cpu().contiguous()
            h.update(str((tuple(t.shape), str(t.dtype))).encode())
            h.update(t.view(torch.uint8).reshape(-1).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def fingerprint(model_cfg: Any, train_cfg: Any, digest: str) -> str:
    """A 16-hex-digit hash of the model config, the training config (less device/compile/graphs) and
    the data digest: equal fingerprints mean a checkpoint continues exactly this training."""
    train = {k: v for k, v in dataclasses.asdict(train_cfg).items() if k not in _NOT_FINGERPRINTED}
    text = json.dumps({"model": dataclasses.asdict(model_cfg), "train": train, "data": digest},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_state(*, fingerprint: str, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               generator: torch.Generator, history: list[dict[str, float]]) -> dict[str, Any]:
    """The checkpoint of a fit at the end of ``epoch`` (tensors copied to the CPU)."""
    cuda = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else None
    return {"format": FORMAT, "fingerprint": fingerprint, "epoch": int(epoch),
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": _to_cpu(optimizer.state_dict()), "rng_cpu": torch.get_rng_state(),
            "rng_cuda": cuda, "generator": generator.get_state().cpu(),
            "history": [dict(h) for h in history]}


def save(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (a temporary file, then a rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load(path: str | Path, expected_fingerprint: str | None = None) -> dict[str, Any]:
    """The checkpoint at ``path``, checked: :class:`CheckpointUnreadable` if it cannot be read or is
    incomplete, :class:`CheckpointRefused` if its fingerprint is not ``expected_fingerprint``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- any failure to read is one reason to start over
        raise CheckpointUnreadable(f"checkpoint {path} is unreadable ({type(exc).__name__}: "
                                   f"{' '.join(str(exc).split())[:160]})") from None
    if not isinstance(state, dict) or any(k not in state for k in _KEYS):
        missing = [k for k in _KEYS if not isinstance(state, dict) or k not in state]
        raise CheckpointUnreadable(f"checkpoint {path} is incomplete (missing {', '.join(missing)})")
    if state["format"] != FORMAT:
        raise CheckpointUnreadable(f"checkpoint {path} has format {state['format']!r}, not {FORMAT}")
    if expected_fingerprint is not None and state["fingerprint"] != expected_fingerprint:
        raise CheckpointRefused(f"checkpoint {path} was made under another configuration (fingerprint "
                                f"{state['fingerprint']}, this run {expected_fingerprint}): refused")
    return state


def check_resumable(state: dict[str, Any], epochs: int, expected_fingerprint: str) -> None:
    """:class:`CheckpointError` unless ``state`` matches the fingerprint and has 1 <= epoch < ``epochs``
    with one history row per epoch done."""
    if state["fingerprint"] != expected_fingerprint:
        raise CheckpointRefused(f"checkpoint fingerprint {state['fingerprint']} is not this run's "
                                f"{expected_fingerprint} (other hyper-parameters or data): refused")
    epoch = state["epoch"]
    if not (isinstance(epoch, int) and 1 <= epoch < epochs):
        raise CheckpointUnreadable(f"checkpoint epoch={epoch!r}: must be an integer in [1, {epochs - 1}]")
    if len(state["history"]) != epoch:
        raise CheckpointUnreadable(f"checkpoint has {len(state['history'])} history rows for epoch={epoch}")


@torch.no_grad()
def restore(state: dict[str, Any], *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            generator: torch.Generator) -> None:
    """Put ``state`` back into ``model``, ``optimizer``, ``generator`` and torch's RNGs.

    Parameters are copied in place (a captured CUDA graph keeps pointing at them); optimizer state
    that already exists is copied in place too, for the same reason.
    """
    model.load_state_dict(state["model"])
    existing = {id(p): s for p, s in optimizer.state.items()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if existing and all(id(p) in existing for p in params):
        saved = state["optimizer"]["state"]
        for i, p in enumerate(params):
            for k, v in optimizer.state[p].items():
                if torch.is_tensor(v) and k in saved.get(i, {}):
                    v.copy_(saved[i][k])
        for group, saved_group in zip(optimizer.param_groups, state["optimizer"]["param_groups"]):
            group.update({k: v for k, v in saved_group.items() if k != "params"})
    else:
        device = params[0].device if params else torch.device("cpu")
        optimizer.load_state_dict(state["optimizer"])
        for s in optimizer.state.values():
            for k, v in s.items():
                if torch.is_tensor(v) and v.device != device and k != "step":
                    s[k] = v.to(device)
    torch.set_rng_state(state["rng_cpu"])
    if state["rng_cuda"] is not None and torch.cuda.is_available():
        for i, rng in enumerate(state["rng_cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(rng, i)
    generator.set_state(state["generator"].to(generator.get_state().device))


def _to_cpu(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value
