"""Where checkpoints live on this machine: one folder per key under ``$CVAE_BENCH_CHECKPOINTS``.

The root defaults to ``~/.cache/cvae-bench/checkpoints/``. A key is a relative path of safe parts:
``study/<study name>/trial-<first trial number of the retry chain>`` for a study's trial,
``run/<MLflow run id>`` (or ``run/<name>`` untracked) for ``cvae-bench train``. Each folder holds
one file, :data:`bench.training.checkpoint.FILE_NAME`, replaced atomically at every checkpoint.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from bench.training.checkpoint import FILE_NAME

ENV_VAR = "CVAE_BENCH_CHECKPOINTS"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def checkpoint_root() -> Path:
    """``$CVAE_BENCH_CHECKPOINTS``, else ``~/.cache/cvae-bench/checkpoints``."""
    return Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "cvae-bench" / "checkpoints").expanduser()


def safe_part(text: str) -> str:
    """``text`` as one path component: runs of characters other than letters, digits, ``._-`` become ``_``."""
    part = _UNSAFE.sub("_", str(text)).strip(".") or "_"
    return part


def trial_key(study_name: str, first_trial: int) -> str:
    """The key of a study's trial: its study and the first trial number of its retry chain."""
    return f"study/{safe_part(study_name)}/trial-{int(first_trial)}"


def run_key(run_id: str) -> str:
    """The key of a ``cvae-bench train`` run (its MLflow run id)."""
    return f"run/{safe_part(run_id)}"


def checkpoint_path(key: str, root: Path | None = None) -> Path:
    """The checkpoint file of ``key`` (it may not exist)."""
    return (root or checkpoint_root()) / key / FILE_NAME


def remove_checkpoint(key: str, root: Path | None = None) -> bool:
    """Remove ``key``'s folder (and its study folder once empty); True if there was one."""
    folder = (root or checkpoint_root()) / key
    existed = folder.exists()
    shutil.rmtree(folder, ignore_errors=True)
    parent = folder.parent
    try:
        if parent != (root or checkpoint_root()) and not any(parent.iterdir()):
            parent.rmdir()
    except OSError:
        pass
    return existed
