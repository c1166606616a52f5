"""A fit's checkpoints on both sides: a local file and an artifact of the run, and finding one to resume.

:class:`RunCheckpoints` is the ``checkpoint`` sink of :func:`bench.training.loop.fit`: each checkpoint
is written to the local folder (:mod:`bench.training.checkpoint_store`), then logged through the
run's tracker as ``checkpoint/state.pt`` (handed to the writer, so it is spooled while the server is
down; the spool keeps only a run's newest one). :meth:`RunCheckpoints.find` looks for the checkpoint to
resume from: the local file first (same machine, works with the server down), then the artifact of
the dead run (another machine). The first that loads, matches the run's fingerprint and is before
the last epoch wins; every source that fails adds its reason to a one-line message.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from bench.training import checkpoint as ckpt
from bench.training.checkpoint_store import checkpoint_path, remove_checkpoint

#: The artifact folder of a run's checkpoint (the file is :data:`bench.training.checkpoint.FILE_NAME`).
ARTIFACT_DIR = "checkpoint"


@dataclass
class Found:
    """What :meth:`RunCheckpoints.find` found: ``state`` (None: start at epoch 1), where from, and why not."""

    state: dict[str, Any] | None
    source: str | None = None
    message: str | None = None

    @property
    def epoch(self) -> int:
        return int(self.state["epoch"]) if self.state else 0


class RunCheckpoints:
    """The checkpoints of one run under local ``key``, also logged through ``tracker`` (None: local only).

    ``earlier_runs``: runs whose checkpoint this one continues (a retry chain, a resumed ``train``);
    :meth:`remove` deletes their ``checkpoint/`` artifacts through ``writer`` (a
    :class:`bench.tracking.writer.TrackingWriter`) too.
    """

    def __init__(self, key: str, tracker: Any = None, *, root: Path | None = None, writer: Any = None,
                 earlier_runs: Sequence[str] = ()) -> None:
        self.key, self.tracker, self.root = key, tracker, root
        self.writer, self.earlier_runs = writer, [r for r in earlier_runs if r]
        self.path = checkpoint_path(key, root)
        self.written = 0
        self.warned = False

    def __call__(self, epoch: int, state: dict[str, Any]) -> None:
        """Write the checkpoint of ``epoch``: the local file, then the run's artifact. A checkpoint that cannot
        be written (a full or read-only disk) is skipped, with one warning per run: training goes on, a lost
        worker's retry then starts from the last one written, or from epoch 1."""
        try:
            ckpt.save(state, self.path)
        except (OSError, RuntimeError) as exc:  # torch.save's own write failures are RuntimeErrors
            if not self.warned:
                reason = getattr(exc, "strerror", None) or " ".join(str(exc).split())[:200]
                print(f"warning: checkpoint of epoch {epoch} not written ({reason}: {self.path}); "
                      "training goes on without checkpoints", file=sys.stderr, flush=True)
            self.warned = True
            return
        self.written += 1
        if self.tracker is not None:
            self.tracker.log_file(str(self.path), ARTIFACT_DIR)

    def find(self, fingerprint: str, epochs: int, *, tracking_uri: str | None = None,
             dead_run_id: str | None = None) -> Found:
        """The checkpoint to resume a run of ``epochs`` epochs with ``fingerprint`` from.

        ``tracking_uri`` and ``dead_run_id`` (the store's id or the local id it was recorded under): where
        the dead run's artifact is looked for when the local file is absent or unusable.
        """
        reasons: list[str] = []
        if self.path.exists():
            found = _try(self.path, "local", fingerprint, epochs, reasons)
            if found:
                return found
        if tracking_uri and dead_run_id:
            with tempfile.TemporaryDirectory(prefix="cvae-bench-ckpt-") as tmp:
                local = _download(tracking_uri, dead_run_id, tmp, reasons)
                if local is not None:
                    found = _try(local, f"run {dead_run_id}", fingerprint, epochs, reasons)
                    if found:
                        return found
        return Found(None, message="; ".join(reasons) + "; starting at epoch 1" if reasons else None)

    def remove(self) -> bool:
        """Remove the local checkpoint (True if there was one) and the ``checkpoint/`` artifacts of this
        run (if it wrote any) and of the earlier runs. Deleting artifacts is best effort: a store that
        refuses gets a warning."""
        existed = remove_checkpoint(self.key, self.root)
        if self.tracker is not None and self.written:
            self.tracker.delete_artifacts(ARTIFACT_DIR)
        if self.writer is not None:
            delete_run_checkpoints(self.writer, self.earlier_runs)
        return existed


def run_key_of(tracking_uri: str | None, run_id: str) -> str:
    """The local id a run was created under (its ``cvae_bench.run_key`` tag): what ``train`` keys the run's
    local checkpoints by. ``run_id`` itself when it is a local id, or when the store cannot say."""
    from bench.tracking.ops import LOCAL_PREFIX, RUN_KEY_TAG

    if not tracking_uri or run_id.startswith(LOCAL_PREFIX):
        return run_id
    try:
        from bench.tracking.store import make_client

        return make_client(tracking_uri).get_run(run_id).data.tags.get(RUN_KEY_TAG) or run_id
    except Exception:  # noqa: BLE001 -- an unreachable store, no such run: the id as given
        return run_id


def delete_run_checkpoints(writer: Any, run_ids: Sequence[str]) -> None:
    """Have ``writer`` (a :class:`bench.tracking.writer.TrackingWriter`) delete the ``checkpoint/`` artifacts of
    ``run_ids`` (ids of the store, or local ids: the writer finds the run they were recorded for)."""
    for run_id in dict.fromkeys(r for r in run_ids if r):
        writer.submit({"op": "delete_artifacts", "run_id": run_id, "artifact_path": ARTIFACT_DIR})


def _try(path: Path, source: str, fingerprint: str, epochs: int, reasons: list[str]) -> Found | None:
    try:
        state = ckpt.load(path, fingerprint)
        ckpt.check_resumable(state, epochs, fingerprint)
    except ckpt.CheckpointError as exc:
        reasons.append(f"{source} {exc}")
        return None
    return Found(state, source=source)


def _download(tracking_uri: str, run_id: str, folder: str, reasons: list[str]) -> Path | None:
    """The dead run's ``checkpoint/state.pt``, downloaded into ``folder`` (None if it has none)."""
    from bench.tracking.ops import Store
    from bench.tracking.store import make_client

    name = f"{ARTIFACT_DIR}/{ckpt.FILE_NAME}"
    try:
        client = make_client(tracking_uri)
        run_id = Store(client, tracking_uri).real(run_id)  # a local id: the run recorded under it
        if not any(f.path == name for f in client.list_artifacts(run_id, ARTIFACT_DIR)):
            return None
        return Path(client.download_artifacts(run_id, name, folder))
    except Exception as exc:  # noqa: BLE001 -- server down, run gone: resume from nothing, say why
        reasons.append(f"run {run_id}'s checkpoint cannot be fetched ({type(exc).__name__}: "
                       f"{' '.join(str(exc).split())[:120]})")
        return None
