"""One writer per run folder (harness/folder_lock.py): a second writer is refused in one line naming the
holder, or waits; a lock left by a killed process is taken over; real `harness eval` processes started on
one folder leave exactly one line per problem."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.folder_lock import LOCK_NAME, FolderLock

BIN = Path(sys.executable).parent
HOLD = ("import sys, time\nfrom harness.folder_lock import FolderLock\n"
        "with FolderLock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(float(sys.argv[2]))\n")


def _holder(folder: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the folder's lock for `seconds`, once it has printed `held`."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    folder = tmp_path / "run"
    holder = _holder(folder, 30)
    try:
        with pytest.raises(HarnessError, match=rf"is being written by pid {holder.pid} on .* --wait"):
            with FolderLock(folder):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_writer_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    holder = _holder(folder, 60)
    (folder / "samples.jsonl").write_text("")  # the killed writer had started writing
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == holder.pid  # its stale line is still there
    with FolderLock(folder):
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert sorted(p.name for p in folder.iterdir()) == ["samples.jsonl"]  # the lock file goes when let go


def test_a_waiting_writer_goes_in_when_the_holder_is_done(tmp_path):
    folder = tmp_path / "run"
    holder = _holder(folder, 1.5)
    waited = []
    started = time.monotonic()
    with FolderLock(folder, wait=True, on_wait=waited.append):
        held_at = time.monotonic() - started  # only once the holder let go, after its 1.5 s
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert held_at > 1.0 and len(waited) == 1 and f"pid {holder.pid}" in waited[0]
    holder.wait()


def test_a_lock_on_a_new_folder_that_stays_empty_leaves_nothing(tmp_path):
    with FolderLock(tmp_path / "new" / "run"):
        pass
    assert not (tmp_path / "new" / "run").exists()
    (tmp_path / "kept").mkdir()
    with FolderLock(tmp_path / "kept"):
        pass
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())


def test_a_training_run_held_by_another_process_is_refused_before_any_work(tmp_path):
    from harness.training.config import load_train_config
    from harness.training.loop import train

    run = tmp_path / "run"
    holder = _holder(run, 30)
    try:
        config = load_train_config("cpu-tiny", None, ["task=gsm8k"], {"method": "score", "out": str(run)})
        with pytest.raises(HarnessError, match="is being written by"):
            train(config)
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # nothing of the refused run
    finally:
        holder.kill()
        holder.wait()


def _eval(out: Path, *extra: str) -> subprocess.Popen:
    args = [str(BIN / "harness"), "eval", "--task", "gsm8k", "--model", "tiny-random", "--limit", "60",
            "--max-new-tokens", "24", "--batch-size", "8", "--out", str(out), *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_eval_processes_on_one_folder_store_each_problem_once(tmp_path):
    out = tmp_path / "run"
    first, second = _eval(out, "--wait"), _eval(out, "--wait")
    results = [p.communicate(timeout=600) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, [r[1][-2000:] for r in results]
    ids = [json.loads(line)["id"] for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(ids) == 60 and len(set(ids)) == 60
    # Without --wait the second is refused in one line naming the first (exit 2), and writes nothing.
    other = tmp_path / "other"
    first = _eval(other)
    deadline = time.monotonic() + 120
    while not (other / LOCK_NAME).is_file() or not (other / LOCK_NAME).read_text():
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    second = _eval(other)
    _, err = second.communicate(timeout=300)
    first.communicate(timeout=600)
    assert second.returncode == 2 and f"pid {first.pid}" in err and len(err.strip().splitlines()) == 1, err
    ids = [json.loads(line)["id"] for line in (other / "samples.jsonl").read_text().splitlines()]
    assert len(ids) == 60 and len(set(ids)) == 60
