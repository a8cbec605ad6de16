"""Grade many responses on every core, each one under a hard deadline.

Each worker is a process whose main thread runs the grader, so math-verify's SIGALRM timeouts work
there. A timer cannot interrupt a C call (sympy raising 9^(9^9) to a power), so the parent also holds
a hard deadline per job: a worker that misses it is killed and replaced, and the job is graded
incorrect. A response that makes a grader crash is incorrect too; grading never raises for it.

A job's deadline counts only its own grading time: it starts when the job is sent to a worker that
has reported ready, and the parent never blocks on a starting worker (a replacement starts in the
background while the others keep grading). Before a job is failed for time, its worker's channel
is polled once more, so an answer that arrived while the parent was busy always counts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from typing import Callable, Sequence

from harness.errors import HarnessError
from harness.task import GRADER_VERSION, Grade, Item, Task

HARD_TIMEOUT_S = 5.0
STARTUP_TIMEOUT_S = 120.0  # importing sympy/math-verify on a loaded machine can take a while


class _Worker:
    def __init__(self):
        # The worker sees the parent's import path, so tasks defined outside installed packages
        # (a script's folder, a test directory) unpickle there too.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "harness.grading.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        self._to = Connection(os.dup(self.process.stdin.fileno()), readable=False)
        self.conn = Connection(os.dup(self.process.stdout.fileno()), writable=False)
        self.process.stdin.close()
        self.process.stdout.close()
        self.task: Task | None = None  # the object itself: an id() could be reused by a later task
        self.job: int | None = None
        self.deadline = time.monotonic() + STARTUP_TIMEOUT_S  # until ready: the start-up deadline
        self.ready = False

    def load(self, task: Task) -> None:
        """Send a task; the worker is ready again once it has loaded it (its import time is no job's)."""
        self.send(("task", task))
        self.task, self.ready, self.deadline = task, False, time.monotonic() + STARTUP_TIMEOUT_S

    def take_ready(self, task: Task) -> None:
        """Read a start-up or task-loaded message if one came, or fail on a worker that never got ready."""
        if not self.conn.poll(0):
            if time.monotonic() < self.deadline:
                return
            self.kill()
            raise HarnessError(f"a grading worker did not get ready within {STARTUP_TIMEOUT_S:g} s")
        try:
            kind, detail = self.conn.recv()
        except EOFError:
            self.kill()
            raise HarnessError("a grading worker died while starting (see its stderr above)") from None
        if kind == "fatal":  # the worker could not even load the task: nothing can be graded
            raise HarnessError(f"grading worker cannot use task {task.name!r}: {detail}")
        self.ready = True

    def send(self, message: tuple) -> None:
        self._to.send(message)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._to.close()
        self.conn.close()


class GradingPool:
    """`with GradingPool() as pool: grades = pool.grade(task, items, responses)`."""

    def __init__(self, workers: int | None = None, hard_timeout: float = HARD_TIMEOUT_S):
        self.size = max(1, workers or min(os.cpu_count() or 1, 8))
        self.hard_timeout = hard_timeout
        self._workers: list[_Worker] = []

    def __enter__(self) -> "GradingPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for worker in self._workers:
            worker.kill()
        self._workers = []

    def grade(
        self,
        task: Task,
        items: Sequence[Item],
        responses: Sequence[str],
        on_done: Callable[[int], None] | None = None,
    ) -> list[Grade]:
        if len(items) != len(responses):
            raise ValueError("items and responses differ in length")
        while len(self._workers) < min(self.size, len(items)):
            self._workers.append(_Worker())  # all start in parallel; each takes jobs once it is ready
        results: list[Grade | None] = [None] * len(items)
        pending = deque(range(len(items)))

        def dispatch(worker: _Worker) -> None:
            if worker.task is not task:
                worker.load(task)
                return
            index = pending.popleft()
            worker.send(("job", index, items[index], responses[index]))
            worker.job, worker.deadline = index, time.monotonic() + self.hard_timeout

        def finish(index: int, grade: Grade) -> None:
            results[index] = replace(grade, grader_version=GRADER_VERSION)
            if on_done is not None:
                on_done(1)

        while pending or any(w.job is not None for w in self._workers):
            for worker in self._workers:
                if worker.ready and worker.job is None and pending:
                    dispatch(worker)
            watched = [w for w in self._workers if w.job is not None or not w.ready]
            wait([w.conn for w in watched], timeout=max(0.0, min(w.deadline for w in watched) - time.monotonic()))
            for slot, worker in enumerate(list(self._workers)):
                if not worker.ready:
                    worker.take_ready(task)
                elif worker.job is None:
                    continue
                elif worker.conn.poll(0):  # polled now, not from wait()'s list: an answer never goes stale
                    try:
                        index, grade = worker.conn.recv()
                    except (EOFError, OSError):  # the worker died (e.g. killed for memory)
                        index, grade = worker.job, Grade(False, None, "grader process died")
                        worker = self._replace(slot)
                    worker.job = None
                    finish(index, grade)
                elif time.monotonic() >= worker.deadline:
                    index = worker.job
                    self._replace(slot)
                    finish(index, Grade(False, None, f"grading timed out after {self.hard_timeout:g} s"))
        return results  # type: ignore[return-value]

    def _replace(self, slot: int) -> _Worker:
        self._workers[slot].kill()
        self._workers[slot] = _Worker()  # starts now, in the background; takes jobs once ready
        return self._workers[slot]


def grade_many(
    task: Task,
    items: Sequence[Item],
    responses: Sequence[str],
    workers: int | None = None,
    on_done: Callable[[int], None] | None = None,
) -> list[Grade]:
    with GradingPool(workers) as pool:
        return pool.grade(task, items, responses, on_done=on_done)
