"""The owner of results folders. `RunStore` (an eval or training run) and `CompareFolder` (a comparison)
are the only code that opens config.yaml, manifest.json, samples.jsonl, metrics.json, log.jsonl or
compare.json, and each hands out its folder's single-writer lock (eval, train and regrade hold a
run's; compare and regrade a comparison's). Beneath them, writing safely: whole files
are replaced atomically (write a temp file, fsync, rename) and JSONL is appended whole lines at a time;
reading stored JSONL back whole lines only; and the one hash that names a run folder."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

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


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_bytes(path, _json_bytes(data))


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


# The files of a folder, named here only: every other module goes through RunStore or CompareFolder
# (tests/test_layers.py fails when another module names them).
CONFIG, MANIFEST, SAMPLES, METRICS, LOG, COMPARE = (
    "config.yaml", "manifest.json", "samples.jsonl", "metrics.json", "log.jsonl", "compare.json")


class Folder:
    """What every results folder has: a manifest.json (the record of how it was made) and a lock."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.manifest_path = self.root / MANIFEST

    def read_manifest(self) -> dict[str, Any]:
        """The stored manifest ({} when there is none or it is damaged: it is written anew)."""
        try:
            found = json.loads(self.manifest_path.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {}
        return found if isinstance(found, dict) else {}

    def write_manifest(self, manifest: dict[str, Any]) -> Path:
        """Keep the first start's record; note each resume (when, from which commit, with which command)."""
        first = self.read_manifest()  # {}: none yet, or damaged (written anew)
        if first:
            first.setdefault("resumed", []).append({k: manifest[k] for k in ("started", "git", "command") if k in manifest})
            manifest = first
        return atomic_write_json(self.manifest_path, manifest)

    def note_in_manifest(self, key: str, entry: dict[str, Any], **fields: Any) -> None:
        """Append `entry` to the manifest's `key` list and set `fields` (e.g. a regrade's record)."""
        manifest = self.read_manifest()
        manifest.update(fields)
        manifest.setdefault(key, []).append(entry)
        atomic_write_json(self.manifest_path, manifest)

    def lock(self, wait: bool = False, on_wait: Callable[[str], None] | None = None):
        """The folder's single-writer lock (harness/folder_lock.py), to hold while writing."""
        from harness.folder_lock import FolderLock

        return FolderLock(self.root, wait, on_wait)


class RunStore(Folder):
    """`results/runs/<run-id>/` (an eval run: config.yaml, manifest.json, samples.jsonl, metrics.json) or a
    training run folder (config.yaml, manifest.json, log.jsonl, checkpoints/).

    Samples are appended whole lines at a time (one write per batch, then fsync), so a killed run
    leaves at most one torn last line, which the next open cuts off; resuming skips every id already
    stored, so no problem is generated or stored twice. Readers take no lock and see whole lines only.
    """

    def __init__(self, root: str | os.PathLike):
        super().__init__(root)
        self.config_path = self.root / CONFIG
        self.samples_path = self.root / SAMPLES
        self.log_path = self.root / LOG

    # ---- config.yaml ------------------------------------------------------------------------------
    def has_config(self) -> bool:
        return self.config_path.is_file()

    def read_config(self, needs: tuple[str, ...] = (), missing: str = "no config.yaml") -> dict[str, Any]:
        """The stored settings (one-line errors: missing, damaged, or a key of `needs` not named)."""
        from harness.config import read_yaml

        if not self.has_config():
            raise HarnessError(f"{self.root}: {missing}")
        config = read_yaml(self.config_path)
        for key in needs:
            if not isinstance(config.get(key), str) or not config[key]:
                raise HarnessError(f"{self.config_path}: names no {key}")
        return config

    def training_config_file(self) -> Path:
        """config.yaml of a training run folder (one line when there is none)."""
        if not self.has_config():
            raise HarnessError(f"{self.root}: not a training run (no config.yaml)")
        return self.config_path

    def read_training_config(self) -> dict[str, Any]:
        """A training run's config.yaml, which must name its method and model."""
        return self.read_config(("method", "model"), "not a training run (no config.yaml)")

    def check_config(self, identity: dict[str, Any], hint: str = "choose another --out or delete it") -> dict[str, Any]:
        """Refuse (one line) a folder holding a run whose stored settings differ from `identity`; writes
        nothing. Only settings are compared: where the run or its data lives (out, results_dir, data_dir)
        is not one. Returns the stored settings ({} for a new folder)."""
        import yaml

        check_output_file(self.config_path)  # the run folder can be made here (no file in the way, writable)
        if not self.has_config():
            return {}
        try:
            stored = yaml.safe_load(self.config_path.read_bytes().decode("utf-8")) or {}
        except (UnicodeDecodeError, yaml.YAMLError):
            raise HarnessError(f"{self.config_path}: damaged (not readable YAML); {hint}") from None
        if not isinstance(stored, dict):
            raise HarnessError(f"{self.config_path}: damaged (not a mapping of settings); {hint}")
        changed = sorted(k for k, v in identity.items() if stored.get(k) != v)
        if changed:
            raise HarnessError(f"{self.root} holds a run with other settings ({', '.join(changed)}); {hint}")
        return stored

    def write_config(self, config: dict[str, Any], identity: dict[str, Any]) -> None:
        self.check_config(identity)
        import yaml

        atomic_write_text(self.config_path, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))

    # ---- samples.jsonl ----------------------------------------------------------------------------
    def has_samples(self) -> bool:
        return self.samples_path.is_file()

    def read_samples(self, ids: list[str] | None = None) -> list[dict[str, Any]]:
        """The stored samples (a reader: never modifies the file), in `ids` order when given (each must
        be stored), else in file order."""
        found: dict[str, dict[str, Any]] = {}
        for n, record in enumerate(read_jsonl(self.samples_path), start=1):
            if not isinstance(record.get("id"), str):
                raise HarnessError(f"{self.samples_path}: sample {n} has no id (not a sample record)")
            found.setdefault(record["id"], record)
        if ids is None:
            return list(found.values())
        missing = [i for i in ids if i not in found]
        if missing:
            raise HarnessError(f"{self.root}: {len(missing)} of the compared problems are not stored (first: {missing[0]})")
        return [found[i] for i in ids]

    def load_samples(self) -> dict[str, dict[str, Any]]:
        """The writer's view, by id: a torn last line is cut and damaged lines are dropped (their
        problems are generated again)."""
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

    def rewrite_samples(self, records: list[dict[str, Any]]) -> None:
        atomic_write_jsonl(self.samples_path, records)

    def order_samples(self, ids: list[str]) -> None:
        """Rewrite samples.jsonl (atomically) with `ids` first in that order, the others after as they were:
        episodes are appended as they finish, but readers expect the problems' order."""
        stored = self.load_samples()
        rank = {i: n for n, i in enumerate(ids)}
        order = sorted(stored, key=lambda i: rank.get(i, len(rank)))  # stable: the rest keep file order
        if order != list(stored):
            self.rewrite_samples([stored[i] for i in order])

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write_json(self.root / METRICS, metrics)

    # ---- log.jsonl (training runs) -----------------------------------------------------------------
    def has_log(self) -> bool:
        return self.log_path.is_file()

    def read_log(self) -> list[dict[str, Any]]:
        """The training log's steps (one line when the run has logged none yet: no file, or no step)."""
        log = read_jsonl(self.log_path) if self.has_log() else []
        if not log:
            raise HarnessError(f"{self.root}: no training steps logged yet")
        return log

    def append_log(self, records: Iterable[dict[str, Any]]) -> None:
        append_jsonl(self.log_path, records)


