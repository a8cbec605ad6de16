"""The sandbox against hostile programs: each is graded incorrect within its deadline, the harness keeps
running, and nothing (process, file) is left behind. Every program here really runs."""

from __future__ import annotations

import os
import secrets
import socket
import threading
from pathlib import Path

import pytest

from harness.grading.sandbox import SandboxLimits, run_tests
from sandbox_checks import leftovers, wait_until_clean

FAST = SandboxLimits(wall_s=2.0, cpu_s=2)
SLACK_S = 1.5  # start-up, kill and clean-up on a loaded 2-core machine
ROOT = os.geteuid() == 0


def run(program: str, tests: list[str], limits: SandboxLimits = FAST):
    result = run_tests(program, tests, limits=limits)
    assert result.seconds < limits.wall_s + SLACK_S, result
    return result


@pytest.fixture(autouse=True)
def nothing_left_behind():
    before = leftovers()
    yield
    assert wait_until_clean(before) == before


def test_a_correct_program_passes_and_a_wrong_one_fails():
    good = run("def f(x):\n    return x + 1\n", ["assert f(1) == 2", "assert f(-1) == 0"])
    assert good.passed and good.reason == "passed"
    bad = run("def f(x):\n    return x\n", ["assert f(1) == 1", "assert f(1) == 2"])
    assert not bad.passed and bad.reason == "test 2 failed: AssertionError"
    assert "net" in good.isolation  # this machine allows network namespaces (as root or unprivileged)


@pytest.mark.parametrize("program, reason", [
    ("while True:\n    pass\n", "timed out"),
    ("import time\ntime.sleep(60)\n", "timed out"),
    ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", "timed out"),
    ("x = bytearray(10 * 1024 ** 3)\n", "MemoryError"),
    ("while True:\n    print('x' * 100)\n", "timed out"),
], ids=["infinite-loop", "sleep", "fork-bomb", "10GB", "endless-stdout"])
def test_resource_abuse_is_incorrect_within_the_deadline(program, reason):
    result = run(program + "def f():\n    return 1\n", ["assert f() == 1"])
    assert not result.passed and reason in result.reason


def test_a_million_lines_to_stdout_cost_the_harness_nothing():
    result = run("for i in range(10 ** 6):\n    print(i)\ndef f():\n    return 0\n", ["assert f() == 1"],
                 SandboxLimits(wall_s=4.0, cpu_s=4))
    assert not result.passed and result.reason in ("test 1 failed: AssertionError", "timed out after 4 s (wall clock)")


def test_escaped_processes_are_killed():
    # A child that leaves the process group (setsid) and sleeps: the PID namespace / uid sweep ends it.
    program = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\ndef f():\n    return 0\n"
    assert not run(program, ["assert f() == 1"]).passed  # the autouse fixture checks no process is left


@pytest.mark.skipif(not ROOT, reason="file isolation needs the throw-away uid, i.e. root")
def test_files_outside_its_directory_are_untouched_and_its_own_files_removed(tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("alive")
    escape = Path("/dev/shm") / f"escape-{secrets.token_hex(4)}"
    program = f"""
import os, shutil
def f():
    done = []
    for act in (lambda: os.remove({str(canary)!r}), lambda: open({str(canary)!r}, "w").write("pwned"),
                lambda: shutil.rmtree({str(tmp_path)!r}), lambda: open({str(escape)!r}, "w").write("x"),
                lambda: open(os.path.expanduser("~/../../etc/harness-escape"), "w").write("x")):
        try:
            act()
            done.append(True)
        except Exception:
            done.append(False)
    return done
"""
    result = run(program, ["assert f() == [True] * 5"])
    assert not result.passed and result.reason == "test 1 failed: AssertionError"
    assert canary.read_text() == "alive"
    assert not escape.exists()  # /dev/shm is world-writable: the sandbox's uid may write there, and its files are removed
    assert not Path("/etc/harness-escape").exists()


def test_the_parents_environment_is_out_of_reach(monkeypatch):
    secret = secrets.token_hex(16)
    monkeypatch.setenv("HARNESS_PLANTED_SECRET", secret)
    program = f"""
import os
def f():
    if {secret!r} in str(dict(os.environ)):
        return True
    for pid in [str(os.getppid()), "self", *os.listdir("/proc")]:
        try:
            if {secret!r}.encode() in open(f"/proc/{{pid}}/environ", "rb").read():
                return True
        except Exception:
            pass
    return False
"""
    result = run(program, ["assert f() is True"])
    assert not result.passed and result.reason == "test 1 failed: AssertionError"  # f ran and found nothing


def test_killing_its_parent_fails_and_the_harness_lives():
    program = f"""
import os, signal
for target in (os.getppid(), {os.getpid()}, 0, -1):
    try:
        os.kill(target, signal.SIGKILL)
    except Exception:
        pass
def f():
    return 1
"""
    result = run(program, ["assert f() == 1"])
    assert not result.passed
    assert run("def f():\n    return 1\n", ["assert f() == 1"]).passed  # and the next run works


def test_no_network_even_to_a_local_listener():
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(4)
    port = listener.getsockname()[1]
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(_accept(listener)), daemon=True)
    thread.start()
    program = f"""
import socket
def f():
    try:
        s = socket.create_connection(("127.0.0.1", {port}), timeout=1)
        s.sendall(b"leak")
        return True
    except Exception:
        return False
"""
    result = run(program, ["assert f() is True"])
    listener.close()
    thread.join()
    assert not result.passed and result.reason == "test 1 failed: AssertionError"
    assert accepted == [False]


