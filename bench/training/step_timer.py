"""Per-step wall times without synchronising inside the loop.

On CUDA a ``torch.cuda.Event`` is recorded on the current stream of the timer's device after each
step and the gaps are read once, after a single synchronise; on CPU the monotonic clock is read
after each step.
"""

from __future__ import annotations

import statistics
import time

import torch


class StepTimer:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self._marks: list = []

    def start(self) -> None:
        self._marks = []
        self.mark()

    def mark(self) -> None:
        """Record the end of a step (and the start of the next)."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))
            self._marks.append(event)
        else:
            self._marks.append(time.perf_counter())

    def durations_ms(self) -> list[float]:
        """Milliseconds between consecutive marks (synchronises once on CUDA)."""
        if len(self._marks) < 2:
            return []
        if self.cuda:
            self._marks[-1].synchronize()
            return [a.elapsed_time(b) for a, b in zip(self._marks[:-1], self._marks[1:])]
        return [(b - a) * 1e3 for a, b in zip(self._marks[:-1], self._marks[1:])]

    def median_ms(self) -> float:
        d = self.durations_ms()
        return statistics.median(d) if d else float("nan")
