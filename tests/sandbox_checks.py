"""What sandbox runs may leave behind, for the tests that check nothing is."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from harness.grading.sandbox import SCRATCH_DIRS, UID_RANGE


def _throwaway(uid: int) -> bool:
    return UID_RANGE[0] <= uid < UID_RANGE[1]


def leftovers() -> tuple[list[int], list[str]]:
    """Processes of a throw-away uid, and files of one or sandbox working directories still present."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if _throwaway(entry.stat().st_uid):
                    pids.append(int(entry.name))
            except OSError:
                pass
    files = [p.name for p in Path(tempfile.gettempdir()).glob("harness-sandbox-*")]
    for scratch in SCRATCH_DIRS:
        try:
            files += [e.path for e in os.scandir(scratch) if _throwaway(e.stat(follow_symlinks=False).st_uid)]
        except OSError:
            pass
    return pids, sorted(files)


def wait_until_clean(before: tuple[list[int], list[str]], timeout: float = 3.0) -> tuple[list[int], list[str]]:
    """A killed PID namespace is torn down by the kernel asynchronously: give it a moment."""
    deadline = time.monotonic() + timeout
    while leftovers() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    return leftovers()
