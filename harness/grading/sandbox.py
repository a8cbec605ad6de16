"""Run a model-written program against its tests in a separate, locked-down process.

The harness never executes model code itself: `run_tests` starts `python -I -S sandbox_runner.py`
(a fresh interpreter that ignores the environment and user site) in a new session, in an empty
temporary working directory, with a minimal environment (nothing of the caller's), stdin on
/dev/null, stdout and stderr discarded. The runner (see its docstring) puts the program in new
network and PID namespaces when the kernel allows it, drops to a throw-away uid when running as
root, sets rlimits (address space, CPU seconds, file size, processes, open files, no core files)
and reports one line on a pipe. Here the parent enforces the wall-clock deadline, kills the whole
process group after it, reads at most `result_bytes` of the report, and removes what the run left:
its directory, and (as root) every process and every file in the world-writable directories owned
by the run's uid.

Without namespaces (an unprivileged user on a kernel without user namespaces) the fallback is an
audit hook that refuses sockets inside the program, and processes that escape the process group
with `setsid` live until their CPU limit; `isolation` in the result says what was in force.
"""

from __future__ import annotations

import os
import pwd
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RUNNER = Path(__file__).with_name("sandbox_runner.py")
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # where any uid may create files
UID_RANGE = (1_900_000_000, 2_000_000_000)  # throw-away uids, far above any real account


@dataclass(frozen=True)
class SandboxLimits:
    wall_s: float = 4.0  # below the grading pool's 5 s hard deadline per response
    cpu_s: int = 4
    memory_mb: int = 1024
    file_mb: int = 16
    processes: int = 32
    open_files: int = 64
    result_bytes: int = 1 << 16


@dataclass(frozen=True)
class RunResult:
    passed: bool
    reason: str
    seconds: float
    isolation: str  # e.g. "net,pid,uid" — what was in force for this run


def run_tests(program: str, tests: list[str], setup: str = "", limits: SandboxLimits = SandboxLimits()) -> RunResult:
    """Run `program`, then `setup`, then each test statement; passed only if all of them returned."""
    started = time.monotonic()
    _sweep_stale(limits)
    nonce = secrets.token_hex(16)
    uid = secrets.SystemRandom().randrange(*UID_RANGE) if os.geteuid() == 0 else None
    workdir = tempfile.mkdtemp(prefix="harness-sandbox-")
    if uid is not None:
        os.chown(workdir, uid, uid)
    payload = {
        "program": program, "setup": setup, "tests": list(tests), "nonce": nonce, "uid": uid,
        "parent_pid": os.getpid(),
        "limits": {"memory_bytes": limits.memory_mb << 20, "cpu_s": limits.cpu_s, "file_bytes": limits.file_mb << 20,
                   "processes": limits.processes, "open_files": limits.open_files},
    }
    payload_r, payload_w = os.pipe()
    result_r, result_w = os.pipe()
    process = None
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", str(RUNNER), str(payload_r), str(result_w)],
            cwd=workdir, env=_minimal_env(workdir), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, pass_fds=(payload_r, result_w), start_new_session=True,
        )
        os.close(payload_r)
        os.close(result_w)
        payload_r = result_w = -1
        _send(payload_w, payload)
        payload_w = -1
        report, timed_out = _read_report(result_r, process, started + limits.wall_s, limits.result_bytes)
    finally:
        for fd in (payload_r, payload_w, result_r, result_w):
            if fd >= 0:
                os.close(fd)
        if process is not None:
            _kill_group(process)
        _clean_up(workdir, uid)
    seconds = time.monotonic() - started
    isolation, _, verdict = report.partition(b"\n")
    isolation = isolation.decode("ascii", "replace").removeprefix("ISOLATION ") if isolation.startswith(b"ISOLATION ") else "unknown"
    if verdict == f"PASS {nonce}\n".encode():
        return RunResult(True, "passed", seconds, isolation)
    return RunResult(False, _reason(verdict, process.returncode, timed_out, limits), seconds, isolation)


def _minimal_env(workdir: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}


def _send(fd: int, payload: dict) -> None:
    import json

    data = json.dumps(payload).encode()
    try:
        with os.fdopen(fd, "wb") as pipe:
            pipe.write(data)
    except BrokenPipeError:  # the runner died first; its report (none) says so
        pass


