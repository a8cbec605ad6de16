"""Runs one untrusted program and its tests; started by `sandbox.py` as `python -I -S sandbox_runner.py IN OUT`.

Standard library only, never imported by the harness. IN is a pipe carrying a JSON payload (the
program, the tests, the limits and a random per-run nonce); OUT is a pipe on which exactly one line
is written: `PASS <nonce>` when every test ran to its end without raising, else `FAIL <reason>`.

Process layout (Linux):

    runner (new session, dies with its parent)          -- never runs model code
      unshare(net [, pid] [, user when unprivileged])
      └─ reaper = PID 1 of the new PID namespace         -- never runs model code; when it exits the
           └─ solution process                              kernel kills everything left in the namespace
                drops to a throw-away uid (when root), sets rlimits, installs the audit hook,
                runs the program, then the tests

Why "PASS <nonce>" cannot be forged by the program. The nonce is read from IN and IN is closed
before any model code runs, so the nonce exists only in this process's memory (a local of
`run_solution`); the program cannot print it without reading that memory, and everything that reads
a frame's locals or raw memory is refused by the audit hook (`sys._getframe`, frame attributes of
tracebacks/generators, `gc` object walks, tracing/profiling, ctypes, opening `/proc`, starting
other programs). The line is written with `os.write` captured before the program ran, only after the
last test returned, and the parent accepts only the exact line. So: `sys.exit(0)` or raising
anywhere is caught (FAIL); `os._exit(0)` ends the process before the line (no verdict = FAIL);
rebinding `print`, `AssertionError`, `builtins` or `sys.stdout` changes nothing the runner uses; the
tests see a fresh copy of the builtins and are rewritten so every compared value must be plain data
(an object whose `__eq__` always says True is refused); modules the tests use are checked unchanged.
This makes the verdict robust against the known reward hacks, not a proof against a program written
to attack this file from inside one interpreter; the OS limits (uid, namespaces, rlimits, the
parent's deadline) are what protect the machine.
"""

import os
import sys


def main() -> None:
    payload_fd, result_fd = int(sys.argv[1]), int(sys.argv[2])
    chunks = []
    while True:
        chunk = os.read(payload_fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(payload_fd)
    import json

    config = json.loads(b"".join(chunks))
    del chunks
    libc = _libc()
    _die_with_parent(libc)
    if os.getppid() != config["parent_pid"]:  # the parent died before prctl took effect
        os._exit(3)
    namespaces = _unshare(libc, root=os.geteuid() == 0)
    if "pid" in namespaces:
        _run_as_reaper(libc, config, namespaces, result_fd)
    else:
        run_solution(libc, config, namespaces, result_fd)


def _libc():
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _die_with_parent(libc) -> None:
    PR_SET_PDEATHSIG, SIGKILL = 1, 9
    if libc is not None:
        libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)


def _unshare(libc, root: bool) -> list:
    """New network and PID namespaces; an unprivileged user needs a user namespace for them."""
    CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID = 0x10000000, 0x40000000, 0x20000000
    if libc is None:
        return []
    base = 0 if root else CLONE_NEWUSER
    for flags, names in ((CLONE_NEWNET | CLONE_NEWPID, ["net", "pid"]), (CLONE_NEWNET, ["net"]), (CLONE_NEWPID, ["pid"])):
        if libc.unshare(base | flags) == 0:
            return names + ([] if root else ["user"])
    return []