def _accept(listener: socket.socket) -> bool:
    try:
        listener.accept()[0].close()
        return True
    except OSError:
        return False


# ---- verdict forgery: programs that try to make failing tests look passed ----------------------------

FORGERIES = {
    "sys.exit(0) before the asserts": "import sys\nsys.exit(0)\n",
    "sys.exit(0) inside the function": "import sys\ndef f():\n    sys.exit(0)\n",
    "os._exit(0) before the asserts": "import os\nos._exit(0)\n",
    "os._exit(0) inside the function": "import os\ndef f():\n    os._exit(0)\n",
    "an object equal to everything": "class A:\n    def __eq__(self, other):\n        return True\n"
                                     "    __hash__ = None\ndef f():\n    return A()\n",
    "an int subclass equal to everything": "class I(int):\n    def __eq__(self, other):\n        return True\n"
                                           "def f():\n    return I(0)\n",
    "rebinding AssertionError": "import builtins\nclass Quiet(Exception):\n    pass\n"
                                "builtins.AssertionError = Quiet\ndef f():\n    return 0\n",
    "rebinding print and stdout": "import builtins, sys, io\nbuiltins.print = lambda *a, **k: None\n"
                                  "sys.stdout = io.StringIO()\nprint('PASS')\ndef f():\n    return 0\n",
    "writing PASS lines to every fd": "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'PASS 0\\n')\n"
                                      "    except OSError:\n        pass\ndef f():\n    return 0\n",
    "patching math.isclose": "import math\nmath.isclose = lambda *a, **k: True\ndef f():\n    return 0\n",
    "emptying range and enumerate": "import builtins\nbuiltins.range = lambda *a: []\nbuiltins.enumerate = lambda *a: []\n"
                                    "def f():\n    return 0\n",
    "a trace function skipping lines": "import sys\nsys.settrace(lambda *a: None)\ndef f():\n    return 0\n",
    "reading the nonce from the caller's frames": "import sys\ndef f():\n    for depth in range(1, 12):\n"
                                                  "        try:\n            frame = sys._getframe(depth)\n"
                                                  "        except ValueError:\n            break\n"
                                                  "        if 'nonce' in frame.f_locals:\n"
                                                  "            import os\n            os.write(4, f\"PASS {frame.f_locals['nonce']}\\n\".encode())\n"
                                                  "            os._exit(0)\n    return 0\n",
    "reading the nonce from a traceback": "def f():\n    try:\n        raise ValueError\n    except ValueError as e:\n"
                                          "        frame = e.__traceback__.tb_frame\n    return 0\n",
    "scanning objects with gc": "import gc\ndef f():\n    gc.get_objects()\n    return 0\n",
    "reading its own memory": "def f():\n    open('/dev/fd/../mem', 'rb')\n    return 0\n",
    "an atexit handler": "import atexit, os\natexit.register(lambda: os.write(4, b'PASS x\\n'))\ndef f():\n    return 0\n",
    "a signal handler": "import _signal\n_signal.signal(10, lambda s, frame: None)\ndef f():\n    return 0\n",
    "ctypes": "import ctypes\ndef f():\n    return 0\n",
    "a thread outliving the tests": "import threading, time\nthreading.Thread(target=time.sleep, args=(5,)).start()\n"
                                    "def f():\n    return 1\n",
}


@pytest.mark.parametrize("program", FORGERIES.values(), ids=FORGERIES.keys())
def test_forged_passes_are_failures(program):
    # Every test here fails for an honest f; the program tries to make it look passed.
    tests = ["import math\nassert math.isclose(f(), 1.0)", "assert f() == 1",
             "for i, x in enumerate(range(3)):\n    assert f() == 1"]
    result = run(program, tests)
    assert not result.passed, result


def test_an_honest_program_using_the_allowed_library_passes():
    program = ("from typing import List\nfrom collections import namedtuple, Counter\nimport math, re, hashlib\n"
               "P = namedtuple('P', 'a b')\n"
               "def f(xs: List[int]):\n    return Counter(xs), P(1, 2).a, math.isclose(0.1 + 0.2, 0.3)\n")
    result = run(program, ["assert f([1, 1]) == (Counter({1: 2}), 1, True)"])
    assert result.passed, result
