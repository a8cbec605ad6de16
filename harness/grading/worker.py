"""A grading worker process: `python -m harness.grading.worker`, driven by `pool.py` over its stdio.

A plain subprocess, not multiprocessing: multiprocessing's spawn/forkserver re-import the caller's
`__main__` (breaking stdin scripts and unguarded user scripts), and fork copies a parent that may
hold torch's threads mid-lock.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from multiprocessing.connection import Connection

from harness.task import Grade, Item

# Seconds a worker sleeps before it reports ready: stands in for a slow start on a loaded machine (tests).
START_DELAY_ENV = "HARNESS_GRADING_WORKER_START_DELAY_S"


def serve(conn: Connection) -> None:
    task = None
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        except Exception as exc:  # e.g. the task's class cannot be imported here: tell the parent
            conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
            continue
        if message[0] == "task":
            task = message[1]
            _warm_up(task)
            conn.send(("ready", None))  # loading a task (importing its module) is no job's time either
            continue
        _, index, item, response = message
        try:
            grade = task.grade(item, response)
        except Exception as exc:  # a grader bug on odd input must not stop a run of thousands
            grade = Grade(False, None, f"grader error: {type(exc).__name__}: {str(exc)[:200]}")
        conn.send((index, grade))


def _warm_up(task) -> None:
    """Grade one typical answer once, so that the grader's first-use costs (math-verify compiling its
    patterns, sympy's first parse of a tuple with pi) fall on loading, not on the first job's deadline."""
    try:
        task.grade(Item("warm-up", "", r"\left(1, \frac{\pi}{2}\right)"),
                   r"Final Answer: The final answer is $\boxed{\left(1, \frac{\pi}{2}\right)}$. I hope it is correct.")
    except Exception:  # a task whose items need more fields: nothing to warm
        pass


def main() -> None:
    # Ctrl-C in a terminal reaches the whole process group: the parent decides what stopping means
    # (training checkpoints, then closes the pool); a worker killed mid-batch would grade it all wrong.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The channel keeps the original stdin/stdout; fd 1 then points at stderr so that a stray print
    # from any library cannot corrupt the message stream.
    conn_in, conn_out = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull)
    import math_verify  # paid once at start, not on the first MATH item

    math_verify.verify(math_verify.parse("$1$"), math_verify.parse("$1$"))  # its lazy first-use set-up too

    time.sleep(float(os.environ.get(START_DELAY_ENV) or 0))

    channel = _Duplex(Connection(conn_in, writable=False), Connection(conn_out, readable=False))
    channel.send(("ready", None))  # start-up time must not count against any job's deadline
    serve(channel)


class _Duplex:
    def __init__(self, reader: Connection, writer: Connection):
        self.recv, self.send = reader.recv, writer.send


if __name__ == "__main__":
    main()
