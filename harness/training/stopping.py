"""Stopping a training run on SIGINT/SIGTERM without losing a step (see `StopOnSignal`)."""

from __future__ import annotations

import signal
from typing import Any

import torch


class StopRequested(Exception):
    """Raised by the signal handler while a step can still be abandoned (its rollout)."""


class StopOnSignal:
    """SIGINT/SIGTERM stop a run without losing a step. During a step's rollout the step is abandoned at
    once (the trainer restores its RNG and data cursor to the step's start); during its update the step
    finishes. Either way the run then saves and stops. A second signal while finishing stops at once
    (KeyboardInterrupt). With several processes a signal only ever finishes the step, and the processes
    agree on stopping at the end of each step, so none waits forever for the others."""

    def __init__(self, abandon: bool):
        self.abandon = abandon
        self.phase = "setup"
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopOnSignal":
        import threading

        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt  # asked twice: stop now
        self.signal = signum
        if self.abandon and self.phase == "rollout":
            raise StopRequested

    def agreed(self, accel) -> bool:
        """Whether any process was asked to stop (a collective with several processes)."""
        if accel.num_processes == 1:
            return self.signal is not None
        flag = torch.tensor([1.0 if self.signal is not None else 0.0], device=accel.device)
        return bool(accel.reduce(flag, "max").item() > 0)
