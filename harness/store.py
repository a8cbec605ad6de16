"""The run folder's owner. Writing results safely: whole files are replaced atomically (write a temp
file, fsync, rename), and a run's samples are appended whole lines at a time. Reading them back: one
reader of stored JSONL (samples, logs), of a run's samples, of a trained run's config.yaml, and the
one hash that names a run folder."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from harness.errors import HarnessError, warn


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def append_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Whole lines appended in one write, then fsync: a kill leaves at most one torn last line."""
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    if not payload:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(payload)
        while view:  # a short write is finished, never left torn by us
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def cut_torn_tail(path: str | os.PathLike) -> bool:
    """Cut a last line without its newline (a write killed mid-line); True when something was cut."""
    with Path(path).open("rb+") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)
            fh.flush()
            os.fsync(fh.fileno())
            return True
    return False


class BadLine(ValueError):
    """Why one JSONL line is not a JSON object (the message, without file and line)."""


def parse_line(raw: bytes, first: bool = False) -> dict[str, Any] | None:
    """One JSONL line as a JSON object, None for a blank line, or BadLine. `first`: the file's first
    line may start with a BOM."""
    try:
        line = raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as exc:
        raise BadLine(f"not valid UTF-8 (byte {exc.start + 1} of the line)") from None
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadLine(f"invalid JSON ({exc.msg})") from None
    except RecursionError:
        raise BadLine("invalid JSON (nested too deeply)") from None
    if not isinstance(record, dict):
        raise BadLine(f"expected a JSON object, got {type(record).__name__}")
    return record