class CompareFolder(Folder):
    """A comparison folder: compare.json (its settings, problems and rows), manifest.json, tables, plots."""

    def __init__(self, root: str | os.PathLike):
        super().__init__(root)
        self.spec_path = self.root / COMPARE

    def has_spec(self) -> bool:
        return self.spec_path.is_file()

    def read_spec(self) -> dict[str, Any]:
        """compare.json, checked for what a comparison needs (one line when it is damaged)."""
        try:
            spec = json.loads(self.spec_path.read_bytes().decode("utf-8"))
            spec["config"], spec["rows"], spec["problem_ids"]  # noqa: B018 (what a comparison needs)
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError):
            raise HarnessError(f"{self.spec_path}: damaged (rerun harness compare to rewrite it)") from None
        return spec

    def stored_id(self) -> str | None:
        """The stored comparison's id (None when there is none or it is damaged: it is written anew)."""
        try:
            found = json.loads(self.spec_path.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return found.get("id") if isinstance(found, dict) else None

    def write_spec(self, spec: dict[str, Any]) -> Path:
        """compare.json, rewritten only when it changed (a rerun leaves the file as it was)."""
        if self.has_spec() and self.spec_path.read_bytes() == _json_bytes(spec):
            return self.spec_path
        return atomic_write_json(self.spec_path, spec)


def folder_kind(path: str | os.PathLike) -> str | None:
    """What a results folder holds: "compare", "eval" (samples), "train" (a training log) or None."""
    path = Path(path)
    if CompareFolder(path).has_spec():
        return "compare"
    store = RunStore(path)
    if store.has_samples():
        return "eval"
    if store.has_log():
        return "train"
    return None