def _read_report(fd: int, process: subprocess.Popen, deadline: float, cap: int) -> tuple[bytes, bool]:
    """Read the report until EOF, the runner's exit or the deadline; keep at most `cap` bytes."""
    report = bytearray()
    exited_at = None
    while True:
        now = time.monotonic()
        if now >= deadline:
            return bytes(report), True
        if process.poll() is not None:
            exited_at = exited_at or now
            if now - exited_at > 0.2:  # only without a PID namespace can orphans hold the pipe open
                return bytes(report), False
        ready, _, _ = select.select([fd], [], [], min(0.05, deadline - now))
        if ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                process.wait(timeout=max(0.0, deadline - time.monotonic()) + 1.0)
                return bytes(report), False
            if len(report) < cap:
                report += chunk[: cap - len(report)]


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _clean_up(workdir: str, uid: int | None) -> None:
    if uid is not None:
        _kill_uid(uid)
        for scratch in SCRATCH_DIRS:
            _remove_owned(Path(scratch), uid)
    shutil.rmtree(workdir, onerror=_force_remove)


def _sweep_stale(limits: SandboxLimits) -> None:
    """Remove what runs whose grader was killed mid-run (the pool's hard deadline) could not clean up."""
    cutoff = time.time() - 10 * limits.wall_s - 60
    for path in Path(tempfile.gettempdir()).glob("harness-sandbox-*"):
        try:
            if path.lstat().st_mtime < cutoff:
                shutil.rmtree(path, onerror=_force_remove)
        except OSError:
            pass
    if os.geteuid() == 0:
        for scratch in SCRATCH_DIRS:
            for entry in _entries(Path(scratch)):
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if UID_RANGE[0] <= info.st_uid < UID_RANGE[1] and info.st_mtime < cutoff:
                    _remove_owned(Path(scratch), info.st_uid)


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of the throw-away uid (those that left the process group with setsid)."""
    for _ in range(20):
        if not _pids_of(uid):
            return
        # kill(-1) as that uid signals exactly its processes, atomically with respect to fork.
        subprocess.run(["kill", "-9", "-1"], user=uid, group=uid, extra_groups=[], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        time.sleep(0.01)


def _pids_of(uid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _entries(directory: Path) -> list[os.DirEntry]:
    """The folder's entries ([] when it cannot be read: gone, or not ours)."""
    try:
        return list(os.scandir(directory))
    except OSError:
        return []


def _remove_owned(directory: Path, uid: int) -> None:
    for entry in _entries(directory):
        try:
            if entry.stat(follow_symlinks=False).st_uid != uid:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, onerror=_force_remove)
            else:
                os.unlink(entry.path)
        except OSError:
            pass


def _force_remove(function, path, _exc_info) -> None:
    """rmtree's error hook: the program may have made its files read-only; make them writable and retry."""
    try:
        os.chmod(os.path.dirname(path), 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


def _reason(report: bytes, returncode: int | None, timed_out: bool, limits: SandboxLimits) -> str:
    if timed_out:
        return f"timed out after {limits.wall_s:g} s (wall clock)"
    text = report.decode("utf-8", "replace").strip()
    if text.startswith("FAIL "):
        return text[5:].splitlines()[0][:300]
    if text:
        return "the program wrote to the verdict channel (a forged or garbled report)"
    if returncode is not None and returncode != 0:
        code = returncode - 128 if returncode > 128 else -returncode if returncode < 0 else None
        if code and code in signal.Signals._value2member_map_:
            name = signal.Signals(code).name
            extra = {"SIGXCPU": f" (CPU limit {limits.cpu_s} s)", "SIGKILL": " (killed: CPU or memory limit)",
                     "SIGXFSZ": f" (file size limit {limits.file_mb} MB)"}.get(name, "")
            return f"the program was killed by {name}{extra}"
        return f"the program exited with status {returncode} before the tests finished"
    return "the program ended before the tests finished (no verdict)"


def sandbox_user() -> str:
    """Who programs run as here, for messages: a throw-away uid as root, else the current user."""
    if os.geteuid() == 0:
        return f"a throw-away uid in {UID_RANGE[0]}..{UID_RANGE[1]}"
    return pwd.getpwuid(os.geteuid()).pw_name
