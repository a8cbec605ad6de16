"""`python tests/slow_writes.py ARGS...`: the harness CLI with the toy task registered and its training
writes slowed by seeded random pauses (SLOW_WRITES_SEED), so a kill at a random moment often lands in
the middle of a checkpoint save or of a log line (written in two halves). For the kill tests only."""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import toy_task  # noqa: E402,F401  (registers toy-digit)
from harness import checkpoint  # noqa: E402
from harness.training import loop  # noqa: E402

rng = random.Random(os.environ.get("SLOW_WRITES_SEED", "0"))
save_state = checkpoint.save_state


def slow_save_state(folder, name, state):
    time.sleep(rng.uniform(0, 0.15))
    save_state(folder, name, state)
    time.sleep(rng.uniform(0, 0.15))


def torn_prone_append(path, records):
    import json

    payload = "".join(json.dumps(r) + "\n" for r in records).encode()
    half = len(payload) // 2
    with open(path, "ab") as fh:
        fh.write(payload[:half])
        fh.flush()
        time.sleep(rng.uniform(0, 0.2))  # a kill now leaves a torn last line
        fh.write(payload[half:])


checkpoint.save_state = slow_save_state
loop.append_jsonl = torn_prone_append

if __name__ == "__main__":
    from harness.cli import app

    app(sys.argv[1:], prog_name="harness")
