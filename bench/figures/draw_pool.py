"""A run's figures drawn side by side, in forked processes, while the rest of the run is written.

Drawing the five figures of a run takes ~0.2-0.3 s of one core (:mod:`bench.figures.draw`), all of
it at the end of a tracked ``train``, where it adds to the wall time. A :class:`DrawPool` forks its
workers once, right after :func:`bench.figures.draw.warm_up` (each inherits matplotlib and the
warmed figure frames, copy-on-write), and then waits. :meth:`DrawPool.submit` hands each worker its
share of a run's figures (longest first) and returns at once; :meth:`DrawPool.collect` waits for the
PNG files. The caller writes other things (the logged model) meanwhile.

Fork only from a process with no other threads (the tracking process forks before it opens any
store). A worker that cannot be forked, or that dies, leaves its figures to :meth:`collect`, which
draws them in the calling process: a figure is never lost to the pool.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Mapping

from bench.figures.kinds import FigureData, ImageGrid, KLPerDim, TrainingCurves

#: Descriptors above this are not looked at when a worker closes what it inherited.
MAX_FD = 1 << 16
#: Drawing time of each kind (ms, measured on a 2-core EPYC VM), to share a run's figures out evenly.
COST = {TrainingCurves: 120.0, KLPerDim: 55.0, ImageGrid: 30.0}


def _serve(conn) -> None:
    """A worker: draw each (name, data, path) of each job to ``path``; answer {name: error or None}.

    It first closes every file descriptor it inherited but its own pipe and the standard streams: the
    other pipes (its pool's ends, the forking process's own pipes) must see end-of-file when their
    owner closes them or dies, and a worker exits at end-of-file on its pipe."""
    from bench.figures.draw import save_png

    keep = conn.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, MAX_FD)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        errors: dict[str, str | None] = {}
        for name, data, path in job:
            try:
                save_png(data, path)
                errors[name] = None
            except Exception as exc:  # noqa: BLE001 -- reported; the caller draws it itself
                errors[name] = f"{type(exc).__name__}: {exc}"
        conn.send(errors)


class DrawPool:
    """``workers`` forked drawing processes (0: draw everything in :meth:`collect`)."""

    def __init__(self, workers: int) -> None:
        self._workers: list[tuple[multiprocessing.Process, object]] = []
        self._pending: list[tuple[object, list[tuple[str, FigureData, str]]]] = []
        self._left: list[tuple[str, FigureData, str]] = []  # for collect() to draw here
        context = multiprocessing.get_context("fork")
        for _ in range(workers):
            try:
                parent, child = context.Pipe()
                process = context.Process(target=_serve, args=(child,), daemon=True, name="cvae-bench-draw")
                process.start()
                child.close()
            except OSError:
                break
            self._workers.append((process, parent))

    @property
    def size(self) -> int:
        return len(self._workers)

    def submit(self, figures: Mapping[str, FigureData], folder: str | Path, names: Mapping[str, str]) -> None:
        """Start drawing ``figures`` to ``folder/<names[name]>`` (PNG); returns at once."""
        jobs = sorted(((name, data, str(Path(folder) / names[name])) for name, data in figures.items()),
                      key=lambda job: -COST.get(type(job[1]), 1.0))
        shares: list[list[tuple[str, FigureData, str]]] = [[] for _ in self._workers]
        loads = [0.0] * len(shares)
        for job in jobs:  # longest first, each to the least loaded worker
            if not shares:
                self._left.append(job)
                continue
            i = loads.index(min(loads))
            shares[i].append(job)
            loads[i] += COST.get(type(job[1]), 1.0)
        for (_, conn), share in zip(self._workers, shares):
            if not share:
                continue
            try:
                conn.send(share)
                self._pending.append((conn, share))
            except (OSError, ValueError):
                self._left += share

    def collect(self) -> dict[str, str]:
        """Wait for the submitted figures: {name: path of its PNG}. What a worker failed to draw is drawn here."""
        from bench.figures.draw import save_png

        done: dict[str, str] = {}
        for conn, share in self._pending:
            try:
                errors = conn.recv()
            except (EOFError, OSError):
                errors = {name: "the drawing process died" for name, _, _ in share}
            for name, data, path in share:
                if errors.get(name) is None and os.path.exists(path):
                    done[name] = path
                else:
                    self._left.append((name, data, path))
        self._pending = []
        for name, data, path in self._left:
            save_png(data, path)
            done[name] = path
        self._left = []
        return done

    def close(self) -> None:
        for process, conn in self._workers:
            try:
                conn.send(None)
                conn.close()
            except (OSError, ValueError):
                pass
            process.join(timeout=1.0)
            if process.is_alive():
                process.kill()
        self._workers = []