def scan_jsonl(data: bytes) -> tuple[list[tuple[int, bytes, dict[str, Any] | BadLine]], bytes]:
    """Every whole line of JSONL bytes as (line number, raw line without its newline, record or BadLine),
    blank lines left out; and the torn tail after the last newline (empty when the file ends whole)."""
    lines = data.split(b"\n")
    torn = lines.pop()
    out: list[tuple[int, bytes, dict[str, Any] | BadLine]] = []
    for lineno, raw in enumerate(lines, start=1):
        try:
            record = parse_line(raw, first=lineno == 1)
        except BadLine as exc:
            out.append((lineno, raw, exc))
            continue
        if record is not None:
            out.append((lineno, raw, record))
    return out, torn


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or a new file in folder `path` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_output_file(path: str | os.PathLike) -> Path:
    """Refuse (one line, before any work) an output path that cannot become a file."""
    path = Path(path)
    if path.is_dir():
        raise HarnessError(f"{path}: is a folder; give a file path")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise HarnessError(f"{parent}: exists and is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise HarnessError(f"{path}: {parent} is not writable")
    return path


def run_hash(identity: dict[str, Any]) -> str:
    """The 8 hex digits in a run folder's name: sha256 of its identity settings (sorted JSON)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Whole lines only: a torn last line (a killed write, or one still being written by a running run)
    is left out, saying so in one line; never modifies the file, which a running run may be appending to."""
    if not path.is_file():
        raise HarnessError(f"{path}: not found")
    lines, torn = scan_jsonl(path.read_bytes())
    if torn:
        warn(f"{path}: left out a torn last line (a write was interrupted or is under way)")
    for lineno, _, record in lines:
        if isinstance(record, BadLine):
            raise HarnessError(f"{path}:{lineno}: corrupt line ({record})")
    return [record for _, _, record in lines]


def read_samples(run_dir: Path, ids: list[str] | None = None) -> list[dict[str, Any]]:
    """A run's samples, in `ids` order when given (each must be stored), else in file order."""
    found: dict[str, dict[str, Any]] = {}
    for record in read_jsonl(run_dir / "samples.jsonl"):
        found.setdefault(record["id"], record)
    if ids is None:
        return list(found.values())
    missing = [i for i in ids if i not in found]
    if missing:
        raise HarnessError(f"{run_dir}: {len(missing)} of the compared problems are not stored (first: {missing[0]})")
    return [found[i] for i in ids]


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A training run's config.yaml, which must name its method and model (one-line error otherwise)."""
    from harness.config import read_yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise HarnessError(f"{run_dir}: not a training run (no config.yaml)")
    config = read_yaml(path)
    for key in ("method", "model"):
        if not isinstance(config.get(key), str) or not config[key]:
            raise HarnessError(f"{path}: names no {key}")
    return config


class RunStore:
    """`results/runs/<run-id>/`: config.yaml, manifest.json, samples.jsonl, metrics.json.

    Samples are appended whole lines at a time (one write per batch, then fsync), so a killed run
    leaves at most one torn last line, which the next open cuts off; resuming skips every id already
    stored, so no problem is generated or stored twice.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.samples_path = self.root / "samples.jsonl"

    def check_config(self, identity: dict[str, Any], hint: str = "choose another --out or delete it") -> None:
        """Refuse (one line) a folder holding a run whose stored settings differ from `identity`; writes nothing.
        Only settings are compared: where the run or its data lives (out, results_dir, data_dir) is not one."""
        import yaml

        path = self.root / "config.yaml"
        check_output_file(path)  # the run folder can be made here (no file in the way, writable)
        if not path.is_file():
            return
        try:
            stored = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
        except (UnicodeDecodeError, yaml.YAMLError):
            raise HarnessError(f"{path}: damaged (not readable YAML); {hint}") from None
        if not isinstance(stored, dict):
            raise HarnessError(f"{path}: damaged (not a mapping of settings); {hint}")
        changed = sorted(k for k, v in identity.items() if stored.get(k) != v)
        if changed:
            raise HarnessError(f"{self.root} holds a run with other settings ({', '.join(changed)}); {hint}")

    def write_config(self, config: dict[str, Any], identity: dict[str, Any]) -> None:
        self.check_config(identity)
        import yaml

        atomic_write_text(self.root / "config.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True))

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        path = self.root / "manifest.json"
        if path.is_file():  # keep the first start's record; note each resume
            first = json.loads(path.read_text())
            first.setdefault("resumed", []).append({k: manifest[k] for k in ("started", "git", "command") if k in manifest})
            manifest = first
        atomic_write_json(path, manifest)

    def load_samples(self) -> dict[str, dict[str, Any]]:
        if not self.samples_path.is_file():
            return {}
        if cut_torn_tail(self.samples_path):
            warn(f"{self.samples_path}: cut a torn last line (a write was interrupted); it is generated again")
        samples: dict[str, dict[str, Any]] = {}
        kept, damaged = [], []
        lines, _ = scan_jsonl(self.samples_path.read_bytes())  # the torn tail was cut above
        for lineno, raw, record in lines:
            if isinstance(record, BadLine) or not isinstance(record.get("id"), str):
                damaged.append(lineno)
                continue
            kept.append(raw + b"\n")
            samples.setdefault(record["id"], record)
        if damaged:  # e.g. bytes overwritten on disk: drop those lines, their problems are generated again
            atomic_write_bytes(self.samples_path, b"".join(kept))
            warn(f"{self.samples_path}: dropped {len(damaged)} damaged line(s) (first: line {damaged[0]}); "
                 "their problems are generated again")
        return samples

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        append_jsonl(self.samples_path, records)

    def order_samples(self, ids: list[str]) -> None:
        """Rewrite samples.jsonl (atomically) with `ids` first in that order, the others after as they were:
        episodes are appended as they finish, but readers expect the problems' order."""
        stored = self.load_samples()
        rank = {i: n for n, i in enumerate(ids)}
        order = sorted(stored, key=lambda i: rank.get(i, len(rank)))  # stable: the rest keep file order
        if order != list(stored):
            atomic_write_jsonl(self.samples_path, [stored[i] for i in order])

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write_json(self.root / "metrics.json", metrics)
