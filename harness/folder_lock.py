"""The single-writer lock of a run folder: one process at a time generates into it.

`<folder>/.lock` is held with `flock` for as long as the writer runs and names its holder (pid, host,
command, since). The kernel drops a flock when its process ends, however it ends (SIGKILL included), so
a lock left by a killed writer is free to take at once: its stale holder line is simply overwritten.
Readers (`harness report`) take no lock; they see whole lines only (samples are appended a line at a time).

A second writer gets a one-line HarnessError naming the holder (exit 2), or waits for it with `wait`.
The file is removed when the lock is let go, and with it the folder when the lock made it and nothing
was written (a bad input found after the lock was taken leaves nothing behind). flock is advisory and local: writers on
different hosts sharing a network file system are not kept apart (the holder's host is named for that).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from harness.errors import HarnessError

LOCK_NAME = ".lock"


def holder_line(path: Path) -> str:
    """Who holds the lock at `path`, in words (from what it wrote there)."""
    try:
        found = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        found = {}
    if not found:
        return "another process"
    return (f"pid {found.get('pid')} on {found.get('host')} since {found.get('since')} "
            f"({' '.join(found.get('command', []))})")


class FolderLock:
    def __init__(self, folder: str | os.PathLike, wait: bool = False,
                 on_wait: Callable[[str], None] | None = None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.wait = wait
        self.on_wait = on_wait
        self.fd: int | None = None
        self.made: list[Path] = []  # the folders this lock made, the run folder first

    def __enter__(self) -> "FolderLock":
        missing = self.folder
        while not missing.exists():
            self.made.append(missing)
            missing = missing.parent
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not self.wait:
                    os.close(fd)
                    raise HarnessError(f"{self.folder} is being written by {holder_line(self.path)}; "
                                       "wait for it to finish or pass --wait") from None
                if self.on_wait is not None:
                    self.on_wait(holder_line(self.path))
                fcntl.flock(fd, fcntl.LOCK_EX)
            # The holder before us removed the file when it let go: our lock is on a file nobody else will
            # open again, so start over on the one now at the path.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
            self.folder.mkdir(parents=True, exist_ok=True)
        self.fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": sys.argv,
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is None:
            return
        try:  # still holding the lock, so no one else is inside: the file goes (a waiter starts over)
            self.path.unlink(missing_ok=True)
            for folder in self.made:  # a refused command leaves no empty folder behind (results/runs/ included)
                folder.rmdir()  # fails, and stops, at the first folder that holds something
        except OSError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None