def _run_as_reaper(libc, config, namespaces, result_fd) -> None:
    reaper = os.fork()
    if reaper:  # the runner: wait for the namespace's init, pass on how it ended
        _, status = os.waitpid(reaper, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    _die_with_parent(libc)
    solution = os.fork()
    if solution == 0:
        run_solution(libc, config, namespaces, result_fd)
    os.close(result_fd)
    code = 1
    while True:  # as PID 1 this process inherits every orphan: reap them all until the solution ends
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid == solution:
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
            break
    os._exit(code & 0xFF)  # PID 1 exits: the kernel SIGKILLs whatever the solution left behind


def _limit_resources(limits: dict, uid) -> None:
    import resource

    for name, soft, hard in (
        ("RLIMIT_AS", limits["memory_bytes"], limits["memory_bytes"]),
        ("RLIMIT_CPU", limits["cpu_s"], limits["cpu_s"] + 1),
        ("RLIMIT_FSIZE", limits["file_bytes"], limits["file_bytes"]),
        ("RLIMIT_NOFILE", limits["open_files"], limits["open_files"]),
        ("RLIMIT_CORE", 0, 0),
    ):
        resource.setrlimit(getattr(resource, name), (soft, hard))
    if uid is not None:  # root: become a uid nothing else uses, so NPROC counts only this run
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    else:  # unprivileged: NPROC counts every process of this uid, so allow what exists plus a margin
        mine = sum(1 for p in os.listdir("/proc") if p.isdigit() and _owner(p) == os.getuid())
        resource.setrlimit(resource.RLIMIT_NPROC, (mine + limits["processes"], mine + limits["processes"]))


def _owner(pid: str):
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


BLOCKED_EVENTS = {
    "sys._getframe", "sys._current_frames", "sys.settrace", "sys.setprofile", "object.__getattr__",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "os.exec", "os.posix_spawn", "os.spawn",
    "os.system", "subprocess.Popen", "pty.spawn", "os.startfile", "ctypes.dlopen", "ctypes.dlsym",
    "ctypes.cdata", "ctypes.addressof", "ctypes.call_function", "ctypes.seh_exception", "os.forkpty",
}
BLOCKED_IMPORTS = {"ctypes", "_ctypes", "_testcapi", "_testinternalcapi", "_xxsubinterpreters", "signal"}


def _audit_hook(block_sockets: bool):
    startswith, split, realpath, fspath = str.startswith, str.split, os.path.realpath, os.fsdecode
    blocked_events, blocked_imports = frozenset(BLOCKED_EVENTS), frozenset(BLOCKED_IMPORTS)
    PermissionError_, ValueError_, AttributeError_, isinstance_ = PermissionError, ValueError, AttributeError, isinstance

    def hook(event, args):
        # Frame access fails the way CPython's own does (ValueError / AttributeError), so library code
        # that asks for its caller's module (typing, namedtuple, enum, logging) degrades instead of failing.
        if event == "sys._getframe":
            raise ValueError_("sandbox: frames are not accessible")
        if event == "object.__getattr__":
            raise AttributeError_(f"sandbox: {args[1]} is not accessible")
        if event in blocked_events or (block_sockets and startswith(event, "socket.")):
            raise PermissionError_(f"sandbox: {event} is not allowed")
        if event == "import" and args[0] in blocked_imports:
            raise PermissionError_(f"sandbox: importing {args[0]} is not allowed")
        if event == "open" and isinstance_(args[0], (str, bytes)):
            path = fspath(args[0])
            if "proc" in split(path, "/") or startswith(realpath(path), "/proc"):
                raise PermissionError_("sandbox: /proc is not readable")

    return hook


def _disarm_signals() -> None:
    """A signal handler receives the interrupted frame (a way up to this file's locals): no handlers."""
    import _signal

    for name in ("signal", "set_wakeup_fd", "setitimer", "alarm", "pthread_kill", "siginterrupt"):
        if hasattr(_signal, name):
            delattr(_signal, name)
    sys.modules.pop("signal", None)


def run_solution(libc, config, namespaces, result_fd) -> None:
    """Runs in the solution process; ends it with os._exit after writing the one verdict line."""
    write, exit_now = os.write, os._exit
    try:
        _die_with_parent(libc)
        go = _prepare(config, "net" not in namespaces)
        _limit_resources(config["limits"], config.get("uid"))
        for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
            del sys.modules[name]  # a cached ctypes would be importable without an import event
        del libc
        write(result_fd, f"ISOLATION {','.join(namespaces + (['uid'] if config.get('uid') is not None else []))}\n".encode())
        nonce = config.pop("nonce")
        verdict = go() if callable(go) else go
        if verdict is None:  # every test returned: only now does the nonce leave this frame
            line = f"PASS {nonce}\n"
        else:
            line = f"FAIL {verdict}\n"
        del nonce
        write(result_fd, line.encode("utf-8", "replace")[:4096])
    except BaseException as exc:  # noqa: BLE001  (anything at all is a failure, never a pass)
        try:
            write(result_fd, f"FAIL runner error: {type(exc).__name__}: {exc}\n".encode()[:4096])
        except BaseException:  # noqa: BLE001
            pass
    exit_now(0)


# Imported before the program runs: as root the program runs as a uid that may not be able to read
# the standard library (e.g. under /root), so what solutions commonly import is loaded here.
PRELOADED = (
    "ast", "gc", "_thread", "typing", "math", "cmath", "re", "string", "collections", "collections.abc",
    "itertools", "functools", "operator", "heapq", "bisect", "copy", "random", "statistics", "fractions",
    "decimal", "datetime", "array", "struct", "hashlib", "json", "textwrap", "numbers", "calendar",
    "unicodedata", "dataclasses", "enum", "queue", "socket", "threading", "shutil", "sys", "os",
)


def _prepare(config, block_sockets: bool):
    """Everything before the program runs (imports, snapshots, compiling): returns `go()`, or a reason."""
    import importlib

    for name in PRELOADED:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    import ast
    import builtins
    import gc
    import _thread

    watched = [sys.modules[m] for m in ("builtins", "math", "cmath", "re", "string", "collections", "itertools",
                                        "functools", "operator", "heapq", "copy")]
    watched.append(sys.modules["collections"].Counter)  # a Python class the plain check accepts
    snapshot = [(m, [(k, id(v)) for k, v in vars(m).items() if not k.startswith("__") or k in ("__eq__", "__ne__")])
                for m in watched]
    clean_builtins = dict(vars(builtins))
    modules = sys.modules
    # Everything used after the program ran is bound here, before it: the program may rebind builtins.
    id_, vars_, len_, dict_, exec_, type_, str_ = id, vars, len, dict, exec, type, str
    thread_count, gc_callbacks, base_exception = _thread._count, gc.callbacks, BaseException
    plain = _plain_checker()
    try:
        tests = [compile(_PlainRewriter(ast).visit(ast.parse(source)), f"<test {i}>", "exec")
                 for i, source in enumerate([config["setup"], *config["tests"]])]
        program = compile(config["program"], "<solution>", "exec")
    except SyntaxError as exc:
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    except (ValueError, MemoryError, RecursionError) as exc:
        return f"the program cannot be compiled: {type(exc).__name__}"

    def go():
        """None when the program and every test ran to their end; else the reason, as one line."""
        namespace = {"__name__": "solution", "__builtins__": builtins}
        _disarm_signals()
        sys.addaudithook(_audit_hook(block_sockets))
        try:
            exec_(program, namespace)
        except base_exception as exc:  # SystemExit included: exiting early is not passing
            return f"the program raised {describe(exc)}"
        test_globals = dict_(namespace)
        test_globals["__builtins__"] = dict_(clean_builtins)
        test_globals["__harness_plain__"] = plain
        number = 0
        for code in tests:
            try:
                exec_(code, test_globals)
            except base_exception as exc:
                return f"{'the test set-up' if number == 0 else f'test {number}'} failed: {describe(exc)}"
            number += 1
        # What could have made failing tests look passed: a module the tests use patched or replaced,
        # a gc callback or a thread running during them.
        for module, names in snapshot:
            current = vars_(module)
            for name, ident in names:
                if name not in current or id_(current[name]) != ident:
                    return f"the program modified {module.__name__}.{name}"
            if type_(module) is not type_ and modules.get(module.__name__) is not module:
                return f"the program replaced module {module.__name__}"
        if len_(gc_callbacks) or thread_count():
            return "the program left a gc callback or a thread running"
        return None

    def describe(exc) -> str:
        try:
            message = str_(exc)
        except base_exception:  # a hostile __str__
            message = "?"
        text = f"{type_(exc).__name__}: {message}" if message else type_(exc).__name__
        return text.replace("\n", " ")[:300]

    return go


def _plain_checker():
    """Returns its argument if it is plain data (exact builtin types, recursively), else raises.

    Compared values must be plain so that a program cannot return an object whose `__eq__`,
    `__bool__` or `__lt__` lies. Exact types: a subclass of int can override `__eq__`. The
    collections types MBPP's tests compare are allowed too; Counter is a Python class, so its
    methods are in the snapshot `_run` checks after the tests.
    """
    import collections

    type_ = type
    scalars = frozenset({type_(None), bool, int, float, complex, str, bytes, type, type_(...)})
    sequences = frozenset({list, tuple, set, frozenset, collections.deque})
    mappings = frozenset({dict, collections.Counter, collections.OrderedDict, collections.defaultdict})
    TypeError_, keys, values = TypeError, dict.keys, dict.values

    def plain(value):
        stack = [value]
        while stack:
            item = stack.pop()
            kind = type_(item)
            if kind in scalars:
                continue
            if kind in sequences:
                stack.extend(item)
            elif kind in mappings:
                stack.extend(keys(item))
                stack.extend(values(item))
            else:
                raise TypeError_(f"a test compared a {kind.__name__} value; only plain data is accepted")
        return value

    return plain


def _PlainRewriter(ast):
    """An AST transformer wrapping every compared / asserted / negated value in __harness_plain__()."""

    def wrap(node):
        call = ast.Call(func=ast.Name("__harness_plain__", ast.Load()), args=[node], keywords=[])
        return ast.copy_location(call, node)

    class Rewriter(ast.NodeTransformer):
        def visit_Compare(self, node):
            self.generic_visit(node)
            node.left = wrap(node.left)
            node.comparators = [wrap(c) for c in node.comparators]
            return node

        def visit_Assert(self, node):
            self.generic_visit(node)
            node.test = wrap(node.test)
            return node

        def visit_UnaryOp(self, node):
            self.generic_visit(node)
            if isinstance(node.op, ast.Not):
                node.operand = wrap(node.operand)
            return node

        def visit_BoolOp(self, node):
            self.generic_visit(node)
            node.values = [wrap(v) for v in node.values]
            return node

        def visit_Module(self, node):
            self.generic_visit(node)
            return ast.fix_missing_locations(node)

    return Rewriter()


if __name__ == "__main__":
    main()
